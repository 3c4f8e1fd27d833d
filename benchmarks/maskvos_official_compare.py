"""Compare the Mask-VOS re-implementation (hvc/methods/maskvos) with the authors' code on
the same tensors, on the CPU.

Usage: python benchmarks/maskvos_official_compare.py --official PATH [--json OUT]

PATH is a checkout of github.com/0liliulei/Mask-VOS. Its files are imported from there at
run time (nothing of it is copied here), without running its ``models/__init__.py`` (which
builds every network and needs OpenCV): ``models`` and ``labelprop`` are bound to the
checkout's folders as namespace packages. Where the authors' functions call ``.cuda()``
(``batched_affinity``, ``gen_mask.step_seg``) and no GPU is present, ``Tensor.cuda`` is
made the identity for that call. OpenCV is only used by their code to write mask PNGs
(``cv2.imwrite``); when it is not installed a stand-in module records the written arrays,
which is how their pseudo masks are read back.

Compared (max |ours − theirs| on the same inputs and weights, or the adjusted Rand index of
two partitions):

* decoder D: their ``models.modules.Decoder`` weights loaded into ours (its ResNet-50 skip
  widths 512 and 256), same input;
* the residual block and CBAM of the official value head (models/modules.py ``ResBlock``,
  models/cbam.py ``CBAM``), their weights in ours;
* soft aggregation: ``FrameworkMask.aggregate`` vs ``soft_aggregate``;
* affinity (Eq. 6, τ = 0.05): ``framework_mask.batched_affinity`` vs ``reference_affinity``;
* readout (Eq. 7): ``MemoryReader.readout`` vs ``readout``;
* clustering: ``gen_mask.step_seg`` (7 clusters, every 8th frame, no position code, sklearn
  KMeans) on given features vs ours with the same settings, and both vs the truth of a
  generated video.

* the code's correspondence terms (``corr_loss: official``): ``Framework._ref_loss`` and
  ``_cluster_grid`` + ``_ce_loss`` vs ``dul_cross_view_loss`` and ``dul_temporal_loss`` on the
  same keys and anchor grids.

Not comparable, and why: the paper's correspondence losses L_Short and L_Long (Eqs. 12-15;
the official code has no implementation of them, it trains with DUL's losses); the full mask-stage loss (``FrameworkMask.forward`` hard-wires
ResNet-50 encoders, models/__init__.py, and two objects per clip); the value encoder as a
whole (their ResNet-50 trunk, ours ResNet-18); the mask-embedded inference (infer_mask.py
needs the DAVIS loader, a trained checkpoint and CUDA memory management).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from hvc.methods.maskvos.clustering import assign, kmeans, pixel_embeddings
from hvc.methods.maskvos.loss import dul_cross_view_loss, dul_temporal_loss, readout, reference_affinity
from hvc.methods.maskvos.model import ChannelGate, Decoder, ResBlock, SpatialGate, soft_aggregate

WRITTEN: dict[str, np.ndarray] = {}


def _cv2_stand_in() -> None:
    """Register a ``cv2`` module whose ``imwrite`` records arrays (OpenCV absent)."""
    try:
        import cv2  # noqa: F401
    except ImportError:
        stub = types.ModuleType("cv2")
        stub.imwrite = lambda name, array: WRITTEN.__setitem__(str(name), np.asarray(array)) or True
        sys.modules["cv2"] = stub


def load_official(root: Path) -> dict[str, types.ModuleType]:
    """The authors' modules from checkout ``root``. Raises SystemExit when it is not one."""
    if not (root / "models" / "modules.py").is_file() or not (root / "gen_mask.py").is_file():
        raise SystemExit(f"{root}: not a checkout of github.com/0liliulei/Mask-VOS (models/modules.py, gen_mask.py missing)")
    sys.path.insert(0, str(root))
    for pkg in ("models", "labelprop"):
        mod = types.ModuleType(pkg)
        mod.__path__ = [str(root / pkg)]
        sys.modules[pkg] = mod
    _cv2_stand_in()
    names = {"modules": "models.modules", "framework_mask": "models.framework_mask", "framework": "models.framework", "cbam": "models.cbam"}
    return {k: importlib.import_module(v) for k, v in names.items()}


@contextlib.contextmanager
def cpu_cuda():
    """``Tensor.cuda`` as the identity while no GPU is present (their code calls it)."""
    if torch.cuda.is_available():
        yield
        return
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


