"""Request body limits, applied before any body is read into memory.

A request whose body is larger than its limit is answered 413 in the API's error format from
its ``Content-Length`` alone (or, when it is sent chunked, as soon as the count passes the
limit), before Django, DRF or the server parse it:

* a request that carries no credentials (no ``Authorization`` header, no session cookie) may
  send at most ``REQUEST_MAX_BODY_ANONYMOUS`` bytes: sign-in, sign-up and the Stripe webhook
  need far less, so an anonymous caller can never make the server hold a large body;
* any other request at most ``REQUEST_MAX_BODY_BYTES`` (the upload limit plus room for the
  form around the file).

Two layers share ``body_limit``: ``BodySizeLimitMiddleware`` wraps the ASGI application (any
ASGI server), and ``limit_daphne_bodies`` makes daphne itself discard an oversized body as it
arrives instead of spooling it, and stops Twisted from parsing form bodies into memory (a
multipart body was read whole and copied several times there, and a malformed one was answered
with a bare 400 that bypassed the API's error format; Django parses the body itself).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from django.conf import settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Any ASGI application: Django's handler declares its scope a dict and its messages Mappings,
# other servers' types differ again, so the parameters are left open.
ASGIApp = Callable[..., Awaitable[None]]


def body_limit(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """The most bytes a request with these (lower- or mixed-case) headers may send."""
    session_cookie = settings.SESSION_COOKIE_NAME.encode()
    for name, value in headers:
        key = name.lower()
        if key == b"authorization" and value.strip():
            return int(settings.REQUEST_MAX_BODY_BYTES)
        if key == b"cookie" and session_cookie + b"=" in value:
            return int(settings.REQUEST_MAX_BODY_BYTES)
    return int(settings.REQUEST_MAX_BODY_ANONYMOUS)


def too_large_body(limit: int) -> bytes:
    """The 413 answer's body, in the API's one error format."""
    size = f"{limit / (1024 * 1024):.0f} MB" if limit >= 1024 * 1024 else f"{limit} bytes"
    message = f"The request body is too large: at most {size} may be sent."
    return json.dumps({"error": {"code": "too_large", "message": message, "fields": {}}}).encode()


def _declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodySizeLimitMiddleware:
    """ASGI middleware: answer 413 for a body over ``body_limit`` without receiving it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        limit = body_limit(headers)
        length = _declared_length(headers)
        if length is not None and length > limit:
            await _send_too_large(send, limit)
            return
        seen = 0

        async def counted_receive() -> Message:
            # A body sent without Content-Length (chunked) is counted as it arrives; past the
            # limit the application sees the client leave and stops reading.
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, counted_receive, send)


async def _send_too_large(send: Send, limit: int) -> None:
    body = too_large_body(limit)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _Discard:
    """Where the rest of an oversized body goes: nowhere."""

    closed = False

    def write(self, data: bytes) -> int:
        return len(data)

    def read(self, size: int = -1) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def tell(self) -> int:
        return 0

    def close(self) -> None:
        pass


def limit_daphne_bodies() -> None:
    """Teach daphne's request class the body limit (idempotent; a no-op without daphne).

    Twisted calls ``gotLength`` once the headers are in, then ``handleContentChunk`` for each
    piece of body, then ``requestReceived`` (which would parse form bodies) and daphne's
    ``process``. An oversized body is discarded as it arrives and answered 413 in ``process``.
    """
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:  # pragma: no cover - daphne is a requirement
        return
    if getattr(WebRequest, "_body_limit_installed", False):
        return
    original_got_length = WebRequest.gotLength
    original_chunk = WebRequest.handleContentChunk
    original_process = WebRequest.process

    def got_length(self: Any, length: int | None) -> None:
        # Django parses the body; Twisted's own form parsing would read it whole into memory.
        self._parsePOSTFormSubmission = False
        raw = self.requestHeaders.getAllRawHeaders()
        self.body_limit = body_limit((name, value) for name, values in raw for value in values)
        self.body_seen = 0
        self.body_too_large = length is not None and length > self.body_limit
        if self.body_too_large:
            self.content = _Discard()
            return
        original_got_length(self, length)

    def handle_content_chunk(self: Any, data: bytes) -> None:
        if not self.body_too_large:
            self.body_seen += len(data)
            if self.body_seen > self.body_limit:
                self.body_too_large = True
                self.content.close()
                self.content = _Discard()
        if self.body_too_large:
            return
        original_chunk(self, data)

    def process(self: Any) -> Any:
        if getattr(self, "body_too_large", False):
            self.request_start = time.time()  # daphne's access log reads it
            body = too_large_body(self.body_limit)
            self.handle_reply(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [(b"Content-Type", b"application/json")],
                }
            )
            self.handle_reply({"type": "http.response.body", "body": body})
            return None
        return original_process(self)

    WebRequest.gotLength = got_length
    WebRequest.handleContentChunk = handle_content_chunk
    WebRequest.process = process
    WebRequest._body_limit_installed = True
