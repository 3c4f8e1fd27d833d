"""The parameter schema: the one params loader, and the documentation of every knob.

``params.yaml`` is validated against :class:`Params` before any work starts. Unknown keys,
wrong types and out-of-range values stop the run with one message that names the key,
the value and what is allowed. ``hvc params`` prints this schema as a table.

Content ids of the stages that read these parameters: :mod:`hvc.config.ids`.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hvc.config.published import published_tables
from hvc.data.registry import load_registry


class _Section(BaseModel):
    # allow_inf_nan=False: every float parameter is finite (.inf and .nan are YAML floats)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DemoParams(_Section):
    """The built-in demo: real photographs bundled with scikit-image, no download."""

    seed: int = Field(0, description="Seed of every random choice of the demo generator.")
    num_sequences: int = Field(4, ge=1, le=64, description="Demo benchmark videos.")
    num_frames: int = Field(20, ge=3, le=500, description="Frames per demo video.")
    height: int = Field(192, ge=32, le=2160, description="Frame height in pixels.")
    width: int = Field(320, ge=32, le=3840, description="Frame width in pixels.")
    max_objects: int = Field(3, ge=1, le=10, description="Objects per video (1..max).")
    train_size: int = Field(256, ge=32, le=4096, description="Short side of the static training images, pixels.")
    train_copies: int = Field(8, ge=1, le=1000, description="Random crops kept of each bundled photograph for the training set.")
    train_videos: int = Field(
        8,
        ge=1,
        le=256,
        description="Training videos (moving textured objects over the training photographs) built when the method "
        "trains on clips; none are built for methods trained on images.",
    )
    train_video_frames: int = Field(24, ge=2, le=500, description="Frames per demo training video.")


# Trainable methods (packages of hvc/methods/) and what each trains on: "views" (two views of
# one static image) or "clips" (T frames of one video). Here, not in the methods' packages,
# so that the data and shard stages know what to prepare without importing model code.
METHODS: dict[str, str] = {"hvc": "views", "liir": "clips"}
TRAIN_SETS = ("demo", "coco", "voc", "msra10k", "ytvos")
BENCHMARKS = ("demo", "davis2016", "davis2017", "davis2017_testdev", "ytvos2018", "ytvos2019", "vost", "vip", "jhmdb")


class DataParams(_Section):
    """Where data comes from and what is trained and evaluated on."""

    root: str = Field("data", description="Folder holding downloaded and extracted datasets (real runs).")
    train_set: Literal["demo", "coco", "voc", "msra10k", "ytvos"] = Field(
        "demo", description="Static training set (Table 7e): demo, coco, voc, msra10k or ytvos (frames as images)."
    )
    benchmarks: list[Literal[BENCHMARKS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["demo"],
        min_length=1,
        description=(
            "Benchmarks to propagate and score: demo, davis2017 (Table 1), ytvos2018 (2), davis2016 (3), "
            "vost (4), vip and jhmdb (5), davis2017_testdev (9), ytvos2019 (10); Table 11 runs on davis2017/ytvos2018."
        ),
    )
    sources: dict[str, str] = Field(
        default_factory=dict,
        description="Datasets a lab already has extracted: {registry name: folder}, e.g. "
        "{davis2017_trainval: /datasets/DAVIS}; `hvc fetch` links them into data.root instead of downloading "
        "(see `hvc fetch --list`).",
    )

    @field_validator("sources")
    @classmethod
    def _known_datasets(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(load_registry()))
        if unknown:
            raise ValueError(f"unknown dataset(s) {unknown}; see `hvc fetch --list`")
        return v


class ShardParams(_Section):
    """webdataset shards of the training images."""

    max_size_mb: float = Field(256.0, gt=0, description="Target shard size in MiB.")
    max_count: int = Field(100_000, ge=1, description="At most this many samples per shard.")
    step: int = Field(1, ge=1, description="Keep every step-th image (Table 7a step size: 1/5/8/10).")
    on_bad_image: Literal["fail", "skip"] = Field(
        "fail", description="An unreadable image fails the stage, or is skipped and listed in the report."
    )


class TrainParams(_Section):
    """HVC training (paper §3.3, Tables 6-7; the authors' train_img.py where the paper is silent)."""

    # loss (Eqs. 6-10, Table 6, 7c, 7d)
    static: bool = Field(True, description="Use the static term L_static (Table 6).")
    dynamic: bool = Field(True, description="Use the pseudo-dynamic term L_dynamic (Table 6).")
    alpha: float = Field(1.0, ge=0, description="Weight of L_dynamic in L_hybrid (Table 7c: 0.1/0.5/1/2).")
    radius: float = Field(0.1, gt=0, description="Positive radius r of Eq. 8 (Table 7d: 0.01/0.1/0.3/0.7).")
    radius_unit: Literal["image", "cell"] = Field(
        "cell",
        description="'cell': D in feature-cell diagonals, A = D < r (the authors' code; matches the "
        "positive counts of the paper's Fig. 8); 'image': D in normalised image units, A = D <= r.",
    )
    # model (§3.1, Table 7f)
    proj_dim: int = Field(256, ge=1, description="Hidden and output channels of projector/predictor (Table 7f: 128/256/512/1024).")
    head: Literal["paper", "official"] = Field(
        "paper",
        description="'paper': conv-BN-ReLU x2 + conv (paper §3.1); 'official': the authors' ProjBlock, "
        "LeakyReLU(0.01), BN over a residual middle conv, biased convs.",
    )
    # data and views (Table 7b)
    crop_size: int = Field(256, ge=16, description="Side of each square view after RandomResizedCrop, pixels.")
    scale: tuple[float, float] = Field((0.0, 1.0), description="RandomResizedCrop area range (official code: 0..1).")
    ratio: tuple[float, float] = Field((3 / 4, 4 / 3), description="RandomResizedCrop aspect-ratio range.")
    augment: Literal["crop", "affine", "color", "blur"] = Field(
        "crop",
        description="Table 7b, cumulative: crop; crop+affine/perspective; +colour jitter; +Gaussian blur.",
    )
    normalization: Literal["imagenet", "cifar"] = Field(
        "imagenet",
        description="Mean/std of the training input normalisation: imagenet, or cifar "
        "(the authors' train_img.py: mean 0.4914/0.4822/0.4465, std 0.2023/0.1994/0.2010).",
    )
    # optimisation (§3.3)
    batch_size: int = Field(128, ge=1, description="Global batch size (split across GPUs).")
    epochs: int = Field(20, ge=1, description="Passes over the training shards.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps (overrides epochs when set).")
    max_seconds: float | None = Field(
        None,
        gt=0,
        description="Also stop once this much training wall time has passed (a wall-clock budget; the result then "
        "depends on the machine's speed, so is not reproducible).",
    )
    lr: float = Field(1e-3, gt=0, description="Adam learning rate (constant).")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay.")
    momentum: float = Field(0.99, ge=0, le=1, description="Initial EMA momentum m_0; cosine schedule to 1 (Eq. 1).")
    # engineering
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32",
        description="fp32: as the authors' COCO script trains; bf16: bfloat16 autocast (faster on a GPU "
        "with bf16 tensor cores; convs and matrix products, the loss's similarities included, in bf16; weights, optimizer state and EMA in fp32); auto: bf16 on a GPU, fp32 on CPU.",
    )
    channels_last: bool = Field(True, description="channels_last memory format on GPU.")
    compile: bool = Field(False, description="torch.compile the model (GPU).")
    gpus: int = Field(1, ge=1, description="GPUs per training job; >1 runs torchrun (DDP) inside the job.")
    sync_bn: bool = Field(True, description="SyncBatchNorm when training with DDP.")
    workers: int = Field(2, ge=0, description="Data-loader worker processes per GPU.")
    checkpoint_every: int = Field(200, ge=1, description="Save a resumable checkpoint every N steps.")
    log_every: int = Field(10, ge=1, description="Log metrics every N steps (logging only: not part of the model id).")

    @model_validator(mode="after")
    def _check(self) -> TrainParams:
        if not (self.static or self.dynamic):
            raise ValueError(
                "train.static and train.dynamic are both false: nothing to train "
                "(the 'neither' row of Table 6 is the semantic baseline alone; set propagation.semantic_checkpoint)"
            )
        lo, hi = self.scale
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"train.scale = {self.scale!r}: need 0 <= min <= max <= 1")
        lo, hi = self.ratio
        if not 0 < lo <= hi:
            raise ValueError(f"train.ratio = {self.ratio!r}: need 0 < min <= max")
        if self.batch_size % self.gpus:
            raise ValueError(f"train.batch_size = {self.batch_size} is not divisible by train.gpus = {self.gpus}")
        return self


