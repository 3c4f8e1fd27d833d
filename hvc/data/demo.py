"""The built-in demo data: real photographs bundled with scikit-image, no download.

:func:`build_demo` writes, deterministically from ``demo.seed``::

    out_dir/
      train/000000.jpg ...                 static training images (random crops of photos)
      train_videos/train-000/00000.jpg ... training videos (only with ``videos=True``: for
                                           methods trained on clips), frames without masks
      benchmark/JPEGImages/480p/demo-00/00000.jpg ...
      benchmark/Annotations/480p/demo-00/00000.png ...   DAVIS palette PNGs, k = object k
      benchmark/ImageSets/2017/val.txt      one sequence name per line
      manifest.json

The benchmark follows the DAVIS 2017 layout so that the propagation and scoring code
reads it like the real thing. Each video pans slowly over a photograph; 1..max_objects
objects, each a textured cut-out of another photograph under a random shape (smooth
blob, ellipse, star polygon or scikit-image's horse silhouette), move on smooth
trajectories, rotate, change scale and occlude each other in a fixed depth order.
Frames and masks come from the same warp: each object's shape is warped and thresholded
once per frame, and that one boolean mask both pastes the object's pixels and writes its
label (back to front), so the ground truth is exact.

Train and benchmark use disjoint photographs (:data:`TRAIN_PHOTOS`,
:data:`BENCHMARK_PHOTOS`), so no benchmark pixel is ever seen in training. The training
videos are made like the benchmark videos, from the training photographs only.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import skimage
from PIL import Image
from scipy import ndimage
from skimage import draw, transform

from hvc.config.code import provenance
from hvc.io import DataError, atomic_dir, read_image, sha256_file, write_bytes, write_json, write_mask
from hvc.config.params import DemoParams

# Colour photographs whose files ship inside the scikit-image wheel (skimage/data/).
# motorcycle_left/right are a stereo pair (nearly the same pixels): both stay in train.
TRAIN_PHOTOS = ("astronaut", "hubble_deep_field", "ihc", "motorcycle_left", "motorcycle_right", "retina")
BENCHMARK_PHOTOS = ("chelsea", "coffee", "rocket")
PHOTO_FILES = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "ihc": "ihc.png",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
}
SHAPES = ("blob", "ellipse", "polygon", "horse")

JPEG_QUALITY = 90
SEQUENCE_PREFIX = "demo"
# Acceptance of a sampled motion (fractions of the object's own area at that scale):
MIN_VISIBLE_FIRST = 0.4  # every object shows at least this much in frame 0
MIN_VISIBLE = 0.05  # "visible" in a later frame
MIN_VISIBLE_SHARE = 0.8  # ... in at least this share of the frames
MAX_ATTEMPTS = 200  # motions sampled per sequence before giving up

# Random streams: one independent generator per part, so that e.g. more sequences do not
# change the training images.
_TRAIN_STREAM, _SEQUENCE_STREAM, _TRAIN_VIDEO_STREAM = 0, 1, 2
TRAIN_VIDEO_PREFIX = "train"


def build_demo(params: DemoParams, out_dir: str | Path, videos: bool = False) -> dict[str, Any]:
    """Build the demo training set and benchmark into ``out_dir``, atomically.

    Everything is a function of ``params`` (its ``seed`` included), of the bundled
    photographs and of this code, so two builds with the same parameters and code give
    byte-identical files.
    ``out_dir`` is replaced only when the build is complete; on any error it is left as
    it was (absent, or the previous build).

    Args:
        params: the ``demo`` section of the parameters.
        out_dir: folder to create (or replace).
        videos: also render ``params.train_videos`` training videos (:func:`build_train_videos`),
            for methods trained on clips.
    Returns:
        The manifest, also written to ``out_dir/manifest.json``: seed, parameters,
        provenance (:func:`hvc.config.code.provenance`), the source photos (file name,
        SHA-256, role), the number of training images and, per sequence, its frame and
        object counts, background and objects; with ``videos``, ``train_videos`` likewise.
    Raises:
        DataError: a photograph is not bundled with the installed scikit-image.
        RuntimeError: no valid object motion was found for a sequence (frames far too
            small for ``max_objects``).
    """
    out_dir = Path(out_dir)
    photos = {name: load_photo(name) for name in TRAIN_PHOTOS + BENCHMARK_PHOTOS}
    with atomic_dir(out_dir) as tmp:
        num_train = build_train_set(params, [(n, photos[n]) for n in TRAIN_PHOTOS], tmp / "train")
        bench = tmp / "benchmark"
        sequences = []
        for index in range(params.num_sequences):
            rng = np.random.default_rng([params.seed, _SEQUENCE_STREAM, index])
            scene = sample_scene(params, {n: photos[n] for n in BENCHMARK_PHOTOS}, rng)
            name = f"{SEQUENCE_PREFIX}-{index:02d}"
            sequences.append({"name": name, **render_sequence(scene, bench, name)})
        names = "".join(s["name"] + "\n" for s in sequences)
        write_bytes(bench / "ImageSets" / "2017" / "val.txt", names.encode())
        manifest = {
            "seed": params.seed,
            "params": params.model_dump(exclude=None if videos else {"train_videos", "train_video_frames"}),
            "skimage_version": skimage.__version__,
            "provenance": provenance("demo_data"),
            "sources": _sources(),
            "train": {"num_images": num_train, "photos": list(TRAIN_PHOTOS), "short_side": params.train_size},
            "benchmark": {
                "layout": "DAVIS 2017",
                "split": "val",
                "height": params.height,
                "width": params.width,
                "photos": list(BENCHMARK_PHOTOS),
                "sequences": sequences,
            },
        }
        if videos:
            manifest["train_videos"] = build_train_videos(params, {n: photos[n] for n in TRAIN_PHOTOS}, tmp / "train_videos")
        write_json(tmp / "manifest.json", manifest)
    return manifest


def _sources() -> list[dict[str, str]]:
    """The manifest's record of each bundled photograph: name, file, SHA-256, role."""
    return [
        {
            "name": name,
            "file": PHOTO_FILES[name],
            "sha256": sha256_file(_bundled_path(PHOTO_FILES[name])),
            "role": "train" if name in TRAIN_PHOTOS else "benchmark",
        }
        for name in TRAIN_PHOTOS + BENCHMARK_PHOTOS
    ]


