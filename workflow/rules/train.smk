# One trained model per distinct setting of the experiment grid.


rule train:
    input:
        lambda wc: SHARDS.format(shards=BY_MODEL[wc.model].ids["shards"]),
    output:
        directory(MODEL),
    params:
        overrides=lambda wc: set_args(BY_MODEL[wc.model]),
    cache: "omit-software"
    threads: lambda wc: max(1, BY_MODEL[wc.model].params.train.workers)
    resources:
        gpus=lambda wc: gpus(BY_MODEL[wc.model]),
        mem_mb=32000,
        runtime=24 * 60,
    shell:
        "hvc train {PARAMS}{params.overrides} --shards {input} --out {output}"
