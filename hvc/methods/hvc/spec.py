"""HVC's registry entry (:class:`hvc.config.registry.MethodSpec`): trained on two views of static
images (paper §3.2), propagated with the generic label propagation, and the pseudo-dynamic
signal figure (the paper's Fig. 12)."""

from __future__ import annotations

from hvc.methods.hvc.params import HVCParams
from hvc.config.registry import MethodSpec

SPEC = MethodSpec(
    name="hvc",
    display="HVC",
    section=HVCParams,
    kinds=("views",),
    figures={"pseudo_dynamic": "hvc.report.pseudo_dynamic:draw_pseudo_dynamic"},
    # baseline encoders of HVC's tables, in HVC's backbone; "semantic" and "authors" are
    # loaded from the files the parameters name (hvc.eval.encoders)
    encoders={
        "imagenet": "hvc.methods.hvc.baselines:imagenet_encoder",
        "semantic": "hvc.eval.encoders:semantic_encoder",
        "authors": "hvc.eval.encoders:authors_encoder",
    },
)
