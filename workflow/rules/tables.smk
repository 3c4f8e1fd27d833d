# The paper's tables from every experiment's scores, training logs and flow comparisons.
from hvc.experiments import published_tables, table_columns

FLOW = "artifacts/flow/{model}/{benchmark}.json"
SCORE_FILES = {
    (e.key, b): SCORES.format(encoder=e.encoder, propagation=e.ids["propagation"], benchmark=b)
    for e in EXPERIMENTS.values()
    for b in P.data.benchmarks
}
# Table 8: each trained model's train.json
SCORE_FILES.update({(e.key, "train"): MODEL.format(model=e.ids["model"]) + "/train.json" for e in TRAINED})
# Table 11: the base model's pseudo-dynamic signal against RAFT, on the listed benchmarks it names
FLOW_SOURCES = sorted(
    {src for t in published_tables().values() for src, _ in table_columns(t) if src.startswith("flow_")}
)
SCORE_FILES.update(
    {
        ("hvc", src): FLOW.format(model=BASE.ids["model"], benchmark=src.removeprefix("flow_"))
        for src in FLOW_SOURCES
        if src.removeprefix("flow_") in P.data.benchmarks
    }
)


rule pseudo_dynamic:
    input:
        model=MODEL,
        benchmark=lambda wc: bench_inputs(wc.benchmark),
    output:
        FLOW,
    params:
        data=lambda wc: bench_root(wc.benchmark),
    resources:
        gpu=gpus(),
        mem_mb=16000,
        runtime=240,
    shell:
        "hvc flow {PARAMS} --model {input.model} --benchmark {wildcards.benchmark} --data {params.data} --out {output}"


def score_input(path):
    """The file, or the model folder a train.json lives in (a directory output)."""
    return path.removesuffix("/train.json")


rule tables:
    input:
        sorted({score_input(path) for path in SCORE_FILES.values()}),
    output:
        directory(TABLES),
    params:
        scores=" ".join(f"--score '{k}:{b}={path}'" for (k, b), path in SCORE_FILES.items()),
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "hvc tables {PARAMS} {params.scores} --out {output}"


PREDICTION_DIRS = {
    (e.key, b): PREDICTIONS.format(encoder=e.encoder, propagation=e.ids["propagation"], benchmark=b)
    for e in EXPERIMENTS.values()
    if e.key in ("hvc", "random")
    for b in P.data.benchmarks
    if get_benchmark(b).task != "pose"  # overlays are drawn for masks and parts
}


rule figures:
    input:
        list(PREDICTION_DIRS.values()),
        [bench_inputs(b) for b in P.data.benchmarks],
        tables=TABLES,
        model=MODEL.format(model=BASE.ids["model"]),
    output:
        directory(FIGURES),
    params:
        predictions=" ".join(f"--predictions '{k}:{b}={path}'" for (k, b), path in PREDICTION_DIRS.items()),
        demo=DATA.format(data=BASE.ids["data"]),
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "hvc figures {PARAMS} {params.predictions} --demo {params.demo} --tables {input.tables}"
        " --model {input.model} --out {output}"


rule all_tables:
    default_target: True
    input:
        TABLES,
        FIGURES,