# propagation.preset: the values a preset gives to the keys the parameter files leave out
# (CRW: Jabri et al. 2020, its label-propagation settings; official: the HVC code's defaults)
PROPAGATION_PRESETS: dict[str, dict[str, Any]] = {
    "crw": {"topk": 10, "context": 20, "temperature": 0.05, "radius": 12},
    "official": {"topk": 15, "context": 50, "temperature": 0.1, "radius": 12},
    # LIIR (Li et al., CVPR 2022, §3.3; LIIR_pytorch mast_momen.py R = 14 at stride 4): its own
    # propagation (hvc/eval/liir_propagation.py), of which only the window radius is a key here:
    # 14 cells at 480p (56 pixels), scaled to the evaluated frames' short side
    "liir": {"radius": 14},
}


class ClipParams(_Section):
    """Training clips of video methods (read only when ``method`` trains on clips)."""

    length: int = Field(2, ge=1, le=64, description="Frames per training clip, T.")
    gap: int = Field(1, ge=1, le=100, description="Index step between consecutive clip frames (1 = adjacent frames).")
    size: int = Field(256, ge=16, le=2048, description="Side of the square crop each clip is resized to, pixels.")


class LIIRParams(_Section):
    """LIIR training (Li et al., CVPR 2022, §3.3; github.com/shasha521/LIIR_pytorch where the
    paper is silent). Read only when ``method: liir``. One train stage runs both phases:
    phase 1 (intra-video reconstruction) for the first steps, then phase 2 (inter-video
    negatives + compactness) continuing from phase 1's weights with a fresh Adam state, as
    the authors' second run does. Each phase's pairs per step (``batch_size1``,
    ``batch_size2``) are reported by the method's data spec; frames are resized to
    ``clips.size`` (paper: 256); ``clips.length``
    and ``clips.gap`` are not read (LIIR draws the query gap from ``frame_gaps``)."""

    phase2_share: float = Field(
        5 / 35,
        ge=0,
        le=1,
        description="Share of the training steps spent in phase 2 (paper §3.3: 30 epochs phase 1 + 5 epochs phase 2 = 5/35).",
    )
    lr1: float = Field(1e-3, gt=0, description="Adam learning rate of phase 1 (paper §3.3: 1e-3).")
    lr2: float = Field(1e-4, gt=0, description="Adam learning rate of phase 2 (paper §3.3: 1e-4).")
    frame_gaps: list[int] = Field(
        default_factory=lambda: [2, 5, 8],
        min_length=1,
        description="Reference-to-query frame gaps of a training pair, in stored frames (LIIR_pytorch YouTubeVOSTrain.py: 2, 5, 8).",
    )
    frame_gap_probs: list[float] = Field(
        default_factory=lambda: [0.4, 0.4, 0.2],
        min_length=1,
        description="Probability of each of frame_gaps (LIIR_pytorch YouTubeVOSTrain.py: 0.4, 0.4, 0.2).",
    )
    bank_frames: int = Field(1440, ge=1, description="Frames of other videos in the memory bank (paper §3.3: 1,440).")
    batch_size1: int = Field(32, ge=1, description="Frame pairs per step in phase 1 (paper §3.3: 32).")
    batch_size2: int = Field(12, ge=1, description="Frame pairs per step in phase 2 (paper §3.3: 12; LIIR_pytorch main_dis.py --bsize 12).")
    phase2_design: Literal["paper", "code"] = Field(
        "paper",
        description="Phase 2 losses: 'paper' (paper Eq. 5: the inter-video reconstruction on the stride-4 features "
        "replaces the intra one, plus compactness Eq. 8); 'code' (LIIR_pytorch main_dis.py and models/mast_momen.py, "
        "the design of its published 72.2: intra reconstruction at weight 1, the inter-video one on a separate "
        "stride-8 head at weight 0.5, plus compactness).",
    )
    border: Literal["mask", "zero"] = Field(
        "mask",
        description="Training window cells outside the reference frame: 'mask' (left out of the softmax; the paper "
        "is silent) or 'zero' (dot product 0 and label 0, LIIR_pytorch's correlation sampler and F.unfold padding).",
    )
    scale_radius: bool = Field(
        True,
        description="Scale the training window radii with clips.size (6 cells at 256 px, paper §3.3 and LIIR_pytorch "
        "mast_momen.py R = 6), so smaller pairs use the window covering the same share of the frame; False: 6 cells.",
    )

    @model_validator(mode="after")
    def _check(self) -> LIIRParams:
        if len(self.frame_gaps) != len(self.frame_gap_probs) or abs(sum(self.frame_gap_probs) - 1.0) > 1e-6:
            raise ValueError(f"liir.frame_gap_probs must match liir.frame_gaps and sum to 1, got {self.frame_gaps}, {self.frame_gap_probs}")
        if min(self.frame_gaps) < 1:
            raise ValueError(f"liir.frame_gaps must be >= 1, got {self.frame_gaps}")
        return self


