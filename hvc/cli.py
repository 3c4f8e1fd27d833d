"""``hvc``: one subcommand per pipeline stage, the seam between the science and the wiring.

Snakemake rules (workflow/rules/*.smk) and DVC stages (dvc.yaml) call these same
commands. Each stage reads its inputs and its sections of the parameter files, writes
its output atomically, and logs one line with its wall time.
"""

from __future__ import annotations

import errno
import logging
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from hvc.io import DataError, check_outputs_apart
from hvc.params import Params, ParamsError, check_data_root, load_params, parse_overrides, stage_ids

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
log = logging.getLogger("hvc")

ParamsOpt = Annotated[
    list[Path],
    typer.Option("--params", "-p", help="Parameter file(s), deep-merged left to right.", show_default=False),
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-S", help="Override one parameter, KEY=VALUE (YAML value), e.g. train.alpha=0.5."),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output path (written atomically).")]
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


def _check_id(p: Params, stage: str, expected: str | None, out: Path) -> None:
    """Refuse to run a stage whose parameters no longer give the id its output was named with.

    A workflow names every output by the content id of the parameters at launch; a job
    re-reads the parameter files when it starts, so an edit in between would otherwise
    write results of other parameters under the planned id (and cache them there).

    Raises:
        ParamsError: naming the output, both ids and what to do.
    """
    actual = stage_ids(p)[stage]
    if expected is not None and actual != expected:
        raise ParamsError(
            f"{out}: planned with {stage} id {expected}, but the parameter files now give {actual} "
            "(edited since the workflow started); restore them or start the workflow again"
        )


