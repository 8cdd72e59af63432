"""The one module that moves a run through its lifecycle.

    queued ──claim──▶ running ──complete──▶ completed
       │                 ├──fail(message)──▶ failed
       └───cancel────────┴──cancel─────────▶ cancelled
                         └──sweep (heartbeat older than RUN_STALE_AFTER_SECONDS)──▶ failed

Every change is made under a row lock and announced to the group ``run-<kind>-<id>`` after
its transaction commits, as a ``run.status`` message carrying the run's state. Progress is a
conditional UPDATE on status=running (which doubles as the cancel check: a cancelled run
matches nothing and the worker stops) followed by a ``run.progress`` message.

While a run executes, a heartbeat thread in the worker stamps ``heartbeat_at`` every
``RUN_HEARTBEAT_SECONDS``. If the worker process dies the stamps stop, and the beat task
``runs.sweep`` (every ``RUN_SWEEP_SECONDS``) fails the run with ``STALE_MESSAGE`` once its
last stamp is older than ``RUN_STALE_AFTER_SECONDS`` (3 minutes by default). Tasks are
acknowledged late: a redelivered task finds its run already claimed or finished and does
nothing, so delivering one twice is safe.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from config.exceptions import ApplicationError, Conflict, NotFound
from config.realtime import group_send
from config.runs import registry
from config.runs.models import ACTIVE, RunStatus

logger = logging.getLogger(__name__)

QUEUE_DOWN_MESSAGE = (
    "The job queue could not be reached, so the {noun} did not start. Try again in a minute."
)
PLAN_LOST_MESSAGE = "Pro plan required: the {noun} did not run. {upgrade}"
INTERNAL_MESSAGE = (
    "The {noun} stopped on an internal error ({name}). It has been logged; try again, and if it "
    "keeps failing, contact support."
)
STALE_MESSAGE = (
    "The worker running this {noun} stopped answering (no sign of life for {minutes} minutes: "
    "it was restarted, killed or lost). Nothing more was saved; run it again."
)


class Cancelled(Exception):
    """The run left the running state (cancelled, failed elsewhere, deleted) while it ran."""


# --- settings ---------------------------------------------------------------------------------


def stale_after() -> timedelta:
    """How long a running run may go without a heartbeat before the sweeper fails it."""
    return timedelta(seconds=float(getattr(settings, "RUN_STALE_AFTER_SECONDS", 180)))


def heartbeat_seconds() -> float:
    return float(getattr(settings, "RUN_HEARTBEAT_SECONDS", 20))


def group_name(kind: str, pk: int) -> str:
    """The Channels group a run's messages go to."""
    return f"run-{kind}-{pk}"


def _model(model_or_kind: Any) -> Any:
    if isinstance(model_or_kind, str):
        entry = registry.get(model_or_kind)
        if entry is None:
            raise LookupError(f"unknown run kind {model_or_kind!r}")
        return entry.model_class()
    return model_or_kind


def _has_field(model: Any, name: str) -> bool:
    return any(f.name == name for f in model._meta.concrete_fields)


# --- messages ---------------------------------------------------------------------------------


def state(run: Any) -> dict[str, Any]:
    """What a page draws of ``run``: the lifecycle's fields plus its kind's own payload."""
    entry = registry.of(run)
    out: dict[str, Any] = {
        "id": run.pk,
        "kind": entry.kind,
        "status": run.status,
        "status_display": run.get_status_display(),
        "progress": 1.0 if run.status == RunStatus.COMPLETED else round(float(run.progress), 4),
        "stage": run.stage or run.status,
        "error": run.error,
        "finished": run.status not in ACTIVE,
    }
    if entry.state is not None:
        out.update(entry.state(run))
    return out


def send_status(model: Any, pk: int) -> None:
    """Announce ``pk``'s current state to its group (call after commit)."""
    model = _model(model)
    run = model._default_manager.filter(pk=pk).first()
    if run is not None:
        group_send(group_name(model.kind, pk), {"type": "run.status", **state(run)})


def _announce_on_commit(model: Any, pk: int) -> None:
    transaction.on_commit(lambda: send_status(model, pk))


def send_progress(model: Any, pk: int, message: Mapping[str, Any]) -> None:
    """Send a ``run.progress`` message (call outside a transaction or after commit)."""
    model = _model(model)
    group_send(
        group_name(model.kind, pk),
        {"type": "run.progress", "kind": model.kind, "id": pk, **message},
    )


