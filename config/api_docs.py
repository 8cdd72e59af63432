"""/api/v1/ routes that belong to no app's data: the OpenAPI schema and its two readers
(Swagger UI and Redoc, assets served from our own static files), and the caller's own account.

The schema and the pages are public: they describe the API and hold no user data. Anonymous
callers are throttled per IP like any other.
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from accounts import api as accounts_api

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api_schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api_schema"), name="api_docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api_schema"), name="api_redoc"),
    *accounts_api.urlpatterns,
]
