"""The polling fallback of live progress (the same state the websocket sends on connect), and
the answer of a page's cancel button."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET

from config.exceptions import ApplicationError
from config.runs.consumers import snapshot


@require_GET
@login_required
def run_state(request: HttpRequest, kind: str, pk: int) -> JsonResponse:
    """``GET /runs/<kind>/<id>/state/``: the run's state as JSON, for its owner only (403 when
    the kind needs Pro, 404 otherwise)."""
    from accounts.gating import UPGRADE_MESSAGE

    code, state = snapshot(request.user, kind, pk)
    if code == 4403:
        return JsonResponse(
            {"error": {"code": "plan_required", "message": UPGRADE_MESSAGE}}, status=403
        )
    if code or state is None:
        return JsonResponse({"error": {"code": "not_found", "message": "Not found."}}, status=404)
    return JsonResponse(state)


def cancel_response(
    request: HttpRequest,
    *,
    cancel: Callable[[], Any],
    state: Callable[[Any], dict[str, Any]],
    detail: str,
    pk: int,
    label: str,
) -> HttpResponse:
    """Call ``cancel()`` (the kind's cancel service) for a page's cancel button: JSON for the
    page's script (``{"ok": ..., **state(run)}`` or the refusal with its status), otherwise a
    message and a redirect to the ``detail`` page of run ``pk``."""
    wants_json = request.headers.get("x-requested-with") == "XMLHttpRequest"
    try:
        run = cancel()
    except ApplicationError as exc:
        if wants_json:
            return JsonResponse({"ok": False, "message": exc.message}, status=exc.status)
        messages.error(request, exc.message)
    else:
        if wants_json:
            return JsonResponse({"ok": True, **state(run)})
        messages.success(request, f"{label} cancelled.")
    return redirect(detail, pk=pk)