class PropagationParams(_Section):
    """Label propagation (paper §4.1). Defaults = the authors' infer_vos.py and core/config.py; preset 'crw' = CRW's."""

    temperature: float = Field(0.1, gt=0, description="Softmax temperature of the affinity.")
    topk: int = Field(15, ge=1, description="Keep the top-k affinities per query pixel.")
    context: int = Field(50, ge=0, description="Number of previous frames in the context.")
    radius: int = Field(12, ge=0, description="Local window radius, in feature cells, for previous frames (0 = global).")
    resolution: int | None = Field(
        None, ge=32, description="Resize frames so the short side has this many pixels (None = native)."
    )
    feature_layer: Literal["layer3", "layer4"] = Field("layer3", description="Encoder layer whose features are matched.")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="Feature extraction precision (bf16 on GPU).")
    query_chunk: int = Field(4096, ge=1, description="Query pixels per chunk (bounds memory).")
    semantic_checkpoint: str | None = Field(
        None, description="MoCo-v1 ResNet-50 checkpoint to merge (official code); None = HVC features alone."
    )
    semantic_weight: float = Field(1.05, gt=0, description="Weight of HVC features before the merge (official: 1.05).")
    preset: Literal["official", "crw", "liir", "none"] = Field(
        "none",
        description="'crw': top-k 10, 20 frames, temperature 0.05; 'official': the defaults; 'liir': LIIR's own "
        "propagation (references 0, 5, t-5, t-3, t-1, window radius 14, compact affinity; topk, context and "
        "temperature unused; pose keeps the standard propagation); 'none': nothing. "
        "A preset fills only keys the files leave out: an explicitly set key wins.",
    )

    @model_validator(mode="after")
    def _apply_preset(self) -> PropagationParams:
        # a preset fills only the keys the files leave out: an explicit key always wins
        for key, value in PROPAGATION_PRESETS.get(self.preset, {}).items():
            if key not in self.model_fields_set:
                object.__setattr__(self, key, value)
        return self


