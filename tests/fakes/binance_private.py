"""A stateful Binance spot exchange on loopback: the public fake plus signed private endpoints,
an order matcher, and the user-data websocket, enough for ccxt (REST) and ccxt.pro (websocket)
to trade against it.

What it serves, beyond ``tests.fakes.binance``:
    GET    /api/v3/account               balances of the key's account
    POST   /api/v3/order                 new order (MARKET, LIMIT GTC/IOC, STOP_LOSS(_LIMIT),
                                          TAKE_PROFIT(_LIMIT) with stopPrice), newClientOrderId
    GET    /api/v3/order                 by orderId or origClientOrderId (-2013 when none)
    DELETE /api/v3/order                 cancel by orderId or origClientOrderId (-2011)
    GET    /api/v3/openOrders            open orders (one symbol or all)
    GET    /api/v3/myTrades              executions of a symbol (startTime, fromId, limit)
    GET    /sapi/v1/account/apiRestrictions   the key's permissions
    GET    /sapi/v1/capital/config/getall     coins (ccxt loads them when a key is set)
    POST/PUT/DELETE /api/v3/userDataStream    listen keys (the legacy stream)
    websocket ``ws_url``/ws-api/v3       Binance's WebSocket API: ``userDataStream.subscribe
                                          .signature`` (signed like REST), then
                                          ``{"subscriptionId": 0, "event": executionReport}``
    websocket ``ws_url``/ws/<listenKey>  the legacy user-data stream (bare events)

Signing is checked the way Binance checks it: ``X-MBX-APIKEY`` must name a known key (else 401
-2015), and ``signature`` must be the HMAC-SHA256 of the rest of the query string plus body
under that key's secret (else 400 -1022).

Matching has no order book: a market order fills at ``price(symbol)`` (settable with
``set_price``); a limit order fills when it is marketable at placement or when a later
``set_price`` moves the price across it. ``liquidity[symbol]`` caps the quantity one match
event fills, which gives partial fills (a market order's unfilled rest expires, like Binance).
Stop orders (STOP_LOSS, STOP_LOSS_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT) rest untriggered
until a ``set_price`` reaches their ``stopPrice`` (a SELL STOP_LOSS at or below it, a SELL
TAKE_PROFIT at or above it, a BUY the other way round); then STOP_LOSS / TAKE_PROFIT fill like a
MARKET order and the *_LIMIT types become a LIMIT order at ``price``. One that would trigger at
once is refused (-2010 "Order would trigger immediately."). Unlike Binance, which locks the
balance of every stop order (two stops on one position need an OCO list there), the fake holds
nothing until the order triggers, and expires it if the balance is gone by then.
Fees: 0.1 %, in the asset received. ``newClientOrderId`` must be unique among open orders
(-2010 "Duplicate order sent.").

Fault knobs (``faults[path]`` is a queue; each request to that path takes the next one):
    "5xx"      answer 503 (-1001 internal error); nothing happens
    "429"      answer 429 with ``Retry-After: retry_after``; nothing happens
    "timeout"  (order placement) accept and book the order, then hold the answer for
               ``hang_seconds`` so the client times out first
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import sys
import threading
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from tests.fakes.binance import FakeBinance, LoggedRequest

FEE_RATE = Decimal("0.001")
DUPLICATE = (400, {"code": -2010, "msg": "Duplicate order sent."})
INTERNAL = {
    "code": -1001,
    "msg": "Internal error; unable to process your request. Please try again.",
}
TOO_MANY = {"code": -1003, "msg": "Too many requests; current limit exceeded."}
BAD_KEY = {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
NO_FUNDS = {"code": -2010, "msg": "Account has insufficient balance for requested action."}


STOP_TYPES = frozenset({"STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"})


def _reached(order_type: str, side: str, stop: Decimal, price: Decimal) -> bool:
    """Whether ``price`` reaches a stop order's ``stop``: a SELL STOP_LOSS (BUY TAKE_PROFIT)
    at or below it, a SELL TAKE_PROFIT (BUY STOP_LOSS) at or above it."""
    falls = order_type.startswith("STOP") == (side == "SELL")
    return price <= stop if falls else price >= stop


def _s(value: Decimal) -> str:
    return f"{value:.8f}"


class _ConcurrentServer(ThreadingHTTPServer):
    """A thread per connection, and a listen backlog deep enough for a fan-out's hundred
    connections opened at once (the default of 5 drops SYNs, which clients retry 1 s later)."""

    daemon_threads = True
    request_queue_size = 512

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client closing its kept-alive connection (a worker stopping) is not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class FakeAccount:
    api_key: str
    secret: str
    balances: dict[str, list[Decimal]] = field(default_factory=dict)  # asset -> [free, locked]
    permissions: dict[str, Any] = field(default_factory=dict)

    def free(self, asset: str) -> Decimal:
        return self.balances.setdefault(asset, [Decimal(0), Decimal(0)])[0]

    def add(self, asset: str, free: Decimal = Decimal(0), locked: Decimal = Decimal(0)) -> None:
        row = self.balances.setdefault(asset, [Decimal(0), Decimal(0)])
        row[0] += free
        row[1] += locked


@dataclass
class FakeOrder:
    order_id: int
    account: FakeAccount
    symbol: str
    side: str  # BUY / SELL
    type: str  # MARKET / LIMIT
    tif: str
    qty: Decimal
    price: Decimal | None
    client_id: str
    time: int
    filled: Decimal = Decimal(0)
    quote_filled: Decimal = Decimal(0)
    status: str = "NEW"
    reserved: Decimal = Decimal(0)  # quote (buy) or base (sell) locked for a resting limit
    stop_price: Decimal | None = None  # STOP_LOSS / TAKE_PROFIT (+ _LIMIT) types
    triggered: bool = False

    @property
    def waiting(self) -> bool:
        """A stop order whose trigger has not been reached yet."""
        return self.stop_price is not None and not self.triggered

    @property
    def open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")


@dataclass
class FakeTrade:
    trade_id: int
    order: FakeOrder
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int
    maker: bool


@dataclass
class FakeBinancePrivate(FakeBinance):
    """The public fake plus accounts, orders, trades, the user-data stream and fault knobs."""

    accounts: dict[str, FakeAccount] = field(default_factory=dict)
    prices: dict[str, Decimal] = field(default_factory=dict)
    liquidity: dict[str, Decimal] = field(default_factory=dict)
    orders: list[FakeOrder] = field(default_factory=list)
    trades: list[FakeTrade] = field(default_factory=list)
    faults: dict[str, list[str]] = field(default_factory=dict)
    hang_seconds: float = 3.0
    listen_keys: dict[str, str] = field(default_factory=dict)  # listen key -> api key
    ws_port: int = 0
    _ids: Any = field(default_factory=lambda: itertools.count(1001))
    _trade_ids: Any = field(default_factory=lambda: itertools.count(5001))
    _ws_clients: list[tuple[Any, str, bool]] = field(default_factory=list)  # (conn, key, wsapi)
    _ws_server: Any = None

    # --- set-up -------------------------------------------------------------------------------
    def add_account(
        self,
        *,
        balances: dict[str, str] | None = None,
        withdrawals: bool = False,
        trading: bool = True,
        futures: bool = False,
        ip_restrict: bool = False,
        api_key: str | None = None,
        secret: str | None = None,
    ) -> FakeAccount:
        """A new key pair with an account; its permissions as apiRestrictions reports them."""
        account = FakeAccount(
            api_key=api_key or "fk" + secrets.token_hex(16),
            secret=secret or "fs" + secrets.token_hex(24),
            permissions={
                "ipRestrict": ip_restrict,
                "createTime": self.now_ms,
                "enableReading": True,
                "enableWithdrawals": withdrawals,
                "enableInternalTransfer": False,
                "enableMargin": False,
                "enableFutures": futures,
                "permitsUniversalTransfer": False,
                "enableVanillaOptions": False,
                "enableFixApiTrade": False,
                "enableFixReadOnly": False,
                "enableSpotAndMarginTrading": trading,
                "enablePortfolioMarginTrading": False,
            },
        )
        for asset, amount in (balances or {}).items():
            account.add(asset, Decimal(amount))
        with self._lock:
            self.accounts[account.api_key] = account
        return account

    def price(self, symbol_id: str) -> Decimal:
        if symbol_id in self.prices:
            return self.prices[symbol_id]
        return Decimal(self.candle(symbol_id, "1m", self.now_ms // 60_000 * 60_000)[4])

    def set_price(self, symbol_id: str, price: str | Decimal) -> None:
        """Move the market: resting limit orders the new price crosses fill (up to liquidity)."""
        with self._lock:
            self.prices[symbol_id] = Decimal(price)
            for order in list(self.orders):
                if not (order.open and order.symbol == symbol_id):
                    continue
                if order.waiting:
                    self._trigger(order)
                elif order.type.endswith("LIMIT"):
                    self._match(order, maker=True)

    def fault(self, path: str, *kinds: str) -> None:
        with self._lock:
            self.faults.setdefault(path, []).extend(kinds)

    def orders_with_client_id(self, client_id: str) -> list[FakeOrder]:
        with self._lock:
            return [o for o in self.orders if o.client_id == client_id]

    def order_requests(self) -> list[LoggedRequest]:
        """Every order placement that reached the fake (refused ones included)."""
        return [r for r in self.requests if r.path == "/api/v3/order" and r.params["_m"] == "POST"]

    # --- servers ------------------------------------------------------------------------------
    def serve(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                fake._handle_any(self)

            do_GET = do_POST = do_DELETE = do_PUT = _any

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = _ConcurrentServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self._serve_ws()
        return self.base_url

    def _serve_ws(self) -> None:
        from websockets.sync.server import serve

        self._ws_server = serve(self._ws_session, "127.0.0.1", 0)
        self.ws_port = self._ws_server.socket.getsockname()[1]
        threading.Thread(target=self._ws_server.serve_forever, daemon=True).start()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    def url_overrides(self) -> dict[str, str]:
        """What ``EXCHANGE_URL_OVERRIDES`` needs for ccxt (REST) and ccxt.pro (websocket)."""
        return {
            "*": self.base_url,
            "ws.ws-api.spot": f"{self.ws_url}/ws-api/v3",
            "ws.spot": f"{self.ws_url}/ws",
        }

    def stop(self) -> None:
        if self._ws_server is not None:
            self._ws_server.shutdown()
            self._ws_server = None
        super().stop()

    def kill_websockets(self) -> None:
        """Drop every user-data connection (a stream that dies)."""
        with self._lock:
            clients, self._ws_clients = list(self._ws_clients), []
        for conn, _, _ in clients:
            conn.close()

    # --- websocket ----------------------------------------------------------------------------
    def _ws_session(self, conn: Any) -> None:
        path = urlsplit(conn.request.path).path
        if path.startswith("/ws/") and path != "/ws/":
            api_key = self.listen_keys.get(path.rsplit("/", 1)[1])
            if api_key is None:
                conn.close(code=1008, reason="invalid listen key")
                return
            with self._lock:
                self._ws_clients.append((conn, api_key, False))
        for raw in conn:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if msg.get("method") == "userDataStream.subscribe.signature":
                params = dict(msg.get("params") or {})
                api_key = str(params.get("apiKey", ""))
                account = self.accounts.get(api_key)
                signature = str(params.pop("signature", ""))
                query = urlencode(sorted((k, str(v)) for k, v in params.items()))
                if account is None or not self._sig_ok(account, query, signature):
                    conn.send(json.dumps({
                        "id": msg.get("id"), "status": 400,
                        "error": {"code": -1022, "msg": "Signature for this request is not valid."},
                    }))  # fmt: skip
                    continue
                with self._lock:
                    self._ws_clients.append((conn, api_key, True))
                ack = {"id": msg.get("id"), "status": 200, "result": {"subscriptionId": 0}}
                conn.send(json.dumps(ack))
            elif "id" in msg:
                conn.send(json.dumps({"id": msg["id"], "status": 200, "result": None}))

    def _push(self, api_key: str, event: dict[str, Any]) -> None:
        for conn, key, wsapi in list(self._ws_clients):
            if key != api_key:
                continue
            body = {"subscriptionId": 0, "event": event} if wsapi else event
            try:
                conn.send(json.dumps(body))
            except Exception:  # a closed socket: forget it
                self._ws_clients.remove((conn, key, wsapi))

    # --- HTTP ---------------------------------------------------------------------------------
    PRIVATE = {
        ("GET", "/api/v3/account"),
        ("POST", "/api/v3/order"),
        ("GET", "/api/v3/order"),
        ("DELETE", "/api/v3/order"),
        ("GET", "/api/v3/openOrders"),
        ("GET", "/api/v3/myTrades"),
        ("GET", "/sapi/v1/account/apiRestrictions"),
        ("GET", "/sapi/v1/capital/config/getall"),
    }

    def _handle_any(self, handler: BaseHTTPRequestHandler) -> None:
        method = handler.command
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode() if length else ""
        path = parts.path
        private = (method, path) in self.PRIVATE or path == "/api/v3/userDataStream"
        if not private:
            if path in ("/api/v3/ticker/24hr", "/api/v3/ticker/price"):
                self._reply(handler, *self._prices_reply(path, dict(parse_qsl(parts.query))))
                return
            self._handle(handler)  # the public fake
            return
        status, reply, headers = self._private(method, path, parts.query, body, handler.headers)
        if status == -1:  # accepted, then the answer is held past the client's timeout
            threading.Event().wait(self.hang_seconds)
            status = 200
        self._reply(handler, status, reply, headers)

    def _reply(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        payload = json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json;charset=UTF-8")
            handler.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout knob)

    def _prices_reply(self, path: str, params: dict[str, str]) -> tuple[int, Any]:
        status, body = self._tickers(params)
        if status != 200:
            return status, body
        rows = body if isinstance(body, list) else [body]
        for row in rows:
            price = _s(self.price(row["symbol"]))
            row.update(lastPrice=price, bidPrice=price, askPrice=price)
        if path.endswith("/price"):
            rows = [{"symbol": r["symbol"], "price": r["lastPrice"]} for r in rows]
        return 200, rows if isinstance(body, list) else rows[0]

    @staticmethod
    def _sig_ok(account: FakeAccount, query: str, signature: str) -> bool:
        expected = hmac.new(account.secret.encode(), query.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature)

    def _private(
        self, method: str, path: str, query: str, body: str, headers: Any
    ) -> tuple[int, Any, dict[str, str]]:
        params = dict(parse_qsl(query, keep_blank_values=True))
        params.update(dict(parse_qsl(body, keep_blank_values=True)))
        with self._lock:
            logged = LoggedRequest(path=path, params={**params, "_m": method}, status=0)
            self.requests.append(logged)
            queue = self.faults.get(path) or []
            fault = queue.pop(0) if queue else None
            if fault == "5xx":
                return 503, INTERNAL, {}
            if fault == "429":
                return 429, TOO_MANY, {"Retry-After": self.retry_after}
            account = self.accounts.get(headers.get("X-MBX-APIKEY", ""))
            if account is None:
                return 401, BAD_KEY, {}
            if path == "/api/v3/userDataStream":
                return self._listen_key(method, params, account)
            raw = "&".join(x for x in (query, body) if x)
            signed, sep, signature = raw.rpartition("&signature=")
            if not sep or not self._sig_ok(account, signed, signature):
                return 400, {"code": -1022, "msg": "Signature for this request is not valid."}, {}
            status, reply = self._route(method, path, params, account)
            if fault == "timeout" and status == 200:
                return -1, reply, {}
            return status, reply, {}

    def _listen_key(
        self, method: str, params: dict[str, str], account: FakeAccount
    ) -> tuple[int, Any, dict[str, str]]:
        if method == "POST":
            key = secrets.token_urlsafe(45)
            self.listen_keys[key] = account.api_key
            return 200, {"listenKey": key}, {}
        if params.get("listenKey") not in self.listen_keys:
            return 400, {"code": -1125, "msg": "This listenKey does not exist."}, {}
        if method == "DELETE":
            self.listen_keys.pop(params["listenKey"], None)
        return 200, {}, {}

    def _route(
        self, method: str, path: str, p: dict[str, str], account: FakeAccount
    ) -> tuple[int, Any]:
        if path == "/sapi/v1/account/apiRestrictions":
            return 200, dict(account.permissions)
        if path == "/sapi/v1/capital/config/getall":
            return 200, []
        if path == "/api/v3/account":
            perms = account.permissions
            return 200, {
                "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0,
                "sellerCommission": 0, "canTrade": bool(perms.get("enableSpotAndMarginTrading")),
                "canWithdraw": bool(perms.get("enableWithdrawals")), "canDeposit": True,
                "updateTime": self.now_ms, "accountType": "SPOT", "permissions": ["SPOT"],
                "balances": [
                    {"asset": a, "free": _s(f), "locked": _s(lk)}
                    for a, (f, lk) in sorted(account.balances.items())
                ],
            }  # fmt: skip
        if path == "/api/v3/order" and method == "POST":
            return self._new_order(p, account)
        if path == "/api/v3/order":
            order = self._find(p, account)
            if order is None:
                code = -2013 if method == "GET" else -2011
                msg = "Order does not exist." if method == "GET" else "Unknown order sent."
                return 400, {"code": code, "msg": msg}
            if method == "DELETE":
                if not order.open:
                    return 400, {"code": -2011, "msg": "Unknown order sent."}
                self._release(order)
                order.status = "CANCELED"
                self._report(order, "CANCELED")
            return 200, self._order_json(order)
        if path == "/api/v3/openOrders":
            sym = p.get("symbol")
            return 200, [
                self._order_json(o)
                for o in self.orders
                if o.account is account and o.open and (sym is None or o.symbol == sym)
            ]
        if path == "/api/v3/myTrades":
            if "symbol" not in p:
                return 400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent."}
            rows = [
                t
                for t in self.trades
                if t.order.account is account
                and t.order.symbol == p["symbol"]
                and t.time >= int(p.get("startTime", 0))
                and t.trade_id >= int(p.get("fromId", 0))
            ]
            return 200, [self._trade_json(t) for t in rows[: int(p.get("limit", 500))]]
        return 404, {"code": -1000, "msg": f"no route {method} {path}"}

    def _find(self, p: dict[str, str], account: FakeAccount) -> FakeOrder | None:
        for order in self.orders:
            if order.account is not account or order.symbol != p.get("symbol"):
                continue
            if "origClientOrderId" in p and order.client_id == p["origClientOrderId"]:
                return order
            if "orderId" in p and str(order.order_id) == p["orderId"]:
                return order
        return None

    def _new_order(self, p: dict[str, str], account: FakeAccount) -> tuple[int, Any]:
        symbol = p.get("symbol", "")
        try:
            _, base, quote, _, tick, qty_dec = self._symbol_info(symbol)
        except KeyError:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        client_id = p.get("newClientOrderId") or "fake-" + secrets.token_hex(8)
        if any(o.client_id == client_id and o.open and o.account is account for o in self.orders):
            return DUPLICATE
        qty = Decimal(p.get("quantity", "0"))
        order_type, side = p.get("type", ""), p.get("side", "")
        price = Decimal(p["price"]) if "price" in p else None
        if qty != qty.quantize(Decimal(1).scaleb(-qty_dec), rounding=ROUND_DOWN) or qty <= 0:
            return 400, {"code": -1013, "msg": "Filter failure: LOT_SIZE"}
        if price is not None and price != price.quantize(Decimal(1).scaleb(-tick)):
            return 400, {"code": -1013, "msg": "Filter failure: PRICE_FILTER"}
        if order_type.endswith("LIMIT") and price is None:
            return 400, {"code": -1102, "msg": "Mandatory parameter 'price' was not sent."}
        stop = Decimal(p["stopPrice"]) if "stopPrice" in p else None
        if order_type in STOP_TYPES:
            if stop is None:
                return 400, {"code": -1102, "msg": "Mandatory parameter 'stopPrice' was not sent."}
            if stop != stop.quantize(Decimal(1).scaleb(-tick)):
                return 400, {"code": -1013, "msg": "Filter failure: PRICE_FILTER"}
            if _reached(order_type, side, stop, self.price(symbol)):
                return 400, {"code": -2010, "msg": "Order would trigger immediately."}
        reference = price if price is not None else (stop or self.price(symbol))
        if qty * reference < Decimal(5):
            return 400, {"code": -1013, "msg": "Filter failure: NOTIONAL"}
        if not account.permissions.get("enableSpotAndMarginTrading"):
            return 401, BAD_KEY
        need_asset, need = (quote, qty * reference) if side == "BUY" else (base, qty)
        if account.free(need_asset) < need:
            return 400, NO_FUNDS
        order = FakeOrder(
            order_id=next(self._ids),
            account=account,
            symbol=symbol,
            side=side,
            type=order_type,
            tif=p.get("timeInForce", "GTC") if order_type.endswith("LIMIT") else "GTC",
            qty=qty,
            price=price,
            client_id=client_id,
            time=self.now_ms,
            stop_price=stop if order_type in STOP_TYPES else None,
        )
        self.orders.append(order)
        self._report(order, "NEW")
        if order.waiting:  # rests untriggered, holding nothing
            return 200, self._order_json(order) | {"transactTime": self.now_ms, "fills": []}
        first_trade = len(self.trades)
        if order.type == "LIMIT" and order.tif == "GTC":
            order.reserved = need
            account.add(need_asset, -need, need)
        self._match(order, maker=False)
        if order.open and (order.type == "MARKET" or order.tif == "IOC"):
            order.status = "EXPIRED"
            self._report(order, "EXPIRED")
        body = self._order_json(order) | {
            "transactTime": self.now_ms,
            "fills": [
                {"price": _s(t.price), "qty": _s(t.qty), "commission": _s(t.commission),
                 "commissionAsset": t.commission_asset, "tradeId": t.trade_id}
                for t in self.trades[first_trade:]
            ],
        }  # fmt: skip
        return 200, body

    def _trigger(self, order: FakeOrder) -> None:
        """Fire a waiting stop order the current price reached."""
        assert order.stop_price is not None
        market = self.price(order.symbol)
        if not _reached(order.type, order.side, order.stop_price, market):
            return
        order.triggered = True
        _, base, quote, _, _, _ = self._symbol_info(order.symbol)
        reference = order.price if order.price is not None else market
        need_asset, need = (
            (quote, order.qty * reference) if order.side == "BUY" else (base, order.qty)
        )
        if order.account.free(need_asset) < need:
            order.status = "EXPIRED"
            self._report(order, "EXPIRED")
            return
        if order.price is not None and order.tif == "GTC":  # *_LIMIT: now a resting limit
            order.reserved = need
            order.account.add(need_asset, -need, need)
        self._match(order, maker=False)
        if order.open and order.price is None:  # a triggered market stop's rest expires
            order.status = "EXPIRED"
            self._report(order, "EXPIRED")

    def _crosses(self, order: FakeOrder, market: Decimal) -> bool:
        if order.waiting:
            return False
        if order.price is None:  # MARKET, or a triggered STOP_LOSS / TAKE_PROFIT
            return True
        assert order.price is not None
        return market <= order.price if order.side == "BUY" else market >= order.price

    def _match(self, order: FakeOrder, *, maker: bool) -> None:
        market = self.price(order.symbol)
        if not self._crosses(order, market):
            return
        # A resting order fills at its own limit; a taker at the market price.
        price = order.price if (maker and order.price is not None) else market
        remaining = order.qty - order.filled
        cap = self.liquidity.get(order.symbol)
        qty = remaining if cap is None else min(remaining, cap)
        if qty <= 0:
            return
        _, base, quote, _, _, _ = self._symbol_info(order.symbol)
        account, cost = order.account, qty * price
        if order.side == "BUY":
            fee, fee_asset = qty * FEE_RATE, base
            if order.reserved:
                # (type: ignore below) a limit order (reserved) has a price
                release = min(order.reserved, qty * order.price)  # type: ignore[operator]
                order.reserved -= release
                account.add(quote, release - cost, -release)
            else:
                account.add(quote, -cost)
            account.add(base, qty - fee)
        else:
            fee, fee_asset = cost * FEE_RATE, quote
            if order.reserved:
                order.reserved -= qty
                account.add(base, Decimal(0), -qty)
            else:
                account.add(base, -qty)
            account.add(quote, cost - fee)
        order.filled += qty
        order.quote_filled += cost
        order.status = "FILLED" if order.filled >= order.qty else "PARTIALLY_FILLED"
        trade = FakeTrade(
            trade_id=next(self._trade_ids),
            order=order,
            price=price,
            qty=qty,
            commission=fee,
            commission_asset=fee_asset,
            time=self.now_ms,
            maker=maker,
        )
        self.trades.append(trade)
        self._report(order, "TRADE", trade)

    def _release(self, order: FakeOrder) -> None:
        if not order.reserved:
            return
        _, base, quote, _, _, _ = self._symbol_info(order.symbol)
        asset = quote if order.side == "BUY" else base
        order.account.add(asset, order.reserved, -order.reserved)
        order.reserved = Decimal(0)

    def _report(self, order: FakeOrder, execution: str, trade: FakeTrade | None = None) -> None:
        event = {
            "e": "executionReport", "E": self.now_ms, "s": order.symbol, "c": order.client_id,
            "S": order.side, "o": order.type, "f": order.tif, "q": _s(order.qty),
            "p": _s(order.price or Decimal(0)), "P": _s(order.stop_price or Decimal(0)),
            "F": "0.00000000", "g": -1,
            "C": "", "x": execution, "X": order.status, "r": "NONE", "i": order.order_id,
            "l": _s(trade.qty if trade else Decimal(0)), "z": _s(order.filled),
            "L": _s(trade.price if trade else Decimal(0)),
            "n": _s(trade.commission) if trade else "0",
            "N": trade.commission_asset if trade else None,
            "T": self.now_ms, "t": trade.trade_id if trade else -1, "I": 1, "w": order.open,
            "m": bool(trade.maker) if trade else False, "M": False, "O": order.time,
            "Z": _s(order.quote_filled), "Y": _s(trade.qty * trade.price if trade else Decimal(0)),
            "Q": "0.00000000", "W": order.time, "V": "NONE",
        }  # fmt: skip
        self._push(order.account.api_key, event)

    def _order_json(self, o: FakeOrder) -> dict[str, Any]:
        return {
            "symbol": o.symbol, "orderId": o.order_id, "orderListId": -1,
            "clientOrderId": o.client_id, "price": _s(o.price or Decimal(0)),
            "origQty": _s(o.qty), "executedQty": _s(o.filled),
            "cummulativeQuoteQty": _s(o.quote_filled), "status": o.status,
            "timeInForce": o.tif, "type": o.type, "side": o.side,
            "stopPrice": _s(o.stop_price or Decimal(0)),
            "icebergQty": "0.00000000", "time": o.time, "updateTime": self.now_ms,
            "isWorking": not o.waiting, "workingTime": o.time, "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "NONE",
        }  # fmt: skip

    def _trade_json(self, t: FakeTrade) -> dict[str, Any]:
        return {
            "symbol": t.order.symbol, "id": t.trade_id, "orderId": t.order.order_id,
            "orderListId": -1, "price": _s(t.price), "qty": _s(t.qty),
            "quoteQty": _s(t.qty * t.price), "commission": _s(t.commission),
            "commissionAsset": t.commission_asset, "time": t.time,
            "isBuyer": t.order.side == "BUY", "isMaker": t.maker, "isBestMatch": True,
        }  # fmt: skip
