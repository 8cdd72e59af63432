"""The polling fallback of live progress: the same state the websocket sends on connect."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

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
