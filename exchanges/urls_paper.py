"""URLs of the paper-account page and the Coinbase OAuth linking pages.

Included by ``exchanges/urls.py`` under its ``exchanges`` namespace.
"""

from __future__ import annotations

from django.urls import path

from exchanges import views_oauth, views_paper

urlpatterns = [
    path("paper/new/", views_paper.paper_new, name="paper_new"),
    path("coinbase/", views_oauth.coinbase, name="coinbase"),
    path("coinbase/link/", views_oauth.coinbase_start, name="coinbase_start"),
    path("coinbase/callback/", views_oauth.coinbase_callback, name="coinbase_callback"),
    path("coinbase/<int:pk>/check/", views_oauth.coinbase_check, name="coinbase_check"),
    path("coinbase/<int:pk>/unlink/", views_oauth.coinbase_unlink, name="coinbase_unlink"),
]
