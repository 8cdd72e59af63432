"""Prometheus metrics (request counts and latencies) and the /metrics endpoint.

Labels are bounded: the method is one of the HTTP methods the site answers (anything else is
"OTHER") and the route is a URL pattern's name, so no request can add series. /metrics answers
only a scraper that sends ``Authorization: Bearer <METRICS_TOKEN>`` or connects from a network
in ``METRICS_ALLOWED_NETWORKS``; anyone else gets a 404, as if it did not exist.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Callable

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests served, by method, route and status code.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time to produce a response, by method and route.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
EXCEPTIONS = Counter(
    "http_request_exceptions_total", "Requests that raised, by exception type.", ["type"]
)


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _method(request: HttpRequest) -> str:
    method = (request.method or "").upper()
    return method if method in KNOWN_METHODS else "OTHER"


def _route(request: HttpRequest) -> str:
    # The URL pattern's name keeps the label set small (no ids in labels).
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unmatched"
    return match.view_name or match.route or "unnamed"


class PrometheusMiddleware:
    """Counts every request and times it; labels by route name, never by raw path."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        start = time.perf_counter()
        try:
            response = self.get_response(request)
        except Exception as exc:
            EXCEPTIONS.labels(type(exc).__name__).inc()
            raise
        route = _route(request)
        method = _method(request)
        LATENCY.labels(method, route).observe(time.perf_counter() - start)
        REQUESTS.labels(method, route, str(response.status_code)).inc()
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        EXCEPTIONS.labels(type(exception).__name__).inc()


def _scraper_allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    sent = given[len("Bearer ") :].strip() if given.startswith("Bearer ") else ""
    if token and hmac.compare_digest(sent.encode(), token.encode()):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    for network in settings.METRICS_ALLOWED_NETWORKS:
        try:
            if address in ipaddress.ip_network(network, strict=False):
                return True
        except ValueError:
            continue
    return False


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition of this process's metrics (for the allowed scraper only)."""
    if not _scraper_allowed(request):
        raise Http404("Not found.")
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
