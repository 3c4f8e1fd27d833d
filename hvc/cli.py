"""``hvc``: one subcommand per pipeline stage, the seam between the science and the wiring.

Snakemake rules (workflow/rules/*.smk) and DVC stages (dvc.yaml) call these same
commands. Each stage reads its inputs and its sections of the parameter files, writes
its output atomically, and logs one line with its wall time.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from hvc.io import DataError, Earlier, by_content, by_members, by_provenance, check_output
from hvc.config.params import Params, ParamsError, check_data_root, load_params, parse_overrides
from hvc.config.ids import stage_ids

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
log = logging.getLogger("hvc")

ParamsOpt = Annotated[
    list[Path],
    typer.Option("--params", "-p", help="Parameter file(s), deep-merged left to right.", show_default=False),
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-S", help="Override one parameter, KEY=VALUE (YAML value), e.g. hvc.alpha=0.5."),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output path (written atomically).")]
ThreadsOpt = Annotated[
    Optional[int],
    typer.Option(
        "--threads", min=1,
        help="CPU threads for PyTorch's operators (torch.set_num_threads); default: PyTorch's own "
        "(OMP_NUM_THREADS, else every core). The Snakemake rules pass the job's `threads`.",
    ),
]  # fmt: skip


def _usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _set_threads(threads: int | None) -> None:
    """Let PyTorch's CPU operators use ``threads`` threads, at most the cores this process may
    run on (None: leave PyTorch's default).

    Snakemake exports OMP_NUM_THREADS=1 to a job without ``threads:`` and torchrun does the
    same for each worker, so the thread count is given explicitly rather than trusted to
    the environment. Called before anything imports torch, it also makes idle OpenMP
    threads sleep rather than spin (``OMP_WAIT_POLICY=PASSIVE``, unless the environment
    sets it): on a CPU shared with other jobs, spinning threads of several jobs take the
    cores from each other (measured on a 2-core machine under load: propagation 4x slower
    with 2 spinning threads than with 1 thread, 2x faster with 2 sleeping threads).
    """
    if threads is not None:
        threads = min(threads, _usable_cores())  # a DVC stage asks for COMPUTE_THREADS on any machine
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when the OpenMP runtime loads
        import torch

        torch.set_num_threads(threads)
        _configure_logging()
        log.info("using %d CPU threads (OpenMP wait policy %s)", threads, os.environ["OMP_WAIT_POLICY"])


ExpectIdOpt = Annotated[
    Optional[str],
    typer.Option(
        "--expect-id",
        help="Content id the output path was planned with (the workflow passes it); the stage refuses to run "
        "when the parameters now give another id (parameter files edited during the run).",
    ),
]


def _load(params: list[Path] | None, overrides: list[str] | None) -> Params:
    return load_params(params or [Path("params.yaml")], parse_overrides(overrides or []))


LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def _record(p: Params, stage: str, params: list[Path] | None, overrides: list[str] | None, **extra):
    """A block in which every output folder the stage writes gets ``params.yaml``: the
    parameters it read, the files and overrides they came from, its id and provenance
    (:func:`hvc.config.record.stage_record`)."""
    from hvc.config.record import RECORD_NAME, stage_record
    from hvc.io import sidecar_files

    files = [Path(f).as_posix() for f in (params or [Path("params.yaml")])]
    return sidecar_files({RECORD_NAME: stage_record(p, stage, files, overrides, **extra)})


def _configure_logging(log_file: Path | None = None):
    """Log records at INFO to stderr; with ``log_file``, to that file instead, and to stderr
    only warnings, errors and the training heartbeat (``hvc.heartbeat``), so that a
    workflow that sends a job's log to a file still shows its progress on the terminal.
    Returns the log file's stream (for a progress bar), else None."""
    if log_file is None:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
        return None
    log_file.parent.mkdir(parents=True, exist_ok=True)
    first = os.environ.get("RANK", "0") == "0"  # under torchrun the other ranks append
    to_file = logging.FileHandler(log_file, mode="w" if first else "a", encoding="utf-8")
    to_terminal = logging.StreamHandler(sys.stderr)
    to_terminal.addFilter(lambda r: r.levelno >= logging.WARNING or r.name == "hvc.heartbeat")
    for handler in (to_file, to_terminal):
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[to_file, to_terminal], force=True)
    logging.captureWarnings(True)  # library warnings into the log file (and the terminal)
    return to_file.stream


def _check_id(p: Params, stage: str, expected: str | None, out: Path, encoder_method: str | None = None) -> None:
    """Refuse to run a stage whose parameters or code no longer give the id its output was named with.

    A workflow names every output by the content id of the parameters and code at launch; a
    job re-reads the parameter files and runs the package as it is when it starts, so an
    edit in between would otherwise write results of other parameters or code under the
    planned id (and cache them there).

    Raises:
        ParamsError: naming the output, both ids and what to do.
    """
    if expected is None:
        return
    actual = stage_ids(p, encoder_method)[stage]
    if actual != expected:
        raise ParamsError(
            f"{out}: planned with id {expected} (stage {stage}), but the parameter files, code and training data now give {actual} "
            "(edited since the workflow started); restore them or start the workflow again"
        )


