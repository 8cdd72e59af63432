"""/health/: one JSON entry per dependency; 200 when all answer, 503 otherwise."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from config.celery import app as celery_app


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def check_cache() -> str:
    key = f"health:{uuid.uuid4().hex}"
    cache.set(key, "ok", 10)
    if cache.get(key) != "ok":
        raise RuntimeError("the cache did not return the value just written")
    cache.delete(key)
    return settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]


def check_broker() -> str:
    # The URL is read from settings on each call so a changed setting is honoured at once.
    with celery_app.connection_for_write(url=settings.CELERY_BROKER_URL) as conn:
        conn.ensure_connection(max_retries=1, timeout=settings.HEALTH_CHECK_TIMEOUT)
        return str(conn.transport.driver_type)


CHECKS: dict[str, Callable[[], str]] = {
    "database": check_database,
    "cache": check_cache,
    "celery_broker": check_broker,
}


def _timed(fn: Callable[[], str]) -> dict[str, object]:
    start = time.perf_counter()
    try:
        detail = fn()
        ok = True
    except Exception as exc:  # a failing dependency is reported, never raised
        detail = f"{type(exc).__name__}: {exc}"[:300]
        ok = False
    return {"ok": ok, "detail": detail, "ms": round((time.perf_counter() - start) * 1000, 1)}


@never_cache
def health_view(request: HttpRequest) -> JsonResponse:
    """Run every check with a time limit; the database check stays on this thread."""
    results: dict[str, dict[str, object]] = {"database": _timed(check_database)}
    timeout = settings.HEALTH_CHECK_TIMEOUT + 1
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {name: pool.submit(_timed, fn) for name, fn in CHECKS.items() if name != "database"}
    for name, future in futures.items():
        try:
            results[name] = future.result(timeout=timeout)
        except FutureTimeout:
            results[name] = {"ok": False, "detail": "timed out", "ms": timeout * 1000}
    pool.shutdown(wait=False, cancel_futures=True)
    healthy = all(r["ok"] for r in results.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": results},
        status=200 if healthy else 503,
    )
