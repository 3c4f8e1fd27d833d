"""The paper's tables with their published numbers (``hvc/config/published.yaml``), and each
registered method's own rows (its registry entry's ``published`` file)."""

from __future__ import annotations

import copy
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from hvc.config import registry

TRAINED = "trained"  # a row's encoder: a model trained here


@lru_cache(maxsize=1)
def published_tables() -> dict[str, Any]:
    """Table name -> title, rows (each an override of the base params or a baseline encoder)
    and published values, as printed in the paper (``hvc/config/published.yaml``). Each
    registered method's rows (:attr:`hvc.config.registry.MethodSpec.published`) join the
    tables they name, after the rows of models trained here, with ``overrides: {method:
    <name>}``."""
    text = resources.files("hvc").joinpath("config/published.yaml").read_text()
    tables = copy.deepcopy(yaml.safe_load(text)["tables"])
    for name in registry.method_names():
        spec = registry.method_spec(name)
        if spec.published is None:
            continue
        package, _, filename = spec.published.partition(":")
        rows = yaml.safe_load(resources.files(package).joinpath(filename).read_text()) or {}
        for table, extra in rows.items():
            if table not in tables:
                raise ValueError(f"{spec.published}: no table {table!r} in the paper's tables")
            _insert_rows(tables[table]["rows"], [{**r, "encoder": TRAINED, "overrides": {**r.get("overrides", {}), "method": name}} for r in extra])
    return tables


def _insert_rows(rows: list[dict[str, Any]], extra: list[dict[str, Any]]) -> None:
    """Insert ``extra`` after the leading rows of models trained here."""
    at = next((i for i, r in enumerate(rows) if r.get("encoder", TRAINED) != TRAINED or r.get("merge_semantic")), len(rows))
    rows[at:at] = extra


registry.on_change(published_tables.cache_clear)