def _inputs(params: list[Path] | None, **named: object) -> list[tuple[str, object]]:
    """(option, path) of everything a stage reads: the parameter files and ``named``
    (keyword ``data`` for --data; a list value gives one entry per path)."""
    pairs: list[tuple[str, object]] = [("--params", f) for f in (params or [Path("params.yaml")])]
    for key, value in named.items():
        option = key if key.startswith(("-", "propagation.", "data.")) else "--" + key.replace("_", "-")
        for v in value if isinstance(value, (list, tuple)) else [value]:
            pairs.append((option, v))
    return pairs


def _is_zip_of_pngs(data: bytes) -> bool:
    import io
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return all(n.endswith((".png", "/")) for n in zf.namelist())
    except zipfile.BadZipFile:
        return False


def _is_flat_json_of_numbers(data: bytes) -> bool:
    import json

    try:
        obj = json.loads(data)
    except ValueError:
        return False
    return isinstance(obj, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in obj.values())


def _is_json_object(data: bytes) -> bool:
    import json

    try:
        return isinstance(json.loads(data), dict)
    except ValueError:
        return False


# How each output recognises the stage's own earlier output (which it may replace): the
# provenance record every stage writes (hvc.config.code.provenance), or, for the outputs
# whose format has no room for one, their fixed names or content.
EARLIER: dict[str, Earlier] = {
    "demo-data": by_provenance("demo_data", "manifest.json"),
    "shards": by_provenance("shards", "index.json"),
    "train": by_provenance("train", "train.json"),
    "propagate": by_provenance("propagate", "propagation.json"),
    "evaluate": by_provenance("evaluate"),
    "evaluate objects": by_content(_is_json_object, "JSON mapping of per-object scores"),
    "evaluate toolkit": by_members(("global_results-val.csv", "per-sequence_results-val.csv", "README.txt")),
    "evaluate metrics": by_content(_is_flat_json_of_numbers, "flat JSON mapping of numbers"),
    "submission": by_content(_is_zip_of_pngs, "zip archive of PNG masks"),
    "tables": by_provenance("tables", "summary.json"),
    "figures": by_provenance("figures", "figures.json"),
    "flow": by_provenance("flow"),
    "params schema": by_content(lambda b: b'"title": "Params"' in b and b'"$schema"' in b, "JSON Schema of the parameters"),
    "dvc-yaml": by_content(lambda b: b.startswith(b"# Generated by `hvc dvc-yaml"), "'# Generated by `hvc dvc-yaml`' header"),
}


def _check_outputs(stage: str, outputs: list[tuple[str, Path | None, str]], inputs: list[tuple[str, object]]) -> None:
    """:func:`hvc.io.check_output` for each (option, path, EARLIER key) of a stage: apart from
    every input and from each other, replacing only the stage's own earlier output."""
    given = [(option, path) for option, path, _ in outputs if path is not None]
    for option, path, kind in outputs:
        if path is None:
            continue
        others = [(o, q) for o, q in given if o != option]
        check_output(path, inputs + others, stage, EARLIER[kind], option)


@contextmanager
def _stage(name: str):
    """Log the stage's wall time; turn input errors into one clear line and exit 2."""
    _configure_logging()
    tic = time.perf_counter()
    try:
        yield
    except (ParamsError, DataError) as e:
        log.error("stage %s failed: %s", name, e)
        raise typer.Exit(2) from None
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        # a full disk met outside the atomic writers (which name their output themselves)
        log.error("stage %s failed: %s: %s", name, e.filename or "an output", e.strerror)
        raise typer.Exit(2) from None
    log.info("stage %s done in %.1f s", name, time.perf_counter() - tic)


