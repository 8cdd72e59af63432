"""The admin has no sign-in of its own: its login URL leads to the site's (allauth) login.

Django's admin login form checks only the password, so it bypassed two-factor authentication
and allauth's failed-login rate limits. Operators sign in like everyone else (same form, same
limits, same second factor) and come back to the admin page they asked for.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme


def admin_login(request: HttpRequest, extra_context: Any = None) -> HttpResponse:
    """Send the visitor to the site's login (or on, when already signed in)."""
    index = reverse("admin:index")
    target = request.GET.get(REDIRECT_FIELD_NAME) or request.POST.get(REDIRECT_FIELD_NAME) or ""
    if not target.startswith("/admin/") or not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = index
    user = request.user
    if user.is_authenticated:
        if user.is_active and user.is_staff:
            return HttpResponseRedirect(target)
        # Sending a signed-in non-operator to the login page would bounce back here forever.
        messages.error(request, "The admin is for operators.")
        return redirect("dashboard")
    query = urlencode({REDIRECT_FIELD_NAME: target})
    return HttpResponseRedirect(f"{reverse('account_login')}?{query}")