class EvalParams(_Section):
    """Scoring."""

    bound_th: float = Field(0.008, gt=0, lt=1, description="F boundary tolerance as a fraction of the diagonal (DAVIS).")


class BudgetParams(_Section):
    """The equal-budget comparison (``results/tables/budget.*``): HVC and every method of
    ``compare`` trained on the same training set for the same budget and scored on the
    same benchmark. Assembled only when ``compare`` lists a method."""

    unit: Literal["images", "seconds"] = Field(
        "images",
        description="images: every method sees the same number of training samples (steps = images / train.batch_size); "
        "seconds: every method trains for the same wall time (train.max_seconds; machine-dependent).",
    )
    images: int = Field(2048, ge=1, description="Training samples (image view pairs or frame pairs) per method, unit images.")
    seconds: float = Field(600.0, gt=0, description="Training wall time per method, unit seconds.")
    benchmark: Literal[BENCHMARKS] | None = Field(  # type: ignore[valid-type]
        None, description="Benchmark of the comparison; None = the first of data.benchmarks scored with J&F."
    )


class Params(_Section):
    """Every parameter of the pipeline; ``params.yaml`` is an instance of this."""

    seed: int = Field(0, description="Global random seed.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available.")
    method: Literal["hvc", "liir"] = Field(
        "hvc",
        description="Self-supervised method trained (a package of hvc/methods/): hvc trains on two views of "
        "static images (the paper); liir (Li et al., CVPR 2022) trains on frame pairs of training videos.",
    )
    data: DataParams = Field(default_factory=DataParams)
    demo: DemoParams = Field(default_factory=DemoParams)
    shards: ShardParams = Field(default_factory=ShardParams)
    train: TrainParams = Field(default_factory=TrainParams)
    clips: ClipParams = Field(default_factory=ClipParams)
    liir: LIIRParams = Field(default_factory=LIIRParams)
    propagation: PropagationParams = Field(default_factory=PropagationParams)
    eval: EvalParams = Field(default_factory=EvalParams)
    ablations: list[str] = Field(
        default_factory=list,
        description="Paper ablation tables whose rows Snakemake trains (table6, table7a ... table7f).",
    )
    authors_checkpoint: str | None = Field(
        None,
        description="The authors' released HVC checkpoint (official model zoo, e.g. hvc_coco.pth): when set, "
        "the tables add 'HVC (authors' weights)' rows, propagated and scored like ours.",
    )
    compare: list[Literal["liir"]] = Field(
        default_factory=list,
        description="Methods trained here beside HVC: their rows in Tables 1, 2, 5 and 8 (trained on data.train_set when "
        "it has videos, else on ytvos) and the equal-budget table (budget section); configs/compare.yaml.",
    )
    budget: BudgetParams = Field(default_factory=BudgetParams)
    baselines: list[Literal["random", "imagenet"]] = Field(
        default_factory=lambda: ["random"],
        description="Baseline encoders propagated beside HVC: random init, ImageNet-supervised ResNet-18.",
    )

    @model_validator(mode="after")
    def _check(self) -> Params:
        allowed = sorted(t for t in published_tables() if t.startswith("table6") or t.startswith("table7"))
        unknown = [t for t in self.ablations if t not in allowed]
        if unknown:
            raise ValueError(f"ablations: unknown table(s) {unknown}; allowed: {allowed}")
        return self