# --- enqueue ----------------------------------------------------------------------------------


def task(name: str) -> Any:
    """The Celery task registered under ``name``, importing the apps' task modules first if
    this process has not yet (services never import a task module themselves)."""
    from config.celery import app

    found = app.tasks.get(name)
    if found is None:
        app.loader.import_default_modules()
        found = app.tasks[name]
    return found


def enqueue(
    run: Any,
    *,
    args: Sequence[Any] | None = None,
    send: Callable[[Any], str] | None = None,
) -> None:
    """After the current transaction commits, send ``run``'s task (found by name in the
    registry) with ``args`` (default: the run's id), or call ``send(app)``, which sends a
    canvas and returns its id. The task id is saved with the run now, so a run cancelled
    before it starts can be revoked. A broker that cannot be reached fails the run with a
    message instead of leaving it queued forever. Call inside the transaction that created
    the run."""
    model, pk = type(run), run.pk
    entry = registry.of(run)
    if not run.task_id:
        run.task_id = uuid.uuid4().hex
        model._default_manager.filter(pk=pk).update(task_id=run.task_id)
    task_id = run.task_id

    def dispatch() -> None:
        from config.celery import app

        try:
            if send is not None:
                sent_id = send(app)
            else:
                options: dict[str, Any] = {"task_id": task_id}
                if entry.queue is not None and entry.queue():
                    options["queue"] = entry.queue()
                sent_id = task(entry.task).apply_async(args=list(args or [pk]), **options).id
        except Exception:
            logger.exception("could not enqueue %s %s", entry.kind, pk)
            message = QUEUE_DOWN_MESSAGE.format(noun=entry.noun)
            fail(model, pk, message, from_statuses=(RunStatus.QUEUED,))
            return
        if sent_id and sent_id != task_id:
            model._default_manager.filter(pk=pk).update(task_id=str(sent_id)[:64])

    transaction.on_commit(dispatch)


# --- the worker's side ------------------------------------------------------------------------


def claim(model: Any, pk: int, *, resume: bool = False) -> Any | None:
    """queued → running under a row lock, and the run returned; None when there is nothing to
    run (running elsewhere, finished, cancelled, deleted), so a task delivered twice runs once.
    ``resume``: a run already running is returned too (the chunks of one optimization share
    it). Fails the run here when its kind requires Pro and the owner no longer has it."""
    from accounts.gating import UPGRADE_MESSAGE, user_has_pro

    model = _model(model)
    entry = registry.of(model)
    with transaction.atomic():
        run = model._default_manager.select_for_update(of=("self",)).filter(pk=pk).first()
        if run is None:
            return None
        if run.status == RunStatus.RUNNING and resume:
            return run
        if run.status != RunStatus.QUEUED:
            return None
        now = timezone.now()
        owner = getattr(run, "owner", None)
        if entry.requires_pro and owner is not None and not user_has_pro(owner):
            run.status = RunStatus.FAILED
            run.error = PLAN_LOST_MESSAGE.format(noun=entry.noun, upgrade=UPGRADE_MESSAGE)
            run.finished_at = now
            run.save(update_fields=["status", "error", "finished_at"])
            _announce_on_commit(model, pk)
            return None
        run.status = RunStatus.RUNNING
        run.started_at = now
        run.heartbeat_at = now
        run.progress = 0.0
        fields = ["status", "started_at", "heartbeat_at", "progress"]
        if _has_field(model, "timings"):
            run.timings = {"queue": round((now - run.created_at).total_seconds(), 4)}
            fields.append("timings")
        run.save(update_fields=fields)
        _announce_on_commit(model, pk)
    return run


def progress(
    model: Any,
    pk: int,
    *,
    fraction: float | None = None,
    stage: str | None = None,
    extra: Mapping[str, Any] | None = None,
    fields: Mapping[str, Any] | None = None,
) -> None:
    """Record progress of a running run (and a heartbeat), then send ``run.progress`` with
    ``extra``. ``fields``: other columns to update in the same statement. Raises Cancelled
    when the run is no longer running. Must not be called inside a transaction."""
    model = _model(model)
    values: dict[str, Any] = {"heartbeat_at": timezone.now(), **dict(fields or {})}
    if fraction is not None:
        values["progress"] = max(0.0, min(1.0, float(fraction)))
    if stage is not None:
        values["stage"] = stage[:20]
    changed = model._default_manager.filter(pk=pk, status=RunStatus.RUNNING).update(**values)
    if not changed:
        raise Cancelled
    message: dict[str, Any] = {"status": RunStatus.RUNNING}
    if fraction is not None:
        message["progress"] = round(values["progress"], 4)
    if stage is not None:
        message["stage"] = stage
    message.update(extra or {})
    send_progress(model, pk, message)