@app.command("params")
def params_cmd(
    params: ParamsOpt = None,  # type: ignore[assignment]
    check: bool = typer.Option(False, help="Only validate the parameter files."),
    dump: bool = typer.Option(False, help="Print the merged, validated parameters as YAML."),
    schema: Annotated[
        Optional[Path], typer.Option(help="Write the JSON Schema of the parameters (exported from the model) to this file.")
    ] = None,
) -> None:
    """Document every parameter (key, type, default, allowed values, meaning). With -p FILE...:
    the effective value of every key in those files merged, where it comes from (a file, a
    propagation preset, or the default; an explicit key wins over the preset) and what it
    may be. --check validates, --dump prints the merged YAML, --schema writes the JSON Schema."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from hvc.config.params import allowed_values, effective_rows, params_json_schema_text, schema_rows

    if schema is not None:
        from hvc.io import write_text

        with _stage("params"):
            _check_outputs("params", [("--schema", schema, "params schema")], [])
            write_text(schema, params_json_schema_text())
        return
    if check or dump:
        with _stage("params"):
            p = _load(params, None)
            if dump:
                import yaml

                typer.echo(yaml.safe_dump(p.model_dump(mode="json"), sort_keys=False), nl=False)
            else:
                typer.echo(f"parameters valid ({len(p.model_dump())} sections)")
        return
    console = Console(width=max(Console().width, 160))
    if params:
        with _stage("params"):
            rows = effective_rows(params)
        table = Table(title=" + ".join(str(f) for f in params))
        for column in ("key", "value", "set by", "allowed", "meaning"):
            table.add_column(column, overflow="fold")  # long paths wrap, never cut
        for row in rows:
            table.add_row(*map(escape, row))  # values like [demo] are text, not markup
        console.print(table)
        return
    table = Table("key", "type", "default", "allowed", "meaning", title="params.yaml")
    for key, type_name, default, meaning in schema_rows():
        table.add_row(*map(escape, (key, type_name, default, allowed_values(key), meaning)))
    console.print(table)


@app.command("demo-data")
def demo_data(params: ParamsOpt = None, overrides: SetOpt = None, out: OutOpt = ..., expect_id: ExpectIdOpt = None) -> None:  # type: ignore[assignment]
    """Build the demo: static training images, training videos when a method of the plan trains on clips, and a DAVIS-layout video benchmark."""
    from hvc.config.ids import demo_videos
    from hvc.data.demo import build_demo

    with _stage("demo-data"):
        p = _load(params, overrides)
        _check_id(p, "demo_data", expect_id, out)
        _check_outputs("demo-data", [("--out", out, "demo-data")], _inputs(params))
        with _record(p, "demo_data", params, overrides):
            manifest = build_demo(p.demo, out, videos=demo_videos(p))
        log.info("demo: %d training images, %d sequences", manifest["train"]["num_images"], len(manifest["benchmark"]["sequences"]))


@app.command("shards")
def shards(
    params: ParamsOpt = None,  # type: ignore[assignment]
    overrides: SetOpt = None,
    input: Annotated[Path, typer.Option(help="Training-set folder (demo-data output, or data.root).")] = ...,  # type: ignore[assignment]
    out: OutOpt = ...,  # type: ignore[assignment]
    expect_id: ExpectIdOpt = None,
) -> None:
    """Write the training images (or, for a clip method, videos) to webdataset shards with an index (count, sha256 per shard)."""
    from hvc.data.shards import write_training_shards

    with _stage("shards"):
        p = _load(params, overrides)
        _check_id(p, "shards", expect_id, out)
        check_data_root(p)
        _check_outputs("shards", [("--out", out, "shards")], _inputs(params, input=input))
        with _record(p, "shards", params, overrides, input=str(input)):
            index = write_training_shards(p, input, out)
        log.info("%d samples in %d shards (%d skipped)", index["num_samples"], len(index["shards"]), index["num_skipped"])


@app.command("train")
def train_cmd(
    params: ParamsOpt = None,  # type: ignore[assignment]
    overrides: SetOpt = None,
    shards: Annotated[Path, typer.Option(help="Shard folder (with index.json).")] = ...,  # type: ignore[assignment]
    out: OutOpt = ...,  # type: ignore[assignment]
    threads: ThreadsOpt = None,
    expect_id: ExpectIdOpt = None,
    verify_shards: Annotated[
        str, typer.Option(help="Check the shards against index.json: 'sha256' (read once per run) or 'size' only.")
    ] = "sha256",
    log_file: Annotated[
        Optional[Path],
        typer.Option("--log", help="Write the log and the progress bar to this file; stderr then carries only the "
                     "heartbeat lines, warnings and errors (what a workflow shows on its terminal)."),
    ] = None,
    heartbeat: Annotated[
        Optional[int], typer.Option(min=0, help="A progress line (step, loss, images/s, ETA) every N steps; default train.log_every, 0: none.")
    ] = None,
) -> None:
    """Train the method of `method` (resumes from <out>.work/checkpoint.pt if present). Works under torchrun."""
    bar_file = _configure_logging(log_file)
    _set_threads(threads)  # before torch is imported
    from hvc.train import train

    with _stage("train"):
        p = _load(params, overrides)
        _check_id(p, "train", expect_id, out)
        if verify_shards not in ("sha256", "size"):
            raise ParamsError(f"--verify-shards {verify_shards!r}: expected 'sha256' or 'size'")
        _check_outputs("train", [("--out", out, "train")], _inputs(params, shards=shards))
        with _record(p, "train", params, overrides, shards=str(shards)):
            summary = train(p, shards, out, verify=verify_shards, heartbeat=heartbeat, bar_file=bar_file)
        log.info("trained %d steps, %.0f images/s", summary["steps"], summary["images_per_s"])


def _benchmarks(p: Params, benchmark: str | None, data: Path | None, demo: Path | None) -> list[tuple[str, Path]]:
    """(name, folder) of one benchmark (``--benchmark``/``--data``) or of every one in data.benchmarks."""
    from hvc.config.benchmarks import benchmark_root

    if benchmark is not None:
        return [(benchmark, data if data is not None else benchmark_root(benchmark, Path(p.data.root), demo))]
    return [(b, benchmark_root(b, Path(p.data.root), demo)) for b in p.data.benchmarks]


BenchOpt = Annotated[
    Optional[str], typer.Option(help="One benchmark (see data.benchmarks in `hvc params`); default: every one in data.benchmarks.")
]
DataOpt = Annotated[Optional[Path], typer.Option(help="The benchmark's folder (default: derived from data.root).")]
DemoOpt = Annotated[Optional[Path], typer.Option(help="The demo-data folder (for the demo benchmark).")]


@app.command("propagate")
def propagate_cmd(
    params: ParamsOpt = None,  # type: ignore[assignment]
    overrides: SetOpt = None,
    encoder: Annotated[
        str, typer.Option(help="encoder.pt of a trained model, 'random', 'imagenet', 'semantic' (propagation.semantic_checkpoint alone) or 'authors' (authors_checkpoint).")
    ] = ...,  # type: ignore[assignment]
    merge_semantic: Annotated[
        bool, typer.Option(help="Merge the encoder's features with the semantic encoder's (official code).")
    ] = False,
    benchmark: BenchOpt = None,
    data: DataOpt = None,
    demo: DemoOpt = None,
    out: OutOpt = ...,  # type: ignore[assignment]
    threads: ThreadsOpt = None,
    expect_id: ExpectIdOpt = None,
) -> None:
    """Propagate first-frame labels through every video; palette PNGs (joints: JSON) in <out> (or <out>/<benchmark>)."""
    _set_threads(threads)  # before torch is imported
    from hvc.eval.encoders import encoder_method
    from hvc.eval.predict import propagate_benchmark

    with _stage("propagate"):
        p = _load(params, overrides)
        _check_id(p, "propagate", expect_id, out, encoder_method(encoder, p))
        for name, root in _benchmarks(p, benchmark, data, demo):
            target = out if benchmark is not None else out / name
            inputs = _inputs(params, data=root, demo=demo, **{"propagation.semantic_checkpoint": p.propagation.semantic_checkpoint})
            if encoder not in ("random", "imagenet", "semantic"):
                inputs.append(("--encoder", encoder))
            _check_outputs("propagate", [("--out", target, "propagate")], inputs)
            extra = {"encoder": encoder, "merge_semantic": merge_semantic, "benchmark": name, "data": str(root)}
            with _record(p, "propagate", params, overrides, method=encoder_method(encoder, p), **extra):
                info = propagate_benchmark(p, encoder, name, root, target, merge_semantic=merge_semantic)
            log.info("%s: %d videos, %.3f s/frame", name, info["videos"], info["seconds_per_frame"])


@app.command("evaluate")
def evaluate_cmd(
    params: ParamsOpt = None,  # type: ignore[assignment]
    overrides: SetOpt = None,
    benchmark: BenchOpt = None,
    data: DataOpt = None,
    demo: DemoOpt = None,
    predictions: Annotated[Path, typer.Option(help="Folder of predicted masks (per benchmark without --benchmark).")] = ...,  # type: ignore[assignment]
    server_scores: Annotated[
        Optional[Path], typer.Option(help="The server's score file (server-scored benchmarks), read when it exists.")
    ] = None,
    archive: Annotated[Optional[Path], typer.Option(help="The submission archive to name in the status (server-scored).")] = None,
    toolkit_csv: Annotated[
        Optional[Path],
        typer.Option(help="With --benchmark: also write the DAVIS toolkit's global_results-val.csv and "
                     "per-sequence_results-val.csv to this folder (DAVIS-scored benchmarks)."),
    ] = None,
    metrics: Annotated[
        Optional[Path],
        typer.Option(help="With --benchmark: also write its headline score as flat JSON (J&F, J for VOST, mIoU for VIP, "
                     "PCK@0.1 for JHMDB), the file `dvc exp show` lists."),
    ] = None,
    out: OutOpt = ...,  # type: ignore[assignment]
    threads: ThreadsOpt = None,
) -> None:
    """Score predictions with the benchmark's official definitions; <out> and <out stem>.objects.json.

    With --benchmark, <out> holds that benchmark's summary; without, {benchmark: summary}.
    """
    from hvc.eval.score import evaluate_benchmark
    from hvc.io import write_json

    with _stage("evaluate"):
        p = _load(params, overrides)
        if (toolkit_csv is not None or metrics is not None) and benchmark is None:
            raise ParamsError("--toolkit-csv and --metrics need --benchmark (one benchmark per file)")
        roots = [root for _, root in _benchmarks(p, benchmark, data, demo)]
        inputs = _inputs(params, predictions=predictions, data=roots, demo=demo, server_scores=server_scores, archive=archive)
        outputs = [("--out", out, "evaluate"), ("--out (objects)", out.with_name(out.stem + ".objects.json"), "evaluate objects"),
                   ("--toolkit-csv", toolkit_csv, "evaluate toolkit"), ("--metrics", metrics, "evaluate metrics")]  # fmt: skip
        _check_outputs("evaluate", outputs, inputs)
        if benchmark is not None:
            root = _benchmarks(p, benchmark, data, demo)[0][1]
            with _record(p, "evaluate", params, overrides, benchmark=benchmark, predictions=str(predictions)):
                s, _ = evaluate_benchmark(
                    p, benchmark, root, predictions, out, server_scores=server_scores, archive=archive,
                    workers=threads or 1, toolkit_csv=toolkit_csv,
                )  # fmt: skip
            if metrics is not None:
                from hvc.config.dvc import headline_metrics

                write_json(metrics, headline_metrics(benchmark, s))
            log.info("%s: %s", benchmark, _headline(s))
            return
        summaries, objects = {}, {}
        for name, root in _benchmarks(p, None, None, demo):
            summaries[name], objects[name] = evaluate_benchmark(p, name, root, predictions / name, None, workers=threads or 1)
            log.info("%s: %s", name, _headline(summaries[name]))
        write_json(out.with_name(out.stem + ".objects.json"), objects)
        write_json(out, summaries)


def _headline(summary: dict) -> str:
    """The main numbers of a score summary, for the log."""
    if "status" in summary:
        return summary["status"]
    keys = [k for k in ("JF_mean", "J_mean", "F_mean", "J_last_mean", "mIoU", "PCK@0.1", "PCK@0.2", "overall") if k in summary]
    return ", ".join(f"{k} {summary[k]:.3f}" for k in keys)


@app.command("submission")
def submission_cmd(
    params: ParamsOpt = None,  # type: ignore[assignment]
    overrides: SetOpt = None,
    benchmark: Annotated[str, typer.Option(help="A server-scored benchmark: davis2017_testdev, ytvos2018, ytvos2019.")] = ...,  # type: ignore[assignment]
    data: DataOpt = None,
    predictions: Annotated[Path, typer.Option(help="The propagate stage's folder of masks.")] = ...,  # type: ignore[assignment]
    out: OutOpt = ...,  # type: ignore[assignment]
) -> None:
    """Zip the predictions in the layout the benchmark's evaluation server expects."""
    from hvc.config.benchmarks import get_benchmark
    from hvc.eval.readers import read_benchmark
    from hvc.eval.submission import write_archive

    with _stage("submission"):
        p = _load(params, overrides)
        bench = get_benchmark(benchmark)
        if bench.scoring != "server":
            raise ParamsError(f"{benchmark} is scored locally (hvc evaluate); only server-scored benchmarks need an archive")
        root = _benchmarks(p, benchmark, data, None)[0][1]
        _check_outputs("submission", [("--out", out, "submission")], _inputs(params, predictions=predictions, data=root))
        info = write_archive(predictions, read_benchmark(benchmark, root), out, bench.archive_prefix)
        log.info("%s: %d frames of %d videos in %s; upload it to %s", benchmark, info["frames"], info["videos"], out, bench.server)


