"""/health/ and /metrics against the real services."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

pytestmark = pytest.mark.django_db


def test_health_reports_each_dependency_and_answers_200_when_all_answer(client):
    response = client.get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "cache", "celery_broker"}
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["database"]["detail"] == "postgresql"


def _redis_settings(url: str) -> dict[str, object]:
    cache = dict(settings.CACHES["default"], LOCATION=url)
    return {"CACHES": {"default": cache}, "CELERY_BROKER_URL": url, "HEALTH_CHECK_TIMEOUT": 1.0}


def test_health_answers_503_when_redis_is_stopped_and_200_when_it_runs(client, spare_redis):
    with override_settings(**_redis_settings(spare_redis["url"])):
        up = client.get("/health/")
        assert up.status_code == 200, up.json()

        spare_redis["proc"].terminate()
        spare_redis["proc"].wait(timeout=10)

        down = client.get("/health/")
        assert down.status_code == 503
        checks = down.json()["checks"]
        assert down.json()["status"] == "unavailable"
        assert checks["database"]["ok"] is True
        assert checks["cache"]["ok"] is False
        assert checks["celery_broker"]["ok"] is False


def test_metrics_exposes_request_counts_and_latency_histograms(client, settings):
    settings.METRICS_TOKEN = "health-test-token"
    client.get("/health/")
    client.get("/no-such-page/")
    text = client.get("/metrics", HTTP_AUTHORIZATION="Bearer health-test-token").content.decode()
    assert 'http_requests_total{method="GET",route="health",status="200"}' in text
    assert 'route="unmatched",status="404"' in text
    assert 'http_request_duration_seconds_bucket{le="0.005",method="GET",route="health"}' in text
