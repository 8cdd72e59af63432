"""The kill switch against real parts: an API-key account on the stateful fake Binance (ccxt on
loopback), a paper account (exchanges/paper.py on PostgreSQL), and a third account whose
exchange answers 503 until the fault is removed; the retry runs in the real Celery worker.

Assertions read the fake exchange's own book (its open orders and balances) and the paper
account's rows, not only our report."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exchanges.models import ExchangeAccount
from exchanges.paper import PaperExchange, clear_rules_cache
from exchanges.services import account_link
from exchanges.services_paper import paper_account_create
from exchanges.trading import OrderRequest
from risk import services
from risk.models import KillSwitchRun, TradingState
from risk.signals import trading_halted
from tests.backtester.backtest_factories import make_user
from tests.exchanges.conftest import adapter_of
from tests.fakes.binance_private import INTERNAL, FakeBinancePrivate

OVERRIDES_SPEC = os.environ.get("EXCHANGE_URL_OVERRIDES", "")


class FlakyBinance(FakeBinancePrivate):
    """The fake Binance with one more fault knob: requests signed by a key in ``down_keys``
    are answered 503 (-1001), nothing happens (that account's exchange is failing)."""

    down_keys: set[str]

    def _private(self, method: str, path: str, query: str, body: str, headers: Any):
        if headers.get("X-MBX-APIKEY", "") in self.down_keys:
            return 503, INTERNAL, {}
        return super()._private(method, path, query, body, headers)


@pytest.fixture
def flaky_exchange(monkeypatch, settings) -> Iterator[FlakyBinance]:
    """The fake, seen by this process (env) and by the session's worker (the overrides file
    the Makefile names, read at each use). Paper accounts in this process take their prices
    and market rules from it too."""
    if not OVERRIDES_SPEC.startswith("@"):
        pytest.fail("run through `make test`: EXCHANGE_URL_OVERRIDES must name an overrides file")
    fake = FlakyBinance()
    fake.down_keys = set()
    fake.serve()
    fake.set_price("BTCUSDT", "40000")
    fake.set_price("ETHUSDT", "2000")
    overrides = json.dumps({"binance": fake.url_overrides()})
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", overrides)
    target = Path(OVERRIDES_SPEC[1:])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(overrides)
    settings.PAPER_MARKET_EXCHANGE = "binance"
    clear_rules_cache()  # paper market rules come from this fake
    try:
        yield fake
    finally:
        target.unlink(missing_ok=True)
        clear_rules_cache()
        fake.release.set()
        fake.stop()


def _limit(cid: str, symbol: str, side: str, amount: str, price: str) -> OrderRequest:
    return OrderRequest(
        symbol=symbol,
        side=side,  # type: ignore[arg-type]  # a plain str from the parametrized case
        type="limit",
        amount=Decimal(amount),
        client_order_id=cid,
        price=Decimal(price),
    )


def _open_on_fake(fake: FakeBinancePrivate, api_key: str) -> list[str]:
    with fake._lock:
        return sorted(
            o.client_id for o in fake.orders if o.open and fake.accounts[api_key] is o.account
        )


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.django_db(transaction=True)
def test_kill_switch_cancels_and_closes_on_real_accounts_and_retries_the_failing_one(
    flaky_exchange, celery_worker_process
):
    fake = flaky_exchange
    user = make_user()
    # 1. API-key account on the fake: 0.5 BTC and 3 ETH held, two resting limit orders.
    key_a = fake.add_account(balances={"USDT": "20000", "BTC": "0.5", "ETH": "3"})
    acct_a = account_link(
        user=user, exchange="binance", label="a-binance", api_key=key_a.api_key,
        secret=key_a.secret,
    )  # fmt: skip
    ccxt_a = adapter_of(key_a)
    ccxt_a.create_order(_limit("rest-a1", "BTC/USDT", "buy", "0.1", "30000"))
    ccxt_a.create_order(_limit("rest-a2", "ETH/USDT", "buy", "1", "1500"))
    assert _open_on_fake(fake, key_a.api_key) == ["rest-a1", "rest-a2"]
    # 2. Paper account: 0.2 BTC bought at market (the fake's ticker), one resting limit buy.
    acct_b = paper_account_create(
        owner=user, label="b-paper", quote="USDT", starting_balance="10000"
    )
    paper = PaperExchange(acct_b)
    paper.create_order(
        OrderRequest("BTC/USDT", "buy", "market", Decimal("0.2"), client_order_id="paper-buy")
    )
    paper.create_order(_limit("rest-b1", "ETH/USDT", "buy", "1", "1000"))
    assert [o.client_order_id for o in paper.open_orders()] == ["rest-b1"]
    assert paper.balances()["BTC"].total == Decimal("0.2")
    # 3. A second key on the fake whose requests fail (503) from now on.
    key_c = fake.add_account(balances={"USDT": "5000", "BTC": "0.25"})
    acct_c = account_link(
        user=user, exchange="binance", label="c-failing", api_key=key_c.api_key,
        secret=key_c.secret,
    )  # fmt: skip
    adapter_of(key_c).create_order(_limit("rest-c1", "BTC/USDT", "buy", "0.01", "20000"))
    fake.down_keys.add(key_c.api_key)

    halted: list[dict[str, Any]] = []
    trading_halted.connect(lambda **kw: halted.append(kw), weak=False, dispatch_uid="t-ks-live")
    try:
        run = services.kill_switch_engage(user=user, close_positions=True)
    finally:
        trading_halted.disconnect(dispatch_uid="t-ks-live")
    # Bots and copy subscriptions are told: the user and every account halted.
    assert {h["account_id"] for h in halted} == {None, acct_a.pk, acct_b.pk, acct_c.pk}

    assert run.status == KillSwitchRun.Status.PARTIAL
    ra, rb, rc = (run.report[str(a.pk)] for a in (acct_a, acct_b, acct_c))
    assert (ra["ok"], rb["ok"], rc["ok"]) == (True, True, False)
    assert sorted(ra["cancelled"]) == ["rest-a1", "rest-a2"]
    assert rb["cancelled"] == ["rest-b1"]
    assert "did not answer" in rc["errors"][0]
    # The fake exchange's own book: nothing open, BTC and ETH sold at market.
    assert _open_on_fake(fake, key_a.api_key) == []
    assert key_a.free("BTC") == 0
    assert key_a.free("ETH") == 0
    assert key_a.balances["BTC"][1] == 0
    assert key_a.balances["USDT"][1] == 0
    closes = {c["symbol"]: c for c in ra["closed"]}
    assert set(closes) == {"BTC/USDT", "ETH/USDT"}
    for symbol, amount in (("BTC/USDT", "0.5"), ("ETH/USDT", "3")):
        cid = closes[symbol]["client_order_id"]
        assert closes[symbol]["amount"] == amount
        assert cid in ra["planned"]  # stored in the report before it was sent
        (sent,) = fake.orders_with_client_id(cid)
        assert (sent.side, sent.type, sent.status) == ("SELL", "MARKET", "FILLED")
    # The paper account: no resting order, the BTC sold, the USDT hold released.
    assert paper.open_orders() == []
    balances = paper.balances()
    assert "BTC" not in balances
    assert balances["USDT"].used == 0
    (closed_b,) = rb["closed"]
    assert (closed_b["symbol"], closed_b["amount"]) == ("BTC/USDT", "0.2")
    # The failing account's order is still resting on the fake; nothing was closed there.
    assert _open_on_fake(fake, key_c.api_key) == ["rest-c1"]
    assert key_c.free("BTC") == Decimal("0.25")

    # The worker retries (live queue): first retry still fails while the exchange is down ...
    _wait_for(lambda: _attempts(run.pk) >= 2, 40, "the worker's first retry")
    assert KillSwitchRun.objects.get(pk=run.pk).status == KillSwitchRun.Status.PARTIAL
    # ... the fault is removed, and the next retry finishes the job.
    fake.down_keys.clear()
    _wait_for(
        lambda: KillSwitchRun.objects.get(pk=run.pk).status != KillSwitchRun.Status.PARTIAL,
        60,
        "the worker's successful retry",
    )
    run.refresh_from_db()
    assert run.status == KillSwitchRun.Status.DONE
    assert run.attempts == 3
    rc = run.report[str(acct_c.pk)]
    assert rc["ok"]
    assert rc["cancelled"] == ["rest-c1"]
    assert _open_on_fake(fake, key_c.api_key) == []
    assert key_c.free("BTC") == 0
    (closed_c,) = rc["closed"]
    (sent_c,) = fake.orders_with_client_id(closed_c["client_order_id"])
    assert (sent_c.side, sent_c.status) == ("SELL", "FILLED")
    # The accounts that were done were left alone by the retries.
    assert run.report[str(acct_a.pk)]["attempt"] == 1
    assert len(fake.order_requests()) == 3 + 3  # rests a1, a2, c1; closes BTC+ETH on a, BTC on c
    # HALTED everywhere until the user resets.
    states = {s.account_id: s.state for s in TradingState.objects.filter(owner=user)}
    assert states == {None: "halted", acct_a.pk: "halted", acct_b.pk: "halted", acct_c.pk: "halted"}
    assert ExchangeAccount.objects.filter(owner=user).count() == 3


def _attempts(run_id: int) -> int:
    return KillSwitchRun.objects.values_list("attempts", flat=True).get(pk=run_id)
