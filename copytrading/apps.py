from __future__ import annotations

from django.apps import AppConfig


class CopytradingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "copytrading"
    verbose_name = "Copy trading"

    def ready(self) -> None:
        # Leaders' fills reported by any source (stream, poll, paper) start the copy path.
        from copytrading import receivers  # noqa: F401
