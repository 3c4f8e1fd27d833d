"""Self-supervised correspondence methods trained by the harness (``hvc.train``).

Each method is a package named in the registry (:mod:`hvc.config.registry`): its ``spec``
module holds the :class:`~hvc.config.registry.MethodSpec` (parameter section, data kinds,
inference, display name, published rows, figures) and its ``method`` module ``METHOD``, a
subclass of :class:`hvc.methods.base.Method`. Packages are imported by name when asked for
(never all of them statically), so a stage's code identity (:mod:`hvc.config.code`) holds
only the methods it runs. Importing this package imports no model code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from hvc.config.registry import method_package, method_spec

if TYPE_CHECKING:
    from hvc.methods.base import Method

__all__ = ["batch_kind", "get_method"]


def batch_kind(name: str) -> str:
    """``"views"`` or ``"clips"``: the data the shards of method ``name`` hold (``"clips"``:
    video shards, when any training phase reads clips).

    Raises:
        KeyError: unknown method (the message lists the known ones).
    """
    return "clips" if method_spec(name).reads_clips else "views"


def get_method(name: str) -> type[Method]:
    """The :class:`~hvc.methods.base.Method` subclass of method ``name`` (imports its
    ``method`` module on first use).

    Raises:
        KeyError: unknown method.
        TypeError: the package's ``METHOD`` is not a Method subclass of that name.
    """
    from hvc.methods.base import Method

    package = method_package(name)
    cls = getattr(importlib.import_module(f"{package}.method"), "METHOD", None)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"{package}.method.METHOD is not a Method subclass: {cls!r}")
    if cls.name != name:
        raise TypeError(f"{package}.method.METHOD is named {cls.name!r}, registered as {name!r}")
    return cls
