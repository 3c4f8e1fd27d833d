"""Colour-channel dropout in Lab space: the information bottleneck of MAST and LIIR.

LIIR §3.3: "channel-wise dropout in Lab colorspace [MAST] is adopted as the information
bottleneck". The details follow github.com/shasha521/LIIR_pytorch, main_dis.py
(``dropout2d_lab`` and ``compute_lphoto``): one of the two colour channels (a or b) is
drawn once per batch, zeroed in every frame, the frames are scaled by 3 / (3 - 1) = 1.5, and
the dropped channel of the undropped frames is the reconstruction target.

The frames are Lab normalised with mean (50, 0, 0) and std (50, 127, 127) (the code's
functional/feeder/dataset/YTVOSTrainLoader.py; ``hvc.methods.base.normalize_input`` with
``"lab"``), so channel 0 is L and channels 1, 2 are a, b, each about [-1, 1].
"""

from __future__ import annotations

import torch

COLOUR_CHANNELS = (1, 2)
"""Channels that may be dropped: a and b (code: ``np.random.choice(np.arange(1, 3), 1)``)."""


def drop_colour_channel(
    frames: torch.Tensor, channel: int | None = None, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Drop one Lab colour channel of every frame; return the network input and the target.

    Args:
        frames: (..., 3, H, W) normalised Lab frames (e.g. (B, T, 3, H, W)); not modified.
        channel: 1 (a) or 2 (b); None draws one uniformly with ``generator``, the same for
            the whole tensor (the code draws once per batch).
    Returns:
        (inputs, target, channel): inputs (..., 3, H, W) with ``channel`` set to 0 and all
        channels multiplied by 3 / 2 (the dropout rescaling of one dropped channel out of
        three); target (..., 1, H, W), the dropped channel of ``frames`` (normalised units);
        the channel index used.
    Raises:
        ValueError: ``frames`` has no channel axis of size 3 at dim -3, or ``channel`` is
            not 1 or 2.
    """
    if frames.dim() < 3 or frames.shape[-3] != 3:
        raise ValueError(f"Lab frames must be (..., 3, H, W), got shape {tuple(frames.shape)}")
    if channel is None:
        channel = COLOUR_CHANNELS[int(torch.randint(len(COLOUR_CHANNELS), (1,), generator=generator))]
    if channel not in COLOUR_CHANNELS:
        raise ValueError(f"the dropped channel must be 1 (a) or 2 (b), got {channel!r}")
    target = frames[..., channel : channel + 1, :, :].clone()
    keep = torch.ones(3, 1, 1, dtype=frames.dtype, device=frames.device)
    keep[channel] = 0.0
    inputs = frames * keep * (3.0 / 2.0)
    return inputs, target, channel
