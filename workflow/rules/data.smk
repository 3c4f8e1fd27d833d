# Demo data and training shards.

# The experiment behind each demo-data id: a method trained on clips gets the demo with its
# training videos (another id), built with that experiment's overrides.
BY_DATA = {e.ids["demo_data"]: e for e in [*TRAINED[::-1], BASE]}


rule demo_data:
    output:
        directory(DATA),
    params:
        id=lambda wc: wc.data,  # the content id: keeps the between-workflow cache exact
        overrides=lambda wc: set_args(BY_DATA[wc.data]) if wc.data in BY_DATA else "",
    log:
        f"{LOGS}/demo_data/{{data}}.log",
    # Between-workflow cache: Snakemake hashes the rule's shell command, its params, its
    # input files and upstream jobs, and (unless "omit-software") the rule's conda
    # environment or container, never the Python code a command runs. The `id` param is
    # the content id, which hashes this stage's code (hvc/config/code.py) and torch's
    # version, so code edits miss the cache; True (not "omit-software") also keeps a
    # result made in another conda environment or container from being handed back.
    cache: True
    resources:
        mem_mb=4000,
        runtime=20,
    shell:
        "hvc demo-data {PARAMS}{params.overrides} --expect-id {wildcards.data} --out {output:q} 2> {log:q}"


rule fetch:
    output:
        FETCHED,
    params:
        root=lambda wc, output: os.path.dirname(os.path.dirname(output[0])),  # data.root
        source=source_arg,  # data.sources: link an extracted copy instead of downloading
        # the copy's file list (or the registry's archives): a changed source folder re-runs
        # the fetch (Snakemake re-runs a job whose params changed), which checks it
        content=lambda wc: dataset_fingerprint(wc.dataset, P.data.root, P.data.sources.get(wc.dataset)),
    log:
        f"{LOGS}/fetch/{{dataset}}.log",
    benchmark:
        f"{LOGS}/fetch/{{dataset}}.tsv"
    retries: 2  # downloads resume where they stopped
    resources:
        mem_mb=2000,
        runtime=24 * 60,
    shell:
        # also on the terminal: a manual dataset's message says what to download and where to put it
        "hvc fetch {wildcards.dataset} --root {params.root:q}{params.source} 2>&1 | tee {log:q}"


localrules:
    fetch,  # downloads run where the workflow runs (cluster nodes often have no internet)


rule shards:
    input:
        lambda wc: train_set_inputs(BY_SHARDS[wc.shards]),
    output:
        directory(SHARDS),
    params:
        id=lambda wc: wc.shards,
        overrides=lambda wc: set_args(BY_SHARDS[wc.shards]),
        source=lambda wc: DATA.format(data=BY_SHARDS[wc.shards].ids["demo_data"]) if BY_SHARDS[wc.shards].params.data.train_set == "demo" else P.data.root,
    log:
        f"{LOGS}/shards/{{shards}}.log",
    # no benchmark: a rule eligible for the between-workflow cache may not have one (Snakemake)
    cache: True  # the id param carries the code hash (see demo_data)
    resources:
        mem_mb=8000,
        runtime=240,
    shell:
        "hvc shards {PARAMS}{params.overrides} --expect-id {wildcards.shards} --input {params.source:q} --out {output:q} 2> {log:q}"
