# Label propagation on every benchmark, then the official metrics.


def encoder_input(wildcards):
    exp = BY_ENCODER[wildcards.encoder]
    deps = bench_inputs(wildcards.benchmark)
    if exp.key not in ("random", "imagenet"):
        deps.append(MODEL.format(model=exp.ids["model"]))
    return deps


def encoder_spec(wildcards):
    exp = BY_ENCODER[wildcards.encoder]
    return exp.key if exp.key in ("random", "imagenet") else MODEL.format(model=exp.ids["model"]) + "/encoder.pt"


rule propagate:
    input:
        encoder_input,
    output:
        directory(PREDICTIONS),
    params:
        encoder=encoder_spec,
        data=lambda wc: bench_root(wc.benchmark),
    resources:
        gpu=lambda wc: gpus(BY_ENCODER[wc.encoder]),
        mem_mb=16000,
        runtime=240,
    shell:
        "hvc propagate {PARAMS} --encoder {params.encoder} --benchmark {wildcards.benchmark}"
        " --data {params.data} --out {output}"


rule evaluate:
    input:
        predictions=PREDICTIONS,
        benchmark=lambda wc: bench_inputs(wc.benchmark),
    output:
        scores=SCORES,
        objects=SCORES.replace(".json", ".objects.json"),
    params:
        data=lambda wc: bench_root(wc.benchmark),
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "hvc evaluate {PARAMS} --benchmark {wildcards.benchmark} --data {params.data}"
        " --predictions {input.predictions} --out {output.scores}"