class ParamsError(ValueError):
    """params.yaml is malformed or violates the schema."""


def check_data_root(p: Params) -> None:
    """Stop a non-demo run whose dataset folder is missing, before any work starts.

    Raises:
        ParamsError: ``data.root`` does not exist while a real training set or benchmark is used.
    """
    real = [b for b in p.data.benchmarks if b != "demo"] + ([p.data.train_set] if p.data.train_set != "demo" else [])
    if real and not Path(p.data.root).is_dir():
        raise ParamsError(
            f"data.root = {p.data.root!r}: folder does not exist, but {', '.join(real)} need it; "
            "download the datasets first (hvc fetch NAME --root DATA_ROOT, see README) or fix data.root"
        )


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid parameters"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        value = e.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key} = {shown}: unknown key")
        else:
            lines.append(f"  {key} = {shown}: {e['msg']}")
    return "\n".join(lines)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (mappings merge, others replace)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ``["train.alpha=0.5", "data.benchmarks=[demo]"]`` into a nested dict (values are YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ParamsError(f"override {item!r}: expected KEY=VALUE, e.g. train.alpha=0.5")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping (PyYAML keeps the
    last one silently: a second ``train:`` section would replace the whole first one)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} on lines {seen[key]} and {line} (the second would replace the first)", key_node.start_mark
            )
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML text, refusing duplicate keys.

    Raises:
        ParamsError: ``"<source>: duplicate key 'train' on lines 12 and 40 ..."`` or
            ``"<source>: not valid YAML (...)"``.
    """
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.constructor.ConstructorError as e:
        if e.problem and e.problem.startswith("duplicate key"):
            raise ParamsError(f"{source}: {e.problem}") from None
        raise ParamsError(f"{source}: not valid YAML ({e})") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{source}: not valid YAML ({e})") from None


def load_params(
    paths: list[str | os.PathLike[str]] | str | os.PathLike[str] = "params.yaml",
    overrides: dict[str, Any] | None = None,
) -> Params:
    """Load, merge (in order) and validate parameter files.

    Args:
        paths: one YAML file or several, deep-merged left to right (as Snakemake merges
            ``--configfile``).
        overrides: nested dict applied last (e.g. an ablation row).
    Raises:
        ParamsError: a file is missing, empty, not YAML or gives a key twice (naming the key
            and both lines), or the merged values break the schema (every float must be
            finite); the message names the file, the key, the value and what is allowed.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ParamsError(f"{path}: parameter file not found") from None
        except UnicodeDecodeError:
            raise ParamsError(f"{path}: not a text file (not valid UTF-8), so not YAML") from None
        except OSError as e:  # a folder, no permission, ...
            raise ParamsError(f"{path}: cannot read the parameter file ({e.strerror or e})") from None
        data = read_yaml(text, str(path))
        if data is None:  # an emptied or truncated file must not silently mean the defaults
            raise ParamsError(f"{path}: parameter file is empty (no sections); write the parameters or drop the file")
        if not isinstance(data, dict):
            raise ParamsError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
        merged = deep_merge(merged, data)
    if overrides:
        merged = deep_merge(merged, overrides)
    return validate_params(merged, source=", ".join(str(p) for p in paths))