def build_train_videos(params: DemoParams, photos: dict[str, np.ndarray], folder: Path) -> dict[str, Any]:
    """Render ``params.train_videos`` training videos of ``params.train_video_frames`` frames
    as ``folder/train-NNN/NNNNN.jpg`` (no masks): scenes drawn like the benchmark's
    (:func:`sample_scene`, frame size ``height`` x ``width``) from ``photos``, the training
    photographs, with their own random stream.

    Returns:
        The manifest entry: photos, frame counts, and per video its name, background and
        object photos.
    Raises:
        RuntimeError: as :func:`sample_scene`.
    """
    scene_params = params.model_copy(update={"num_frames": params.train_video_frames})
    entries = []
    for index in range(params.train_videos):
        rng = np.random.default_rng([params.seed, _TRAIN_VIDEO_STREAM, index])
        scene = sample_scene(scene_params, photos, rng)
        name = f"{TRAIN_VIDEO_PREFIX}-{index:03d}"
        grid = _frame_grid(scene.frame_shape)
        for t in range(params.train_video_frames):
            frame, _ = composite(_background_frame(scene, t), _frame_layers(scene, t, grid, pixels=True))
            _write_jpeg(folder / name / f"{t:05d}.jpg", np.clip(np.rint(frame), 0, 255).astype(np.uint8))
        entries.append({"name": name, "background": scene.photo, "objects": [o.photo for o in scene.objects]})
    return {"photos": sorted(photos), "num_frames": params.train_video_frames, "videos": entries}


# --------------------------------------------------------------------------- photographs


def _bundled_path(filename: str) -> Path:
    """Path of a data file inside the installed scikit-image package (never downloaded)."""
    path = Path(skimage.__file__).parent / "data" / filename
    if not path.is_file():
        raise DataError(
            path,
            f"not bundled with scikit-image {skimage.__version__}; the demo needs the photographs "
            "that ship inside the scikit-image wheel (it never downloads)",
        )
    return path


