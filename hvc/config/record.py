"""What an output folder says about itself: ``params.yaml`` beside the outputs of a stage.

A content-addressed folder (``artifacts/models/<id>/``) is named by a hash; the record
written into it says what the hash stands for: the exact parameters the stage read (the
same mapping its content id hashes, :mod:`hvc.config.ids`), the parameter files and
``--set`` overrides they were resolved from, the id, and the provenance (package version,
code hash, git commit, library versions; :func:`hvc.config.code.provenance`).

The tables and figures are kept per *experiment set* (:func:`experiment_set_id`): a
short hash of the merged parameters, so a run with other parameter files or overrides
writes its own folder instead of overwriting another run's tables.

Only the CLI imports this module, so it is part of no stage's code hash: the record
describes results, it never changes them.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from hvc.config.code import provenance
from hvc.config.ids import content_id, stage_config, stage_ids
from hvc.config.params import Params

RECORD_NAME = "params.yaml"
# content-addressed stages: the record holds the mapping its content id hashes (hvc.config.ids.stage_reads)
STAGE_CONFIGS = ("demo_data", "shards", "train", "propagate", "evaluate")
COMMANDS = {"demo_data": "demo-data"}  # the command of a stage whose name is not its own


def experiment_set_id(p: Params) -> str:
    """Short id (8 hex digits) of an experiment set: a hash of the merged, validated
    parameters (every file and override applied), which decide every experiment, row and
    table the run makes. Two runs with the same effective parameters share it; the code
    is not part of it (the tables stage re-runs into the same folder after a code change)."""
    return content_id(p.model_dump(mode="json"), length=8)


def _plain(obj: Any) -> Any:
    """``obj`` as plain YAML types (tuples to lists, paths to strings)."""
    return json.loads(json.dumps(obj, default=str))


def given(files: list[str], overrides: list[str] | None) -> dict[str, Any]:
    """How the parameters were given: the files in merge order and the ``--set`` overrides."""
    return {"files": [str(f) for f in files], "overrides": list(overrides or [])}


def stage_record(p: Params, stage: str, files: list[str], overrides: list[str] | None, method: str | None = None, **extra: Any) -> str:
    """The YAML text of ``params.yaml`` for one stage's output folder.

    Args:
        p: the resolved parameters the stage ran with.
        stage: ``demo_data``, ``shards``, ``train``, ``propagate``, ``evaluate`` (content
            addressed: the record holds the id and the exact mapping it hashes), or another
            stage name (``tables``, ``figures``: the record holds the experiment set id and
            every parameter).
        files, overrides: as given on the command line (``--params``, ``--set``).
        method: for ``propagate``, the method of the encoder (its preset and inference
            are part of the id; default ``p.method``).
        extra: more fields (the encoder, the benchmark, ...), written after ``params``.
    Returns:
        YAML with ``stage``, ``id``, ``params``, the extras, ``given`` and ``provenance``.
    """
    if stage in STAGE_CONFIGS:
        head = {"stage": stage, "id": stage_ids(p, method)[stage], "params": _plain(stage_config(stage, p, method))}
        code_stage = stage
    else:
        head = {"stage": stage, "experiment_set": experiment_set_id(p), "params": p.model_dump(mode="json")}
        code_stage = stage if stage in ("tables", "figures") else "train"
    record = {
        **head,
        **_plain(extra),
        "given": given(files, overrides),
        "provenance": _plain(provenance(code_stage, p.method)),
    }
    command = COMMANDS.get(stage, stage)
    note = f"# Written by `hvc {command}`: the parameters this output was made with (the mapping its id hashes),\n"
    note += "# the parameter files and overrides they were resolved from, and the code that made it.\n"
    return note + yaml.safe_dump(record, sort_keys=False, width=100)


def settings_line(p: Params, files: list[str], overrides: list[str] | None) -> str:
    """One caption line naming the settings of a table or figure: the parameter files, the
    overrides and the experiment set id."""
    made = " + ".join(str(f) for f in files) or "defaults"
    if overrides:
        made += ", --set " + " ".join(overrides)
    return f"Settings: {made} (experiment set {experiment_set_id(p)})"
