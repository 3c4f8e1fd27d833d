# Parameters, the experiment grid and artifact paths, computed once before the DAG is built.
import os
import shlex

import yaml

from hvc.config.benchmarks import benchmark_root, get_benchmark
from hvc.data.download import STAMP_NAME
from hvc.config.sources import dataset_fingerprint
from hvc.config.plan import override_args, plan, shards_owners
from hvc.config.params import deep_merge, validate_params
from hvc.config.datasets import TRAIN_SET_DATASETS
from hvc.config.record import experiment_set_id
from snakemake.utils import validate


configfile: "params.yaml"


def yaml_values(value):
    """`--config` values as YAML reads them: Snakemake parses a nested value with YAML's
    base loader, which keeps every scalar a string (train={alpha: 0.5} gives "0.5")."""
    if isinstance(value, dict):
        return {k: yaml_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [yaml_values(v) for v in value]
    if isinstance(value, str):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    return value


# The same files, merged in the same order, and the same `--config` overrides (as
# `--set KEY=VALUE`, which every stage subcommand accepts) are handed to every `hvc` call.
PARAMS_FILES = ["params.yaml"] + [
    os.path.relpath(f) for f in workflow.overwrite_configfiles if os.path.relpath(f) != "params.yaml"
]
CLI_OVERRIDES = yaml_values(dict(workflow.config_settings.config))
config.update(deep_merge(config, CLI_OVERRIDES))
P = validate_params(config, source=", ".join(PARAMS_FILES + (["--config"] if CLI_OVERRIDES else [])))  # stops here on any bad key, in one line
# The same schema as JSON Schema, exported from the pydantic model (`hvc params --schema`);
# pydantic runs first for its one-line messages and the cross-field checks JSON Schema lacks.
validate(config, "../schemas/params.schema.json", set_default=False)
# quoted for the shell: a parameter file's path may hold spaces
PARAMS = " ".join(f"--params {shlex.quote(f)}" for f in PARAMS_FILES) + "".join(
    f" --set {shlex.quote(a)}" for a in override_args(CLI_OVERRIDES)
)

EXPERIMENTS = plan(P)  # key -> Experiment (overrides, resolved params, content ids)
BASE = EXPERIMENTS[P.method]  # the base setting of the trained method
TRAINED = [e for e in EXPERIMENTS.values() if e.trained]
# the experiment that names each model: unmerged first, then the fewest overrides (budget-liir,
# not budget-liir-generic, which shares its model and differs in the propagation only)
BY_MODEL = {}
for _e in sorted(TRAINED, key=lambda e: (e.merge_semantic, len(e.set_args))):
    BY_MODEL.setdefault(_e.ids["train"], _e)
BY_SHARDS = shards_owners(EXPERIMENTS)  # the base, else the fewest overrides: --set names the shards setting
# (encoder, propagation id) -> experiment: one encoder (a model, or `random`) may be propagated several ways
BY_PROPAGATION = {(e.encoder, e.ids["propagate"]): e for e in EXPERIMENTS.values()}

# Content-addressed artifact paths: the id is a hash of exactly what the stage reads.
DATA = "artifacts/data/{data}"
SHARDS = "artifacts/shards/{shards}"
MODEL = "artifacts/models/{model}"
PREDICTIONS = "artifacts/predictions/{encoder}/{propagation}/{benchmark}"
SCORES = "artifacts/scores/{encoder}/{propagation}/{evaluation}/{benchmark}.json"
FETCHED = os.path.join(P.data.root, "{dataset}", STAMP_NAME)  # written by `hvc fetch` when verified
SUBMISSIONS = "results/submissions/{benchmark}/{encoder}-{propagation}.zip"
SERVER_SCORES = "results/server_scores/{benchmark}/{encoder}-{propagation}.txt"  # saved by the user
# Tables and figures are kept per experiment set (a hash of the merged parameters, `hvc plan`
# prints it): another --configfile/--config writes its own folder; `latest` links to the newest.
SET_ID = experiment_set_id(P)
TABLES = f"results/tables/{SET_ID}"
FIGURES = f"results/figures/{SET_ID}"
LOGS = "logs"  # logs/<rule>/<wildcards>.log (stderr of each job) and .tsv (its benchmark: time, memory)
# CPU threads of the jobs that compute (PyTorch operators, scoring); Snakemake lowers them
# to --cores when fewer are given, and each job passes its share to `hvc ... --threads`.
COMPUTE_THREADS = 8


def set_args(exp):
    """--set arguments that turn the base params into this experiment's."""
    return "".join(f" --set {shlex.quote(a)}" for a in exp.set_args)


def bench_root(benchmark):
    return str(benchmark_root(benchmark, P.data.root, DATA.format(data=BASE.ids["demo_data"])))


def bench_inputs(benchmark):
    """The demo benchmark is built by a rule; a real benchmark is its dataset's fetch stamp."""
    if benchmark == "demo":
        return [DATA.format(data=BASE.ids["demo_data"])]
    return [FETCHED.format(dataset=get_benchmark(benchmark).folder.split("/")[0])]


def train_set_inputs(exp):
    """The demo training set is built by a rule; a real one is its dataset's fetch stamp."""
    if exp.params.data.train_set == "demo":
        return [DATA.format(data=exp.ids["demo_data"])]
    return [FETCHED.format(dataset=TRAIN_SET_DATASETS[exp.params.data.train_set])]


def source_arg(wildcards):
    """`--from DIR` when data.sources names an extracted copy of the dataset (linked, not downloaded)."""
    folder = P.data.sources.get(wildcards.dataset)
    return f" --from {shlex.quote(folder)}" if folder else ""  # any path: spaces, quotes, $(...)


def gpus(exp=None):
    """GPUs a job asks for: one unless the experiment's params say `device: cpu`.

    Returned as the `gpu` resource, the name the executors read (slurm: sbatch --gpus,
    kubernetes: nvidia.com/gpu). None leaves the resource unset, so a CPU run asks for none.
    """
    params = exp.params if exp is not None else P
    if params.device == "cpu":
        return None
    return params.train.gpus if exp is not None and exp.trained else 1


def launcher(exp):
    """`hvc`, or torchrun with one process per GPU when a training job has several (DDP)."""
    n = exp.params.train.gpus
    if n > 1 and exp.params.device != "cpu":
        return f"torchrun --standalone --nproc_per_node {n} -m hvc.cli"
    return "hvc"


wildcard_constraints:
    data="[0-9a-f]+",
    shards="[0-9a-f]+",
    model="[0-9a-f]+",
    propagation="[0-9a-f]+",
    evaluation="[0-9a-f]+",
    benchmark="[a-z0-9_]+",
    dataset="[a-z0-9_]+",
