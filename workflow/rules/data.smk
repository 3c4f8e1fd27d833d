# Demo data and training shards.


rule demo_data:
    output:
        directory(DATA),
    params:
        id=lambda wc: wc.data,  # the content id: keeps the between-workflow cache exact
    cache: "omit-software"
    resources:
        mem_mb=4000,
        runtime=20,
    shell:
        "hvc demo-data {PARAMS} --out {output}"


def shards_input(wildcards):
    exp = BY_SHARDS[wildcards.shards]
    if exp.params.data.train_set == "demo":
        return DATA.format(data=exp.ids["data"])
    return []


rule shards:
    input:
        shards_input,
    output:
        directory(SHARDS),
    params:
        id=lambda wc: wc.shards,
        overrides=lambda wc: set_args(BY_SHARDS[wc.shards]),
        source=lambda wc, input: input[0] if input else P.data.root,
    cache: "omit-software"
    resources:
        mem_mb=8000,
        runtime=240,
    shell:
        "hvc shards {PARAMS}{params.overrides} --input {params.source} --out {output}"