@torch.no_grad()
def compare_networks(off: dict) -> dict[str, float]:
    """Decoder, ResBlock and CBAM: their weights in ours, same inputs."""
    torch.manual_seed(0)
    theirs = off["modules"].Decoder()
    theirs.eval()  # their BaseNet.eval returns None: not chained
    ours = Decoder(skip8=512, skip4=256).eval()
    ours.load_state_dict(theirs.state_dict())
    x, f8, f4 = torch.randn(2, 1024, 8, 8), torch.randn(2, 512, 8, 8), torch.randn(2, 256, 16, 16)
    out = {"decoder": _diff(ours(x, f8, f4), theirs(x, f8, f4))}
    block_t, block_o = off["modules"].ResBlock(768, 512), ResBlock(768, 512)
    block_o.load_state_dict(block_t.state_dict())
    y = torch.randn(2, 768, 8, 8)
    out["resblock"] = _diff(block_o(y), block_t(y))
    cbam_t = off["cbam"].CBAM(512)
    cbam_o = torch.nn.Sequential(ChannelGate(512), SpatialGate())
    rename = {"ChannelGate.mlp.": "0.mlp.", "SpatialGate.spatial.conv.": "1.spatial."}
    state = {}
    for k, v in cbam_t.state_dict().items():
        for a, b in rename.items():
            k = k.replace(a, b)
        state[k] = v
    cbam_o.load_state_dict(state)
    z = torch.randn(2, 512, 8, 8)
    out["cbam"] = _diff(cbam_o(z), cbam_t(z))
    return out


@torch.no_grad()
def compare_readout(off: dict) -> dict[str, float]:
    """Soft aggregation, the affinity of Eq. 6 and the readout of Eq. 7."""
    torch.manual_seed(1)
    fm = off["framework_mask"]
    prob = torch.rand(2, 3, 16, 16)
    out = {"aggregate": _diff(soft_aggregate(prob, dim=1), fm.FrameworkMask.aggregate(None, prob, dim=1))}
    keys = torch.nn.functional.normalize(torch.randn(2, 2, 128, 8, 8), dim=2)  # (B, N, D, h, w)
    query = torch.nn.functional.normalize(torch.randn(2, 128, 8, 8), dim=1)
    with cpu_cuda():
        theirs = fm.batched_affinity(keys, query, TEM=0.05)
    ours = reference_affinity(keys, query, 0.05)
    out["affinity"] = _diff(ours, theirs)
    values = torch.randn(2, 64, 2, 8, 8)  # their (B, C, T, h, w)
    qv = torch.randn(2, 64, 8, 8)
    mem = off["modules"].MemoryReader().readout(ours, values, qv)[:, :64]
    out["readout"] = _diff(readout(ours, values.permute(0, 2, 1, 3, 4)).view(2, 64, 8, 8), mem)
    return out


def compare_dul_losses(off: dict) -> dict[str, float]:
    """The code's correspondence terms on the same unit keys and anchor grid: their
    ``Framework._ref_loss`` ("cross_key") and ``_cluster_grid`` + ``_ce_loss`` ("temp"),
    with identity alignments, vs :func:`dul_cross_view_loss` and :func:`dul_temporal_loss`.
    Their grids are drawn from torch's global generator; the same draws are replayed for ours."""
    cfg = types.SimpleNamespace(TEST=types.SimpleNamespace(TEMP=0.05), MODEL=types.SimpleNamespace(GRID_SIZE=8, GRID_SIZE_REF=4, CE_REF=0.1))
    fw = off["framework"].Framework(cfg, torch.nn.Identity())
    b, t = 2, 3
    g = torch.Generator().manual_seed(2)
    k1 = torch.nn.functional.normalize(torch.randn(b * t, 128, 8, 8, generator=g), dim=1)
    k2 = torch.nn.functional.normalize(k1 + 0.3 * torch.randn(b * t, 128, 8, 8, generator=g), dim=1)
    out = {}
    with torch.no_grad():
        torch.manual_seed(5)
        index = fw._sample_index(k1[::t], T=1, N=4).reshape(b, 16)
        torch.manual_seed(5)
        theirs = fw._ref_loss(k1[::t], k2[::t], N=4)
        out["dul cross_key"] = _diff(dul_cross_view_loss(k1[::t], k2[::t], index, 0.05), theirs)
        eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(b * t, 2, 3)
        torch.manual_seed(6)
        index = fw._sample_index(k1, T=t, N=8).reshape(b, 64)
        torch.manual_seed(6)
        vals, pseudo, _, _ = fw._cluster_grid(k1, k2, eye, eye, t)
        _, theirs, _ = fw._ce_loss(vals, pseudo, t)
        ours = dul_temporal_loss(k1.view(b, t, 128, 8, 8), k2.view(b, t, 128, 8, 8), index, 0.05)
        out["dul temp"] = _diff(ours, theirs)
        out["dul temp (value)"] = float(theirs)
    return out


