"""Mask-VOS's registry entry (:class:`hvc.config.registry.MethodSpec`): a correspondence
warm-up, then the mask stage, both on clips of training videos (Li et al., CVPR 2023,
§3.3: YouTube-VOS); its own mask-embedded inference (:mod:`hvc.methods.maskvos.inference`,
with the value encoder and decoder saved beside the encoder) beside the plain label
propagation of its key features."""

from __future__ import annotations

from hvc.config.registry import MethodSpec
from hvc.methods.maskvos.params import DISPLAY, PRESET, MaskVOSParams

SPEC = MethodSpec(
    name="maskvos",
    display=DISPLAY,
    section=MaskVOSParams,
    kinds=("clips", "clips"),
    preset=dict(PRESET),
    inference="hvc.methods.maskvos.inference:propagate",
    inference_keys=("inference",),
    published="hvc.methods.maskvos:published.yaml",
    video_train_set="ytvos",
)
