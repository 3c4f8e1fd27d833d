"""Mask-VOS behind the harness's method interface (:class:`hvc.methods.base.Method`).

[P] Li et al., CVPR 2023, §3.3 "Training": the encoder E is first trained with the
correspondence loss alone (epochs 0-300, Adam 1e-4 halved every 100 epochs), then the
whole network (E, V, D) with the full loss of Eq. 16 (epochs 300-400, fixed 1e-5), the
pseudo masks coming from per-video k-means re-run every 10 epochs. Two phases:

1. ``correspondence`` (share ``corr_share``): clips of 5 frames ([C] configs/ytvos.yaml);
   L = λ1 L_Short(frames 0, 1) + λ2 L_Long(frames 0, T−1).
2. ``mask`` (the rest, fresh Adam): clips of 3 frames; the clip's pixels are assigned to
   its video's cached centroids (:class:`~hvc.methods.maskvos.clustering.ClusterCache`,
   clustered from the clip's own frames when missing or too old); query q = 1, 2 is
   segmented from references 0..q−1 (N = 2 for the last, [P] §3.3) through Eqs. 5-9;
   L = L_Seg + λ1 L_Short + λ2 L_Long.

Random draws of a step (the transformations Φ, k-means seeds) come from generators seeded
by (seed, step, video id), not from torch's global generator, so a resumed run repeats
them exactly; the step counter, re-clustering interval and centroid cache are buffers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from hvc.methods.base import ClipCrop, DataSpec, EncoderSpec, Method, Phase, frozen
from hvc.methods.maskvos.clustering import ClusterCache, assign, cluster_video, pixel_embeddings, pseudo_labels
from hvc.methods.maskvos.loss import (
    apply_transform,
    decode_objects,
    dul_cross_view_loss,
    dul_temporal_loss,
    grid_index,
    long_term_loss,
    random_transform,
    readout,
    reference_affinity,
    segmentation_loss,
    short_term_loss,
    total_loss,
)
from hvc.methods.maskvos.model import KEY_DIM, LAYERS, RES4_DIM, STRIDE, Decoder, MaskVOSEncoder, ValueEncoder
from hvc.methods.maskvos.params import MaskVOSParams

if TYPE_CHECKING:
    from hvc.config.params import Params

CORR, MASK = 0, 1


def _mix(*parts: int) -> int:
    """A 62-bit seed from integers (deterministic across processes)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & (2**64 - 1))) * 1099511628211) % 2**64
    return h >> 2


