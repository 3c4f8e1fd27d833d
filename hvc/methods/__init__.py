"""Self-supervised correspondence methods trained by the harness (``hvc.train``).

Each method is a package ``hvc.methods.<name>`` whose ``METHOD`` is a subclass of
:class:`hvc.methods.base.Method`. Packages are imported by name when asked for (never all of
them statically), so a stage's code identity (:mod:`hvc.config.code`) holds only the
method it trains.
"""

from __future__ import annotations

import importlib

from hvc.config.params import METHODS
from hvc.methods.base import Method

__all__ = ["METHODS", "Method", "batch_kind", "get_method"]


def batch_kind(name: str) -> str:
    """``"views"`` or ``"clips"``: the training unit of method ``name``.

    Raises:
        KeyError: unknown method (the message lists the known ones).
    """
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]


def get_method(name: str) -> type[Method]:
    """The :class:`~hvc.methods.base.Method` subclass of method ``name`` (imports
    ``hvc.methods.<name>`` on first use).

    Raises:
        KeyError: unknown method.
        TypeError: the package's ``METHOD`` is not a Method of the registered batch kind.
    """
    kind = batch_kind(name)
    cls = getattr(importlib.import_module(f"{__name__}.{name}"), "METHOD", None)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"hvc.methods.{name}.METHOD is not a Method subclass: {cls!r}")
    if cls.batch_kind != kind or cls.name != name:
        raise TypeError(f"hvc.methods.{name}.METHOD is {cls.name!r} on {cls.batch_kind!r}, registered as {name!r} on {kind!r}")
    return cls
