"""The status enum and the abstract model every background run inherits."""

from __future__ import annotations

from typing import ClassVar

from django.db import models


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE: tuple[str, ...] = (RunStatus.QUEUED, RunStatus.RUNNING)


class Run(models.Model):
    """What every run has. ``kind`` names the run in the registry, the websocket route and the
    group (``run-<kind>-<id>``). Subclasses add their owner (each with its own related name)
    and what they compute. Only ``config.runs.lifecycle`` changes ``status``."""

    kind: ClassVar[str] = ""
    Status = RunStatus
    ACTIVE: ClassVar[tuple[str, ...]] = ACTIVE

    status = models.CharField(
        max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True
    )
    progress = models.FloatField(default=0.0, help_text="0..1")
    stage = models.CharField(max_length=20, blank=True)
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last sign of life from the worker running it"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    @property
    def group(self) -> str:
        return f"run-{self.kind}-{self.pk}"

    @property
    def socket_path(self) -> str:
        return f"/ws/runs/{self.kind}/{self.pk}/"
