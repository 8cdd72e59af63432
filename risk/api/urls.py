"""/api/v1/ routes of the risk app."""

from __future__ import annotations

from risk.api.views import urlpatterns

__all__ = ["urlpatterns"]
