"""Pages of the exchanges app (/exchanges/): API-key accounts, paper accounts, Coinbase OAuth."""

from __future__ import annotations

from exchanges.urls_paper import urlpatterns as _paper_and_oauth
from exchanges.views import urlpatterns as _pages

app_name = "exchanges"

urlpatterns: list = [*_pages, *_paper_and_oauth]
