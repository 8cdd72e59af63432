"""Loopback stand-ins for the key-permission endpoints of Bybit and OKX (this machine cannot
reach the real ones), served so that ccxt's real ``bybit``/``okx`` classes sign and send the
requests and parse the answers:

    GET /v5/user/query-api        Bybit: ``result.readOnly`` (0/1) and ``result.permissions``
                                  ({"Spot": ["SpotTrade"], "Wallet": [..., "Withdraw"], ...})
    GET /api/v5/account/config    OKX: ``data[0].perm`` ("read_only,trade,withdraw")

Signatures are checked as the exchanges document them: Bybit v5 HMAC-SHA256 (hex) of
timestamp + key + recvWindow + query string; OKX base64 HMAC-SHA256 of timestamp + method +
request path (with query), plus the passphrase header. A wrong one gets the exchange's error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class FakeKeyPermissions:
    api_key: str = "stand-in-key-0001"
    secret: str = "stand-in-secret-0001"
    passphrase: str = "stand-in-pass"
    bybit: dict[str, Any] = field(default_factory=dict)  # the "result" object
    okx_perm: str = "read_only,trade"
    seen: list[str] = field(default_factory=list)
    url: str = ""  # where serve() listens, set by the fixture
    _server: ThreadingHTTPServer | None = None

    def serve(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = fake._answer(self)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _answer(self, h: BaseHTTPRequestHandler) -> tuple[int, Any]:
        parts = urlsplit(h.path)
        self.seen.append(parts.path)
        if parts.path == "/v5/user/query-api":
            ts, key = h.headers.get("X-BAPI-TIMESTAMP", ""), h.headers.get("X-BAPI-API-KEY", "")
            window = h.headers.get("X-BAPI-RECV-WINDOW", "")
            payload = f"{ts}{key}{window}{parts.query}".encode()
            good = hmac.new(self.secret.encode(), payload, hashlib.sha256).hexdigest()
            if key != self.api_key or h.headers.get("X-BAPI-SIGN") != good:
                return 200, {"retCode": 10004, "retMsg": "error sign! origin_string[...]",
                             "result": {}, "retExtInfo": {}, "time": 0}  # fmt: skip
            return 200, {"retCode": 0, "retMsg": "", "result": self.bybit, "retExtInfo": {},
                         "time": 0}  # fmt: skip
        if parts.path == "/api/v5/account/config":
            ts = h.headers.get("OK-ACCESS-TIMESTAMP", "")
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            digest = hmac.new(self.secret.encode(), f"{ts}GET{path}".encode(), hashlib.sha256)
            good = base64.b64encode(digest.digest()).decode()
            if (
                h.headers.get("OK-ACCESS-KEY") != self.api_key
                or h.headers.get("OK-ACCESS-SIGN") != good
                or h.headers.get("OK-ACCESS-PASSPHRASE") != self.passphrase
            ):
                return 401, {"msg": "Invalid Sign", "code": "50113"}
            config = {"uid": "1", "label": "stand-in", "perm": self.okx_perm, "acctLv": "1"}
            return 200, {"code": "0", "msg": "", "data": [config]}
        return 404, {"msg": f"no route {parts.path}", "code": "404"}
