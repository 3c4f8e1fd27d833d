"""LIIR side by side with the code the paper points to (github.com/shasha521/LIIR_pytorch),
on the same weights and the same tensors.

The script takes the path of a checkout of that repository and imports its models from
there at run time (nothing of it is copied here). It copies the weights of our encoder (and
of the code-design stride-8 head) into the reference model, then compares:

1. features: ``post_convolution(feature_extraction(x, ape=True))`` against
   :class:`hvc.methods.liir.model.LIIREncoder` on a frame whose width is not a multiple of 4
   (both zero-padded in normalised Lab);
2. training, phase 2 of the code design with an empty bank (``--usemomen --compact``): the
   stride-4 reconstruction, the stride-8 head's reconstruction and the compactness loss of
   the reference model against :meth:`hvc.methods.liir.method.LIIR.loss` (``phase2_design:
   code``, ``train_border: zero``, radius 6), both losses taken with the same formula;
3. inference: the soft labels of one frame of a DAVIS 2016 video from its five reference
   frames (0, 5, t-5, t-3, t-1), the reference model's colorizer (``training=False``,
   ``compact=True``, R = 14) against :mod:`hvc.methods.liir.inference` with each reading of
   the compact prior and the border, and the share of pixels whose arg-max differs.

Without a GPU, the reference code's CUDA-only pieces are replaced for the run: the
``spatial_correlation_sampler`` extension (when it is not installed) by a stand-in that
computes the same window dot products (:func:`hvc.methods.liir.window.window_correlation`;
so part 3 then checks the code's arithmetic around the sampler, not the compiled sampler),
``Tensor.cuda`` by the identity, the unused ``cv2`` import (when OpenCV is not
installed) by an empty module, ``nn.SyncBatchNorm`` by ``nn.BatchNorm2d`` (same
parameters, one process), the distributed gather of the bank by the identity.

    python benchmarks/liir_reference_check.py --reference /path/to/LIIR_pytorch \\
        --davis ../shared/data/davis2016-sample

Prints the largest absolute differences; the random-initialisation encoder's features are
scaled (``--feature-scale``) so that the affinities are peaked enough for the compact prior
to act (the share of compacted windows is printed).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import types
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hvc.inputs import normalize_input
from hvc.methods.liir.config import LIIRConfig
from hvc.methods.liir.method import LIIR
from hvc.methods.liir.window import window_correlation


class _CorrelationStandIn(torch.nn.Module):
    """``SpatialCorrelationSampler(kernel_size=1, patch_size=P, stride=1, padding=0,
    dilation=1, dilation_patch=1)``: (B, C, h, w) × 2 → (B, P, P, h, w) window dot
    products, 0 outside the frame (odd P only)."""

    def __init__(self, kernel_size=1, patch_size=1, stride=1, padding=0, dilation=1, dilation_patch=1) -> None:
        super().__init__()
        self.patch, self.dilation_patch = patch_size, dilation_patch
        self.supported = (kernel_size, stride, padding, dilation) == (1, 1, 0, 1) and patch_size % 2 == 1

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if not self.supported or self.dilation_patch != 1:
            raise NotImplementedError("the stand-in correlation sampler covers the undilated odd windows LIIR's compact path uses")
        n, _, h, w = a.shape
        return window_correlation(a, b, self.patch // 2).transpose(1, 2).reshape(n, self.patch, self.patch, h, w)


@contextlib.contextmanager
def _batchnorm_for_syncbatchnorm():
    sync = torch.nn.SyncBatchNorm
    torch.nn.SyncBatchNorm = torch.nn.BatchNorm2d
    try:
        yield
    finally:
        torch.nn.SyncBatchNorm = sync


def import_reference(path: Path):
    """The reference code's ``models.mast_momen`` module from the checkout at ``path``."""
    if not (path / "models" / "mast_momen.py").is_file():
        sys.exit(f"{path}: not a checkout of LIIR_pytorch (no models/mast_momen.py)")
    sys.path.insert(0, str(path))
    try:
        import spatial_correlation_sampler  # noqa: F401
    except ImportError:
        print("spatial_correlation_sampler is not installed: using the stand-in window correlation")
        sys.modules["spatial_correlation_sampler"] = types.SimpleNamespace(SpatialCorrelationSampler=_CorrelationStandIn)
    try:
        import cv2  # noqa: F401
    except ImportError:  # imported by models/colorizer_momen.py, not used by it
        sys.modules["cv2"] = types.ModuleType("cv2")
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *args, **kwargs: self  # the code calls .cuda() unconditionally
    import models.mast_momen as mast_momen

    mast_momen.concat_all_gather = lambda t: t  # one process: the distributed gather is the identity
    return mast_momen