def _seven_segments(frames: int = 16, size: int = 16, dim: int = 512, seed: int = 0):
    """Unit features (T, D, h, w) of a video with 7 known segments (vertical bands) and its truth."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.nn.functional.normalize(torch.randn(7, dim, generator=g), dim=1)
    cols = (torch.arange(size) * 7 // size).view(1, 1, size).expand(frames, size, size)
    truth = (cols + torch.arange(frames).view(frames, 1, 1) // 6) % 7
    feats = protos[truth].permute(0, 3, 1, 2) + 0.2 * torch.randn(frames, dim, size, size, generator=g)
    return torch.nn.functional.normalize(feats, dim=1), truth


def _official_masks(off_root: Path, feats: torch.Tensor) -> np.ndarray:
    """Labels (T, h, w) of ``gen_mask.step_seg`` run on ``feats`` through a stand-in network."""
    def not_used(*args, **kwargs):
        raise RuntimeError("models.get_model is not used by gen_mask.step_seg")

    sys.modules["models"].get_model = not_used  # gen_mask imports it for its __main__ only
    gen_mask = importlib.import_module("gen_mask")
    t = feats.shape[0]

    def net(frames, embd_only=True, norm=True):
        idx = frames[:, 0, 0, 0].long()
        return None, feats[idx], None

    frames = torch.arange(t, dtype=torch.float32).view(t, 1, 1, 1).expand(t, 3, 8, 8).contiguous()
    cfg = types.SimpleNamespace(TEST=types.SimpleNamespace(KEY="res4"))
    WRITTEN.clear()
    with tempfile.TemporaryDirectory() as tmp, cpu_cuda(), contextlib.redirect_stdout(io.StringIO()):
        gen_mask.step_seg(cfg, net, frames, [[f"{i:05d}"] for i in range(t)], ["video"], tmp)
        labels = np.full((t,) + tuple(feats.shape[-2:]), -1)
        for name, mask in WRITTEN.items():
            frame, cluster = Path(name).name.rsplit("_", 1)
            labels[int(frame)][mask.reshape(feats.shape[-2:]) > 0] = int(Path(cluster).stem)
    if (labels < 0).any() or not WRITTEN:
        raise RuntimeError("gen_mask.step_seg wrote no complete masks (is OpenCV installed? the stand-in needs it absent)")
    return labels


def compare_clustering(root: Path, repeats: int = 5) -> dict[str, float]:
    """Their ``step_seg`` and ours (7 clusters, every 8th frame fitted, no position code)
    on the same features, ``repeats`` times: their KMeans draws from numpy's global
    generator (``random_state=None``), seeded with i before run i; ours gets
    ``random_state=i``. ARI between the two partitions of each run (1 = identical up to
    cluster names) and of each against the truth, as min and mean over the runs."""
    feats, truth = _seven_segments()
    flat = truth.flatten().numpy()
    points = pixel_embeddings(feats, position=False, frequencies=1, weight=0.0)
    fit = pixel_embeddings(feats[::8], position=False, frequencies=1, weight=0.0)
    pair, ours_truth, theirs_truth = [], [], []
    for i in range(repeats):
        np.random.seed(i)
        theirs = _official_masks(root, feats).ravel()
        ours = assign(points, kmeans(fit, 7, iters=300, seed=i)).numpy()
        pair.append(adjusted_rand_score(theirs, ours))
        ours_truth.append(adjusted_rand_score(flat, ours))
        theirs_truth.append(adjusted_rand_score(flat, theirs))
    out = {}
    for name, values in (("ours vs theirs", pair), ("ours vs truth", ours_truth), ("theirs vs truth", theirs_truth)):
        out[f"ARI {name} (min)"] = float(np.min(values))
        out[f"ARI {name} (mean)"] = float(np.mean(values))
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, required=True, help="checkout of github.com/0liliulei/Mask-VOS")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    off = load_official(args.official.resolve())
    figures = {**compare_networks(off), **compare_readout(off), **compare_dul_losses(off), **compare_clustering(args.official.resolve())}
    for k, v in figures.items():
        print(f"{k:24s} {v:.3g}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