def load_photo(name: str) -> np.ndarray:
    """Read one bundled photograph (a key of :data:`PHOTO_FILES`).

    Returns:
        uint8 array of shape (H, W, 3).
    Raises:
        DataError: the file is not in the installed scikit-image.
    """
    return read_image(_bundled_path(PHOTO_FILES[name]))


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    """Encode an (H, W, 3) uint8 image as JPEG (quality :data:`JPEG_QUALITY`), atomically."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=JPEG_QUALITY)
    write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- training set


def build_train_set(params: DemoParams, photos: list[tuple[str, np.ndarray]], folder: Path) -> int:
    """Write ``train_copies`` random crops of each photo as ``folder/NNNNNN.jpg``.

    Each crop covers 25-100% of the photo's area with an aspect ratio in [3/4, 4/3] and
    is resized (antialiased bicubic) so its short side is ``train_size`` pixels.

    Args:
        params: ``seed``, ``train_copies`` and ``train_size`` are read.
        photos: (name, uint8 (H, W, 3) array) pairs, in a fixed order.
        folder: output folder (created).
    Returns:
        The number of images written.
    """
    rng = np.random.default_rng([params.seed, _TRAIN_STREAM])
    count = 0
    for _name, photo in photos:
        image = Image.fromarray(photo)
        h, w = photo.shape[:2]
        for _ in range(params.train_copies):
            area = h * w * rng.uniform(0.25, 1.0)
            aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))  # width / height
            cw = min(w, max(1, round(math.sqrt(area * aspect))))
            ch = min(h, max(1, round(math.sqrt(area / aspect))))
            x0 = int(rng.integers(0, w - cw + 1))
            y0 = int(rng.integers(0, h - ch + 1))
            short = min(cw, ch)
            size = (round(cw * params.train_size / short), round(ch * params.train_size / short))
            crop = image.resize(size, Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
            _write_jpeg(folder / f"{count:06d}.jpg", np.asarray(crop))
            count += 1
    return count


# --------------------------------------------------------------------------- one benchmark video


@dataclass
class DemoObject:
    """One moving cut-out.

    Attributes:
        label: object id in the masks (1..n).
        photo: the photograph its texture comes from.
        shape: one of :data:`SHAPES`.
        texture: float32 (S, S, 3), values 0..255: the object's pixels at scale 1.
        alpha: float32 (S, S), 0..1: its shape on the same grid.
        poses: float64 (T, 4): per frame the centre row and column (pixels, frame
            coordinates), the rotation angle (radians, counter-clockwise) and the scale.
    """

    label: int
    photo: str
    shape: str
    texture: np.ndarray
    alpha: np.ndarray
    poses: np.ndarray


@dataclass
class DemoScene:
    """Everything needed to render one video.

    Attributes:
        photo: name of the background photograph.
        background: float32 (Hb, Wb, 3), 0..255, the rescaled photograph, larger than a frame.
        offsets: float64 (T, 2): top-left corner (row, column) of the frame in the
            background, per frame (the pan).
        objects: the objects, by label.
        depth: labels from the farthest to the nearest.
        frame_shape: (height, width) of the frames.
    """

    photo: str
    background: np.ndarray
    offsets: np.ndarray
    objects: list[DemoObject]
    depth: list[int]
    frame_shape: tuple[int, int]


def sample_scene(params: DemoParams, photos: dict[str, np.ndarray], rng: np.random.Generator) -> DemoScene:
    """Draw a background, 1..max_objects objects and their motion for one video.

    Motions are redrawn (appearance kept) until every object shows at least
    :data:`MIN_VISIBLE_FIRST` of itself in frame 0 and at least :data:`MIN_VISIBLE` in
    :data:`MIN_VISIBLE_SHARE` of the frames.

    Args:
        params: frame size, ``num_frames`` and ``max_objects`` are read.
        photos: the benchmark photographs by name (uint8 (H, W, 3)).
        rng: the sequence's generator.
    Raises:
        RuntimeError: no acceptable motion in :data:`MAX_ATTEMPTS` draws.
    """
    H, W, T = params.height, params.width, params.num_frames
    names = sorted(photos)
    bg_name = names[int(rng.integers(len(names)))]
    background, offsets = _sample_background(photos[bg_name], (H, W), T, rng)
    n = int(rng.integers(1, params.max_objects + 1))
    size = max(8, round(min(H, W) * min(1.0, math.sqrt(3 / n)) * rng.uniform(0.35, 0.55)))
    others = [name for name in names if name != bg_name] or names
    appearances = []
    for label in range(1, n + 1):
        photo = others[int(rng.integers(len(others)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        texture, alpha = _sample_texture(photos[photo], size, rng), _sample_shape(shape, size, rng)
        appearances.append((label, photo, shape, texture, alpha))
    for _ in range(MAX_ATTEMPTS):
        objects = [
            DemoObject(label, photo, shape, texture, alpha, _sample_motion((H, W), T, rng))
            for label, photo, shape, texture, alpha in appearances
        ]
        depth = [int(k) for k in rng.permutation(np.arange(1, n + 1))]
        scene = DemoScene(bg_name, background, offsets, objects, depth, (H, W))
        if _motion_ok(scene):
            return scene
    raise RuntimeError(
        f"demo: no motion of {n} objects keeps them visible in {H}x{W} frames after {MAX_ATTEMPTS} tries; "
        "lower demo.max_objects or enlarge demo.height/width"
    )


def _sample_background(
    photo: np.ndarray, frame_shape: tuple[int, int], num_frames: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rescale the photo to 1.15-1.4x the frame and draw a slow sinusoidal pan across it."""
    H, W = frame_shape
    h, w = photo.shape[:2]
    factor = max(H / h, W / w) * rng.uniform(1.15, 1.4)
    shape = (max(H + 1, round(h * factor)), max(W + 1, round(w * factor)))
    background = transform.resize(photo, shape, order=1, anti_aliasing=factor < 1, preserve_range=True)
    t = np.arange(num_frames)[:, None]
    slack = np.array([shape[0] - H, shape[1] - W], dtype=np.float64)  # room to pan, pixels
    period = rng.uniform(60, 160, size=2)  # frames
    phase = rng.uniform(0, 2 * np.pi, size=2)
    offsets = slack / 2 * (1 + 0.9 * np.sin(2 * np.pi * t / period + phase))
    return background.astype(np.float32), offsets