def validate_params(data: dict[str, Any], source: str = "params") -> Params:
    """Validate a nested dict against :class:`Params`; raises :class:`ParamsError`."""
    try:
        return Params.model_validate(data)
    except ValidationError as e:
        raise ParamsError(_format_validation_error(e, source)) from None


def schema_rows(model: type[BaseModel] = Params, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) for every leaf parameter, for ``hvc params``."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows += schema_rows(ann, prefix=f"{key}.")
            continue
        default = field.get_default(call_default_factory=True)
        type_name = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
        rows.append((key, type_name, repr(default), field.description or ""))
    return rows


def allowed_values(key: str) -> str:
    """What a leaf parameter accepts beyond its type, for ``hvc params``: the choices of a
    choice-valued key (also of each item of a list), or its numeric range; "" otherwise.

    Args:
        key: dotted key, e.g. ``"train.augment"``.
    Raises:
        KeyError: ``key`` is not a leaf parameter of :class:`Params`.
    """
    import typing

    model: type[BaseModel] = Params
    *sections, leaf = key.split(".")
    for part in sections:
        model = model.model_fields[part].annotation  # type: ignore[assignment]
    field = model.model_fields[leaf]

    def literals(ann: Any) -> list[Any]:
        if typing.get_origin(ann) is Literal:
            return list(typing.get_args(ann))
        return [v for arg in typing.get_args(ann) for v in literals(arg)]

    choices = ", ".join(str(c) for c in literals(field.annotation))
    if choices:
        return f"one of {choices}" if typing.get_origin(field.annotation) is Literal else f"items from {choices}"
    bounds = []
    for meta in field.metadata:
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{op} {getattr(meta, attr)}")
    if bounds and type(None) in typing.get_args(field.annotation):
        return "null or " + ", ".join(bounds)
    return ", ".join(bounds)


def effective_rows(paths: list[str | os.PathLike[str]]) -> list[tuple[str, str, str, str, str]]:
    """(key, value, origin, allowed, meaning) of every leaf parameter as the merged files give it.

    ``origin`` is the last file that sets the key, ``"preset <name>"`` for a value that
    ``propagation.preset`` filled in, or ``"default"``. Values are shown as YAML flow scalars.

    Raises:
        ParamsError: as :func:`load_params`.
    """
    p = load_params(paths)
    set_by: dict[str, str] = {}
    for path in paths:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        for key in _leaf_keys(data):
            set_by[key] = str(path)
    preset = PROPAGATION_PRESETS.get(p.propagation.preset, {})
    values = _flatten_model(p)
    rows = []
    for key, _type, _default, meaning in schema_rows():
        origin = set_by.get(key)
        section, _, leaf = key.partition(".")
        from_preset = section == "propagation" and leaf in preset
        if origin is None:
            origin = f"preset {p.propagation.preset}" if from_preset else "default"
        elif from_preset and preset[leaf] != values[key]:
            origin += f" (explicit, wins over preset {p.propagation.preset}: {preset[leaf]})"
        value = yaml.safe_dump(values[key], default_flow_style=True, width=1000).strip().removesuffix("...").strip()
        rows.append((key, value, origin, allowed_values(key), meaning))
    return rows


def _leaf_keys(data: dict[str, Any]) -> list[str]:
    """Dotted keys a raw parameter mapping sets: the keys inside each section, top-level leaves."""
    sections = {n for n, f in Params.model_fields.items() if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)}
    keys = []
    for k, v in data.items():
        keys += [f"{k}.{leaf}" for leaf in v] if k in sections and isinstance(v, dict) else [k]
    return keys


def _flatten_model(p: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value (tuples as lists) of every leaf of a validated model."""
    out: dict[str, Any] = {}
    for name in type(p).model_fields:
        value = getattr(p, name)
        if isinstance(value, BaseModel):
            out.update(_flatten_model(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = list(value) if isinstance(value, tuple) else value
    return out


SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "params.schema.json"


def params_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of :class:`Params`, exported from the pydantic model.

    The one schema for three readers: pydantic (the authority: it also runs the
    cross-field checks a JSON Schema cannot state), Snakemake's ``validate()`` in
    ``workflow/rules/common.smk``, and editors checking ``params.yaml`` (YAML language
    server). ``hvc params --schema`` writes it to ``workflow/schemas/params.schema.json``;
    a test fails when that file is stale.
    """
    schema = Params.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def params_json_schema_text() -> str:
    """:func:`params_json_schema` as the exact text of the committed file (sorted keys, newline at the end)."""
    return json.dumps(params_json_schema(), indent=2, sort_keys=True) + "\n"