LatestOpt = Annotated[
    Optional[Path],
    typer.Option(help="A symbolic link to point at <out> once it is written (results/tables/latest: the newest experiment set)."),
]


def _point_latest(link: Path | None, target: Path) -> None:
    """Make ``link`` a relative symbolic link to ``target``, replaced atomically (a link
    beside the new one, then a rename); nothing when ``link`` is None.

    Raises:
        ParamsError: ``link`` exists and is not a symbolic link (a folder of another layout).
    """
    if link is None:
        return
    if link.exists() and not link.is_symlink():
        raise ParamsError(f"{link}: exists and is not a symbolic link; move it away to let it name the newest results")
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)


@app.command("tables")
def tables_cmd(
    params: ParamsOpt = None,  # type: ignore[assignment]
    overrides: SetOpt = None,
    score: Annotated[
        list[str], typer.Option(help="KEY:BENCHMARK=PATH of one summary, or KEY=PATH of {benchmark: summary} (repeat).")
    ] = ...,  # type: ignore[assignment]
    out: OutOpt = ...,  # type: ignore[assignment]
    latest: LatestOpt = None,
    runs_csv: Annotated[
        Optional[Path], typer.Option(help="Also copy the tidy results (<out>/runs.csv) to this file, e.g. results/runs.csv.")
    ] = None,
) -> None:
    """Assemble the paper's tables (Markdown, CSV, LaTeX, HTML), ours beside the published
    numbers, captioned with the settings they were made with, and runs.csv (one row per
    experiment and benchmark)."""
    from hvc.config.record import settings_line
    from hvc.io import read_json, write_bytes
    from hvc.report.tables import assemble

    with _stage("tables"):
        p = _load(params, overrides)
        scores, paths = {}, [item.rpartition("=")[2] for item in score]
        _check_outputs("tables", [("--out", out, "tables")], _inputs(params, score=[q for q in paths if q]))
        for item in score:
            head, _, path = item.rpartition("=")  # keys hold '=' (hvc.alpha=0.1), paths do not
            if not (head and path):
                raise ParamsError(f"--score {item!r}: expected KEY:BENCHMARK=PATH or KEY=PATH")
            key, _, bench = head.rpartition(":") if ":" in head else (head, "", "")
            if bench:
                scores[(key, bench)] = read_json(path)
            else:
                scores.update({(key, b): s for b, s in read_json(path).items()})
        files = [Path(f).as_posix() for f in (params or [Path("params.yaml")])]
        with _record(p, "tables", params, overrides):
            names = assemble(p, scores, out, settings_line(p, files, overrides))
        if runs_csv is not None:
            write_bytes(runs_csv, (out / "runs.csv").read_bytes())
        _point_latest(latest, out)
        log.info("tables: %s", ", ".join(names))


