# HVC pipeline: fetch/demo data -> shards -> train -> propagate -> evaluate -> tables, figures.
#   snakemake --cores 2 all_tables                                  # built-in demo
#   snakemake --cores 8 all_tables --configfile configs/paper.yaml  # the paper's setting
# Rules hold only wiring; each calls one `hvc` subcommand (see hvc/cli.py).
report: "workflow/report/workflow.rst"  # snakemake --report report.html (after a run)


include: "workflow/rules/common.smk"


# The first rule: `snakemake --report report.html` without a target builds the first rule's
# DAG (it ignores default_target), so the target of every run comes first.
rule all_tables:
    default_target: True
    input:
        TABLES,
        FIGURES,


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"
