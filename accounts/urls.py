from __future__ import annotations

from django.urls import path

from accounts.views import apikeys as views_apikeys
from accounts.views import billing as views_billing
from accounts.views import mydata as views_mydata
from accounts.views import pages as views

app_name = "accounts"

urlpatterns = [
    path("profile/", views.profile, name="profile"),
    path("profile/selftest/", views.selftest, name="selftest"),
    # --- My data (OPS): export everything of mine, delete my account ---
    path("profile/export/", views_mydata.export, name="mydata_export"),
    path("profile/delete/", views_mydata.delete_account, name="account_delete"),
    # --- Personal API keys (API) ---
    path("profile/api-keys/new/", views_apikeys.create, name="apikey_create"),
    path("profile/api-keys/<int:pk>/revoke/", views_apikeys.revoke, name="apikey_revoke"),
    # --- Billing (BILL): plan, upgrade, Stripe Checkout / Customer Portal, webhook ---
    path("billing/", views_billing.billing, name="billing"),
    path("billing/upgrade/", views_billing.upgrade, name="upgrade"),
    path("billing/checkout/", views_billing.checkout_start, name="checkout"),
    path("billing/checkout/success/", views_billing.checkout_success, name="checkout_success"),
    path("billing/checkout/cancel/", views_billing.checkout_cancel, name="checkout_cancel"),
    path("billing/portal/", views_billing.portal, name="portal"),
    path("billing/stripe/webhook/", views_billing.stripe_webhook, name="stripe_webhook"),
]
