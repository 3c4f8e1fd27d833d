"""Space-time clustering of a video's pixels into pseudo masks ([P] Li et al., CVPR 2023,
§3.1 Step 1, Eq. 4, and §3.3).

Eq. 4: min_{C, S} Σ_i ‖i − C s_i‖, s_i one-hot over M clusters: k-means (scikit-learn's
``KMeans``, k-means++ initialisation, at most 100 EM steps) on E's pixel embeddings with a
3-D sinusoidal position code appended (§3.1, "to pursue spatiotemporally compact
clusters"). Clusters holding more than 40 % of the pixels are dropped to background
(§3.3); every other cluster m is object m + 1 of the pseudo mask.

The training loop streams one clip per video and epoch, so the method cannot cluster whole
videos: :class:`ClusterCache` keeps each video's centroids (keyed by the stream's integer
video id) in buffers of the method's state dict, computes them from the clip's own frames
when missing or older than the re-clustering interval, and the pseudo masks of a clip are
the assignment of its pixels to the cached centroids. The official code
(github.com/0liliulei/Mask-VOS gen_mask.py) clusters every 8th frame of the whole video
offline into 7 clusters, on res4 features, without a position code.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def position_code(frames: int, height: int, width: int, frequencies: int, weight: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """3-D sinusoidal position code of every (t, y, x) cell, (frames·height·width, 6·F).

    Each axis coordinate is scaled to [0, 1] (u = index / (size − 1), 0 for a size of 1);
    its code is [sin(2^f π u), cos(2^f π u)] for f = 0..F−1 (Transformer-style code, [P] §3.1
    refs. [64, 65]; frequencies and scale are not given). The whole vector has Euclidean
    norm ``weight`` (each sine/cosine pair has norm 1, then scaled by weight / sqrt(3F)).
    Rows are ordered t, then y, then x (C order of a (T, h, w) grid).
    """
    axes = []
    for size in (frames, height, width):
        u = torch.arange(size, dtype=torch.float32, device=device) / max(size - 1, 1)
        ang = u[:, None] * (math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32, device=device))[None]
        axes.append(torch.cat([ang.sin(), ang.cos()], dim=1))  # (size, 2F)
    t, y, x = axes
    grid = torch.cat(
        [
            t[:, None, None].expand(frames, height, width, -1),
            y[None, :, None].expand(frames, height, width, -1),
            x[None, None, :].expand(frames, height, width, -1),
        ],
        dim=-1,
    )
    return grid.reshape(frames * height * width, -1) * (weight / math.sqrt(3 * frequencies))


def pixel_embeddings(feats: torch.Tensor, position: bool, frequencies: int, weight: float) -> torch.Tensor:
    """The points clustered: (T, D, h, w) features of a video → (T·h·w, D [+ 6F]), each
    feature L2-normalised, with :func:`position_code` appended when ``position``."""
    t, d, h, w = feats.shape
    x = F.normalize(feats.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, d)
    if position:
        x = torch.cat([x, position_code(t, h, w, frequencies, weight, x.device)], dim=1)
    return x


def kmeans(points: torch.Tensor, clusters: int, iters: int, seed: int) -> torch.Tensor:
    """Centroids C (M, D) of Eq. 4 by scikit-learn's ``KMeans`` (k-means++ init, one
    initialisation, at most ``iters`` EM steps, ``random_state=seed``), on the CPU in
    float64. ``points``: (P, D). Raises ValueError when P < M."""
    from sklearn.cluster import KMeans

    if points.shape[0] < clusters:
        raise ValueError(f"k-means needs at least {clusters} points, got {points.shape[0]}")
    km = KMeans(n_clusters=clusters, max_iter=iters, n_init=1, random_state=seed % 2**31)
    km.fit(points.detach().cpu().double().numpy())
    return torch.from_numpy(np.asarray(km.cluster_centers_, dtype=np.float32)).to(points.device)


def assign(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """S of Eq. 4: index of the nearest centroid (squared Euclidean distance) of each
    point, (P, D) x (M, D) → (P,) int64; ties go to the lower index."""
    d = (points[:, None, :] - centroids[None].to(points)).pow(2).sum(-1)
    return d.argmin(dim=1)


def small_clusters(labels: torch.Tensor, clusters: int, largest: float) -> torch.Tensor:
    """(M,) bool: clusters holding at most ``largest`` of the points ([P] §3.3: clusters of
    more than 40 % of the video's pixels are abandoned). ``labels``: (P,) from :func:`assign`."""
    share = torch.bincount(labels.flatten(), minlength=clusters).float() / labels.numel()
    return share <= largest


def pseudo_labels(labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Pseudo masks from assignments: cluster m → object m + 1 where ``keep[m]``, else 0
    (background). Any shape of int64 labels; ``keep`` (M,) bool."""
    obj = torch.arange(1, keep.numel() + 1, device=labels.device) * keep.to(labels.device).long()
    return obj[labels]


class ClusterCache(nn.Module):
    """Per-video centroids of the training videos, in buffers (an exact resume restores them).

    Buffers (``capacity`` slots): ``ids`` (S,) int64 video id (−1 = empty), ``stamp`` (S,)
    int64 step at which the centroids were computed, ``used`` (S,) int64 last step read,
    ``centroids`` (S, M, D) float32, ``keep`` (S, M) bool (clusters not over the size
    limit). A full cache evicts the slot read longest ago (lowest slot on ties).
    """

    def __init__(self, capacity: int, clusters: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("ids", torch.full((capacity,), -1, dtype=torch.long))
        self.register_buffer("stamp", torch.full((capacity,), -1, dtype=torch.long))
        self.register_buffer("used", torch.full((capacity,), -1, dtype=torch.long))
        self.register_buffer("centroids", torch.zeros(capacity, clusters, dim))
        self.register_buffer("keep", torch.zeros(capacity, clusters, dtype=torch.bool))

    def slot(self, video_id: int) -> int:
        """The slot of ``video_id``, or −1."""
        hit = (self.ids == int(video_id)).nonzero()
        return int(hit[0, 0]) if hit.numel() else -1

    def fresh(self, video_id: int, step: int, interval: int | None) -> int:
        """The slot of ``video_id`` when its centroids are younger than ``interval`` steps
        (None: never too old), else −1 (missing or stale: cluster again)."""
        s = self.slot(video_id)
        if s < 0 or (interval is not None and step - int(self.stamp[s]) >= interval):
            return -1
        return s

    def store(self, video_id: int, centroids: torch.Tensor, keep: torch.Tensor, step: int) -> int:
        """Put (M, D) centroids and (M,) keep flags of ``video_id`` computed at ``step``;
        returns the slot (its own, an empty one, or the least recently used)."""
        s = self.slot(video_id)
        if s < 0:
            empty = (self.ids < 0).nonzero()
            s = int(empty[0, 0]) if empty.numel() else int(self.used.argmin())
        self.ids[s] = int(video_id)
        self.stamp[s] = step
        self.used[s] = step
        self.centroids[s] = centroids.to(self.centroids)
        self.keep[s] = keep.to(self.keep.device)
        return s


def cluster_video(points: torch.Tensor, clusters: int, iters: int, largest: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1 of §3.1 for one video's (P, D) embeddings: (M, D) centroids (:func:`kmeans`)
    and (M,) keep flags (:func:`small_clusters` of the points' own assignment)."""
    centroids = kmeans(points, clusters, iters, seed)
    return centroids, small_clusters(assign(points, centroids), clusters, largest)
