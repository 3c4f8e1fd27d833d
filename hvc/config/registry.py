"""The registry: the one place that names the trainable methods.

A method is a package (``hvc/methods/<name>/`` for the built-in ones) whose ``spec``
module holds ``SPEC``, a :class:`MethodSpec`: everything the harness knows about it
without importing its model code (its parameter section, the data its training phases
read, its inference, display name, published rows and figures). Its ``method`` module
holds ``METHOD``, the trainable :class:`hvc.methods.base.Method` subclass.

Adding a method: write its package, then add one line to :data:`METHODS` (or call
:func:`register_method`, e.g. for a method defined outside this package). The generic
layers (parameters, plan, content ids, DVC, training, propagation, tables) ask this
registry and never name a method.

This module imports nothing of the package at import time, so every layer may use it;
the spec modules are imported by name when asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

# name -> package holding ``spec.py`` (SPEC) and ``method.py`` (METHOD)
METHODS: dict[str, str] = {
    "hvc": "hvc.methods.hvc",
    "liir": "hvc.methods.liir",
    "stt": "hvc.methods.stt",
    "maskvos": "hvc.methods.maskvos",
}

# The method of the paper this pipeline reproduces: the default of ``method``.
DEFAULT_METHOD = "hvc"

DATA_KINDS = ("views", "clips")


@dataclass(frozen=True)
class MethodSpec:
    """What the harness needs to know about a method, without importing its model code.

    Attributes:
        name: registry name; also the key of its parameter section (``hvc:``, ``liir:``).
        display: name shown in tables, figures and plans (``"HVC"``, ``"LIIR"``).
        section: the pydantic model of its parameter section (``params.<name>``), or None
            when it has no knobs of its own.
        kinds: the data kind of each training phase, in order: ``"views"`` (static images)
            or ``"clips"`` (frames of training videos). The data and shard stages prepare
            video shards when any phase reads clips (a views phase then reads single frames).
        preset: propagation keys this method's encoders use when the parameter files leave
            them out (e.g. LIIR's window radius); applied to its encoders only.
        inference: ``"module:function"`` of the method's own label propagation (see
            :mod:`hvc.eval.predict`), or None for the generic label propagation only.
        inference_keys: keys of its own section that its inference reads (part of the
            propagation stage's id).
        published: ``"package:file"`` of its published rows (YAML: ``{table: [row, ...]}``)
            added to the paper's tables, or None.
        figures: ``{name: "module:function"}`` of method-only figures drawn from a trained
            model (e.g. HVC's pseudo-dynamic signals, the paper's Fig. 12).
        encoders: ``{name: "module:function"}`` of encoders not trained here that the method
            provides (HVC: the ImageNet-supervised backbone, the authors' released weights,
            the semantic encoder); each function takes ``(params, device)`` and returns the
            frozen encoder. Every method's random initialisation is ``random`` (its
            :meth:`~hvc.methods.base.Method.load_encoder` without weights).
        video_train_set: the training set used when the base one has no videos and a phase
            reads clips (LIIR: YouTube-VOS, Li et al. §3.3).
    """

    name: str
    display: str
    section: Any = None
    kinds: tuple[str, ...] = ("views",)
    preset: dict[str, Any] = field(default_factory=dict)
    inference: str | None = None
    inference_keys: tuple[str, ...] = ()
    published: str | None = None
    figures: dict[str, str] = field(default_factory=dict)
    encoders: dict[str, str] = field(default_factory=dict)
    video_train_set: str = "ytvos"

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in DATA_KINDS]
        if not self.kinds or bad:
            raise ValueError(f"method {self.name!r}: kinds must be a non-empty tuple of {DATA_KINDS}, got {self.kinds!r}")

    @property
    def reads_clips(self) -> bool:
        """Whether any training phase reads clips (then it trains on video shards)."""
        return "clips" in self.kinds


def method_names() -> tuple[str, ...]:
    """Registered method names, in registration order."""
    return tuple(METHODS)


def _package(name: str) -> str:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]


@cache
def _spec(name: str, package: str) -> MethodSpec:
    spec = getattr(importlib.import_module(f"{package}.spec"), "SPEC", None)
    if not isinstance(spec, MethodSpec) or spec.name != name:
        raise TypeError(f"{package}.spec.SPEC must be the MethodSpec of {name!r}, got {spec!r}")
    return spec


def method_spec(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of method ``name`` (imports its ``spec`` module on first use).

    Raises:
        KeyError: unknown method (the message lists the known ones).
        TypeError: the package's ``SPEC`` is not a MethodSpec of that name.
    """
    return _spec(name, _package(name))


def encoder_provider(encoder: str) -> str | None:
    """The method whose spec provides the baseline encoder ``encoder`` (``"imagenet"`` →
    ``"hvc"``), or None when no registered method does."""
    return next((m for m in METHODS if encoder in method_spec(m).encoders), None)


def method_package(name: str) -> str:
    """The package of method ``name`` (``"hvc.methods.liir"``). Raises KeyError."""
    return _package(name)


def load_function(path: str) -> Callable[..., Any]:
    """The function named ``"module:function"`` (a spec's inference or figure)."""
    module, _, func = path.partition(":")
    return getattr(importlib.import_module(module), func)


def register_method(name: str, package: str) -> None:
    """Register the method in ``package`` (a package with ``spec.py`` and ``method.py``)
    under ``name``, e.g. a method defined outside this package. Parameter models built
    afterwards (:func:`hvc.config.params.params_model`) include its section.

    Raises:
        ValueError: ``name`` is taken by another package.
    """
    if METHODS.get(name, package) != package:
        raise ValueError(f"method {name!r} is already registered as {METHODS[name]!r}")
    METHODS[name] = package
    _listeners_notify()


def unregister_method(name: str) -> None:
    """Undo :func:`register_method` (tests)."""
    METHODS.pop(name, None)
    _listeners_notify()


_LISTENERS: list[Callable[[], None]] = []


def on_change(callback: Callable[[], None]) -> None:
    """Call ``callback`` whenever the registry changes (caches built from it)."""
    _LISTENERS.append(callback)


def _listeners_notify() -> None:
    for callback in _LISTENERS:
        callback()
