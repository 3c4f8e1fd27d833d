# The paper's tables from every experiment's scores, training logs and flow comparisons.
from hvc.config.ids import stage_reads
from hvc.config.plan import published_tables, score_requests
from hvc.config.plan import overlay_keys

FLOW = "artifacts/flow/{model}/{benchmark}.json"


def score_file(key, source):
    """Where the tables stage reads one (experiment, source) cell group: a benchmark's
    scores, the model's train.json (Table 8) or its flow comparison (Table 11)."""
    exp = EXPERIMENTS[key]
    if source == "train":
        return os.path.join(MODEL.format(model=exp.ids["train"]), "train.json")
    if source.startswith("flow_"):
        return FLOW.format(model=exp.ids["train"], benchmark=source.removeprefix("flow_"))
    return SCORES.format(
        encoder=exp.encoder, propagation=exp.ids["propagate"], evaluation=exp.ids["evaluate"], benchmark=source
    )


# only the cells the tables show are computed (an ablation model is not run on VIP)
SCORE_FILES = {(key, src): score_file(key, src) for key, src in score_requests(P)}


rule flow:
    input:
        model=MODEL,
        benchmark=lambda wc: bench_inputs(wc.benchmark),
    output:
        FLOW,
    params:
        data=lambda wc: bench_root(wc.benchmark),
        code=stage_reads("flow", P).code_hash(),  # the path holds the model's id only: re-run when this code changes
    log:
        f"{LOGS}/flow/{{model}}/{{benchmark}}.log",
    benchmark:
        f"{LOGS}/flow/{{model}}/{{benchmark}}.tsv"
    threads: COMPUTE_THREADS
    resources:
        gpu=gpus(),
        mem_mb=16000,
        runtime=240,
    shell:
        "hvc flow {PARAMS} --model {input.model:q} --benchmark {wildcards.benchmark} --data {params.data:q}"
        " --out {output:q} --threads {threads} 2> {log:q}"


def score_input(path):
    """The file, or the model folder a train.json lives in (a directory output)."""
    return os.path.dirname(path) if os.path.basename(path) == "train.json" else path


rule tables:
    input:
        sorted({score_input(path) for path in SCORE_FILES.values()}),
    output:
        report(
            directory(TABLES),
            patterns=["{name}.html"],
            caption="../report/tables.rst",
            category="Tables",
        ),
    params:
        scores=" ".join(f"--score {shlex.quote(f'{k}:{b}={path}')}" for (k, b), path in SCORE_FILES.items()),
        titles={name: t["title"] for name, t in published_tables().items()},  # for the report's captions
        code=stage_reads("tables", P).code_hash(),  # not content-addressed: re-run when this code changes
    log:
        f"{LOGS}/tables/tables.log",
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "hvc tables {PARAMS} {params.scores} --out {output:q} --latest results/tables/latest --runs-csv results/runs.csv 2> {log:q}"


PREDICTION_DIRS = {
    (e.key, b): PREDICTIONS.format(encoder=e.encoder, propagation=e.ids["propagate"], benchmark=b)
    for e in (EXPERIMENTS[k] for k in overlay_keys(EXPERIMENTS, set(SCORE_FILES), P.data.benchmarks))  # the trained method, random, each other method
    for b in P.data.benchmarks
    if (e.key, b) in SCORE_FILES and get_benchmark(b).task != "pose"  # overlays of masks and parts
}
CURVES = {e.key: MODEL.format(model=model) for model, e in BY_MODEL.items()}  # every trained model's dvclive loss


rule figures:
    input:
        list(PREDICTION_DIRS.values()),
        [bench_inputs(b) for b in P.data.benchmarks],
        list(CURVES.values()),
        tables=TABLES,
        model=MODEL.format(model=BASE.ids["train"]),
    output:
        report(
            directory(FIGURES),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    params:
        predictions=" ".join(f"--predictions {shlex.quote(f'{k}:{b}={path}')}" for (k, b), path in PREDICTION_DIRS.items()),
        curves=" ".join(f"--curves {shlex.quote(f'{k}={path}')}" for k, path in CURVES.items()),
        demo=lambda wc, input: DATA.format(data=BASE.ids["demo_data"]),  # the demo's frames (Fig. 12 on the demo)
        code=stage_reads("figures", P).code_hash(),  # not content-addressed: re-run when this code changes
    log:
        f"{LOGS}/figures/figures.log",
    threads: COMPUTE_THREADS
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "hvc figures {PARAMS} {params.predictions} --demo {params.demo:q} --tables {input.tables:q}"
        " --model {input.model:q} {params.curves} --out {output:q} --latest results/figures/latest --threads {threads} 2> {log:q}"
