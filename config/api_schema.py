"""The OpenAPI side of the one error format: its component, and the error answers every
operation can give, added to the schema in one place (a drf-spectacular postprocessing hook).

Views document only what is particular to them (a 409 when a backtest has no result yet) with
``error_response("...")``; 400/401/403/404/429 are added here so no operation can forget them.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse

ERROR_REF = {"$ref": "#/components/schemas/Error"}

DESCRIPTION = """\
The research tools of the web app for your own programs: strategies, market data, backtests
and more. Every endpoint needs the Pro plan except `GET /api/v1/me/`, which answers any
signed-in user (try a new key there).

## Authentication
Make a personal API key on your profile page and send it on every request:

    Authorization: Bearer qf_<prefix>_<secret>

The key is shown once, when it is made; we keep only a hash of it. A revoked, unknown or
malformed key is answered with 401, never treated as anonymous. In the browser your session
works too (unsafe methods then need the CSRF token).

## Errors
Every error has one shape, whatever the status:

    {{"error": {{"code": "invalid", "message": "...", "fields": {{"name": ["..."]}}}}}}

`code` is stable and meant for programs (`invalid`, `not_authenticated`, `authentication_failed`,
`plan_required`, `permission_denied`, `not_found`, `method_not_allowed`, `conflict`,
`throttled`); `fields` names each input field or query parameter at fault.

## Lists
Lists are pages: `{{"count", "next", "previous", "results"}}`, `?page=` and `?page_size=` (up to
500; trades up to 1000). Filters are query parameters; a bad value is a 400 naming it.

## Rate limits
Requests are counted per user, at the rate of the user's plan: Free {free}, Pro {pro}.
Callers without credentials are counted per IP ({anon}). Over the limit the answer is 429 with
`Retry-After` (seconds until the window reopens).
"""

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every error answer of the API has this shape.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "fields"],
            "properties": {
                "code": {
                    "type": "string",
                    "description": "Stable machine-readable reason: invalid, not_authenticated, "
                    "authentication_failed, permission_denied, plan_required, not_found, "
                    "method_not_allowed, conflict, throttled, ...",
                    "example": "invalid",
                },
                "message": {
                    "type": "string",
                    "description": "One sentence for a person.",
                    "example": "This field is required.",
                },
                "fields": {
                    "type": "object",
                    "description": "Messages per input field at fault (empty when none is).",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                    "example": {"name": ["This field is required."]},
                },
            },
        }
    },
}

RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before the next request counts again.",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def error_response(description: str) -> OpenApiResponse:
    """For ``extend_schema(responses={409: error_response("...")})``."""
    return OpenApiResponse(response=ERROR_REF, description=description)


def _answer(description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": ERROR_REF}},
        **extra,
    }


COMMON = {
    "401": _answer("Not signed in, or the API key is malformed, unknown or revoked."),
    "403": _answer(
        "Not allowed: the feature needs the Pro plan (code plan_required, with the upgrade "
        "message), or a session request lacks its CSRF token."
    ),
    "429": _answer("Too many requests for your plan's rate.", headers=RETRY_AFTER),
}
WRITES = {"post", "put", "patch"}
# Query parameters that name one object (another user's or a missing one is a 404).
OBJECT_QUERY = {"watchlist", "scan", "account"}


def add_error_responses(
    result: dict[str, Any], generator: Any, request: Any, public: bool, **_: Any
) -> dict[str, Any]:
    """drf-spectacular hook: the API's description, the Error component and the common error
    answers on every operation (400 on writes and queries with parameters, 404 where the path
    or the body names an object or the list has pages, 413 on writes)."""
    rates = {k: v or "unlimited" for k, v in settings.API_THROTTLE_RATES.items()}
    result.setdefault("info", {})["description"] = DESCRIPTION.format_map(
        {"free": "-", "pro": "-", "anon": "-", **rates}
    )
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            query = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}
            if method in WRITES or query:
                responses.setdefault("400", _answer("Invalid input; `fields` names each field."))
            if "{" in path or "page" in query or method in WRITES or query & OBJECT_QUERY:
                responses.setdefault(
                    "404",
                    _answer(
                        "No such object (or not yours), in the path or named in the body, or "
                        "a page past the end."
                    ),
                )
            if method in WRITES:
                responses.setdefault("413", _answer("The request body is too large."))
            for code, answer in COMMON.items():
                responses.setdefault(code, answer)
            operation["responses"] = dict(sorted(responses.items()))
    return result
