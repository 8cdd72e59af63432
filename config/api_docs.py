"""/api/v1/ routes that belong to no app's data: the OpenAPI schema and its two readers
(Swagger UI and Redoc, assets served from our own static files), and the caller's own account.

The schema and the pages are public: they describe the API and hold no user data. Anonymous
callers are throttled per IP like any other.
"""

from __future__ import annotations

from typing import Any

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from accounts.api import views as accounts_api


class JsonErrorsMixin:
    """These views render YAML or HTML; their errors (401, 429, ...) are still JSON in the one
    error format, like every other API answer."""

    def handle_exception(self, exc: Exception) -> Response:
        # (type: ignore below) drf-spectacular's views are untyped (Any base)
        response = super().handle_exception(exc)  # type: ignore[misc]
        # (type: ignore below) drf-spectacular's views are untyped (Any base)
        request: Any = self.request  # type: ignore[attr-defined]
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = JSONRenderer.media_type
        return response


# The two doc pages may load only from this site. Their vendored bundles would otherwise reach
# out (Redoc's sidebar draws a logo from its maker's CDN); the browser now refuses that. Inline
# script and style are the pages' own bootstrap and the bundles' styling; they show no user data.
DOCS_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ]
)


class DocsPageMixin(JsonErrorsMixin):
    def finalize_response(
        self, request: Any, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        # (type: ignore below) drf-spectacular's views are untyped (Any base)
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        response["Content-Security-Policy"] = DOCS_CSP
        return response


class SchemaView(JsonErrorsMixin, SpectacularAPIView):
    pass


class SwaggerView(DocsPageMixin, SpectacularSwaggerView):
    pass


class RedocView(DocsPageMixin, SpectacularRedocView):
    pass


urlpatterns = [
    path("schema/", SchemaView.as_view(), name="api_schema"),
    path("docs/", SwaggerView.as_view(url_name="api_schema"), name="api_docs"),
    path("redoc/", RedocView.as_view(url_name="api_schema"), name="api_redoc"),
    *accounts_api.urlpatterns,
]
