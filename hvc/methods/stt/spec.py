"""STT's registry entry (:class:`hvc.config.registry.MethodSpec`): a spatial phase on images
(step 1, MoCo-style contrastive pre-training), then a temporal phase on frame pairs of
training videos (step 2; Li & Liu, CVPR 2023, §3), propagated with its own inference
(:mod:`hvc.methods.stt.inference`) beside the generic label propagation."""

from __future__ import annotations

from hvc.config.registry import MethodSpec
from hvc.methods.stt.params import DISPLAY, PRESET, STTParams

SPEC = MethodSpec(
    name="stt",
    display=DISPLAY,
    section=STTParams,
    kinds=("views", "clips"),
    preset=dict(PRESET),
    inference="hvc.methods.stt.inference:propagate",
    published="hvc.methods.stt:published.yaml",
    video_train_set="ytvos",  # step 2 on YouTube-VOS (draft §4.1)
)