def alive(model: Any, pk: int) -> bool:
    """Stamp the heartbeat of a running run; False when it is no longer running (the caller
    stops its work)."""
    model = _model(model)
    return bool(
        model._default_manager.filter(pk=pk, status=RunStatus.RUNNING).update(
            heartbeat_at=timezone.now()
        )
    )


@contextmanager
def keepalive(model: Any, pk: int) -> Iterator[None]:
    """Stamp ``pk``'s heartbeat every RUN_HEARTBEAT_SECONDS from a thread while the block
    runs. The thread lives in the worker's process, so the stamps stop when that process
    dies, which is what the sweeper watches for."""
    model = _model(model)
    stop = threading.Event()
    interval = heartbeat_seconds()

    def beat() -> None:
        try:
            while not stop.wait(interval):
                try:
                    if not alive(model, pk):
                        return
                except Exception:
                    logger.warning("heartbeat of %s %s failed", model.kind, pk, exc_info=True)
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{model.kind}-{pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval + 5)


def complete(
    model: Any,
    pk: int,
    *,
    fields: Mapping[str, Any] | None = None,
    apply: Callable[[Any], Sequence[str]] | None = None,
) -> bool:
    """running → completed under a row lock, setting ``fields`` and calling ``apply(run)``
    (which may write related rows in the same transaction and returns the names of further
    fields it set). False (and nothing written) when the run is no longer running."""
    model = _model(model)
    with transaction.atomic():
        run = model._default_manager.select_for_update(of=("self",)).filter(pk=pk).first()
        if run is None or run.status != RunStatus.RUNNING:
            return False
        names = ["status", "progress", "finished_at", "heartbeat_at", "stage"]
        run.finished_at = run.heartbeat_at = timezone.now()  # ``apply`` may set its own time
        for name, value in (fields or {}).items():
            setattr(run, name, value)
            names.append(name)
        if apply is not None:
            names.extend(apply(run))
        run.status = RunStatus.COMPLETED
        run.progress = 1.0
        run.stage = "done"
        run.save(update_fields=sorted(set(names)))
        _announce_on_commit(model, pk)
    return True


def fail(
    model: Any,
    pk: int,
    message: str,
    *,
    from_statuses: Sequence[str] = ACTIVE,
    fields: Mapping[str, Any] | None = None,
) -> bool:
    """Mark ``pk`` failed with ``message`` (what its owner reads) if it is still in one of
    ``from_statuses``; ``fields`` are saved with it. False when it was not."""
    model = _model(model)
    with transaction.atomic():
        run = model._default_manager.select_for_update(of=("self",)).filter(pk=pk).first()
        if run is None or run.status not in from_statuses:
            return False
        run.status = RunStatus.FAILED
        run.error = message
        run.finished_at = timezone.now()
        names = ["status", "error", "finished_at"]
        for name, value in (fields or {}).items():
            setattr(run, name, value)
            names.append(name)
        run.save(update_fields=names)
        _announce_on_commit(model, pk)
    return True


def describe(model: Any, exc: Exception) -> str:
    """The message a user reads for ``exc``: the kind's own wording, a domain error's message,
    or a generic internal-error message (the traceback is logged by the caller)."""
    entry = registry.of(_model(model))
    if entry.describe is not None:
        text = entry.describe(exc)
        if text:
            return text
    if isinstance(exc, ApplicationError):
        return exc.message
    return INTERNAL_MESSAGE.format(noun=entry.noun, name=type(exc).__name__)


Body = Callable[[Any], "Mapping[str, Any] | Callable[[Any], Sequence[str]] | None"]


