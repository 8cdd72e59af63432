"""Content-Security-Policy for the site's pages.

Scripts load only from this site, or inline with the request's nonce (``{{ csp_nonce }}`` in a
template: ``<script nonce="{{ csp_nonce }}">``); JSON data blocks (``json_script``) are not
scripts and need none. Styles come from this site; inline ``style`` attributes and the style
elements plotly.js adds at run time are allowed (they cannot run code). Nothing loads from
another host. A view that sets its own policy (the API docs pages) keeps it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


def policy(nonce: str) -> str:
    """The page policy with this request's script nonce."""
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' 'nonce-{nonce}'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "worker-src 'self' blob:",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )


class ContentSecurityPolicyMiddleware:
    """Give each request a nonce and each HTML answer the policy (unless it has its own)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        nonce = secrets.token_urlsafe(18)
        # (type: ignore below) the nonce rides on the request for the templates
        request.csp_nonce = nonce  # type: ignore[attr-defined]
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy(nonce)
        return response


def csp_nonce(request: HttpRequest) -> dict[str, str]:
    """Template context: ``csp_nonce`` for the few inline scripts."""
    return {"csp_nonce": getattr(request, "csp_nonce", "")}
