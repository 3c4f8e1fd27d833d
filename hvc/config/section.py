"""The base of every parameter section (``params.yaml``'s ``train:``, ``hvc:``, ``liir:``, ...).

Method packages define their own sections on it (:mod:`hvc.config.registry`); this module imports
nothing else of the package, so a method's parameter module never pulls in the schema.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A parameter section: unknown keys are refused, values are checked on assignment,
    and every float is finite (``.inf`` and ``.nan`` are YAML floats)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ParamsError(ValueError):
    """params.yaml is malformed or violates the schema."""