@contextmanager
def _stage(name: str):
    """Log the stage's wall time; turn input errors into one clear line and exit 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
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
) -> None:
    """Document every parameter (key, type, default, meaning); validate (--check) or merge (--dump) files."""
    from rich.console import Console
    from rich.table import Table

    from hvc.params import schema_rows

    if check or dump or params:
        with _stage("params"):
            p = _load(params, None)
            if dump:
                import yaml

                typer.echo(yaml.safe_dump(p.model_dump(mode="json"), sort_keys=False), nl=False)
            else:
                typer.echo(f"parameters valid ({len(p.model_dump())} sections)")
        return
    table = Table("key", "type", "default", "meaning", title="params.yaml")
    for row in schema_rows():
        table.add_row(*row)
    Console().print(table)


@app.command("demo-data")
def demo_data(params: ParamsOpt = None, out: OutOpt = ..., expect_id: ExpectIdOpt = None) -> None:  # type: ignore[assignment]
    """Build the demo: static training images and a DAVIS-layout video benchmark."""
    from hvc.demo import build_demo

    with _stage("demo-data"):
        p = _load(params, None)
        _check_id(p, "data", expect_id, out)
        manifest = build_demo(p.demo, out)
        log.info("demo: %d training images, %d sequences", manifest["train"]["num_images"], len(manifest["benchmark"]["sequences"]))


@app.command("shards")
def shards(
    params: ParamsOpt = None,  # type: ignore[assignment]
    overrides: SetOpt = None,
    input: Annotated[Path, typer.Option(help="Training-set folder (demo-data output, or data.root).")] = ...,  # type: ignore[assignment]
    out: OutOpt = ...,  # type: ignore[assignment]
    expect_id: ExpectIdOpt = None,
) -> None:
    """Write the training images to webdataset shards with an index (count, sha256 per shard)."""
    from hvc.shards import list_training_images, write_shards

    with _stage("shards"):
        p = _load(params, overrides)
        _check_id(p, "shards", expect_id, out)
        check_data_root(p)
        check_outputs_apart(out, {"--input": input})
        images = list_training_images(input, p.data.train_set, p.shards.step)
        index = write_shards(
            images, input, out, f"{p.data.train_set}-train", p.shards.max_size_mb, p.shards.max_count, p.shards.on_bad_image
        )
        log.info("%d samples in %d shards (%d skipped)", index["num_samples"], len(index["shards"]), index["num_skipped"])


@app.command("train")
def train_cmd(
    params: ParamsOpt = None,  # type: ignore[assignment]
    overrides: SetOpt = None,
    shards: Annotated[Path, typer.Option(help="Shard folder (with index.json).")] = ...,  # type: ignore[assignment]
    out: OutOpt = ...,  # type: ignore[assignment]
    expect_id: ExpectIdOpt = None,
    verify_shards: Annotated[
        str, typer.Option(help="Check the shards against index.json: 'sha256' (read once per run) or 'size' only.")
    ] = "sha256",
) -> None:
    """Train HVC (resumes from <out>.work/checkpoint.pt if present). Works under torchrun."""
    from hvc.train import train

    with _stage("train"):
        p = _load(params, overrides)
        _check_id(p, "model", expect_id, out)
        if verify_shards not in ("sha256", "size"):
            raise ParamsError(f"--verify-shards {verify_shards!r}: expected 'sha256' or 'size'")
        check_outputs_apart(out, {"--shards": shards})
        summary = train(p, shards, out, verify=verify_shards)
        log.info("trained %d steps, %.0f images/s", summary["steps"], summary["images_per_s"])


def _benchmarks(p: Params, benchmark: str | None, data: Path | None, demo: Path | None) -> list[tuple[str, Path]]:
    """(name, folder) of one benchmark (``--benchmark``/``--data``) or of every one in data.benchmarks."""
    from hvc.benchmarks import benchmark_root

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
        str, typer.Option(help="encoder.pt of a trained model, 'random', 'imagenet', or 'semantic' (propagation.semantic_checkpoint alone).")
    ] = ...,  # type: ignore[assignment]
    merge_semantic: Annotated[
        bool, typer.Option(help="Merge the encoder's features with the semantic encoder's (official code).")
    ] = False,
    benchmark: BenchOpt = None,
    data: DataOpt = None,
    demo: DemoOpt = None,
    out: OutOpt = ...,  # type: ignore[assignment]
    expect_id: ExpectIdOpt = None,
) -> None:
    """Propagate first-frame labels through every video; palette PNGs (joints: JSON) in <out> (or <out>/<benchmark>)."""
    from hvc.evaluate import propagate_benchmark

    with _stage("propagate"):
        p = _load(params, overrides)
        _check_id(p, "propagation", expect_id, out)
        for name, root in _benchmarks(p, benchmark, data, demo):
            target = out if benchmark is not None else out / name
            inputs = {"--data": root, "--demo": demo, "propagation.semantic_checkpoint": p.propagation.semantic_checkpoint}
            if encoder not in ("random", "imagenet", "semantic"):
                inputs["--encoder"] = encoder
            check_outputs_apart(target, inputs)
            info = propagate_benchmark(p, encoder, name, root, target, merge_semantic=merge_semantic)
            log.info("%s: %d videos, %.3f s/frame", name, info["videos"], info["seconds_per_frame"])


@app.command("evaluate")
def evaluate_cmd(
    params: ParamsOpt = None,  # type: ignore[assignment]
    benchmark: BenchOpt = None,
    data: DataOpt = None,
    demo: DemoOpt = None,
    predictions: Annotated[Path, typer.Option(help="Folder of predicted masks (per benchmark without --benchmark).")] = ...,  # type: ignore[assignment]
    server_scores: Annotated[
        Optional[Path], typer.Option(help="The server's score file (server-scored benchmarks), read when it exists.")
    ] = None,
    archive: Annotated[Optional[Path], typer.Option(help="The submission archive to name in the status (server-scored).")] = None,
    out: OutOpt = ...,  # type: ignore[assignment]
) -> None:
    """Score predictions with the benchmark's official definitions; <out> and <out stem>.objects.json.

    With --benchmark, <out> holds that benchmark's summary; without, {benchmark: summary}.
    """
    from hvc.evaluate import evaluate_benchmark
    from hvc.io import write_json

    with _stage("evaluate"):
        p = _load(params, None)
        check_outputs_apart(out, {"--predictions": predictions, "--data": data, "--demo": demo})
        if benchmark is not None:
            root = _benchmarks(p, benchmark, data, demo)[0][1]
            s, _ = evaluate_benchmark(p, benchmark, root, predictions, out, server_scores=server_scores, archive=archive)
            log.info("%s: %s", benchmark, _headline(s))
            return
        summaries, objects = {}, {}
        for name, root in _benchmarks(p, None, None, demo):
            summaries[name], objects[name] = evaluate_benchmark(p, name, root, predictions / name, None)
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
    benchmark: Annotated[str, typer.Option(help="A server-scored benchmark: davis2017_testdev, ytvos2018, ytvos2019.")] = ...,  # type: ignore[assignment]
    data: DataOpt = None,
    predictions: Annotated[Path, typer.Option(help="The propagate stage's folder of masks.")] = ...,  # type: ignore[assignment]
    out: OutOpt = ...,  # type: ignore[assignment]
) -> None:
    """Zip the predictions in the layout the benchmark's evaluation server expects."""
    from hvc.benchmarks import get_benchmark, read_benchmark
    from hvc.submission import write_archive

    with _stage("submission"):
        p = _load(params, None)
        bench = get_benchmark(benchmark)
        if bench.scoring != "server":
            raise ParamsError(f"{benchmark} is scored locally (hvc evaluate); only server-scored benchmarks need an archive")
        root = _benchmarks(p, benchmark, data, None)[0][1]
        check_outputs_apart(out, {"--predictions": predictions, "--data": root})
        info = write_archive(predictions, read_benchmark(benchmark, root), out, bench.archive_prefix)
        log.info("%s: %d frames of %d videos in %s; upload it to %s", benchmark, info["frames"], info["videos"], out, bench.server)


