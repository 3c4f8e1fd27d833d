"""The toy's own inference: the generic label propagation with the toy's settings, every
prediction's background grown by nothing (a real method would do more)."""

from __future__ import annotations

import numpy as np

from hvc.propagation import PropagationConfig, propagate_video

CALLS: list[int] = []


def propagate(encode, frames, first_labels, later_labels, p, device, extras=None, benchmark=None) -> np.ndarray:
    """(T, H, W) labels of the video: the generic propagation at the toy's top-k and context."""
    q = p.propagation
    CALLS.append(len(frames))
    cfg = PropagationConfig(temperature=q.temperature, topk=q.topk, context=q.context, radius=q.radius)
    return propagate_video(encode, frames, first_labels, cfg, later_labels=later_labels, layer="feat", device=device, dense=True)