def reference_model(module, training: bool, batch: int, state: dict[str, torch.Tensor]):
    """The reference MAST/LIIR model (``--usemomen --compact``) holding ``state``."""
    args = Namespace(training=training, compact=True, bsize=batch, factor=1, enc_mo=0.999, semantic=False)
    with _batchnorm_for_syncbatchnorm():
        model = module.MAST(args)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("colorizer.") and not k.startswith("conv_semantic") for k in missing):
        sys.exit(f"weights do not fit the reference model: missing {missing}, unexpected {unexpected}")
    return model


def our_method(seed: int, feature_scale: float) -> LIIR:
    """Our LIIR (code design, zero border, radius 6 at any size) at random initialisation,
    the post-convolution scaled by ``feature_scale``; the key head equal to the head."""
    torch.manual_seed(seed)
    cfg = LIIRConfig(phase2_design="code", train_border="zero", train_radius_size=None, bank_frames=64)
    method = LIIR(cfg, phase=2, batch_size=2)
    with torch.no_grad():
        method.online.post_convolution.weight.mul_(feature_scale)
        method.online.post_convolution.bias.mul_(feature_scale)
    method.update_key(cfg.momentum)  # first call: the key head becomes a copy of the head
    return method


def shared_state(method: LIIR) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in method.online.state_dict().items()}
    state.update({f"conv_semantic.{k}": v.clone() for k, v in method.head.state_dict().items()})
    state.update({f"conv_semantic_k.{k}": v.clone() for k, v in method.head_key.state_dict().items()})
    return state


def compare_features(method: LIIR, ref_model) -> float:
    """Largest |difference| of the post-conv features of a 60 × 110 frame (eval mode)."""
    x = torch.randn(1, 3, 60, 110, generator=torch.Generator().manual_seed(1)) * 0.5
    method.eval(), ref_model.eval()
    with torch.no_grad():
        ours = method.online(x)
        padded = F.pad(x, (0, 2, 0, 0))  # the reference evaluation pads the normalised frames
        theirs = ref_model.post_convolution(ref_model.feature_extraction(padded, ape=True))
    return float((ours - theirs).abs().max())


def compare_training(method: LIIR, ref_model, size: int) -> dict[str, float]:
    """Phase-2 losses (code design, empty bank) of one batch of 2 pairs, ours and theirs."""
    gen = torch.Generator().manual_seed(2)
    frames = (torch.rand(2, 2, 3, size, size, generator=gen) * 255).to(torch.uint8)
    frames = normalize_input(frames.flatten(0, 1), "lab").view(2, 2, 3, size, size)
    method.train(), ref_model.train()
    torch.manual_seed(3)
    ours = method.loss({"frames": frames, "video_id": torch.arange(2)})
    torch.manual_seed(3)  # the same dropped channel
    channel = [1, 2][int(torch.randint(2, (1,)))]
    keep = torch.ones(3, 1, 1)
    keep[channel] = 0
    inputs, target = frames * keep * 1.5, frames[:, :, channel : channel + 1]
    with torch.no_grad():
        out, out2, compact = ref_model([inputs[:, 0]], [target[:, 0]], inputs[:, 1], [0, 2], 4, torch.arange(2))
    goal = target[:, 1]
    rec = F.smooth_l1_loss(F.interpolate(out, goal.shape[-2:], mode="bilinear") * 20, goal * 20)
    goal2 = F.interpolate(goal, out2.shape[-2:], mode="bilinear")
    rec2 = F.smooth_l1_loss(out2 * 20, goal2 * 20)
    pairs = {"rec": (ours["rec"], rec), "rec_inter": (ours["rec_inter"], rec2), "compact": (ours["compact"], compact)}
    return {k: (float(a.detach()), float(b.detach())) for k, (a, b) in pairs.items()}


