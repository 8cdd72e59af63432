"""My data: download everything of mine as JSON, and delete my account.

Both are open to every signed-in user, Free included: a user's data is theirs whatever the
plan. Deleting asks for the password again (a borrowed, signed-in browser is not enough) and
cancels a paid subscription at Stripe before anything is deleted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from accounts.forms import DeleteAccountForm
from accounts.gating import AuthenticatedHttpRequest
from accounts.mydata import user_data_export
from accounts.services import account_delete
from config.exceptions import ApplicationError

# Wrong passwords on the delete form, per user, before it stops checking for a while.
DELETE_ATTEMPTS = 5
DELETE_LOCKOUT_SECONDS = 15 * 60


async def _async_chunks(chunks: Iterator[str]) -> AsyncIterator[str]:
    """Hand a synchronous generator (it reads the database) to an ASGI server piece by piece,
    each step on the thread the view ran on, so the export is never held whole in memory."""

    def pull() -> str | None:
        return next(chunks, None)

    step = sync_to_async(pull, thread_sensitive=True)
    while True:
        piece = await step()
        if piece is None:
            return
        yield piece


@login_required
@require_GET
def export(request: AuthenticatedHttpRequest) -> StreamingHttpResponse:
    chunks = user_data_export(user=request.user)
    stream = _async_chunks(chunks) if isinstance(request, ASGIRequest) else chunks
    response = StreamingHttpResponse(stream, content_type="application/json; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="quantfold-my-data-{stamp}.json"'
    response["Cache-Control"] = "private, no-store"
    return response


def _attempts_key(user_id: int) -> str:
    return f"account-delete-attempts:{user_id}"


@login_required
@require_http_methods(["GET", "POST"])
def delete_account(request: AuthenticatedHttpRequest) -> HttpResponse:
    user = request.user
    sub = getattr(user, "subscription", None)
    paying = bool(sub and sub.stripe_subscription_id and sub.status != "canceled")
    form = DeleteAccountForm(request.POST or None)
    status = 200
    if request.method == "POST":
        status = 400
        key = _attempts_key(user.pk)
        attempts = int(cache.get(key) or 0)
        if attempts >= DELETE_ATTEMPTS:
            form.add_error(None, "Too many wrong passwords. Wait 15 minutes, then try again.")
            status = 429
        elif form.is_valid():
            if not user.check_password(form.cleaned_data["password"]):
                cache.set(key, attempts + 1, DELETE_LOCKOUT_SECONDS)
                form.add_error("password", "That is not your password.")
            else:
                try:
                    account_delete(user=user)
                except ApplicationError as exc:
                    form.add_error(
                        None,
                        "Nothing was deleted: your subscription has to be cancelled first, "
                        f"and that did not work. {exc.message}",
                    )
                    status = 503
                else:
                    cache.delete(key)
                    logout(request)
                    messages.success(request, "Your account and all your data were deleted.")
                    return redirect("home")
    return render(
        request,
        "accounts/mydata/delete.html",
        {
            "form": form,
            "paying": paying,
            "has_password": user.has_usable_password(),
        },
        status=status,
    )
