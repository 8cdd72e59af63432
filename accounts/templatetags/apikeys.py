"""``{% api_keys_section %}``: the profile page's API keys card (list, new-key form, revoke)."""

from __future__ import annotations

from typing import Any

from django import template
from django.conf import settings

from accounts.forms import ApiKeyForm
from accounts.gating import user_has_pro
from accounts.models import ApiKey

register = template.Library()


@register.inclusion_tag("accounts/apikeys/section.html", takes_context=True)
def api_keys_section(context: template.Context) -> dict[str, Any]:
    request = context["request"]
    keys = list(ApiKey.objects.filter(user=request.user).order_by("revoked_at", "-created_at"))
    active = sum(1 for k in keys if k.revoked_at is None)
    return {
        "request": request,
        "csrf_token": context.get("csrf_token"),
        "keys": keys,
        "active_count": active,
        "max_keys": settings.API_KEYS_MAX_PER_USER,
        "form": ApiKeyForm(),
        "is_pro": user_has_pro(request.user),
    }
