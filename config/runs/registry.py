"""Which kinds of run exist: kind → model, task name, state payload, error wording.

Apps register their kinds when Django starts (``AppConfig.ready``). The lifecycle, the
consumer, the polling view and the sweeper look kinds up here, so none of them imports an
app's services or tasks, and services send their task by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.apps import apps


@dataclass(frozen=True)
class RunKind:
    """``kind``: URL-safe name ("backtest"); ``model``: "app_label.Model"; ``task``: the Celery
    task name that runs one id ("" when the service dispatches its own canvas, as the
    optimization's chord does); ``noun``: how messages name it ("backtest"); ``state``: the
    payload a page draws (status fields are added by the lifecycle); ``describe``: the message
    a user reads for an exception, or None for an internal error; ``requires_pro``: the owner
    must still have Pro when the run starts."""

    kind: str
    model: str
    noun: str
    task: str = ""
    state: Callable[[Any], dict[str, Any]] | None = None
    describe: Callable[[Exception], str | None] | None = None
    requires_pro: bool = True
    queue: Callable[[], str] | None = None

    def model_class(self) -> Any:
        return apps.get_model(self.model)


_KINDS: dict[str, RunKind] = {}


def register(entry: RunKind) -> RunKind:
    """Add ``entry`` (registering a kind twice with the same entry is harmless)."""
    current = _KINDS.get(entry.kind)
    if current is not None and current != entry:
        raise ValueError(f"run kind {entry.kind!r} is already registered differently")
    _KINDS[entry.kind] = entry
    return entry


def get(kind: str) -> RunKind | None:
    return _KINDS.get(kind)


def of(model_or_run: Any) -> RunKind:
    """The entry of a Run model class or instance."""
    entry = _KINDS.get(model_or_run.kind)
    if entry is None:
        raise LookupError(f"run kind {model_or_run.kind!r} is not registered")
    return entry


def kinds() -> list[RunKind]:
    return list(_KINDS.values())