def execute(
    model: Any,
    pk: int,
    body: Body,
    *,
    expected: tuple[type[Exception], ...] = (),
    resume: bool = False,
) -> bool:
    """The whole worker side of a simple run: claim it, run ``body(run)`` with a heartbeat,
    then complete it with what the body returned (a dict of fields, or a callable applied to
    the locked row that returns the names of the fields it set). ApplicationError and
    ``expected`` errors fail the run with their message; anything else is logged and fails it
    with a generic one; Cancelled ends quietly. ``resume``: a run already running is run again
    (for idempotent work redelivered after its worker died). True when the run completed."""
    model = _model(model)
    run = claim(model, pk, resume=resume)
    if run is None:
        return False
    try:
        with keepalive(model, pk):
            outcome = body(run)
    except Cancelled:
        logger.info("%s %s was cancelled while running", registry.of(model).noun, pk)
        return False
    # (type: ignore below) a starred tuple of exception classes
    except (ApplicationError, *expected) as exc:  # type: ignore[misc]
        fail(model, pk, describe(model, exc))
        return False
    except Exception as exc:
        logger.exception("%s %s failed on an unexpected error", model.kind, pk)
        fail(model, pk, describe(model, exc))
        return False
    if callable(outcome):
        return complete(model, pk, apply=outcome)
    return complete(model, pk, fields=outcome or {})


# --- cancel -----------------------------------------------------------------------------------


def _revoke(task_id: str) -> None:
    if not task_id:
        return
    try:
        from config.celery import app

        app.control.revoke(task_id)
    except Exception:
        logger.warning("could not revoke task %s", task_id, exc_info=True)


def cancel(run: Any, *, user: Any) -> Any:
    """Cancel ``user``'s queued or running ``run``: cancelled when this returns. A queued one
    never starts (its task is revoked, and would find nothing to claim); a running one stops
    at its worker's next progress step and saves nothing more. Someone else's run is NotFound;
    a finished one is refused (Conflict)."""
    model = type(run)
    entry = registry.of(run)
    if getattr(run, "owner_id", None) != user.pk:
        raise NotFound(f"{entry.noun.capitalize()} not found.")
    with transaction.atomic():
        locked = model._default_manager.select_for_update(of=("self",)).get(pk=run.pk)
        if locked.status not in ACTIVE:
            raise Conflict(f"This {entry.noun} is already {locked.get_status_display().lower()}.")
        locked.status = RunStatus.CANCELLED
        locked.finished_at = timezone.now()
        locked.save(update_fields=["status", "finished_at"])
        # A single task is revoked; a canvas (an optimization's chord) is not: its callback
        # must still run to record that the chunks are over, and its chunks skip their work.
        task_id = locked.task_id if entry.task else ""
        pk = locked.pk

        def after_commit() -> None:
            _revoke(task_id)
            send_status(model, pk)

        transaction.on_commit(after_commit)
    return locked


# --- the sweeper ------------------------------------------------------------------------------


def sweep(*, now: datetime | None = None) -> list[tuple[str, int]]:
    """Fail every running run, of every kind, whose last heartbeat (or start, when it never
    beat) is older than ``stale_after()``: its worker died. Returns (kind, id) of each."""
    now = now or timezone.now()
    cutoff = now - stale_after()
    minutes = max(1, round(stale_after().total_seconds() / 60))
    swept: list[tuple[str, int]] = []
    for entry in registry.kinds():
        model = entry.model_class()
        stale = model._default_manager.filter(status=RunStatus.RUNNING, heartbeat_at__lt=cutoff)
        never = model._default_manager.filter(
            status=RunStatus.RUNNING, heartbeat_at__isnull=True, started_at__lt=cutoff
        )
        ids = list(stale.values_list("pk", flat=True)) + list(never.values_list("pk", flat=True))
        for pk in ids:
            message = STALE_MESSAGE.format(noun=entry.noun, minutes=minutes)
            with transaction.atomic():
                run = model._default_manager.select_for_update(of=("self",)).filter(pk=pk).first()
                last = None if run is None else (run.heartbeat_at or run.started_at)
                if run is None or run.status != RunStatus.RUNNING or last is None or last >= cutoff:
                    continue  # it beat again (or finished) since the query
                run.status = RunStatus.FAILED
                run.error = message
                run.finished_at = now
                run.save(update_fields=["status", "error", "finished_at"])
                _announce_on_commit(model, pk)
            logger.warning(
                "%s %s failed by the sweeper: no heartbeat since %s", entry.kind, pk, last
            )
            swept.append((entry.kind, pk))
    return swept
