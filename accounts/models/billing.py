"""Every Stripe webhook event we accepted, kept with its outcome (the operators' event log)."""

from __future__ import annotations

from typing import ClassVar

from django.db import models

from config.modelfields import created_field, optional_time


class WebhookEvent(models.Model):
    """One verified Stripe event, stored before it is processed and processed at most once.

    A payload whose signature or timestamp does not verify is not stored (nothing in it can be
    trusted, not even its id); the endpoint logs a warning and answers 400.
    """

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        PROCESSED = "processed", "Processed"
        FAILED = "failed", "Failed (Stripe retries)"
        IGNORED = "ignored", "Ignored"

    stripe_event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100, db_index=True)
    livemode = models.BooleanField(default=False)
    # The Stripe object the event is about (sub_..., in_..., cs_...), for searching the log.
    object_id = models.CharField(max_length=255, blank=True, db_index=True)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    stripe_created_at = optional_time()
    received_at = created_field()
    processed_at = optional_time()

    class Meta:
        ordering = ("-received_at",)
        indexes: ClassVar[list[models.Index]] = [models.Index(fields=["status", "received_at"])]

    def __str__(self) -> str:
        return f"{self.type} {self.stripe_event_id} ({self.status})"
