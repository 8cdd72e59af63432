from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from accounts.views import pages as account_views
from config.admin_login import admin_login
from config.health import health_view
from config.observability import metrics_view
from config.runs.views import run_state

admin.site.site_header = "Quantfold operations"
admin.site.site_title = "Quantfold admin"
# The admin signs in through the site's allauth login (rate limits, two-factor).
# (type: ignore below) the admin signs in through our login view
admin.site.login = admin_login  # type: ignore[method-assign]

urlpatterns = [
    path("", account_views.home, name="home"),
    path("dashboard/", account_views.dashboard, name="dashboard"),
    path("accounts/", include("accounts.urls")),
    path("accounts/", include("allauth.urls")),
    path("", include("backtester.urls")),
    path("exchanges/", include("exchanges.urls")),
    path("", include("risk.urls")),
    path("api/v1/", include("backtester.api.urls")),
    path("api/v1/", include("exchanges.api")),
    path("api/v1/", include("risk.api.urls")),
    path("copy/", include("copytrading.urls")),
    path("api/v1/", include("copytrading.api.views")),
    path("api/v1/", include("config.api_docs")),
    path("admin/", admin.site.urls),
    path("health/", health_view, name="health"),
    path("metrics", metrics_view, name="metrics"),
    path("runs/<slug:kind>/<int:pk>/state/", run_state, name="run_state"),
]

handler404 = "config.errors.page_not_found"
handler500 = "config.errors.server_error"
