"""One video of a benchmark, in the common form every reader returns (:class:`Video`).

Shared by the readers of :mod:`hvc.eval.readers` and :mod:`hvc.eval.parts` (VIP).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hvc.io import DataError, frame_order, read_image, read_mask


# The largest frame a video may have (4096 x 4096 pixels): every frame of a video is held
# in memory during propagation, and one 8000 x 8000 frame alone takes 192 MB decoded.
MAX_FRAME_PIXELS = 4096 * 4096


def check_frame_size(path: Path, h: int, w: int) -> None:
    """Raise DataError naming ``path`` when an (h, w) frame or mask exceeds :data:`MAX_FRAME_PIXELS`."""
    if h * w > MAX_FRAME_PIXELS:
        raise DataError(
            path,
            f"is {w}x{h} ({h * w / 1e6:.1f} Mpixel), more than the {MAX_FRAME_PIXELS / 1e6:.1f} Mpixel a frame may have; "
            "downscale the benchmark's frames and masks",
        )


def check_sequence_name(listing: Path, line: int, name: str, what: str = "sequence") -> str:
    """A sequence name read from a list file, refused unless it is one plain path component.

    Stages write one folder (or file) per sequence below their output, named after it, so
    a name that is absolute, holds a separator or is ``.``/``..`` would make them write
    outside the output.

    Args:
        listing: the list file (image set, meta.json, video list), for the message.
        line: the 1-based line (or entry) of the list holding the name.
        name: the name as listed.
    Returns:
        ``name``.
    Raises:
        DataError: naming ``listing`` and the line.
    """
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise DataError(
            listing, f"line {line}: {what} name {name!r} is not a plain folder name (no '/', '\\', '..' or absolute path)"
        )
    return name


@dataclass
class Video:
    """One benchmark video.

    Attributes:
        name: sequence name.
        frames: frame files in temporal order.
        masks: {frame index: annotation file}; frame 0 always, every frame when the
            benchmark's ground truth is public.
        greyscale_labels: the masks are greyscale PNGs whose values are labels (VIP part
            ids), not DAVIS 2016 0/255 masks (see :func:`hvc.io.read_mask`).
    """

    name: str
    frames: list[Path]
    masks: dict[int, Path] = field(default_factory=dict)
    inputs: tuple[int, ...] = (0,)
    greyscale_labels: bool = False

    def read_frames(self) -> list[np.ndarray]:
        """All frames as (H, W, 3) uint8 arrays; raises DataError naming a bad file."""
        return [read_image(p) for p in self.frames]

    def first_labels(self) -> np.ndarray:
        """(H, W) uint8 label map of frame 0.

        A video whose objects all appear later (YouTube-VOS, no mask at frame 0) gets an
        all-background map; its objects start from :meth:`later_labels`.

        Raises:
            DataError: the first-frame mask is missing (when frame 0 is an input),
                unreadable, or empty while no later annotation exists.
        """
        if 0 not in self.masks:
            if self.inputs and min(self.inputs) > 0:
                first_later = read_mask(self.masks[min(self.inputs)], self.greyscale_labels)
                return np.zeros_like(first_later)
            raise DataError(self.frames[0], f"sequence {self.name!r} has no first-frame annotation")
        labels = read_mask(self.masks[0], self.greyscale_labels)
        if labels.max() == 0 and len(self.inputs) <= 1:
            raise DataError(self.masks[0], "first-frame mask is empty: no object to propagate")
        return labels

    def later_labels(self) -> dict[int, np.ndarray]:
        """{t: (H, W) uint8 label map} of the input annotations after frame 0: objects
        that first appear at frame t (YouTube-VOS); empty for DAVIS-style benchmarks,
        whose later masks are ground truth, not input."""
        return {t: read_mask(self.masks[t], self.greyscale_labels) for t in self.inputs if t > 0}

    def check(self) -> None:
        """Decode every frame and the first-frame mask once, without keeping them.

        The propagate stage calls this for every video before it starts, so that a
        corrupt file in the last video costs seconds, not the hours spent on the videos
        before it.

        Raises:
            DataError: naming the file: a missing, unreadable or truncated frame or
                first-frame mask, an empty first-frame mask, a frame larger than
                :data:`MAX_FRAME_PIXELS`, or a frame whose size differs from the
                first-frame mask's.
        """
        first = self.first_labels()
        check_frame_size(self.masks.get(0, self.frames[0]), *first.shape)
        for t, later in self.later_labels().items():
            if later.shape != first.shape:
                raise DataError(self.masks[t], f"mask is {later.shape[1]}x{later.shape[0]} but frame 0's is {first.shape[1]}x{first.shape[0]}")
        for path in self.frames:
            h, w = read_image(path).shape[:2]
            check_frame_size(path, h, w)
            if (h, w) != first.shape:
                raise DataError(
                    path, f"frame is {w}x{h} but the first-frame mask {self.masks[0]} is {first.shape[1]}x{first.shape[0]}"
                )


def list_frames(frame_dir: Path) -> tuple[list[Path], dict[str, int]]:
    """A sequence's JPEG frames in order (numeric names by number) and {file stem: frame index}.

    Raises:
        DataError: fewer than 2 frames (nothing to propagate to).
    """
    frames = sorted(frame_dir.glob("*.jpg"), key=frame_order)  # 2 before 10 without zero padding
    if len(frames) < 2:
        raise DataError(frame_dir, f"sequence has {len(frames)} frame(s); propagation needs at least 2")
    return frames, {p.stem: i for i, p in enumerate(frames)}


def match_masks(mask_dir: Path, frame_dir: Path, stems: dict[str, int]) -> dict[int, Path]:
    """{frame index: mask file} of the PNG masks in ``mask_dir`` (none if it does not exist).

    Raises:
        DataError: naming a mask whose frame (same name, ``.jpg``) is not in ``frame_dir``.
    """
    masks = {}
    for m in sorted(mask_dir.glob("*.png")):
        if m.stem not in stems:
            raise DataError(m, f"mask has no frame {m.stem}.jpg in {frame_dir}")
        masks[stems[m.stem]] = m
    return masks
