# Label propagation on every benchmark, then the official metrics (or, for benchmarks
# scored on a server, the submission archive and the server's score file).


def encoder_input(wildcards):
    exp = BY_PROPAGATION[wildcards.encoder, wildcards.propagation]
    deps = bench_inputs(wildcards.benchmark)
    if exp.trained:
        deps.append(MODEL.format(model=exp.ids["train"]))
    if exp.key == "semantic" or exp.merge_semantic:
        deps.append(P.propagation.semantic_checkpoint)
    if exp.key.removesuffix("+semantic") == "authors":
        deps.append(P.authors_checkpoint)
    return deps


def encoder_args(wildcards):
    """--encoder (and --merge-semantic) of `hvc propagate` for one encoder key."""
    exp = BY_PROPAGATION[wildcards.encoder, wildcards.propagation]
    merge = " --merge-semantic" if exp.merge_semantic else ""
    if not exp.trained:
        name = "random" if exp.random_init else exp.key.removesuffix("+semantic")  # a baseline, or a method at random init
        return f"--encoder {name}" + merge
    spec = os.path.join(MODEL.format(model=exp.ids["train"]), "encoder.pt")
    return f"--encoder {shlex.quote(spec)}" + merge


rule propagate:
    input:
        encoder_input,
    output:
        directory(PREDICTIONS),
    params:
        encoder=encoder_args,
        # the experiment's overrides: another method propagates with its own preset and inference
        # (LIIR), a random initialisation names its method, a generic row its propagation
        overrides=lambda wc: set_args(BY_PROPAGATION[wc.encoder, wc.propagation]),
        data=lambda wc: bench_root(wc.benchmark),
    log:
        f"{LOGS}/propagate/{{encoder}}/{{propagation}}/{{benchmark}}.log",
    benchmark:
        f"{LOGS}/propagate/{{encoder}}/{{propagation}}/{{benchmark}}.tsv"
    threads: COMPUTE_THREADS
    resources:
        gpu=lambda wc: gpus(BY_PROPAGATION[wc.encoder, wc.propagation]),
        mem_mb=16000,
        runtime=240,
    shell:
        "hvc propagate {PARAMS}{params.overrides} {params.encoder} --benchmark {wildcards.benchmark}"
        " --expect-id {wildcards.propagation} --data {params.data:q} --out {output:q} --threads {threads} 2> {log:q}"


rule submission:
    input:
        predictions=PREDICTIONS,
        benchmark=lambda wc: bench_inputs(wc.benchmark),
    output:
        SUBMISSIONS,
    params:
        data=lambda wc: bench_root(wc.benchmark),
    log:
        f"{LOGS}/submission/{{encoder}}/{{propagation}}/{{benchmark}}.log",
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "hvc submission {PARAMS} --benchmark {wildcards.benchmark} --data {params.data:q}"
        " --predictions {input.predictions:q} --out {output:q} 2> {log:q}"


def server_inputs(wildcards):
    """Server-scored benchmarks: the submission archive, and the server's score file once
    the user has saved it where the status message says (see README)."""
    if get_benchmark(wildcards.benchmark).scoring != "server":
        return []
    deps = [SUBMISSIONS.format(**wildcards)]
    path = SERVER_SCORES.format(**wildcards)
    return deps + ([path] if os.path.exists(path) else [])


def server_args(wildcards):
    if get_benchmark(wildcards.benchmark).scoring != "server":
        return ""
    archive, scores = SUBMISSIONS.format(**wildcards), SERVER_SCORES.format(**wildcards)
    return f"--archive {shlex.quote(archive)} --server-scores {shlex.quote(scores)}"


rule evaluate:
    input:
        predictions=PREDICTIONS,
        benchmark=lambda wc: bench_inputs(wc.benchmark),
        server=server_inputs,
    output:
        scores=SCORES,
        objects=SCORES.replace(".json", ".objects.json"),
        # the DAVIS toolkit's global_results-val.csv and per-sequence_results-val.csv
        toolkit=directory(SCORES.removesuffix(".json")),
    params:
        data=lambda wc: bench_root(wc.benchmark),
        server=server_args,
    log:
        f"{LOGS}/evaluate/{{encoder}}/{{propagation}}/{{evaluation}}/{{benchmark}}.log",
    benchmark:
        f"{LOGS}/evaluate/{{encoder}}/{{propagation}}/{{evaluation}}/{{benchmark}}.tsv"
    threads: COMPUTE_THREADS
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "hvc evaluate {PARAMS} --benchmark {wildcards.benchmark} --data {params.data:q}"
        " --predictions {input.predictions:q} {params.server} --out {output.scores:q}"
        " --toolkit-csv {output.toolkit:q} --threads {threads} 2> {log:q}"
