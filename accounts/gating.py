"""Plan gating in one place: views, API views, websocket consumers and tasks all ask here."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.shortcuts import render
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from config.exceptions import PlanRequired

if TYPE_CHECKING:
    from accounts.models import User

UPGRADE_MESSAGE = "This feature is part of the Pro plan ($39.99/month). Upgrade to use it."


class AuthenticatedHttpRequest(HttpRequest):
    """For type checkers: the request a view behind login_required or pro_required receives,
    whose user is signed in (never AnonymousUser). Views annotate ``request`` with it."""

    user: User


class AuthenticatedRequest(Request):
    """The same for DRF views: the API's default permissions (HasPro) let only signed-in users
    through, so ``request.user`` is a User."""

    user: User


def user_has_pro(user: Any) -> bool:
    """True when a signed-in, active user's subscription grants Pro right now."""
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_pro)


def require_pro(user: Any) -> None:
    """For services and tasks: raise PlanRequired unless the user has Pro now."""
    if not user_has_pro(user):
        raise PlanRequired(UPGRADE_MESSAGE)


def pro_required(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Views: anonymous visitors go to login; signed-in Free users get a 403 upgrade page."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not user_has_pro(request.user):
            return render(
                request, "accounts/upgrade_required.html", {"message": UPGRADE_MESSAGE}, status=403
            )
        return view(request, *args, **kwargs)

    return wrapper


class HasPro(BasePermission):
    """DRF: authenticated users on Pro only; the 403 body carries the upgrade message."""

    message = UPGRADE_MESSAGE
    code = "plan_required"

    def has_permission(self, request: Any, view: Any) -> bool:
        return user_has_pro(request.user)
