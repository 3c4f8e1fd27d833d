"""Running on a cluster, on the tiny demo setting: the profiles, a SLURM run against a
fake SLURM, and the two ways one run reuses another's work (Snakemake's between-workflow
output cache, a DVC remote).

The fake SLURM is a script written here and put first on PATH under the names the
SLURM executor plugin calls (sbatch, sacct, squeue, scancel, sinfo, srun). sbatch records
its arguments and the job script, runs the script to the end (synchronously, on this
machine's CPU) and prints the job id the way ``sbatch --parsable`` does; sacct and squeue
print ``<jobid>|<STATE>`` lines for the run's job name; srun records its arguments and
runs the command after its options.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hvc.config.params import deep_merge
from workflow_copy import copy_workflow, job_counts

ROOT = Path(__file__).resolve().parents[1]
TINY = "tests/configs/tiny.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
CACHED_RULES = ["demo_data", "shards", "train"]

def run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> str:
    env = dict(os.environ, **(env or {}))
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    env.update(DVC_NO_ANALYTICS="1")
    env.pop("SLURM_JOB_ID", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{log[-6000:]}")
    return log


def job_resources(log: str, rule: str) -> dict[str, str]:
    """The resources line of the first job of ``rule`` in a dry-run log."""
    block = re.search(rf"^rule {rule}:\n(.*?)(?=^\S)", log, re.MULTILINE | re.DOTALL)
    assert block, f"no job of rule {rule} in the log"
    line = re.search(r"^\s+resources: (.*)$", block[1], re.MULTILINE)
    return dict(item.split("=", 1) for item in line[1].split(", ")) if line else {}


ALL_TABLES_JOBS = {
    "demo_data": 1,
    "shards": 1,
    "train": 1,
    "propagate": 2,
    "evaluate": 2,
    "tables": 1,
    "all_tables": 1,
}


# --------------------------------------------------------------------------- profiles


def needs_slurm_plugin():
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install -e .[cluster]")


def test_slurm_profile_dry_run(tmp_path):
    needs_slurm_plugin()
    ws = copy_workflow(tmp_path / "ws")
    log = run([*SNAKEMAKE, "--profile", "workflow/profiles/slurm", "-n", "all_tables", "--configfile", TINY], ws)
    counts = job_counts(log)
    assert counts.items() >= ALL_TABLES_JOBS.items()
    train = job_resources(log, "train")
    assert train["gpu"] == "1"  # device: auto -> sbatch --gpus=1
    assert job_resources(log, "propagate")["gpu"] == "1"
    for rule in set(counts) - {"train", "propagate"}:  # data, table (and figure) rules stay on CPUs
        assert "gpu" not in job_resources(log, rule), rule
    assert int(train["mem_mb"]) >= 16000 and int(train["runtime"]) >= 60

    cpu = ["--config", "device=cpu"]
    log = run([*SNAKEMAKE, "--profile", "workflow/profiles/slurm", "-n", "all_tables", "--configfile", TINY, *cpu], ws)
    assert "gpu" not in job_resources(log, "train")
    assert "gpu" not in job_resources(log, "propagate")


def test_local_and_kubernetes_profiles_parse(tmp_path):
    ws = copy_workflow(tmp_path / "ws")
    log = run([*SNAKEMAKE, "--profile", "workflow/profiles/local", "-n", "all_tables", "--configfile", TINY], ws)
    assert job_counts(log).items() >= ALL_TABLES_JOBS.items()

    k8s = yaml.safe_load((ROOT / "workflow/profiles/kubernetes/config.yaml").read_text())
    assert k8s["executor"] == "kubernetes"
    assert k8s["container-image"] and k8s["kubernetes-namespace"]
    assert k8s["default-storage-provider"] and k8s["default-storage-prefix"]
    # the kubernetes plugin refuses a job that has a `gpu` resource but no manufacturer
    assert k8s["default-resources"]["gpu_manufacturer"] == "nvidia"
    # Every key is a Snakemake option and the executor and storage plugins load. (A dry
    # run would ask the S3 bucket whether the outputs exist.)
    pytest.importorskip("snakemake_executor_plugin_kubernetes", reason="pip install -e .[cluster]")
    pytest.importorskip("snakemake_storage_plugin_s3", reason="pip install snakemake-storage-plugin-s3")
    rules = run([*SNAKEMAKE, "--profile", "workflow/profiles/kubernetes", "--list-rules"], ws)
    assert {"demo_data", "shards", "train", "propagate", "evaluate", "tables"} <= set(rules.split())


# --------------------------------------------------------------------------- fake SLURM

FAKE_SLURM = r'''
import fcntl, json, os, subprocess, sys
from pathlib import Path

STATE = Path(os.environ["FAKE_SLURM_DIR"])
JOBS = STATE / "jobs"
WITH_VALUE = {"--job-name", "--output", "--comment", "-A", "-p", "-t", "--mem", "--mem-per-cpu", "-D", "-C"}


def jobs():
    return [json.loads(p.read_text()) for p in sorted(JOBS.glob("*.json"))]


def save(job):
    (JOBS / f"{job['id']}.json").write_text(json.dumps(job))


def sbatch(args):
    opts, i = {}, 0
    while i < len(args):
        if args[i] in WITH_VALUE:
            opts[args[i]], i = args[i + 1], i + 2
        else:
            key, _, value = args[i].partition("=")
            opts[key], i = value or True, i + 1
    script = opts.get("--wrap") or sys.stdin.read()  # --wrap=..., or a script on stdin
    with open(STATE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        jobid = str(1000 + len(list(JOBS.glob("*.json"))))
        job = {"id": jobid, "name": opts.get("--job-name"), "argv": args, "script": script, "state": "RUNNING"}
        save(job)
    log = Path(opts["--output"].replace("%j", jobid))
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SLURM_JOB_ID=jobid, SLURM_JOBID=jobid)
    with open(log, "w") as out:
        rc = subprocess.run(["/bin/sh", "-c", script], cwd=opts.get("-D"), env=env, stdout=out, stderr=out).returncode
    job.update(state="COMPLETED" if rc == 0 else "FAILED", log=log.read_text()[-3000:] if rc else "")
    save(job)
    print(jobid)


def states(args):  # sacct -X --parsable2 ... --name <run> / squeue --format=%i|%T ... --name <run>
    if "--name" in args:
        name = args[args.index("--name") + 1]
        for job in jobs():
            if job["name"] == name:
                print(f"{job['id']}|{job['state']}")
    # sacct's other uses (guessing the account, failure reasons): nothing to report


def scancel(args):
    for job in jobs():
        if job["id"] in args and job["state"] == "RUNNING":
            job["state"] = "CANCELLED"
            save(job)


def srun(args):
    with open(STATE / "srun.jsonl", "a") as f:
        f.write(json.dumps({"job": os.environ.get("SLURM_JOB_ID"), "argv": args}) + "\n")
    i = 0
    while args[i].startswith("-"):
        i += 1
    os.execvp(args[i], args[i:])


command = os.path.basename(sys.argv[0])
if command == "sbatch":
    sbatch(sys.argv[1:])
elif command in ("sacct", "squeue"):
    states(sys.argv[1:])
elif command == "scancel":
    scancel(sys.argv[1:])
elif command == "sinfo":
    print("PARTITION\ndebug*")
elif command == "srun":
    srun(sys.argv[1:])
'''


def fake_slurm(root: Path) -> dict[str, str]:
    """Write the fake SLURM commands; returns the environment that puts them on PATH."""
    bin_dir, state = root / "bin", root / "state"
    bin_dir.mkdir(parents=True)
    (state / "jobs").mkdir(parents=True)
    script = bin_dir / "fake_slurm.py"
    script.write_text(f"#!{sys.executable}\n{FAKE_SLURM}")
    script.chmod(0o755)
    for name in ("sbatch", "sacct", "squeue", "scancel", "sinfo", "srun"):
        (bin_dir / name).symlink_to(script)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM_DIR": str(state)}


def _rule(job: dict) -> str:
    comment = job["argv"][job["argv"].index("--comment") + 1]
    return re.match(r"rule_(\w+?)(_wildcards_|$)", comment)[1]


@pytest.mark.slow
def test_slurm_executor_end_to_end(tmp_path):
    """all_tables through the slurm profile against the fake SLURM.

    The tiny setting keeps ``device: auto``: the rules ask SLURM for a GPU, and the job's
    ``hvc train`` falls back to the CPU (pick_device: auto without CUDA → cpu). Without the
    random baseline (two jobs fewer; each cluster job costs two Snakemake start-ups).
    """
    needs_slurm_plugin()
    ws = copy_workflow(tmp_path / "ws")
    (ws / "no_baseline.yaml").write_text("baselines: []\n")
    env = fake_slurm(tmp_path / "fake")
    profile = ["--profile", "workflow/profiles/slurm", "--slurm-init-seconds-before-status-checks", "1"]
    run([*SNAKEMAKE, "all_tables", *profile, "--configfile", TINY, "no_baseline.yaml"], ws, env, timeout=400)

    state = Path(env["FAKE_SLURM_DIR"])
    jobs = [json.loads(p.read_text()) for p in sorted((state / "jobs").glob("*.json"))]
    assert [j for j in jobs if j["state"] != "COMPLETED"] == []
    by_rule: dict[str, list[dict]] = {}
    for job in jobs:
        by_rule.setdefault(_rule(job), []).append(job)
    # one sbatch per job; all_tables, a target without a command, is never submitted
    expected = {"demo_data": 1, "shards": 1, "train": 1, "propagate": 1, "evaluate": 1, "tables": 1}
    assert {rule: len(js) for rule, js in by_rule.items()}.items() >= expected.items()
    assert "all_tables" not in by_rule

    (train,) = by_rule["train"]
    assert "--gpus=1" in train["argv"]  # the rule's gpu resource, as the plugin submits it
    assert "--cpus-per-task=1" in train["argv"]  # threads: 1 + train.workers (0 in the tiny setting)
    assert train["argv"][train["argv"].index("--mem") + 1] == "32000"
    assert train["argv"][train["argv"].index("-t") + 1] == "1440"
    assert "--executor slurm-jobstep" in train["script"] and "train" in train["script"]
    assert "--gpus=1" in by_rule["propagate"][0]["argv"]
    for rule in set(by_rule) - {"train", "propagate"}:
        assert all(not any(a.startswith("--gpus") for a in j["argv"]) for j in by_rule[rule]), rule
    # inside the allocation the job step asks srun for the same GPU
    sruns = [json.loads(line) for line in (state / "srun.jsonl").read_text().splitlines()]
    (step,) = [s for s in sruns if s["job"] == train["id"]]
    assert "--gpus=1" in step["argv"]

    table = (ws / "results/tables/latest/demo.md").read_text()
    assert "HVC (trained)" in table and re.search(r"\| +\d+\.\d \|", table)


# --------------------------------------------------------------------------- output cache


@pytest.fixture(scope="module")
def filled_cache(tmp_path_factory) -> Path:
    """Clone A trains the tiny model with --cache: $SNAKEMAKE_OUTPUT_CACHE holds data, shards, model."""
    root = tmp_path_factory.mktemp("output_cache")
    cache = root / "cache"
    cache.mkdir()
    ws = copy_workflow(root / "clone_a")
    cmd = [*SNAKEMAKE, "all_tables", "--until", "train", "--cores", "2", "--configfile", TINY, "--cache", *CACHED_RULES]
    log = run(cmd, ws, {"SNAKEMAKE_OUTPUT_CACHE": str(cache)})
    assert job_counts(log) == {"demo_data": 1, "shards": 1, "train": 1}
    train_logs = "".join(p.read_text() for p in (ws / "logs" / "train").glob("*.log"))
    assert "stage train done" in train_logs  # hvc's own log line (the job's log file): training ran here
    assert len([p for p in cache.iterdir() if not p.name.startswith("tmp")]) == len(CACHED_RULES)
    return cache


def test_output_cache_reuses_the_model_in_another_clone(filled_cache, tmp_path):
    ws = copy_workflow(tmp_path / "clone_b")
    env = {"SNAKEMAKE_OUTPUT_CACHE": str(filled_cache)}
    cmd = [*SNAKEMAKE, "all_tables", "--cores", "2", "--configfile", TINY, "--cache", *CACHED_RULES]

    log = run([*cmd, "-n"], ws, env)
    for kind in ("data", "shards", "models"):
        assert re.search(rf"Output file artifacts/{kind}/\w+ will be obtained from global between-workflow cache", log)

    log = run([*cmd, "--until", "train"], ws, env)
    assert job_counts(log) == {"demo_data": 1, "shards": 1, "train": 1}  # jobs that only fetch
    job_logs = "".join(p.read_text() for p in (ws / "logs").glob("**/*.log")) if (ws / "logs").exists() else ""
    for stage in ("demo-data", "shards", "train"):
        assert f"stage {stage} done" not in log + job_logs  # hvc never started
    (model,) = (ws / "artifacts/models").iterdir()
    assert f"Symlinking output file {model.relative_to(ws)}/encoder.pt from cache" in log
    assert (model / "encoder.pt").resolve().is_relative_to(filled_cache.resolve())
    # what is left to do is what follows training
    counts = job_counts(run([*cmd, "-n"], ws, env))
    assert counts.items() >= {"propagate": 2, "evaluate": 2, "tables": 1, "all_tables": 1}.items()
    assert not set(counts) & set(CACHED_RULES)


def test_output_cache_does_not_reuse_a_model_trained_with_other_params(filled_cache, tmp_path):
    ws = copy_workflow(tmp_path / "clone_c")
    (ws / "lr.yaml").write_text("train:\n  lr: 0.002\n")
    env = {"SNAKEMAKE_OUTPUT_CACHE": str(filled_cache)}
    cmd = [*SNAKEMAKE, "all_tables", "-n", "--cores", "2", "--configfile", TINY, "lr.yaml", "--cache", *CACHED_RULES]
    log = run(cmd, ws, env)
    assert re.search(r"Output file artifacts/shards/\w+ will be obtained from", log)  # same shards: reuse them
    assert re.search(r"Output file artifacts/models/\w+ will be written to", log)  # another model: train it


def test_output_cache_does_not_hand_back_a_model_of_other_code(filled_cache, tmp_path):
    """A clone whose loss differs (a real code change) trains its own model; the data and
    shards, whose code is the same, still come from the cache."""
    from hvc.config.code import PACKAGE_DIR

    ws = copy_workflow(tmp_path / "clone_d")
    pkg = shutil.copytree(PACKAGE_DIR, ws / "hvc", ignore=shutil.ignore_patterns("__pycache__"))
    loss = pkg / "methods" / "hvc" / "loss.py"
    loss.write_text(loss.read_text() + "\n_UNUSED = None\n")
    env = {"SNAKEMAKE_OUTPUT_CACHE": str(filled_cache), "PYTHONPATH": str(ws)}  # the clone's own package
    cmd = [*SNAKEMAKE, "all_tables", "-n", "--cores", "2", "--configfile", TINY, "--cache", *CACHED_RULES]
    log = run(cmd, ws, env)
    assert re.search(r"Output file artifacts/shards/\w+ will be obtained from", log)
    assert re.search(r"Output file artifacts/models/\w+ will be written to", log)


# --------------------------------------------------------------------------- DVC remote


def test_dvc_remote_restores_outputs_in_a_fresh_clone(tmp_path):
    """`dvc push` from one clone, `dvc pull` in a fresh one: the shards and the trained
    model come back and nothing is retrained. (Only up to train, to keep this file short;
    the stages after it are the same mechanism.)"""
    dvc = shutil.which("dvc") or pytest.skip("dvc is not installed")
    git = shutil.which("git") or pytest.skip("git is not installed")
    origin = copy_workflow(tmp_path / "origin", git_files=True)
    merged = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()), yaml.safe_load((ROOT / TINY).read_text()))
    (origin / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))  # the file `dvc exp run -S` edits
    # the package's files are stage dependencies: a copy, first on the path
    shutil.copytree(ROOT / "hvc", origin / "hvc", ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PYTHONPATH": str(origin), "PYTHONDONTWRITEBYTECODE": "1"}
    run([sys.executable, "-m", "hvc.cli", "dvc-yaml"], origin, env)  # dvc.yaml for the tiny setting
    remote = tmp_path / "dvc-remote"
    run([git, "init", "-q"], origin)
    run([dvc, "init", "-q"], origin)
    shutil.copy(ROOT / ".dvcignore", origin / ".dvcignore")
    run([dvc, "remote", "add", "-d", "shared", str(remote)], origin)
    run([git, "add", "-A"], origin)
    run([git, "commit", "-qm", "workflow"], origin)  # dvclive (in hvc train) needs a commit
    log = run([dvc, "repro", "train-hvc"], origin, env, timeout=400)
    assert {"plan", "demo_data", "shards-hvc", "train-hvc"} == set(re.findall(r"Running stage '([\w-]+)'", log))
    run([dvc, "push"], origin)
    run([git, "add", "-A"], origin)
    run([git, "commit", "-qm", "tiny model"], origin)

    clone = tmp_path / "clone"
    run([git, "clone", "-q", str(origin), str(clone)], tmp_path)
    env = {"PYTHONPATH": str(clone), "PYTHONDONTWRITEBYTECODE": "1"}
    assert not (clone / "artifacts").exists()
    run([dvc, "pull", "--with-deps", "train-hvc"], clone, env)
    assert (clone / "artifacts/dvc/shards/hvc/index.json").exists()
    for name in ("encoder.pt", "checkpoint.pt"):
        pulled, trained = clone / "artifacts/dvc/models/hvc" / name, origin / "artifacts/dvc/models/hvc" / name
        assert pulled.read_bytes() == trained.read_bytes()
    assert "Data and pipelines are up to date" in run([dvc, "status", "train-hvc"], clone, env)
    log = run([dvc, "repro", "train-hvc"], clone, env)
    assert "Running stage 'train-hvc'" not in log and "Running stage 'shards-hvc'" not in log, log
    assert "Stage 'train-hvc' didn't change, skipping" in log
