"""DRF authentication by personal API key: ``Authorization: Bearer qf_<prefix>_<secret>``.

No Authorization header, or another scheme: this class steps aside (the session may apply).
A Bearer header that is not an active key of an active user is a 401 in the project's error
format, never a silent fall-through to anonymous.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from accounts.models import ApiKey
from accounts.services.apikeys import api_key_check

KEYWORD = "Bearer"
INVALID_KEY = "Invalid API key: it is malformed, unknown or revoked."


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != KEYWORD.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Send the key as 'Authorization: Bearer qf_...', with no spaces in the key."
            )
        try:
            raw = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed(INVALID_KEY) from None
        api_key = api_key_check(raw)
        if api_key is None:
            raise exceptions.AuthenticationFailed(INVALID_KEY)
        if not api_key.user.is_active:
            raise exceptions.AuthenticationFailed("This account is disabled.")
        return api_key.user, api_key

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) to unauthenticated calls, naming the scheme to use.
        return f'{KEYWORD} realm="api"'


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """How the schema documents this class (drf-spectacular finds it by import)."""

    target_class = "accounts.api.auth.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "qf_<prefix>_<secret>",
            "description": (
                "A personal API key made on your profile page. It is shown once; we keep only "
                "a hash. Revoked or unknown keys answer 401."
            ),
        }