@app.command("tables")
def tables_cmd(
    params: ParamsOpt = None,  # type: ignore[assignment]
    score: Annotated[
        list[str], typer.Option(help="KEY:BENCHMARK=PATH of one summary, or KEY=PATH of {benchmark: summary} (repeat).")
    ] = ...,  # type: ignore[assignment]
    out: OutOpt = ...,  # type: ignore[assignment]
) -> None:
    """Assemble the paper's tables (Markdown, CSV, LaTeX), ours beside the published numbers."""
    from hvc.io import read_json
    from hvc.tables import assemble

    with _stage("tables"):
        p = _load(params, None)
        scores = {}
        for item in score:
            head, _, path = item.partition("=")
            if not (head and path):
                raise ParamsError(f"--score {item!r}: expected KEY:BENCHMARK=PATH or KEY=PATH")
            key, _, bench = head.partition(":")
            if bench:
                scores[(key, bench)] = read_json(path)
            else:
                scores.update({(key, b): s for b, s in read_json(path).items()})
        names = assemble(p, scores, out)
        log.info("tables: %s", ", ".join(names))


@app.command("figures")
def figures_cmd(
    params: ParamsOpt = None,  # type: ignore[assignment]
    predictions: Annotated[
        list[str], typer.Option(help="KEY:BENCHMARK=DIR of predicted masks, or KEY=DIR with one folder per benchmark (repeat).")
    ] = ...,  # type: ignore[assignment]
    demo: DemoOpt = None,
    tables: Annotated[Optional[Path], typer.Option(help="The tables stage's folder (bar charts of its tables.json).")] = None,
    model: Annotated[Optional[Path], typer.Option(help="A trained model folder (pseudo-dynamic signals, Fig. 12).")] = None,
    out: OutOpt = ...,  # type: ignore[assignment]
) -> None:
    """Mask overlays (<key>_<benchmark>.png), bar charts of the demo and ablation tables
    (bars_<table>.png) and the pseudo-dynamic signals of the model (pseudo_dynamic_<benchmark>.png)."""
    from hvc.figures import bar_chart, overlay_grid
    from hvc.io import atomic_dir, read_json

    with _stage("figures"):
        p = _load(params, None)
        jobs = []
        for item in predictions:
            head, _, path = item.partition("=")
            key, _, bench = head.partition(":")
            if not (key and path):
                raise ParamsError(f"--predictions {item!r}: expected KEY:BENCHMARK=DIR or KEY=DIR")
            for name, root in _benchmarks(p, bench or None, None, demo):
                jobs.append((key, name, root, Path(path) if bench else Path(path) / name))
        with atomic_dir(out) as tmp:
            for key, name, root, pred in jobs:
                overlay_grid(name, root, pred, tmp / f"{key}_{name}.png")
            charts = 0
            if tables is not None:
                built = read_json(tables / "tables.json")
                for name in [n for n in built if n == "demo" or n in p.ablations]:
                    charts += bar_chart(built[name], tmp / f"bars_{name}.png")
            if model is not None:
                _pseudo_dynamic_figures(p, model, demo, tmp)
        log.info("figures: %d overlay grids, %d bar charts", len(jobs), charts)


