"""STT against the authors' code on the same tensors (CPU).

Usage: python benchmarks/stt_official_compare.py PATH_TO_Spa-then-Temp [--sizes 128 256] [--seeds 3]

PATH is a checkout of github.com/qianduoduolr/Spa-then-Temp. Its modules are imported from
there at run time, with stubs for what a CPU-only machine without mmcv lacks:

* ``mmcv`` (registries, ``auto_fp16``, checkpoint loaders: not used by the compared code),
  ``tkinter.messagebox`` (an unused import of framework.py), the package ``__init__`` files
  of ``vcl`` (they import every mmcv-based module); ``build_backbone``/``build_loss`` hand
  over our student and teacher and the authors' own ``MSELoss``;
* ``mmcv.ops.Correlation``, a CUDA-only operator (no CPU kernel), which framework.py uses
  for the entropy's correlation: replaced by :class:`ShiftCorrelation` below (mmcv's
  definition: sum over channels of input1(y, x) · input2(y + dy, x + dx), zero outside,
  output (B, 2R+1, 2R+1, H, W));
* ``Tensor.cuda`` while ``make_mask`` builds its window masks (it calls ``.cuda()``);
* ``numpy`` as framework.py sees it: ``int()`` of the one-element array ``dropout2d_lab``
  draws (an error since NumPy 2) converts as in NumPy 1; the draws are NumPy's own.

Compared, per seed and input size (batch of 2 frame pairs, the student and the frozen
teacher shared by both sides, one dropped colour channel for both):
the authors' ``Framework.forward_train`` losses vs ours (``STT.temporal_loss``); the res4
local correlation, the entropy mask, the pooled distillation target and the global
correlations of student and teacher that the authors' loss receives (recorded by a spy on
their loss module) vs ours; and the inference readout of one frame from the same features
(their ``masked_attention_efficient`` with ``spatial_neighbor(mode='square')`` vs
:func:`hvc.methods.stt.inference.predict_square`, and the generic propagation's
``predict_dense`` for contrast). Prints one line per figure.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hvc.inputs import normalize_input
from hvc.methods.liir.loss import window_size
from hvc.methods.stt.inference import STTPropagation, predict_square
from hvc.methods.stt.loss import (
    entropy,
    entropy_correlation,
    entropy_mask,
    global_correlation,
    local_correlation,
    pooled_target,
    window_index,
)
from hvc.methods.stt.method import STT
from hvc.methods.stt.params import STTParams


class ShiftCorrelation(torch.nn.Module):
    """CPU stand-in of ``mmcv.ops.Correlation(max_displacement=R)`` (kernel 1, stride 1)."""

    def __init__(self, max_displacement: int = 1, **_: object) -> None:
        super().__init__()
        self.r = max_displacement

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        r, (_, _, h, w) = self.r, a.shape
        padded = F.pad(b, (r, r, r, r))
        rows = [torch.stack([(a * padded[..., dy : dy + h, dx : dx + w]).sum(1) for dx in range(2 * r + 1)], 1) for dy in range(2 * r + 1)]
        return torch.stack(rows, 1)  # (B, P, P, H, W)


class _OneElement(np.ndarray):
    """An array that converts to int when it holds one element, as NumPy < 2 allowed."""

    def __int__(self) -> int:
        return int(self.reshape(()).item())


class _NumpyRandom:
    def __getattr__(self, name: str) -> object:
        return getattr(np.random, name)

    @staticmethod
    def choice(*args: object, **kwargs: object) -> np.ndarray:
        return np.asarray(np.random.choice(*args, **kwargs)).view(_OneElement)


class _Numpy:
    """numpy for framework.py: ``random.choice`` results accept ``int()`` (its dropout2d_lab
    calls int() on a one-element array, an error since NumPy 2); the same draws."""

    random = _NumpyRandom()

    def __getattr__(self, name: str) -> object:
        return getattr(np, name)


class _Registry:
    def register_module(self, *args: object, **kwargs: object):
        return (lambda cls: cls) if not args or not isinstance(args[0], type) else args[0]


def _module(name: str, path: Path | None = None, **attrs: object) -> types.ModuleType:
    mod = types.ModuleType(name)
    if path is not None:
        mod.__path__ = [str(path)]
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


def _public(mod: types.ModuleType) -> dict[str, object]:
    return {k: v for k, v in vars(mod).items() if not k.startswith("_")}


def load_official(root: Path) -> dict[str, object]:
    """Import the compared modules of the checkout ``root`` with the stubs; returns them by name."""
    vcl = root / "vcl"
    if not (vcl / "models" / "trackers" / "framework.py").is_file():
        raise SystemExit(f"{root}: not a checkout of Spa-then-Temp (vcl/models/trackers/framework.py missing)")
    identity = lambda *a, **k: (lambda f: f)  # noqa: E731
    _module("mmcv", imresize=None)
    _module("mmcv.runner", auto_fp16=identity, load_state_dict=None, load_checkpoint=None)
    _module("mmcv.ops", Correlation=ShiftCorrelation)
    _module("tkinter", path=None)
    _module("tkinter.messagebox", NO="no")
    for pkg in ("vcl", "vcl/models", "vcl/models/common", "vcl/models/trackers", "vcl/models/losses", "vcl/utils"):
        _module(pkg.replace("/", "."), root / pkg)
    _module("vcl.utils.helpers")
    sys.modules["vcl.utils"].get_root_logger = logging.getLogger
    _module("vcl.models.registry", MODELS=_Registry(), LOSSES=_Registry())
    mods = {n: importlib.import_module(f"vcl.models.common.{n}") for n in ("utils", "correlation", "local_attention", "affinity_utils")}
    common = sys.modules["vcl.models.common"]
    for m in mods.values():
        common.__dict__.update(_public(m))
    common.np = _Numpy()
    losses = importlib.import_module("vcl.models.losses.losses")
    _module("vcl.models.builder", build_backbone=lambda cfg: cfg["module"], build_loss=lambda cfg: losses.MSELoss(reduction=cfg["reduction"]), build_model=None)
    framework = importlib.import_module("vcl.models.trackers.framework")
    return {"framework": framework, "losses": losses, **mods}


class _Levels(torch.nn.Module):
    """Our student as the authors' backbone: (N, 3, S, S) → (res3, res4, res5)."""

    def __init__(self, student: torch.nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = self.student(x, ("layer2", "layer3", "layer4"))
        return f["layer2"], f["layer3"], f["layer4"]


class _Res5(torch.nn.Module):
    """Our teacher as the authors' ``backbone_t``: (N, 3, S, S) → res5."""

    def __init__(self, teacher: torch.nn.Module) -> None:
        super().__init__()
        self.teacher = teacher

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x)["layer4"]