def davis_frames(root: Path, scale: float, count: int) -> tuple[list[torch.Tensor], list[np.ndarray]]:
    """The first ``count`` frames (normalised Lab, (1, 3, H, W)) and masks of the first DAVIS
    2016 val video, resized by ``scale``."""
    from PIL import Image

    from hvc.eval.readers import read_benchmark
    from hvc.io import read_mask

    video = read_benchmark("davis2016", root)[0]
    frames = video.read_frames()[:count]
    size = (round(frames[0].shape[1] * scale), round(frames[0].shape[0] * scale))
    lab = [normalize_input(torch.from_numpy(np.array(Image.fromarray(f).resize(size, Image.BILINEAR))).permute(2, 0, 1)[None].contiguous(), "lab") for f in frames]
    masks = [np.asarray(Image.fromarray(read_mask(video.masks[i])).resize(size, Image.NEAREST)) for i in range(count)]
    return lab, masks


def compare_inference(method: LIIR, ref_model, frames: list[torch.Tensor], masks: list[np.ndarray], t: int) -> list[dict]:
    """Soft labels of frame ``t`` from its references, theirs against each of our readings:
    largest |difference| of the label channels and the share of pixels whose arg-max differs."""
    from hvc.eval import liir_propagation as lp

    refs = lp.LIIRInference().reference_frames(t)
    H, W = masks[0].shape
    Hp, Wp = -(-H // 4) * 4, -(-W // 4) * 4
    padded = [F.pad(f, (0, Wp - W, 0, Hp - H)) for f in frames]
    labels = [np.pad(m, ((0, Hp - H), (0, Wp - W))) for m in masks]
    num = int(max(m.max() for m in masks))
    method.eval(), ref_model.eval()
    with torch.no_grad():
        anno = [torch.from_numpy(labels[i].astype(np.float32))[None, None] for i in refs]
        theirs = ref_model([padded[i] for i in refs], anno, padded[t], refs, t)[:, : num + 1]
        feats = {i: method.online(padded[i]) for i in refs + [t]}
        grids = {i: lp._onehot_grid(labels[i], num, 4, torch.device("cpu")) for i in refs}
        gain = torch.tensor([1.0] + [1.05] * num).view(1, -1, 1, 1)
        aff = lp.reference_affinity(feats[t], torch.cat([feats[i] for i in refs]), 14, "zero")
        compacted = float((aff.max(-1).values > 0.1).float().mean())
        rows = []
        for compaction, border in [("reference", "zero"), ("joint", "zero"), ("reference", "mask"), ("joint", "mask")]:
            cfg = lp.LIIRInference(radius_size=None, compaction=compaction, border=border)
            ours = lp._predict_frame(feats[t], [(feats[i], grids[i]) for i in refs], cfg, 14) * gain
            up = [F.interpolate(x, (Hp, Wp), mode="bilinear", align_corners=False)[0].argmax(0)[:H, :W] for x in (ours, theirs)]
            rows.append({"compaction": compaction, "border": border, "max_abs": float((ours - theirs).abs().max()),
                         "pixels_differ": float((up[0] != up[1]).float().mean()), "compacted_windows": compacted})  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", type=Path, required=True, help="checkout of github.com/shasha521/LIIR_pytorch")
    ap.add_argument("--davis", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "davis2016-sample")
    ap.add_argument("--size", type=int, default=256, help="training pair side, pixels (the code's bank holds 32 x 32 maps: 256)")
    ap.add_argument("--scale", type=float, default=0.25, help="DAVIS frames resized by this factor (0.25: 120 x 214)")
    ap.add_argument("--frame", type=int, default=10, help="the frame whose soft labels are compared")
    ap.add_argument("--feature-scale", type=float, default=40.0, help="factor on the random post-convolution")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(2)
    module = import_reference(a.reference.resolve())
    method = our_method(a.seed, a.feature_scale)
    state = shared_state(method)
    print(f"features, max |ours - theirs|: {compare_features(method, reference_model(module, False, 2, state)):.3g}")
    method = our_method(a.seed, a.feature_scale)  # fresh BN statistics for the training check
    for name, (ours, theirs) in compare_training(method, reference_model(module, True, 2, shared_state(method)), a.size).items():
        print(f"training {name}: ours {ours:.6f} theirs {theirs:.6f} |diff| {abs(ours - theirs):.3g}")
    frames, masks = davis_frames(a.davis, a.scale, a.frame + 1)
    method = our_method(a.seed, a.feature_scale)
    for row in compare_inference(method, reference_model(module, False, 1, shared_state(method)), frames, masks, a.frame):
        print(
            f"inference compaction={row['compaction']} border={row['border']}: max |soft label diff| {row['max_abs']:.3g}, "
            f"arg-max differs at {100 * row['pixels_differ']:.3f} % of pixels ({100 * row['compacted_windows']:.1f} % of windows compacted)"
        )


if __name__ == "__main__":
    main()