@app.command("figures")
def figures_cmd(
    params: ParamsOpt = None,  # type: ignore[assignment]
    overrides: SetOpt = None,
    predictions: Annotated[
        list[str], typer.Option(help="KEY:BENCHMARK=DIR of predicted masks, or KEY=DIR with one folder per benchmark (repeat).")
    ] = ...,  # type: ignore[assignment]
    demo: DemoOpt = None,
    tables: Annotated[Optional[Path], typer.Option(help="The tables stage's folder (bar charts of its tables.json).")] = None,
    model: Annotated[
        Optional[Path], typer.Option(help="A trained model folder: the figures of its method (HVC: pseudo-dynamic signals, Fig. 12).")
    ] = None,
    curves: Annotated[
        Optional[list[str]], typer.Option(help="KEY=DIR: a trained model (experiment key) whose dvclive loss goes into loss_curves.png (repeat).")
    ] = None,
    out: OutOpt = ...,  # type: ignore[assignment]
    threads: ThreadsOpt = None,
    latest: LatestOpt = None,
) -> None:
    """Mask overlays (<key>_<benchmark>.png), bar charts of the demo and ablation tables
    (bars_<table>.png), the training loss of every model (loss_curves.png) and the figures of
    the model's method (HVC: its pseudo-dynamic signals, pseudo_dynamic_<benchmark>.png)."""
    _set_threads(threads)  # before torch is imported
    from hvc.config.code import provenance
    from hvc.io import atomic_dir, write_json
    from hvc.report.figures import method_figures, overlay_grid

    with _stage("figures"):
        p = _load(params, overrides)
        jobs = []
        for item in predictions:
            head, _, path = item.rpartition("=")  # keys hold '=' (method=liir,...), paths do not
            key, _, bench = head.partition(":")
            if not (key and path):
                raise ParamsError(f"--predictions {item!r}: expected KEY:BENCHMARK=DIR or KEY=DIR")
            for name, root in _benchmarks(p, bench or None, None, demo):
                jobs.append((key, name, root, Path(path) if bench else Path(path) / name))
        roots = [root for _, root in _benchmarks(p, None, None, demo)]
        inputs = _inputs(params, predictions=[job[3] for job in jobs], data=roots + [job[2] for job in jobs], demo=demo, tables=tables, model=model)
        _check_outputs("figures", [("--out", out, "figures")], inputs)
        with _record(p, "figures", params, overrides), atomic_dir(out) as tmp:
            for key, name, root, pred in jobs:
                overlay_grid(name, root, pred, tmp / f"{key}_{name}.png", encoder=key)
            charts = _table_charts(p, tables, tmp) + _loss_curves(p, curves or [], tmp)
            drawn = method_figures(p, model, _benchmarks(p, None, None, demo), tmp) if model is not None else []
            names = sorted(f.name for f in tmp.iterdir())
            write_json(tmp / "figures.json", {"figures": names, "provenance": provenance("figures", p.method)})  # recognises this output
        _point_latest(latest, out)
        log.info("figures: %d overlay grids, %d charts, %d figures of the model", len(jobs), charts, len(drawn))


