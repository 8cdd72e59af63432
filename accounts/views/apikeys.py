"""Personal API keys on the profile page: make one (its secret is shown once, on the page that
answers the POST, never stored or shown again) and revoke one.

Any signed-in user may hold keys: a Free user's key reaches /api/v1/me/ and the docs, and the
Pro endpoints answer it with the upgrade message until the user upgrades.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from accounts.forms import ApiKeyForm
from accounts.gating import AuthenticatedHttpRequest
from accounts.services.apikeys import api_key_create, api_key_revoke
from config.exceptions import ApplicationError, NotFound
from config.pages import render_form


@never_cache
@login_required
def create(request: AuthenticatedHttpRequest) -> HttpResponse:
    """GET: the form. POST: make the key and show it once (never cached, never redirected to,
    so the secret lives only in this one response)."""
    form = ApiKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            made = api_key_create(user=request.user, name=form.cleaned_data["name"])
        except ApplicationError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            return render(
                request,
                "accounts/apikeys/created.html",
                {"api_key": made.api_key, "secret": made.key, "me_url": reverse("api_me")},
                status=201,
            )
    return render_form(request, "accounts/apikeys/new.html", {"form": form})


@login_required
@require_POST
def revoke(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Revoke one of my keys; someone else's is a 404."""
    try:
        api_key = api_key_revoke(user=request.user, key_id=pk)
    except NotFound:
        raise Http404("No such API key.") from None
    messages.success(request, f"API key “{api_key.name}” ({api_key.masked}) is revoked.")
    return redirect(reverse("accounts:profile") + "#api-keys")