def _pseudo_dynamic_figures(p: Params, model_dir: Path, demo: Optional[Path], out: Path, pairs: int = 4) -> None:
    """Fig. 12: forward/backward pseudo-dynamic signals of the first frame pairs of each
    mask benchmark's first videos (no optical flow: that needs RAFT weights, see `hvc flow`)."""
    from hvc.benchmarks import get_benchmark, read_benchmark
    from hvc.flow import flow_figure, load_hvc, pseudo_dynamic
    from hvc.train import pick_device

    device = pick_device(p.device)
    hvc_model = load_hvc(model_dir, device=device)
    for name, root in _benchmarks(p, None, None, demo):
        if get_benchmark(name).task == "pose":
            continue
        videos = read_benchmark(name, root)[:pairs]
        a = [v.frames[0] for v in videos]
        b = [v.frames[1] for v in videos]
        signals = [pseudo_dynamic(hvc_model, x, y, p.propagation.resolution, device) for x, y in zip(a, b)]
        flow_figure(a, b, signals, None, out / f"pseudo_dynamic_{name}.png")


@app.command("flow")
def flow_cmd(
    params: ParamsOpt = None,  # type: ignore[assignment]
    model: Annotated[Path, typer.Option(help="A trained model folder (its checkpoint.pt).")] = ...,  # type: ignore[assignment]
    benchmark: Annotated[str, typer.Option(help="Benchmark whose consecutive frames are compared (Table 11: davis2017, ytvos2018).")] = ...,  # type: ignore[assignment]
    data: DataOpt = None,
    max_pairs: Annotated[Optional[int], typer.Option(help="Score at most this many frame pairs (default: all).")] = None,
    out: OutOpt = ...,  # type: ignore[assignment]
) -> None:
    """Table 11: end-point error of the pseudo-dynamic signals against RAFT (weights downloaded on first use)."""
    from hvc.benchmarks import read_benchmark
    from hvc.flow import load_hvc, load_raft, table11_scores
    from hvc.io import write_json
    from hvc.train import pick_device

    with _stage("flow"):
        p = _load(params, None)
        device = pick_device(p.device)
        root = _benchmarks(p, benchmark, data, None)[0][1]
        videos = read_benchmark(benchmark, root)
        scores = table11_scores(
            load_hvc(model, device=device), [v.frames for v in videos], load_raft(device=str(device)),
            max_pairs=max_pairs, resolution=p.propagation.resolution, device=device,
        )  # fmt: skip
        write_json(out, {"benchmark": benchmark, **scores})
        log.info("%s: EPE forward %.2f, backward %.2f over %d pairs", benchmark, scores["forward_epe"], scores["backward_epe"], scores["pairs"])


@app.command("plan")
def plan_cmd(params: ParamsOpt = None) -> None:  # type: ignore[assignment]
    """Print the experiments (trained models and baselines) these params ask for."""
    from hvc.experiments import plan

    p = _load(params, None)
    for key, exp in plan(p).items():
        typer.echo(f"{key:40s} encoder={exp.encoder} ids={exp.ids}")


@app.command("fetch")
def fetch_cmd(
    name: str,
    root: Annotated[Path, typer.Option(help="Data root (params data.root).")] = Path("data"),
) -> None:
    """Download (or verify a manually placed file), check and extract one dataset of the registry."""
    from hvc.download import fetch

    with _stage("fetch"):
        path = fetch(name, root)
        log.info("%s ready at %s", name, path)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
