"""Pages of the exchanges app (/exchanges/)."""

from __future__ import annotations

from exchanges.views import urlpatterns as _pages

app_name = "exchanges"

urlpatterns: list = [*_pages]
