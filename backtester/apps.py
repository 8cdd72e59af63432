from __future__ import annotations

from django.apps import AppConfig


class BacktesterConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "backtester"
    verbose_name = "Backtester"

    def ready(self) -> None:
        from backtester.runs import register_kinds

        register_kinds()
        # Bots pause when their owner's trading halts and stop when their account is deleted.
        from backtester import receivers  # noqa: F401