def _table_charts(p: Params, tables: Optional[Path], out: Path) -> int:
    """Bar charts of the demo and ablation tables and the equal-budget plot, from the tables
    stage's tables.json; the number written."""
    from hvc.io import read_json
    from hvc.report.figures import bar_chart, budget_plot

    if tables is None:
        return 0
    built = read_json(tables / "tables.json")
    charts = sum(bar_chart(built[name], out / f"bars_{name}.png") for name in built if name == "demo" or name in p.ablations)
    return charts + (budget_plot(built["budget"], out / "budget.png") if "budget" in built else 0)


def _loss_curves(p: Params, curves: list[str], out: Path) -> int:
    """loss_curves.png from ``KEY=DIR`` items (1 when written)."""
    from hvc.config.plan import plan
    from hvc.report.figures import curve_label, loss_curves

    if not curves:
        return 0
    experiments, labelled = plan(p), []
    for item in curves:
        key, _, path = item.rpartition("=")  # keys hold '=' (hvc.alpha=0.1), paths do not
        if not (key and path):
            raise ParamsError(f"--curves {item!r}: expected KEY=DIR")
        method = experiments[key].params.method if key in experiments else p.method
        labelled.append((curve_label(key, method), Path(path)))
    return int(loss_curves(labelled, out / "loss_curves.png"))


