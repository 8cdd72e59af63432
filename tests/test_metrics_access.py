"""/metrics is for the operator's scraper only, and its labels stay bounded (issue 10, item 4)."""

from __future__ import annotations

import re

import pytest
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db

TOKEN = "metrics-test-token-0123456789"


def _series(text: str) -> set[tuple[str, str]]:
    """The (method, route) label pairs of the request metrics."""
    return set(re.findall(r'^http_request\S*\{.*?method="([^"]*)",route="([^"]*)"', text, re.M))


@override_settings(METRICS_TOKEN=TOKEN, METRICS_ALLOWED_NETWORKS=[])
def test_metrics_need_the_token_from_outside():
    outsider = Client(REMOTE_ADDR="203.0.113.5")
    assert outsider.get("/metrics").status_code == 404
    assert outsider.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 404
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 404
    scraper = Client(REMOTE_ADDR="203.0.113.5", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    response = scraper.get("/metrics")
    assert response.status_code == 200
    assert "http_requests_total" in response.content.decode()


@override_settings(METRICS_TOKEN="", METRICS_ALLOWED_NETWORKS=["10.0.0.0/8", "fd00::/8"])
def test_metrics_open_to_the_internal_network_setting_only():
    assert Client(REMOTE_ADDR="10.2.3.4").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="fd00::5").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="11.2.3.4").get("/metrics").status_code == 404
    # An empty token never matches an empty Authorization.
    assert (
        Client(REMOTE_ADDR="11.2.3.4", HTTP_AUTHORIZATION="Bearer ").get("/metrics").status_code
        == 404
    )


@override_settings(METRICS_TOKEN="", METRICS_ALLOWED_NETWORKS=[])
def test_metrics_are_closed_when_nothing_is_configured():
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 404


@override_settings(METRICS_TOKEN=TOKEN)
def test_made_up_methods_and_paths_add_no_label_values():
    scraper = Client(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    before = _series(scraper.get("/metrics").content.decode())
    visitor = Client()
    for i in range(6):
        visitor.generic(f"PROBE{i}X", "/health/")
        visitor.generic(f"ZZ{i}", f"/made-up-{i}/")
        visitor.get(f"/made-up-path-{i}/")
    text = scraper.get("/metrics").content.decode()
    assert not re.search(r'method="(PROBE|ZZ)', text)
    assert "made-up" not in text
    added = _series(text) - before
    # 18 odd requests add at most three label pairs, never one per request.
    assert added <= {("OTHER", "health"), ("OTHER", "unmatched"), ("GET", "unmatched")}, added
    assert ("OTHER", "health") in _series(text)
