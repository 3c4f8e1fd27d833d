"""The toy's registry entry."""

from __future__ import annotations

from hvc.config.registry import MethodSpec
from toy_method.params import ToyParams

SPEC = MethodSpec(
    name="toy",
    display="Toy",
    section=ToyParams,
    kinds=("views", "clips"),
    preset={"topk": 3, "context": 2},
    inference="toy_method.inference:propagate",
    inference_keys=("width",),
    published="toy_method:published.yaml",
)
