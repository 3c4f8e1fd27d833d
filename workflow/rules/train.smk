# One trained model per distinct setting of the experiment grid.


rule train:
    input:
        lambda wc: SHARDS.format(shards=BY_MODEL[wc.model].ids["shards"]),
    output:
        directory(MODEL),
    params:
        id=lambda wc: wc.model,
        overrides=lambda wc: set_args(BY_MODEL[wc.model]),
        launcher=lambda wc: launcher(BY_MODEL[wc.model]),
    log:
        f"{LOGS}/train/{{model}}.log",
    # no benchmark: a rule eligible for the between-workflow cache may not have one
    # (Snakemake); the run time is in the report's statistics and in train.json
    cache: True  # the id param carries the code hash (see demo_data in data.smk)
    threads: lambda wc: 1 + BY_MODEL[wc.model].params.train.workers  # main process + loader workers
    resources:
        gpu=lambda wc: gpus(BY_MODEL[wc.model]),
        mem_mb=32000,
        runtime=24 * 60,
    shell:
        "{params.launcher} train {PARAMS}{params.overrides} --expect-id {wildcards.model} --shards {input:q} --out {output:q}"
        # the log file gets the log and the progress bar; stderr (the terminal) a heartbeat line every train.log_every steps
        " --threads {threads} --log {log:q}"
