"""The account's own fills, live: ccxt.pro's websocket against the fake's user-data stream
(Binance's WebSocket API, signed), and the REST poll that takes over when the socket cannot
be used. Both publish through exchanges.events, once per fill."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from decimal import Decimal

import pytest

from exchanges.adapters import fill_stream_for
from exchanges.events import fill_observed
from exchanges.models import ExchangeAccount
from exchanges.services import account_link
from exchanges.trading import OrderRequest
from tests.backtester.backtest_factories import make_user
from tests.exchanges.conftest import adapter_of

pytestmark = pytest.mark.django_db


class Received:
    def __init__(self) -> None:
        self.fills: list[tuple[int, object]] = []
        self.lock = threading.Lock()

    def __call__(self, sender, account_id, fill, **kw) -> None:
        with self.lock:
            self.fills.append((account_id, fill))

    def wait(self, n: int, timeout: float = 15.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.fills) >= n:
                    return list(self.fills)
            time.sleep(0.05)
        return list(self.fills)


@pytest.fixture
def received():
    receiver = Received()
    fill_observed.connect(receiver, weak=False)
    yield receiver
    fill_observed.disconnect(receiver)


class Running:
    """A stream running on its own event loop thread until stopped."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.ready = threading.Event()
        self.thread.start()
        self.ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.stop_event = asyncio.Event()
            self.ready.set()
            await self.stream.run(self.stop_event)

        self.loop.run_until_complete(main())

    def stop(self) -> None:
        assert self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(15)
        assert not self.thread.is_alive()


def _linked(fake):
    key = fake.add_account(balances={"USDT": "100000"})
    account = account_link(user=make_user(), exchange="binance", label="Live", api_key=key.api_key,
                           secret=key.secret)  # fmt: skip
    return key, account


def _wait_subscribed(fake, timeout=10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not fake._ws_clients:
        time.sleep(0.05)
    assert fake._ws_clients, "the stream never subscribed to the user-data stream"


def test_websocket_stream_publishes_each_fill_once(private_exchange, received):
    key, account = _linked(private_exchange)
    private_exchange.set_price("BTCUSDT", "40000")
    private_exchange.liquidity["BTCUSDT"] = Decimal("0.5")
    running = Running(fill_stream_for(account, symbols=["BTC/USDT"]))
    try:
        _wait_subscribed(private_exchange)
        adapter = adapter_of(key)
        adapter.create_order(OrderRequest("BTC/USDT", "buy", "limit", Decimal("1"), "ws-lim-1",
                                          price=Decimal("39000")))  # fmt: skip
        private_exchange.set_price("BTCUSDT", "38000")  # 0.5 fills
        private_exchange.set_price("BTCUSDT", "38500")  # the other 0.5
        fills = received.wait(2)
    finally:
        running.stop()
    assert running.stream.mode == "websocket"
    assert [(a, f.client_order_id, f.amount, f.price) for a, f in fills] == [
        (account.pk, "ws-lim-1", Decimal("0.5"), Decimal("39000")),
        (account.pk, "ws-lim-1", Decimal("0.5"), Decimal("39000")),
    ]
    assert len({f.fill_id for _, f in fills}) == 2
    assert {f.fill_id for _, f in fills} == {str(t.trade_id) for t in private_exchange.trades}


def test_rest_poll_takes_over_when_the_websocket_cannot_connect(
    private_exchange, received, monkeypatch
):
    key, account = _linked(private_exchange)
    overrides = {**private_exchange.url_overrides(), "ws.ws-api.spot": "ws://127.0.0.1:9/ws-api/v3"}
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", json.dumps({"binance": overrides}))
    private_exchange.set_price("BTCUSDT", "40000")
    adapter = adapter_of(key)
    adapter.create_order(OrderRequest("BTC/USDT", "buy", "market", Decimal("0.01"), "poll-1"))
    stream = fill_stream_for(account, symbols=["BTC/USDT"], poll_seconds=0.2)
    running = Running(stream)
    try:
        first = received.wait(1)
        adapter.create_order(OrderRequest("BTC/USDT", "buy", "market", Decimal("0.02"), "poll-2"))
        both = received.wait(2)
        time.sleep(0.6)  # a few more polls: nothing is reported twice
    finally:
        running.stop()
    assert stream.mode == "poll"
    assert stream.errors  # why the websocket was given up
    assert [f.amount for _, f in first] == [Decimal("0.01")]
    assert [f.amount for _, f in both] == [Decimal("0.01"), Decimal("0.02")]
    assert len(received.fills) == 2


def test_paper_accounts_have_no_stream():
    from config.exceptions import ApplicationError

    account = ExchangeAccount(kind="paper", exchange="paper", label="P", owner_id=1)
    with pytest.raises(ApplicationError):
        fill_stream_for(account)


def test_a_dropped_websocket_hands_over_to_polling_without_repeats(private_exchange, received):
    key, account = _linked(private_exchange)
    private_exchange.set_price("BTCUSDT", "40000")
    stream = fill_stream_for(account, symbols=["BTC/USDT"], poll_seconds=0.2)
    running = Running(stream)
    try:
        _wait_subscribed(private_exchange)
        adapter = adapter_of(key)
        adapter.create_order(OrderRequest("BTC/USDT", "buy", "market", Decimal("0.01"), "drop-1"))
        assert len(received.wait(1)) == 1
        assert stream.mode == "websocket"
        private_exchange.kill_websockets()
        deadline = time.monotonic() + 15
        while stream.mode != "poll" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stream.mode == "poll"
        adapter.create_order(OrderRequest("BTC/USDT", "buy", "market", Decimal("0.03"), "drop-2"))
        fills = received.wait(2)
        time.sleep(0.6)  # more polls: the first fill (same timestamp as the cursor) is not resent
    finally:
        running.stop()
    assert [f.amount for _, f in fills] == [Decimal("0.01"), Decimal("0.03")]
    assert len(received.fills) == 2
    assert stream.errors