class MaskVOS(Method):
    """Mask-VOS (CVPR 2023) as a trainable method of the harness.

    Batch: ``{"frames": (B, T, 3, S, S)}`` ImageNet-normalised RGB clips and, in the mask
    phase, ``"video_id": (B,)`` int64. Loss dict: ``loss``, ``short``, ``long`` and, in the
    mask phase, ``seg`` and ``objects`` (mean objects per clip); with ``corr_loss="official"``
    ``cross_key`` and ``temp`` replace ``short`` and ``long``.

    Args:
        config: :class:`MaskVOSParams` (every number with its source).
        seed: seeds the per-step generators (Φ, k-means).
    """

    name = "maskvos"
    batch_kind = "clips"

    def __init__(self, config: MaskVOSParams | None = None, seed: int = 0) -> None:
        super().__init__()
        self.config = config or MaskVOSParams()
        self.seed = int(seed)
        self.phase = CORR
        cfg = self.config
        self.encoder_net = MaskVOSEncoder()
        self.value_encoder = ValueEncoder(cfg.value_head)
        self.decoder = Decoder()
        dim = (KEY_DIM if cfg.cluster_features == "key" else RES4_DIM) + (6 * cfg.position_frequencies if cfg.position_code else 0)
        self.clusters = ClusterCache(cfg.cluster_cache, cfg.clusters, dim)
        self.register_buffer("step_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("recluster_interval", torch.zeros((), dtype=torch.long))  # 0 = not known yet

    @classmethod
    def build(cls, params: Params) -> MaskVOS:
        """Mask-VOS of the ``maskvos`` section, seeded by ``params.seed``."""
        return cls(params.maskvos, seed=params.seed)

    # ------------------------------------------------------------------ phases and data
    def phases(self) -> tuple[Phase, ...]:
        """Correspondence warm-up, then the mask stage ([P] §3.3: 300 + 100 epochs)."""
        share = self.config.corr_share
        return (Phase("correspondence", "clips", share), Phase("mask", "clips", 1.0 - share))

    def start_phase(self, phase: int) -> None:
        """Enter ``phase`` (0 warm-up, 1 mask). With ``freeze_encoder_mask`` the mask phase
        freezes E's trunk ([C] models/net.py ``torch.no_grad()`` on the backbone).
        Raises ValueError for another phase."""
        if phase not in (CORR, MASK):
            raise ValueError(f"Mask-VOS has phases 0 and 1, got {phase!r}")
        self.phase = phase
        freeze = phase == MASK and self.config.freeze_encoder_mask
        for p in self.encoder_net.trunk.parameters():
            p.requires_grad_(not freeze)

    def batch_size(self, phase: int) -> int | None:
        """Clips per step of ``phase`` (None: ``train.batch_size``; [P] §3.3: 16 and 16; [C]: 16 and 12)."""
        return self.config.batch_corr if phase == CORR else self.config.batch_mask

    def data_spec(self, params: Params, phase: int = 0) -> DataSpec:
        """Clips of 5 frames (gap 2) in the warm-up, 3 frames (gap ``frame_gap_mask``) in
        the mask stage, one random crop (area ``crop_scale``) and flip for the whole clip,
        resized to ``size`` and ImageNet-normalised (:class:`ClipCrop`)."""
        cfg = self.config
        crop = ClipCrop(cfg.size or params.train.crop_size, scale=tuple(cfg.crop_scale), flip=cfg.flip, normalization="imagenet")
        length, gap = (cfg.clip_length_corr, cfg.frame_gap) if phase == CORR else (cfg.clip_length_mask, cfg.frame_gap_mask)
        return DataSpec(kind="clips", transform=crop, clip_length=length, frame_gap=gap, batch_size=self.batch_size(phase))

    # ------------------------------------------------------------------ losses
    def _generator(self, *parts: int) -> torch.Generator:
        return torch.Generator().manual_seed(_mix(self.seed, int(self.step_count), *parts))

    def correspondence_losses(self, frames: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        """Correspondence terms for clips (B, T, 3, S, S) with ``clean`` = E's keys of the
        frames (B, T, D, h, w). ``corr_loss="paper"``: {"short": L_Short (Eq. 12) of frames
        (0, 1), "long": L_Long (Eq. 15) of frames (0, T − 1)}, each pair with its own random
        Φ; ``"official"``: :meth:`dul_losses`."""
        if self.config.corr_loss == "official":
            return self.dul_losses(frames, clean)
        b = frames.shape[0]
        gen = self._generator(0)
        theta_s = random_transform(b, tuple(self.config.equivariance_scale), gen)
        theta_l = random_transform(b, tuple(self.config.equivariance_scale), gen)
        warped = torch.cat([apply_transform(frames[:, 0], theta_s), apply_transform(frames[:, -1], theta_l)])
        x_prime = self.encoder_net(warped, "key")
        tau = self.config.temperature
        short = short_term_loss(x_prime[:b], apply_transform(clean[:, 1], theta_s), tau)
        long = long_term_loss(x_prime[b:], apply_transform(clean[:, -1], theta_l), clean[:, 0], tau)
        return {"short": short, "long": long}

    def dul_losses(self, frames: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        """The code's DUL terms ([C] models/framework.py): view 1 = the clip, its keys aligned
        to view 2 by Φ (Φ(E(I)), bilinear; the code resamples with nearest); view 2 = Φ(clip)
        encoded, frame 0 with gradient and the other frames without ([C] TRAIN.STOP_GRAD).
        {"cross_key": :func:`dul_cross_view_loss`, "temp": :func:`dul_temporal_loss`}."""
        cfg, (b, t) = self.config, frames.shape[:2]
        gen = self._generator(1)
        theta = random_transform(b, tuple(cfg.equivariance_scale), gen).repeat_interleave(t, dim=0)
        x1 = apply_transform(clean.flatten(0, 1), theta).view(clean.shape)
        warped = apply_transform(frames.flatten(0, 1), theta).view(frames.shape)
        first = self.encoder_net(warped[:, 0], "key")
        with torch.no_grad():
            rest = self.encoder_net(warped[:, 1:].flatten(0, 1), "key").view(b, t - 1, *first.shape[1:])
        k2 = torch.cat([first[:, None], rest], dim=1)
        h, w = clean.shape[-2:]
        ref = grid_index(b, h, w, cfg.dul_grid_ref, gen)
        anchors = grid_index(b, h, w, cfg.dul_grid, gen)
        tau = cfg.temperature
        return {"cross_key": dul_cross_view_loss(x1[:, 0], k2[:, 0], ref, tau), "temp": dul_temporal_loss(x1, k2, anchors, tau)}

    def correspondence_total(self, terms: dict[str, torch.Tensor], seg: torch.Tensor | None) -> torch.Tensor:
        """Eq. 16 (``seg`` None: L_Corr alone); official terms: seg + 0.1 cross_key + 1 temp."""
        cfg = self.config
        if cfg.corr_loss == "official":
            corr = cfg.dul_cross_weight * terms["cross_key"] + cfg.dul_temp_weight * terms["temp"]
            return corr if seg is None else seg + corr
        return total_loss(seg, terms["short"], terms["long"], cfg.lambda_short, cfg.lambda_long)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss of one batch in the current phase (module docstring).

        Raises:
            ValueError: ``frames`` not (B, T >= 2, 3, S, S) with S a multiple of 8, or the
                mask phase without ``video_id`` (B,).
        """
        frames = batch["frames"]
        if frames.dim() != 5 or frames.shape[1] < 2 or frames.shape[2] != 3 or frames.shape[-1] % STRIDE or frames.shape[-2] % STRIDE:
            raise ValueError(f"Mask-VOS batch 'frames' must be (B, T >= 2, 3, S, S), S a multiple of 8, got {tuple(frames.shape)}")
        b, t = frames.shape[:2]
        feats = {k: v.reshape(b, t, *v.shape[1:]) for k, v in self.encoder_net.features(frames.flatten(0, 1)).items()}
        cfg = self.config
        corr = self.phase == CORR or not cfg.freeze_encoder_mask
        terms = self.correspondence_losses(frames, feats["key"]) if corr else {}
        seg = None
        if self.phase == MASK:
            video_id = batch.get("video_id")
            if video_id is None or video_id.shape != (b,):
                raise ValueError("Mask-VOS mask phase needs batch 'video_id' of shape (B,) (per-video clusters)")
            labels = self.pseudo_masks(feats["key" if cfg.cluster_features == "key" else "res4"], video_id)
            seg = self.segmentation(frames, feats, labels)
            terms["seg"] = seg
            terms["objects"] = self._objects(labels)
        total = self.correspondence_total(terms, seg) if corr else seg
        return {"loss": total, **terms}

    @staticmethod
    def _objects(labels: torch.Tensor) -> torch.Tensor:
        """Mean number of distinct objects (labels > 0) per clip, (B, T, h, w) → scalar."""
        return torch.tensor([float(torch.unique(clip[clip > 0]).numel()) for clip in labels]).mean()

    @torch.no_grad()
    def pseudo_masks(self, feats: torch.Tensor, video_id: torch.Tensor) -> torch.Tensor:
        """Pseudo labels (B, T, h, w) int64 (0 background, m + 1 = kept cluster m) of the clips'
        cells, from their features (B, T, D, h, w): each clip is assigned to its video's
        cached centroids, clustered first from this clip (seed from seed, step, video id)
        when missing or older than the re-clustering interval (§3.1, §3.3)."""
        cfg = self.config
        b, t, _, h, w = feats.shape
        step = int(self.step_count)
        interval = int(self.recluster_interval) or None
        out = []
        for i in range(b):
            vid = int(video_id[i])
            points = pixel_embeddings(feats[i].detach(), cfg.position_code, cfg.position_frequencies, cfg.position_weight)
            s = self.clusters.fresh(vid, step, interval)
            if s < 0:
                centroids, keep = cluster_video(points, cfg.clusters, cfg.kmeans_iters, cfg.large_cluster, _mix(self.seed, step, vid))
                s = self.clusters.store(vid, centroids, keep, step)
            self.clusters.used[s] = step
            labels = pseudo_labels(assign(points, self.clusters.centroids[s]), self.clusters.keep[s])
            out.append(labels.reshape(t, h, w))
        return torch.stack(out)

    def segmentation(self, frames: torch.Tensor, feats: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """L_Seg (Eq. 10) averaged over the queries q = 1..T−1 of (B, T, 3, S, S) clips, each
        segmented from frames 0..q−1 with their pseudo masks (Eqs. 5-9); ``labels`` (B, T, h, w)."""
        b, t, _, size, _ = frames.shape
        m = self.config.clusters
        full = F.interpolate(labels.float(), scale_factor=STRIDE, mode="nearest").long()  # (B, T, S, S)
        onehot = F.one_hot(labels, m + 1).permute(0, 1, 4, 2, 3).float()  # (B, T, M+1, h, w)
        obj = (full[:, : t - 1, None] == torch.arange(1, m + 1, device=full.device).view(1, 1, m, 1, 1)).float()
        ref_frames = frames[:, : t - 1, None].expand(-1, -1, m, -1, -1, -1).reshape(-1, 3, size, size)
        res4 = feats["res4"][:, : t - 1, None].expand(-1, -1, m, -1, -1, -1).flatten(0, 2)
        values = self.value_encoder(ref_frames, obj.reshape(-1, 1, size, size), res4)
        values = values.reshape(b, t - 1, m, *values.shape[1:])  # (B, T-1, M, D', h, w)
        loss = frames.new_zeros(())
        for q in range(1, t):
            aff = reference_affinity(feats["key"][:, :q], feats["key"][:, q], self.config.temperature)
            v_q = readout(aff, values[:, :q].flatten(2, 3)).reshape(b, m, values.shape[3], *labels.shape[-2:])
            coarse = readout(aff, onehot[:, :q]).reshape(b, m + 1, *labels.shape[-2:])[:, 1:].detach()
            coarse = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
            q_feats = {k: feats[k][:, q] for k in ("res4", "skip8", "skip4")}
            logits = decode_objects(self.value_encoder, self.decoder, frames[:, q], q_feats, v_q, coarse)
            loss = loss + segmentation_loss(logits, full[:, q])
        return loss / (t - 1)

    # ------------------------------------------------------------------ loop hooks
    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Count the step; fix the re-clustering interval: ``recluster_steps``, else
        ``recluster_epochs / mask_epochs`` of the mask phase's steps (at least 1)."""
        self.step_count.fill_(step + 1)
        cfg = self.config
        if cfg.recluster_steps is not None:
            interval = cfg.recluster_steps
        else:
            mask_steps = total_steps - round(total_steps * cfg.corr_share)
            interval = max(1, round(mask_steps * cfg.recluster_epochs / cfg.mask_epochs))
        self.recluster_interval.fill_(interval)
        return {"videos_clustered": float((self.clusters.ids >= 0).sum())} if self.phase == MASK else {}

    def lr_at(self, step: int, total_steps: int, base_lr: float) -> float:
        """Warm-up: ``lr_corr`` × ``lr_corr_gamma`` ^ (completed parts of ``lr_corr_steps``
        equal parts) ([P] §3.3 "step" policy); mask stage: ``lr_mask``, constant.
        ``base_lr`` is not read."""
        cfg = self.config
        if self.phase == MASK:
            return cfg.lr_mask
        corr_steps = max(1, round(total_steps * cfg.corr_share))
        part = min(cfg.lr_corr_steps - 1, step * cfg.lr_corr_steps // corr_steps)
        return cfg.lr_corr * cfg.lr_corr_gamma**part

    def make_optimizer(self, params: Params, fused: bool = False) -> torch.optim.Optimizer:
        """Adam over the trainable parameters with the phase's rate and ``weight_decay``
        ([C] configs/ytvos.yaml OPT Adam, WEIGHT_DECAY 5e-4)."""
        cfg = self.config
        trainable = [q for q in self.parameters() if q.requires_grad]
        lr = cfg.lr_corr if self.phase == CORR else cfg.lr_mask
        return torch.optim.Adam(trainable, lr=lr, weight_decay=cfg.weight_decay, fused=fused)

    # ------------------------------------------------------------------ inference
    def encoder(self) -> nn.Module:
        """E (:class:`MaskVOSEncoder`): ``key`` (128-d, L2-normalised) or ``res4`` at stride 8."""
        return self.encoder_net

    @classmethod
    def encoder_spec(cls) -> EncoderSpec:
        """ImageNet-normalised RGB, stride 8, the key by default ([P] §3.3)."""
        return EncoderSpec(method=cls.name, normalization="imagenet", colour_space="rgb", stride=STRIDE, layers=LAYERS, default_layer="key")

    def inference_modules(self) -> dict[str, nn.Module]:
        """Saved beside ``encoder.pt``: ``value_encoder.pt`` (V) and ``decoder.pt`` (D)."""
        return {"value_encoder": self.value_encoder, "decoder": self.decoder}

    @classmethod
    def load_encoder(cls, state: dict[str, torch.Tensor] | None, spec: EncoderSpec) -> nn.Module:
        """A frozen :class:`MaskVOSEncoder` in eval mode from ``encoder.pt``'s state dict
        (None: random). Raises ValueError when the spec or state dict does not fit."""
        if spec.method != cls.name:
            raise ValueError(f"encoder spec is for method {spec.method!r}, not {cls.name!r}")
        return frozen(MaskVOSEncoder(), state, "the Mask-VOS encoder")

    @classmethod
    def load_inference_modules(cls, states: dict[str, dict[str, torch.Tensor]]) -> dict[str, nn.Module]:
        """Frozen V and D (eval mode) from the state dicts of :meth:`inference_modules`
        (the value head is read off the keys). Raises ValueError when one is missing or does not fit."""
        if not states:  # a random initialisation (the baseline of the method)
            return {"value_encoder": frozen(ValueEncoder("paper"), None, "V"), "decoder": frozen(Decoder(), None, "D")}
        missing = {"value_encoder", "decoder"} - set(states)
        if missing:
            raise ValueError(f"Mask-VOS inference needs {sorted(missing)}")
        head = "official" if any(k.startswith("block1.") for k in states["value_encoder"]) else "paper"
        return {
            "value_encoder": frozen(ValueEncoder(head), states["value_encoder"], "the Mask-VOS value encoder"),
            "decoder": frozen(Decoder(), states["decoder"], "the Mask-VOS decoder"),
        }


METHOD = MaskVOS
