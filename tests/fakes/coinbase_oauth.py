"""A STAND-IN for Coinbase's OAuth2 server and the Advanced Trade accounts endpoint, served on
loopback by the tests (Coinbase itself cannot be reached from here, and a real consent screen
needs a real Coinbase user).

What it checks is what Coinbase documents for its authorization-code flow:

``GET  /oauth2/auth``     client_id known, response_type=code, a state of 8+ characters, a
                          registered redirect_uri, PKCE ``code_challenge`` with method S256.
                          The consent screen is skipped: it redirects straight back to
                          ``redirect_uri?code=...&state=...`` (or ``error=access_denied`` when
                          ``deny`` is set).
``POST /oauth2/token``    ``authorization_code``: client secret, the code (single use), the same
                          redirect_uri, and SHA-256(code_verifier) == the challenge.
                          ``refresh_token``: client secret and a refresh token that was never
                          used before; every refresh returns a new pair and burns the old refresh
                          token (a reused one is ``invalid_grant``, as Coinbase's are single-use).
``POST /oauth2/revoke``   revokes an access or refresh token (and its pair).
``GET  /api/v3/brokerage/accounts``  requires ``Authorization: Bearer <live access token>``;
                          answers the Advanced Trade shape (``accounts`` with
                          ``available_balance``/``hold``).

Knobs: ``deny``, ``fail_refresh`` (the next refreshes answer invalid_grant), ``expires_in``,
``now`` (the stand-in's clock, seconds), ``balances``. Everything received is in ``log``
(paths and form field *names* only).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit


@dataclass
class Token:
    access: str
    refresh: str
    expires_at: float
    scope: str
    revoked: bool = False
    refresh_used: bool = False


@dataclass
class CoinbaseOAuthStandIn:
    client_id: str = "qf-test-client"
    client_secret: str = "qf-test-client-secret"
    redirect_uris: set[str] = field(default_factory=set)  # empty: any http://127.0.0.1 URI
    deny: bool = False
    fail_refresh: bool = False
    expires_in: int = 7200
    now: float = field(default_factory=time.time)
    balances: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {"BTC": ("0.5", "0.1"), "USDC": ("1250.75", "0")}
    )
    log: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    tokens: list[Token] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def serve(self) -> str:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                standin._handle(self, "GET")

            def do_POST(self) -> None:
                standin._handle(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.base_url

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def settings(self) -> dict[str, str]:
        """The settings (environment variables) that point the app at this stand-in."""
        return {
            "COINBASE_OAUTH_CLIENT_ID": self.client_id,
            "COINBASE_OAUTH_CLIENT_SECRET": self.client_secret,
            "COINBASE_OAUTH_AUTHORIZE_URL": self.base_url + "/oauth2/auth",
            "COINBASE_OAUTH_TOKEN_URL": self.base_url + "/oauth2/token",
            "COINBASE_OAUTH_REVOKE_URL": self.base_url + "/oauth2/revoke",
            "COINBASE_API_BASE": self.base_url,
        }

    # --- what tests read ------------------------------------------------------------------
    def live_tokens(self) -> list[Token]:
        return [t for t in self.tokens if not t.revoked and not t.refresh_used]

    def paths(self) -> list[str]:
        return [f"{method} {path}" for method, path, _ in self.log]

    # --- handling -------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        form: dict[str, str] = {}
        if method == "POST":
            length = int(handler.headers.get("Content-Length") or 0)
            raw = handler.rfile.read(length).decode()
            form = {k: v[-1] for k, v in parse_qs(raw).items()}
        with self._lock:
            self.log.append((method, parts.path, tuple(sorted(form))))
            route = (method, parts.path)
            if route == ("GET", "/oauth2/auth"):
                status, body, headers = self._authorize(query)
            elif route == ("POST", "/oauth2/token"):
                status, body, headers = self._token(form)
            elif route == ("POST", "/oauth2/revoke"):
                status, body, headers = self._revoke(form)
            elif route == ("GET", "/api/v3/brokerage/accounts"):
                status, body, headers = self._accounts(handler.headers.get("Authorization", ""))
            else:
                status, body, headers = 404, {"error": "not_found"}, {}
        payload = b"" if body is None else json.dumps(body).encode()
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _redirect_ok(self, uri: str) -> bool:
        if self.redirect_uris:
            return uri in self.redirect_uris
        return uri.startswith("http://127.0.0.1:") or uri.startswith("http://testserver/")

    def _authorize(self, q: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        if q.get("client_id") != self.client_id:
            return 400, {"error": "invalid_client"}, {}
        if q.get("response_type") != "code":
            return 400, {"error": "unsupported_response_type"}, {}
        redirect = q.get("redirect_uri", "")
        if not self._redirect_ok(redirect):
            return 400, {"error": "invalid_request", "error_description": "redirect_uri"}, {}
        state = q.get("state", "")
        if len(state) < 8:
            return 400, {"error": "invalid_request", "error_description": "state too short"}, {}
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return 400, {"error": "invalid_request", "error_description": "PKCE S256"}, {}
        if self.deny:
            target = redirect + "?" + urlencode({"error": "access_denied", "state": state})
            return 302, None, {"Location": target}
        code = secrets.token_urlsafe(24)
        self.codes[code] = {
            "redirect_uri": redirect,
            "challenge": q["code_challenge"],
            "scope": q.get("scope", ""),
        }
        return 302, None, {"Location": redirect + "?" + urlencode({"code": code, "state": state})}

    def _issue(self, scope: str) -> dict[str, Any]:
        token = Token(
            access="cbat_" + secrets.token_urlsafe(24),
            refresh="cbrt_" + secrets.token_urlsafe(24),
            expires_at=self.now + self.expires_in,
            scope=scope,
        )
        self.tokens.append(token)
        return {
            "access_token": token.access,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "refresh_token": token.refresh,
            "scope": scope,
        }

    def _token(self, f: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        if f.get("client_id") != self.client_id or f.get("client_secret") != self.client_secret:
            return 401, {"error": "invalid_client"}, {}
        grant = f.get("grant_type")
        if grant == "authorization_code":
            pending = self.codes.pop(f.get("code", ""), None)  # single use
            if pending is None:
                return 400, {"error": "invalid_grant", "error_description": "bad code"}, {}
            if f.get("redirect_uri") != pending["redirect_uri"]:
                return 400, {"error": "invalid_grant", "error_description": "redirect_uri"}, {}
            digest = hashlib.sha256(f.get("code_verifier", "").encode()).digest()
            challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if challenge != pending["challenge"]:
                return 400, {"error": "invalid_grant", "error_description": "PKCE failed"}, {}
            return 200, self._issue(pending["scope"]), {}
        if grant == "refresh_token":
            token = next((t for t in self.tokens if t.refresh == f.get("refresh_token")), None)
            if self.fail_refresh or token is None or token.revoked or token.refresh_used:
                return 400, {"error": "invalid_grant", "error_description": "refresh token"}, {}
            token.refresh_used = True
            token.revoked = True  # the old access token dies with it
            return 200, self._issue(token.scope), {}
        return 400, {"error": "unsupported_grant_type"}, {}

    def _revoke(self, f: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        if f.get("client_id") != self.client_id or f.get("client_secret") != self.client_secret:
            return 401, {"error": "invalid_client"}, {}
        for t in self.tokens:
            if f.get("token") in (t.access, t.refresh):
                t.revoked = True
        return 200, {}, {}

    def _accounts(self, auth: str) -> tuple[int, Any, dict[str, str]]:
        scheme, _, value = auth.partition(" ")
        token = next((t for t in self.tokens if t.access == value), None)
        if scheme.lower() != "bearer" or token is None or token.revoked:
            return 401, {"error": "unauthorized", "message": "invalid token"}, {}
        if token.expires_at <= self.now:
            return 401, {"error": "unauthorized", "message": "token expired"}, {}
        accounts = [
            {
                "uuid": f"acct-{currency.lower()}",
                "name": f"{currency} Wallet",
                "currency": currency,
                "available_balance": {"value": free, "currency": currency},
                "hold": {"value": hold, "currency": currency},
                "active": True,
                "type": "ACCOUNT_TYPE_CRYPTO",
            }
            for currency, (free, hold) in sorted(self.balances.items())
        ]
        return (
            200,
            {"accounts": accounts, "has_next": False, "cursor": "", "size": len(accounts)},
            {},
        )