@app.command("flow")
def flow_cmd(
    params: ParamsOpt = None,  # type: ignore[assignment]
    overrides: SetOpt = None,
    model: Annotated[Path, typer.Option(help="A trained model folder (its checkpoint.pt).")] = ...,  # type: ignore[assignment]
    benchmark: Annotated[str, typer.Option(help="Benchmark whose consecutive frames are compared (Table 11: davis2017, ytvos2018).")] = ...,  # type: ignore[assignment]
    data: DataOpt = None,
    max_pairs: Annotated[Optional[int], typer.Option(help="Score at most this many frame pairs (default: all).")] = None,
    out: OutOpt = ...,  # type: ignore[assignment]
    threads: ThreadsOpt = None,
) -> None:
    """Table 11: end-point error of the pseudo-dynamic signals against RAFT (weights downloaded on first use)."""
    _set_threads(threads)  # before torch is imported
    from hvc.eval.readers import read_benchmark
    from hvc.eval.flow import load_hvc, load_raft, table11_scores
    from hvc.io import write_json
    from hvc.config.code import provenance
    from hvc.device import device_label, pick_device

    with _stage("flow"):
        p = _load(params, overrides)
        device = pick_device(p.device)
        root = _benchmarks(p, benchmark, data, None)[0][1]
        _check_outputs("flow", [("--out", out, "flow")], _inputs(params, model=model, data=root))
        videos = read_benchmark(benchmark, root)
        scores = table11_scores(
            load_hvc(model, device=device), [v.frames for v in videos], _raft(load_raft, str(device)),
            max_pairs=max_pairs, resolution=p.propagation.resolution, device=device,
        )  # fmt: skip
        record = provenance("flow", p.method, device_label(device))
        write_json(out, {"benchmark": benchmark, **scores, "provenance": record})
        log.info("%s: EPE forward %.2f, backward %.2f over %d pairs", benchmark, scores["forward_epe"], scores["backward_epe"], scores["pairs"])


def _raft(load_raft, device: str):
    """torchvision's RAFT; the weights missing offline is one line saying where to put them."""
    try:
        return load_raft(device=device)
    except RuntimeError as e:  # load_raft: not cached and not downloadable (its message names the file)
        raise DataError("RAFT weights", str(e)) from None


