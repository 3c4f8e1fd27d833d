# The paper's tables from every experiment's scores.

SCORE_FILES = {
    (e.key, b): SCORES.format(encoder=e.encoder, propagation=e.ids["propagation"], benchmark=b)
    for e in EXPERIMENTS.values()
    for b in P.data.benchmarks
}


rule tables:
    input:
        list(SCORE_FILES.values()),
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
}


rule figures:
    input:
        list(PREDICTION_DIRS.values()),
        [bench_inputs(b) for b in P.data.benchmarks],
    output:
        directory(FIGURES),
    params:
        predictions=" ".join(f"--predictions '{k}:{b}={path}'" for (k, b), path in PREDICTION_DIRS.items()),
        demo=DATA.format(data=BASE.ids["data"]),
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "hvc figures {PARAMS} {params.predictions} --demo {params.demo} --out {output}"


rule all_tables:
    default_target: True
    input:
        TABLES,
        FIGURES,