def _sample_texture(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (30-70% of the short side) of ``photo``, resized to (size, size, 3)."""
    h, w = photo.shape[:2]
    side = max(2, round(min(h, w) * rng.uniform(0.3, 0.7)))
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    crop = photo[y0 : y0 + side, x0 : x0 + side]
    texture = transform.resize(crop, (size, size), order=1, anti_aliasing=side > size, preserve_range=True)
    return texture.astype(np.float32)


def _sample_shape(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random shape of kind ``shape``: float32 (size, size) alpha in {0, 1}, centred.

    Rotation never cuts a shape: the warp samples the whole rotated grid (see
    :func:`_object_window`).
    """
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) - c
    if shape == "ellipse":
        a = 0.46 * size
        b = a * rng.uniform(0.45, 0.9)
        return ((xx / a) ** 2 + (yy / b) ** 2 <= 1).astype(np.float32)
    if shape == "blob":  # star-shaped: radius a smooth random function of the angle
        rho, phi = np.hypot(yy, xx), np.arctan2(yy, xx)
        radius = np.ones_like(phi)
        for k in range(2, 6):
            radius += rng.uniform(-0.25, 0.25) / math.sqrt(k) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
        radius *= 0.48 * size / max(1.0, radius.max())
        return (rho <= radius).astype(np.float32)
    if shape == "polygon":
        k = int(rng.integers(5, 10))
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=k))
        radii = rng.uniform(0.25, 0.48, size=k) * size
        vertices = np.stack([c + radii * np.sin(angles), c + radii * np.cos(angles)], axis=1)
        return draw.polygon2mask((size, size), vertices).astype(np.float32)
    if shape == "horse":
        _bundled_path("horse.png")  # skimage.data.horse() must not fall back to a download
        silhouette = ~skimage.data.horse()  # True on the horse
        rows, cols = np.nonzero(silhouette)
        silhouette = silhouette[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        fit = 0.95 * size / max(silhouette.shape)
        hs, ws = max(1, round(silhouette.shape[0] * fit)), max(1, round(silhouette.shape[1] * fit))
        small = transform.resize(silhouette.astype(np.float32), (hs, ws), order=1, anti_aliasing=True)
        if rng.random() < 0.5:
            small = small[:, ::-1]  # facing left or right
        alpha = np.zeros((size, size), dtype=np.float32)
        top, left = (size - hs) // 2, (size - ws) // 2
        alpha[top : top + hs, left : left + ws] = small >= 0.5
        return alpha
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _sample_motion(frame_shape: tuple[int, int], num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth poses (T, 4) = centre row, centre column, angle, scale.

    The centre follows a Lissajous curve inside the middle 80% of the frame (periods of
    40-100 frames), the angle turns at a constant rate of up to 3.4 degrees per frame,
    and the scale breathes between about 0.8x and 1.25x.
    """
    H, W = frame_shape
    t = np.arange(num_frames, dtype=np.float64)
    amplitude = rng.uniform(0.15, 0.4, size=2) * (H, W)
    period = rng.uniform(40, 100, size=2)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    centre = np.array([H / 2, W / 2]) + amplitude * np.sin(2 * np.pi * t[:, None] / period + phase)
    angle = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.06, 0.06) * t
    scale = np.exp(rng.uniform(0.05, 0.22) * np.sin(2 * np.pi * t / rng.uniform(40, 100) + rng.uniform(0, 2 * np.pi)))
    return np.column_stack([centre, angle, scale])


def _object_window(obj: DemoObject, t: int, frame_shape: tuple[int, int]) -> tuple[slice, slice]:
    """The frame rows and columns the object can cover in frame ``t`` (its rotated box)."""
    row, col, _, scale = obj.poses[t]
    reach = scale * obj.alpha.shape[0] / math.sqrt(2) + 2  # half-diagonal of the scaled grid, pixels
    return (
        slice(max(0, math.floor(row - reach)), min(frame_shape[0], math.ceil(row + reach) + 1)),
        slice(max(0, math.floor(col - reach)), min(frame_shape[1], math.ceil(col + reach) + 1)),
    )


def _object_coords(obj: DemoObject, t: int, grid: np.ndarray) -> np.ndarray:
    """Where frame pixels sample the object's (S, S) grid in frame ``t``.

    The object maps its grid centre to the pose's centre, rotated by the angle and scaled;
    this is the inverse map. ``grid`` is (2, ...) frame (row, column) coordinates.
    Returns float64 coordinates (2, ...) into ``texture`` / ``alpha``.
    """
    row, col, angle, scale = obj.poses[t]
    c = (obj.alpha.shape[0] - 1) / 2
    dy, dx = grid[0] - row, grid[1] - col
    cos, sin = math.cos(angle), math.sin(angle)
    return np.stack([c + (-sin * dx + cos * dy) / scale, c + (cos * dx + sin * dy) / scale])


Layer = tuple[int, np.ndarray, np.ndarray | None]  # (label, mask, pixels), see composite()


def composite(background: np.ndarray, layers: list[Layer]) -> tuple[np.ndarray, np.ndarray]:
    """Paint layers back to front over a background; the label map follows the paint.

    Args:
        background: (H, W, 3) image (any dtype).
        layers: (label, mask, pixels) from the farthest to the nearest: label an int in
            1..255, mask bool (H, W), pixels (count_nonzero(mask), 3), the layer's values
            at the mask's pixels in row-major order, or None to build the label map only.
    Returns:
        (frame, labels): the frame (H, W, 3), same dtype as ``background``, and the uint8
        (H, W) label map, 0 where no layer covers the pixel, else the label of the
        nearest layer that does.
    """
    frame = background.copy()
    labels = np.zeros(background.shape[:2], dtype=np.uint8)
    for label, mask, pixels in layers:
        if pixels is not None:
            frame[mask] = pixels
        labels[mask] = label
    return frame, labels


def _frame_layers(scene: DemoScene, t: int, grid: np.ndarray, pixels: bool) -> list[Layer]:
    """The (label, mask, pixels) layers of frame ``t``, farthest first (see :func:`composite`).

    One inverse warp per object gives both its mask (shape sampled bilinearly,
    thresholded at 0.5) and, at exactly the mask's pixels, its colours (texture sampled
    bilinearly); ``pixels=False`` skips the colours.
    """
    by_label = {obj.label: obj for obj in scene.objects}
    layers = []
    for label in scene.depth:
        obj = by_label[label]
        window = _object_window(obj, t, scene.frame_shape)
        coords = _object_coords(obj, t, grid[(slice(None), *window)])
        inside = ndimage.map_coordinates(obj.alpha, coords, order=1, mode="constant", cval=0.0) >= 0.5
        mask = np.zeros(scene.frame_shape, dtype=bool)
        mask[window] = inside
        values = None
        if pixels:
            at = coords[:, inside]
            values = np.stack(
                [ndimage.map_coordinates(obj.texture[..., k], at, order=1, mode="nearest") for k in range(3)], axis=-1
            )
        layers.append((label, mask, values))
    return layers


def _visibility(scene: DemoScene, t: int, layers: list[Layer], labels: np.ndarray) -> dict[int, tuple[float, bool]]:
    """Per label: (visible share of the object's own area at its scale, partly hidden by another?).

    ``layers`` and ``labels`` are frame ``t``'s, as given to and returned by :func:`composite`.
    """
    by_label = {obj.label: obj for obj in scene.objects}
    out = {}
    for label, mask, _ in layers:
        obj = by_label[label]
        full_area = float(obj.alpha.sum()) * obj.poses[t, 3] ** 2
        visible = int(np.count_nonzero(labels == label))
        out[label] = (min(1.0, visible / full_area), visible < int(np.count_nonzero(mask)))
    return out


def _frame_grid(frame_shape: tuple[int, int]) -> np.ndarray:
    """(2, H, W) float64 (row, column) coordinates of every frame pixel."""
    return np.mgrid[0 : frame_shape[0], 0 : frame_shape[1]].astype(np.float64)


def _motion_ok(scene: DemoScene) -> bool:
    """Whether every object shows enough in frame 0 and stays visible most of the time."""
    grid = _frame_grid(scene.frame_shape)
    blank = np.zeros((*scene.frame_shape, 3), dtype=np.uint8)
    num_frames = len(scene.offsets)
    seen = {obj.label: 0 for obj in scene.objects}
    for t in range(num_frames):
        layers = _frame_layers(scene, t, grid, pixels=False)
        _, labels = composite(blank, layers)
        for label, (fraction, _) in _visibility(scene, t, layers, labels).items():
            if t == 0 and fraction < MIN_VISIBLE_FIRST:
                return False
            seen[label] += fraction >= MIN_VISIBLE
    return all(count >= MIN_VISIBLE_SHARE * num_frames for count in seen.values())


def _background_frame(scene: DemoScene, t: int) -> np.ndarray:
    """The frame-sized window of the background at frame ``t``'s pan offset.

    A sub-pixel translation, bilinear. Returns float (H, W, 3), values 0..255.
    """
    H, W = scene.frame_shape
    (r, c), (fr, fc) = np.floor(scene.offsets[t]).astype(int), scene.offsets[t] % 1
    window = scene.background[r : r + H + 1, c : c + W + 1]  # the pan stays 1 pixel inside
    rows = window[:-1] * (1 - fr) + window[1:] * fr
    return rows[:, :-1] * (1 - fc) + rows[:, 1:] * fc


def render_sequence(scene: DemoScene, benchmark: Path, name: str) -> dict[str, Any]:
    """Render and write one video in the DAVIS 2017 layout under ``benchmark``.

    Writes ``JPEGImages/480p/<name>/NNNNN.jpg`` (quality :data:`JPEG_QUALITY`) and
    ``Annotations/480p/<name>/NNNNN.png`` (DAVIS palette, index k = object k) for every
    frame; the mask of each frame is the label map of the very layers painted into it.

    Returns:
        The sequence's manifest entry: num_frames, num_objects, background photo, and per
        object its label, photo, shape, depth (0 = farthest), the smallest visible fraction
        of its area over the frames and the number of frames in which another object
        hides part of it.
    """
    grid = _frame_grid(scene.frame_shape)
    frames_dir = benchmark / "JPEGImages" / "480p" / name
    masks_dir = benchmark / "Annotations" / "480p" / name
    num_frames = len(scene.offsets)
    min_visible = {obj.label: 1.0 for obj in scene.objects}
    occluded = {obj.label: 0 for obj in scene.objects}
    for t in range(num_frames):
        layers = _frame_layers(scene, t, grid, pixels=True)
        frame, labels = composite(_background_frame(scene, t), layers)
        _write_jpeg(frames_dir / f"{t:05d}.jpg", np.clip(np.rint(frame), 0, 255).astype(np.uint8))
        write_mask(masks_dir / f"{t:05d}.png", labels)
        for label, (fraction, hidden) in _visibility(scene, t, layers, labels).items():
            min_visible[label] = min(min_visible[label], fraction)
            occluded[label] += hidden
    return {
        "num_frames": num_frames,
        "num_objects": len(scene.objects),
        "background": scene.photo,
        "objects": [
            {
                "label": obj.label,
                "photo": obj.photo,
                "shape": obj.shape,
                "depth": scene.depth.index(obj.label),
                "min_visible_fraction": round(min_visible[obj.label], 4),
                "occluded_frames": occluded[obj.label],
            }
            for obj in scene.objects
        ],
    }