@app.command("plan")
def plan_cmd(params: ParamsOpt = None, overrides: SetOpt = None) -> None:  # type: ignore[assignment]
    """Print the experiments (trained models and baselines) these params ask for, one row each:
    what is trained or used, the setting that differs from the base, the content ids of its
    artifacts (artifacts/<kind>/<id>/) and the tables that show it; and the experiment set
    id (the tables' folder results/tables/<id>/). Takes --set like every stage, so the ids
    of a `snakemake --config` run can be looked up."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from hvc.config.plan import plan, run_rows, sweep_experiments
    from hvc.config.record import experiment_set_id

    with _stage("plan"):
        p = _load(params, overrides)
        experiments = plan(p)
        shown_in: dict[str, list[str]] = {}
        rows = [(name, exp.key) for name, _, exp in run_rows(p)] + [("sweep", exp.key) for _, exp in sweep_experiments(p)]
        for name, key in rows:
            if name not in shown_in.setdefault(key, []):
                shown_in[key].append(name)
        for key, exp in experiments.items():  # a repetition over seeds: in its experiment's tables (mean ± std)
            if exp.seed_of is not None:
                shown_in[key] = shown_in.get(exp.seed_of, [])
    set_id = experiment_set_id(p)
    columns = ("experiment", "encoder", "setting", "shards", "train", "propagate", "evaluate", "tables")
    table = Table(title=f"experiments and the content id of each stage (set {set_id}: results/tables/{set_id}, results/figures/{set_id})")
    for column in columns:
        table.add_column(column, overflow="fold")  # long keys wrap, never cut
    for key, exp in experiments.items():
        if not exp.trained:
            kind = f"baseline: {exp.display}" if key != "semantic" else "semantic encoder alone"
        else:
            kind = f"trained {exp.display}" + (" + semantic merge" if exp.merge_semantic else "")
        trained = exp.trained
        table.add_row(*map(escape, (
            key, kind, ", ".join(exp.set_args) or "base params", exp.ids["shards"] if trained else "–",
            exp.ids["train"] if trained else "–", exp.ids["propagate"], exp.ids["evaluate"],
            ", ".join(shown_in.get(key, [])) or "–",
        )))  # fmt: skip
    Console(width=max(Console().width, 160)).print(table)


@app.command("dvc-yaml")
def dvc_yaml_cmd(
    params: ParamsOpt = None,  # type: ignore[assignment]
    out: Annotated[Path, typer.Option("--out", "-o", help="The DVC pipeline file to write or check.")] = Path("dvc.yaml"),
    check: bool = typer.Option(False, help="Write nothing; exit 1 naming the stages that differ when <out> is stale."),
    stamp: Annotated[
        Optional[Path], typer.Option(help="With --check: write this file when <out> is up to date (the `plan` stage's output).")
    ] = None,
) -> None:
    """Write dvc.yaml from the experiment plan of the parameter files: one DVC stage per job
    the Snakemake workflow runs (fetch, demo data, shards, every model of the plan, every
    encoder on every benchmark, tables, figures), calling the same `hvc` subcommands.
    Run it again after changing ablations, baselines, data.benchmarks or the training set."""
    from hvc.config.dvc import PLAN_MESSAGE, dvc_yaml_text, ensure_dvcignore, regenerate_command, stale_report
    from hvc.io import write_text

    with _stage("dvc-yaml"):
        files = [Path(f).as_posix() for f in (params or [Path("params.yaml")])]
        text = dvc_yaml_text(files, load_params(files))
        if not check:
            _check_outputs("dvc-yaml", [("--out", out, "dvc-yaml")], _inputs(params))
            write_text(out, text)
            if ensure_dvcignore(out.parent):
                log.info("%s: bytecode (__pycache__, *.pyc) left out of the stages' folder dependencies", out.parent / ".dvcignore")
            log.info("%s written from the plan of %s", out, ", ".join(files))
            return
        current = out.read_text(encoding="utf-8") if out.is_file() else ""
        problem = stale_report(current, text, str(out), regenerate_command(files) + (f" -o {out}" if out != Path("dvc.yaml") else ""))
        if problem is not None:
            log.error("%s", problem)
            raise typer.Exit(1)
        if stamp is not None:
            earlier = by_content(lambda b: b == PLAN_MESSAGE.encode(), "the plan stage's message")
            check_output(stamp, _inputs(params, out=out), "dvc-yaml", earlier, "--stamp")
            write_text(stamp, PLAN_MESSAGE)
        log.info("%s is up to date", out)


@app.command("fetch")
def fetch_cmd(
    name: Annotated[Optional[str], typer.Argument(help="A dataset of the registry (see --list).")] = None,
    root: Annotated[Optional[Path], typer.Option(help="Data root (default: data.root of --params, else ./data).")] = None,
    source: Annotated[
        Optional[Path],
        typer.Option(
            "--from", help="An extracted copy you already have: linked into the data root, not copied or downloaded "
            "(default: data.sources of --params, or the folder it was linked to before).",
        ),
    ] = None,
    verify: bool = typer.Option(False, help="With an existing copy: hash every file again, not only the changed ones."),
    list_: bool = typer.Option(False, "--list", help="List every dataset: size, licence, manual or not, and whether it is in the data root."),
    params: Annotated[Optional[list[Path]], typer.Option("--params", "-p", help="Parameter file(s) for data.root and data.sources.")] = None,
) -> None:
    """Download (or verify a manually placed file), check and extract one dataset of the
    registry, or link an extracted copy you already have (--from, data.sources)."""
    from hvc.data.download import STAMP_NAME, dataset_rows, fetch, fetch_from, linked_source

    with _stage("fetch"):
        p = _load(params, None) if params else None
        data_root = root if root is not None else Path(p.data.root if p is not None else "data")
        if list_:
            _print_datasets(dataset_rows(), data_root, STAMP_NAME)
            return
        if name is None:
            raise ParamsError("name a dataset (hvc fetch NAME), or list them with hvc fetch --list")
        if source is None and p is not None and name in p.data.sources:
            source = Path(p.data.sources[name])
        if source is None:
            source = linked_source(name, data_root)
        path = fetch_from(name, data_root, source, rehash=verify) if source is not None else fetch(name, data_root)
        log.info("%s ready at %s", name, path)


def _print_datasets(rows: list[dict], root: Path, stamp_name: str) -> None:
    """The registry as a table: name, role, size, manual, present in ``root``, licence terms, homepage."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    def size(row: dict) -> str:
        if row["size"] is not None:
            return f"{row['size'] / 2**30:.1f} GiB" if row["size"] >= 2**30 else f"{row['size'] / 2**20:.0f} MiB"
        return f"unknown (> {row['known'] / 2**30:.1f} GiB)" if row["known"] else "unknown"

    table = Table(title=f"datasets (data root: {root})")
    for column in ("dataset", "role", "size", "manual", "in data root", "licence", "homepage"):
        table.add_column(column, overflow="fold")  # addresses wrap, never cut
    for row in rows:
        present = "yes" if (root / row["name"] / stamp_name).exists() else "no"
        manual = "yes: register, place the file" if row["manual"] else "no: downloaded"
        table.add_row(*map(escape, (row["name"], row["role"], size(row), manual, present, row["terms"], row["homepage"])))
    Console(width=max(Console().width, 160)).print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
