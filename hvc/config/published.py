"""The paper's tables with their published numbers (``hvc/config/published.yaml``)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import yaml


@lru_cache(maxsize=1)
def published_tables() -> dict[str, Any]:
    """Table name -> title, rows (each an override of the base params or a baseline encoder)
    and published values, as printed in the paper (``hvc/config/published.yaml``)."""
    text = resources.files("hvc").joinpath("config/published.yaml").read_text()
    return yaml.safe_load(text)["tables"]
