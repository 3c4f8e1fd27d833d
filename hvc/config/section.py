"""The base of every parameter section (``params.yaml``'s ``train:``, ``hvc:``, ``liir:``, ...).

Method packages define their own sections on it (:mod:`hvc.config.registry`); this module imports
nothing else of the package, so a method's parameter module never pulls in the schema.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator


class Section(BaseModel):
    """A parameter section: unknown keys are refused, values are checked on assignment,
    every float is finite (``.inf`` and ``.nan`` are YAML floats), and true/false is not
    taken for a number."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: Any) -> Any:
        """Refuse true/false where a number (or a list of numbers) is expected: pydantic
        would read them as 1/0 (``liir.frame_gaps: [true, 5, 8]`` as ``[1, 5, 8]``)."""
        field = cls.model_fields.get(info.field_name)
        if field is None or _accepts_bool(field.annotation) or not _numeric(field.annotation):
            return value
        items = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, bool) for v in items):
            raise ValueError("true/false where a number is expected (write the number)")
        return value


def _accepts_bool(annotation: Any) -> bool:
    """Whether a field's type admits a bool (bool itself, or bool inside a union/list)."""
    import typing

    return annotation is bool or any(_accepts_bool(arg) for arg in typing.get_args(annotation))


def _numeric(annotation: Any) -> bool:
    """Whether a field's type is, or holds, an int or a float."""
    import typing

    return annotation in (int, float) or any(_numeric(arg) for arg in typing.get_args(annotation))


class ParamsError(ValueError):
    """params.yaml is malformed or violates the schema."""