def build_framework(official: dict, method: STT, size: int):
    """The authors' ``Framework`` with configs/train/train.py's settings around our networks,
    and a spy recording the (pred, target, weight) of each call of its loss."""
    cfg = method.config
    real_cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # make_mask builds its masks with .cuda()
    try:
        fw = official["framework"].Framework(
            backbone={"module": _Levels(method.student)},
            backbone_t={"module": _Res5(method.teacher)},
            loss={"type": "MSELoss", "reduction": "mean"},
            feat_size=[size // 4, size // 8],
            radius=list(cfg.radii),
            downsample_rate=[4, 8],
            detach=True,
            loss_weight={"stage0_l1_loss": 1, "stage1_l1_loss": 1, "local_corrdis_loss": cfg.local_weight, "global_corrdis_loss": cfg.global_weight},
        )
    finally:
        torch.Tensor.cuda = real_cuda
    calls: list[tuple[torch.Tensor, ...]] = []
    fw.loss = _Spy(fw.loss, calls)
    return fw.train(), calls


class _Spy(torch.nn.Module):
    """Wraps the authors' loss module; records (pred, target, weight) of every call."""

    def __init__(self, inner: torch.nn.Module, calls: list) -> None:
        super().__init__()
        self.inner, self.calls = inner, calls

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append((pred.detach(), target.detach(), None if weight is None else weight.detach()))
        return self.inner(pred, target, weight=weight)


def window_to_dense(corr: torch.Tensor, h: int, w: int, radius: int) -> torch.Tensor:
    """(B, h·w, P²) window rows → (B, h·w, h·w) dense rows."""
    index, valid = window_index(h, w, radius, corr.device)
    dense = corr.new_zeros(corr.shape[0], h * w, h * w)
    return dense.scatter_add(2, index[None].expand_as(corr), corr * valid)


def _pair_batch(method: STT, size: int, seed: int) -> dict[str, torch.Tensor]:
    """Two frame pairs (a smooth colour field and the same shifted) through STT's own crop."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(2, 3, 8, 8, generator=g)
    frames = (F.interpolate(low, size=(size + 32, size + 32), mode="bicubic", align_corners=False).clamp(0, 1) * 255).to(torch.uint8)
    clips = torch.stack([frames, torch.roll(frames, shifts=(3, 5), dims=(-2, -1))], 1)
    torch.manual_seed(seed)
    crop = method.data_spec(None, 1).transform
    samples = [crop(c) for c in clips]
    return {k: torch.stack([s[k] for s in samples]) for k in ("frames", "rgb")}


def _channel_of(seed: int) -> int:
    """The Lab channel the authors' ``dropout2d_lab`` drops after ``np.random.seed(seed)``."""
    np.random.seed(seed)
    np.random.choice(np.arange(1, 2), 1)
    return int(np.random.choice(np.arange(1, 3), 1, replace=False)[0])


def compare_training(official: dict, size: int, seed: int) -> dict[str, float]:
    """Losses and intermediate tensors of one batch, both sides; returns the figures."""
    torch.manual_seed(seed)
    method = STT(STTParams(crop_size=size, moco_queue=16))
    method.start_phase(1)
    method.train()
    batch = _pair_batch(method, size, seed)
    fw, calls = build_framework(official, method, size)
    channel = _channel_of(seed)
    imgs = normalize_input(batch["rgb"], "imagenet")[:, None]
    np.random.seed(seed)
    theirs = fw.forward_train(imgs, batch["frames"][:, None].clone())
    ours = method.temporal_loss(batch, channel=channel)
    (c1_theirs, target_theirs, weight_theirs), (g_theirs, gt_theirs, _) = calls
    # our intermediates on the same dropped input (train-mode BN: the same batch statistics)
    inputs = batch["frames"].clone()
    inputs[:, :, channel] = 0
    inputs = inputs * 1.5
    f = method.student(inputs.flatten(0, 1), ("layer2", "layer3", "layer4"))
    f = {k: v.view(2, 2, *v.shape[1:]) for k, v in f.items()}
    r0, r1 = method.config.radii
    h0, h1 = size // 4, size // 8
    c0 = local_correlation(f["layer2"][:, 1], f["layer2"][:, 0], r0)
    c1 = local_correlation(f["layer3"][:, 1], f["layer3"][:, 0], r1)
    mask = entropy_mask(entropy(entropy_correlation(f["layer3"][:, 1], f["layer3"][:, 0], r1)).view(2, h1, h1), 0.7, "official")
    target = pooled_target(c0, (h0, h0), r0, r1, "mean")
    g_ours = global_correlation(f["layer4"][:, 1], f["layer4"][:, 0])
    gt_ours = method.teacher_correlation(batch["rgb"])
    # the same mask rule on the stand-in correlation's dot products: separates the rule from rounding
    shifted = ShiftCorrelation(r1)(f["layer3"][:, 1], f["layer3"][:, 0]).flatten(1, 2).flatten(2).transpose(1, 2)
    mask_same_input = entropy_mask(entropy(shifted.softmax(-1)).view(2, h1, h1), 0.7, "official")
    their_loss = float(sum(theirs.values()).detach())
    d = lambda a, b: float((a - b).detach().abs().max())  # noqa: E731
    return {
        "rec_res3": d(theirs["stage0_l1_loss"], ours["rec_res3"]),
        "rec_res4": d(theirs["stage1_l1_loss"], ours["rec_res4"]),
        "local (x1000)": d(theirs["local_corrdis_loss"], method.config.local_weight * ours["local"]),
        "global (x50)": d(theirs["global_corrdis_loss"], method.config.global_weight * ours["global"]),
        "total": abs(their_loss - float(ours["loss"].detach())),
        "total value": their_loss,
        "res4 correlation": d(c1_theirs, window_to_dense(c1, h1, h1, r1)),
        "entropy mask cells differing": float((weight_theirs[:, :, 0] != mask.flatten(1)).sum()),
        "entropy mask cells differing, same dot products": float((weight_theirs[:, :, 0] != mask_same_input.flatten(1)).sum()),
        "entropy mask cells": float(mask.numel()),
        "entropy mask kept share": float(mask.mean()),
        "pooled target": d(target_theirs, window_to_dense(target, h1, h1, r1)),
        "student global correlation": d(g_theirs[:, 0], g_ours),
        "teacher global correlation": d(gt_theirs[:, 0], gt_ours),
    }


def compare_inference(official: dict, seed: int, h: int = 20, w: int = 28, frames: int = 6) -> dict[str, float]:
    """One frame's soft labels from the same context: theirs, ours, the generic propagation's."""
    from hvc.propagation import PropagationConfig, predict_dense

    g = torch.Generator().manual_seed(seed)
    cfg = STTPropagation(radius=6, topk=10, temperature=0.07, query_chunk=97)
    feats = F.normalize(torch.randn(frames, 32, h, w, generator=g), dim=1)
    labels = torch.rand(frames, 3, h, w, generator=g).softmax(1)
    ctx = [0] + list(range(frames - 1))  # frame 0 as "first" and among the previous frames
    mask = official["affinity_utils"].spatial_neighbor(1, h, w, neighbor_range=2 * cfg.radius, device="cpu", dtype=torch.float32, mode="square")
    theirs = official["local_attention"].masked_attention_efficient(
        feats[-1][None], feats[ctx].permute(1, 0, 2, 3).contiguous()[None], labels[ctx].permute(1, 0, 2, 3).contiguous()[None], mask,
        temperature=cfg.temperature, topk=cfg.topk, normalize=True, step=32, non_mask_len=0,
    )[0]  # fmt: skip
    ours = predict_square(feats[-1], feats[ctx], labels[ctx], cfg)
    generic = predict_dense(
        feats[-1], (feats[0], labels[0]), [(feats[i], labels[i], 1) for i in ctx[1:]],
        PropagationConfig(temperature=cfg.temperature, topk=cfg.topk, context=frames - 1, radius=cfg.radius),
    )  # fmt: skip
    return {
        "readout (ours vs theirs)": float((ours - theirs).abs().max()),
        "argmax cells differing (ours vs theirs)": float((ours.argmax(0) != theirs.argmax(0)).sum()),
        "readout (generic vs theirs)": float((generic - theirs).abs().max()),
        "argmax cells differing (generic vs theirs)": float((generic.argmax(0) != theirs.argmax(0)).sum()),
        "cells": float(h * w),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("official", type=Path, help="checkout of github.com/qianduoduolr/Spa-then-Temp")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="training input sides (multiples of 32)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per size")
    a = ap.parse_args(argv)
    official = load_official(a.official.resolve())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    for size in a.sizes:
        worst: dict[str, float] = {}
        start = time.perf_counter()
        for seed in range(a.seeds):
            for k, v in compare_training(official, size, seed).items():
                worst[k] = max(worst.get(k, 0.0), v)
        print(f"training, {size}x{size}, {a.seeds} seeds ({time.perf_counter() - start:.1f} s): largest over seeds")
        for k, v in worst.items():
            print(f"  {k}: {v:.3g}")
    worst = {}
    for seed in range(a.seeds):
        for k, v in compare_inference(official, seed).items():
            worst[k] = max(worst.get(k, 0.0), v)
    print(f"inference, one frame, 20x28 cells, 6 context frames, radius 6, top-10, T 0.07, {a.seeds} seeds: largest")
    for k, v in worst.items():
        print(f"  {k}: {v:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
