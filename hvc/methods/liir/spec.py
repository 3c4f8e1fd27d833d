"""LIIR's registry entry (:class:`hvc.config.registry.MethodSpec`): trained on frame pairs of
training videos (Li et al., CVPR 2022, §3.3: YouTube-VOS), with its own inference
(:mod:`hvc.methods.liir.inference`) beside the generic label propagation."""

from __future__ import annotations

from hvc.methods.liir.params import LIIRParams
from hvc.config.registry import MethodSpec

SPEC = MethodSpec(
    name="liir",
    display="LIIR",
    section=LIIRParams,
    kinds=("clips", "clips"),
    # LIIR_pytorch mast_momen.py: window radius R = 14 at stride 4 at inference
    preset={"radius": 14},
    inference="hvc.methods.liir.inference:propagate",
    published="hvc.methods.liir:published.yaml",
    video_train_set="ytvos",
)
