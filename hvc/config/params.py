"""The parameter schema: the one params loader, and the documentation of every knob.

``params.yaml`` is validated against :class:`Params` before any work starts. Unknown keys,
wrong types and out-of-range values stop the run with one message that names the key,
the value and what is allowed. ``hvc params`` prints this schema as a table.

Content ids of the stages that read these parameters: :mod:`hvc.config.ids`.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_serializer, model_validator

from hvc.config import registry
from hvc.config.benchmarks import BENCHMARKS as _BENCHMARK_ENTRIES
from hvc.config.datasets import TRAIN_SET_GLOBS, load_registry
from hvc.config.published import published_tables
from hvc.config.section import ParamsError, Section

_Section = Section

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


TRAIN_SETS = tuple(TRAIN_SET_GLOBS)
BENCHMARKS = tuple(_BENCHMARK_ENTRIES)


class DataParams(_Section):
    """Where data comes from and what is trained and evaluated on."""

    root: str = Field("data", description="Folder holding downloaded and extracted datasets (real runs).")
    train_set: Literal[TRAIN_SETS] = Field(  # type: ignore[valid-type]
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
    """The training loop of every method (``hvc.train``): optimisation budget, batch,
    precision, workers, checkpoints. Each method's own knobs are in its section (``hvc:``,
    ``liir:``, ...; :mod:`hvc.config.registry`)."""

    crop_size: int = Field(
        256,
        ge=16,
        description="Side of the square training input, pixels: HVC's views after RandomResizedCrop (paper §3.3: 256), "
        "the frames LIIR resizes its pairs to (Li et al. §3.3: 256).",
    )
    batch_size: int = Field(128, ge=1, description="Global batch size (split across GPUs).")
    epochs: int = Field(20, ge=1, description="Passes over the training shards.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps (overrides epochs when set).")
    max_seconds: float | None = Field(
        None,
        gt=0,
        description="Also stop once this much training wall time has passed (a wall-clock budget; the result then "
        "depends on the machine's speed, so is not reproducible). A method with several training phases splits "
        "this time between them by their shares.",
    )
    lr: float = Field(1e-3, gt=0, description="Adam learning rate (constant; methods with their own schedule set theirs).")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay.")
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
        if self.batch_size % self.gpus:
            raise ValueError(f"train.batch_size = {self.batch_size} is not divisible by train.gpus = {self.gpus}")
        return self


# propagation.preset: the values a preset gives to the keys the parameter files leave out
# (CRW: Jabri et al. 2020, its label-propagation settings; official: the HVC code's defaults).
# A method's own preset (its registry entry) fills what is still left, for its encoders only.
PROPAGATION_PRESETS: dict[str, dict[str, Any]] = {
    "crw": {"topk": 10, "context": 20, "temperature": 0.05, "radius": 12},
    "official": {"topk": 15, "context": 50, "temperature": 0.1, "radius": 12},
}

# Keys that moved: old dotted key -> its new key (None: removed, the message says why).
MOVED_KEYS: dict[str, str | None] = {
    **{f"train.{k}": f"hvc.{k}" for k in (
        "static", "dynamic", "alpha", "radius", "radius_unit", "proj_dim", "head", "momentum", "scale", "ratio",
        "augment", "normalization",
    )},
    "clips.size": "train.crop_size",
    "clips.length": None,
    "clips.gap": None,
}  # fmt: skip
MOVED_WHY = {
    "clips.length": "each method draws its own clips from its own section (e.g. liir.frame_gaps)",
    "clips.gap": "each method draws its own clips from its own section (e.g. liir.frame_gaps)",
}


class PropagationParams(_Section):
    """Label propagation (paper §4.1). Defaults = the authors' infer_vos.py and core/config.py; preset 'crw' = CRW's."""

    temperature: float = Field(0.1, gt=0, description="Softmax temperature of the affinity.")
    topk: int = Field(15, ge=1, description="Keep the top-k affinities per query pixel.")
    context: int = Field(50, ge=0, description="Number of previous frames in the context.")
    radius: int = Field(12, ge=0, description="Local window radius, in feature cells, for previous frames (0 = global).")
    resolution: int | None = Field(
        None, ge=32, description="Resize frames so the short side has this many pixels (None = native)."
    )
    feature_layer: Literal["layer3", "layer4", "key", "res4", "post_conv"] = Field(
        "layer3", description="Encoder layer whose features are matched (one of the encoder's layers, encoder.json; HVC: layer3 or layer4)."
    )
    precision: Literal["fp32", "bf16"] = Field("fp32", description="Feature extraction precision (bf16 on GPU).")
    query_chunk: int = Field(4096, ge=1, description="Query pixels per chunk (bounds memory).")
    semantic_checkpoint: str | None = Field(
        None, description="MoCo-v1 ResNet-50 checkpoint to merge (official code); None = HVC features alone."
    )
    semantic_weight: float = Field(1.05, gt=0, description="Weight of HVC features before the merge (official: 1.05).")
    preset: Literal["official", "crw", "none"] = Field(
        "none",
        description="'crw': top-k 10, 20 frames, temperature 0.05; 'official': the defaults; 'none': nothing. "
        "A preset fills only keys the files leave out: an explicitly set key wins. Each method's encoders also "
        "get that method's own preset for the keys still left out (e.g. LIIR's window radius).",
    )
    inference: Literal["method", "generic"] = Field(
        "method",
        description="'method': an encoder of a method with its own inference (LIIR) is propagated with it; "
        "'generic': every encoder with the generic label propagation (pose always uses it).",
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


class BaseParams(_Section):
    """The pipeline's sections; :func:`params_model` adds ``method``, ``compare`` and one
    section per registered method (:mod:`hvc.config.registry`)."""

    seed: int = Field(0, description="Global random seed.")
    seeds: list[int] = Field(
        default_factory=list,
        description="Repeat every trained experiment (training and everything downstream) once per seed, e.g. "
        "[0, 1, 2]; the list must include `seed` (that run keeps its ids); tables show mean ± std over the seeds, "
        "runs.csv one row per seed. Empty: `seed` only.",
    )
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Parameter sweep: {dotted key: [values]}, e.g. {hvc.alpha: [0.1, 0.5, 2.0]}; one experiment "
        "(its own content ids) per value, the grid product of the values when several keys are given, and one "
        "comparison table (sweep.*). Keys read by training or propagation only.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available.")
    data: DataParams = Field(default_factory=DataParams)
    demo: DemoParams = Field(default_factory=DemoParams)
    shards: ShardParams = Field(default_factory=ShardParams)
    train: TrainParams = Field(default_factory=TrainParams)
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
    budget: BudgetParams = Field(default_factory=BudgetParams)
    baselines: list[Literal["random", "imagenet"]] = Field(
        default_factory=lambda: ["random"],
        description="Baseline encoders propagated beside the trained method: random init (of the trained method's "
        "encoder), ImageNet-supervised ResNet-18.",
    )

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, v: list[int], info: Any) -> list[int]:
        twice = sorted({s for s in v if v.count(s) > 1})
        if twice:
            raise ValueError(f"seed(s) {twice} given twice")
        seed = info.data.get("seed")
        if v and seed is not None and seed not in v:
            raise ValueError(f"must include the global seed (seed = {seed}), whose run keeps its ids; add it or set seed to one of {v}")
        return v

    @field_validator("sweep", mode="before")
    @classmethod
    def _dotted_sweep(cls, v: Any) -> Any:
        """Nested sections to dotted keys: ``--set sweep.hvc.alpha=[...]`` (how every job gets
        a ``--config 'sweep={hvc.alpha: [...]}'``) gives ``{hvc: {alpha: [...]}}``."""
        return flatten(v) if isinstance(v, dict) else v

    @model_serializer(mode="wrap")
    def _drop_unused_repeats(self, handler: Any) -> Any:
        """Leave ``seeds`` and ``sweep`` out of a dump while they are empty, so a run without them
        keeps the experiment set id (a hash of the dump) it had before these keys existed."""
        out = handler(self)
        if isinstance(out, dict):
            for key in ("seeds", "sweep"):
                if key in out and not out[key]:
                    del out[key]
        return out

    @model_validator(mode="after")
    def _check(self) -> BaseParams:
        allowed = sorted(t for t in published_tables() if t.startswith("table6") or t.startswith("table7"))
        unknown = [t for t in self.ablations if t not in allowed]
        if unknown:
            raise ValueError(f"ablations: unknown table(s) {unknown}; allowed: {allowed}")
        return self


@functools.cache
def params_model() -> type[BaseParams]:
    """The model of every parameter: :class:`BaseParams` plus ``method`` and ``compare``
    (choices: the registered methods) and each registered method's own section under its
    name (:attr:`hvc.config.registry.MethodSpec.section`). Built once per registry state.

    Raises:
        ValueError: a method's name is taken by a section of the pipeline.
    """
    names = registry.method_names()
    specs = [registry.method_spec(n) for n in names]
    listing = "; ".join(f"{s.name} ({s.display}, trains on {'/'.join(dict.fromkeys(s.kinds))})" for s in specs)
    fields: dict[str, Any] = {
        "method": (
            Literal[names],  # type: ignore[valid-type]
            Field(registry.DEFAULT_METHOD, description=f"Self-supervised method trained (hvc/config/registry.py): {listing}."),
        ),
        "compare": (
            list[Literal[names]],  # type: ignore[valid-type]
            Field(
                default_factory=list,
                description="Methods trained here beside `method`: their rows in the paper's tables (trained on "
                "data.train_set when it has videos or they train on images, else on their video training set) and the "
                "equal-budget table (budget section); configs/compare.yaml.",
            ),
        ),
    }
    for spec in specs:
        if spec.section is None:
            continue
        if spec.name in BaseParams.model_fields:
            raise ValueError(f"method {spec.name!r}: its name is a section of the pipeline; rename the method")
        fields[spec.name] = (spec.section, Field(default_factory=spec.section, description=f"{spec.display}: {spec.section.__doc__.splitlines()[0]}"))
    return create_model("Params", __base__=BaseParams, **fields)


registry.on_change(params_model.cache_clear)

# The model of the built-in methods (annotations); validate with :func:`validate_params`,
# which follows the registry.
Params = params_model()


def propagation_for(p: BaseParams, method: str) -> PropagationParams:
    """The propagation section as the encoders of ``method`` use it: the method's own preset
    (:attr:`hvc.config.registry.MethodSpec.preset`, e.g. LIIR's window radius) fills the keys
    that neither the parameter files nor ``propagation.preset`` set. Other methods' encoders
    never see it.

    Raises:
        KeyError: unknown method.
    """
    q = p.propagation
    generic = PROPAGATION_PRESETS.get(q.preset, {})
    fill = {k: v for k, v in registry.method_spec(method).preset.items() if k not in q.model_fields_set and k not in generic}
    if not fill:
        return q
    out = q.model_copy(update=fill)
    return out


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
    """Turn ``["hvc.alpha=0.5", "data.benchmarks=[demo]"]`` into a nested dict (values are YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ParamsError(f"override {item!r}: expected KEY=VALUE, e.g. hvc.alpha=0.5")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        if not all(parts):
            raise ParamsError(f"override {item!r}: {key!r} is not a dotted key, e.g. hvc.alpha")
        for n, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                above = ".".join(parts[: n + 1])
                raise ParamsError(f"override {item!r}: {above} was set to {node!r} by an earlier override, so it has no key {parts[n + 1]!r}")
        try:  # the safe loader: a !!python tag is an error, never code
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            problem = " ".join(str(e).split())
            raise ParamsError(f"override {item!r}: the value of {key} is not valid YAML ({problem})") from None
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
        raise ParamsError(f"{source}: not valid YAML ({' '.join(str(e).split())})") from None
    except yaml.YAMLError as e:  # one line: YAML's message spans several
        raise ParamsError(f"{source}: not valid YAML ({' '.join(str(e).split())})") from None


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


def moved_key_error(data: dict[str, Any], source: str) -> str | None:
    """One line naming the first key of ``data`` that moved (:data:`MOVED_KEYS`) and its new
    key, or why it is gone; None when every key is current."""
    for old, new in MOVED_KEYS.items():
        section, leaf = old.split(".")
        if isinstance(data.get(section), dict) and leaf in data[section]:
            if new is None:
                return f"{source}: {old} is no longer a parameter: {MOVED_WHY[old]}; remove it"
            return f"{source}: {old} moved to {new} (the method's own section or the training loop's); rename it"
    return None


def validate_params(data: dict[str, Any], source: str = "params") -> BaseParams:
    """Validate a nested dict against :func:`params_model`.

    Raises:
        ParamsError: a moved key (one line naming its new key), the schema's messages
            (:func:`load_params`), or a bad ``sweep`` key or value (:func:`check_sweep`).
    """
    moved = moved_key_error(data, source) if isinstance(data, dict) else None
    if moved is not None:
        raise ParamsError(moved)
    try:
        p = params_model().model_validate(data)
    except ValidationError as e:
        raise ParamsError(_format_validation_error(e, source)) from None
    check_sweep(p, data, source)
    return p


# Keys a sweep may not vary, and what to use instead.
SWEEP_REFUSED = {
    "seed": "list the seeds in seeds: [...] (the tables then show mean ± std over them)",
    "seeds": "seeds repeats every experiment already",
    "sweep": "a sweep of sweeps",
    "method": "list the other methods in compare",
}


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: ``{"hvc": {"alpha": 1}}`` → ``{"hvc.alpha": 1}``;
    a key already dotted stays as it is, and a list is a value (``{hvc.alpha: [...]}``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def sweep_key_problem(key: str) -> str | None:
    """Why ``key`` cannot be swept (not a single parameter of :func:`params_model`, or one of
    :data:`SWEEP_REFUSED`), or None."""
    if key in SWEEP_REFUSED:
        return f"cannot be swept: {SWEEP_REFUSED[key]}"
    model: type[BaseModel] = params_model()
    parts = key.split(".")
    for n, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return "unknown key (a dotted parameter key, e.g. hvc.alpha; `hvc params` lists them)"
        ann = field.annotation
        section = isinstance(ann, type) and issubclass(ann, BaseModel)
        if n < len(parts) - 1 and not section:
            return f"{'.'.join(parts[: n + 1])} has no keys below it"
        if n == len(parts) - 1 and section:
            return "a whole section; sweep one of its keys (e.g. " + f"{key}.{next(iter(ann.model_fields))})"
        model = ann if section else model
    return None


def check_sweep(p: BaseParams, data: dict[str, Any], source: str) -> None:
    """Validate every value of ``sweep`` through the model: the base parameters with that
    one key set to that value must validate.

    Raises:
        ParamsError: one line, ``"<source>: sweep: hvc.alpha = 'x': <what is allowed>"``.
    """
    if not p.sweep:
        return
    base = {k: v for k, v in data.items() if k not in ("sweep", "seeds")}
    for key, values in p.sweep.items():
        problem = sweep_key_problem(key)
        twice = [x for i, x in enumerate(values) if x in values[:i]]
        if problem is None and not values:
            problem = f"expected a non-empty list of values, e.g. {{{key}: [0.1, 0.5]}}"
        elif problem is None and twice:
            problem = f"value {twice[0]!r} given twice"
        if problem is not None:
            raise ParamsError(f"{source}: sweep: {key}: {problem}")
        for value in values:
            nested: dict[str, Any] = {}
            node = nested
            *sections, leaf = key.split(".")
            for part in sections:
                node = node.setdefault(part, {})
            node[leaf] = value
            try:
                params_model().model_validate(deep_merge(base, nested))
            except ValidationError as e:
                msg = "; ".join(err["msg"] for err in e.errors())
                raise ParamsError(f"{source}: sweep: {key} = {value!r}: {msg}") from None


def schema_rows(model: type[BaseModel] | None = None, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) for every leaf parameter, for ``hvc params``."""
    model = model or params_model()
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
        key: dotted key, e.g. ``"hvc.augment"``.
    Raises:
        KeyError: ``key`` is not a leaf parameter of :class:`Params`.
    """
    import typing

    model: type[BaseModel] = params_model()
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
    sections = {n for n, f in params_model().model_fields.items() if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)}
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
    schema = params_model().model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def params_json_schema_text() -> str:
    """:func:`params_json_schema` as the exact text of the committed file (sorted keys, newline at the end)."""
    return json.dumps(params_json_schema(), indent=2, sort_keys=True) + "\n"
