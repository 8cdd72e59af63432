"""The paper exchange against hand-computed figures: fees, slippage, resting limits, balances.

Market: BTC/USDT with a 0.00001 lot step, a 0.01 tick, 5 USDT minimum order value, taker fee
0.1 %, maker fee 0.08 %; slippage 5 bps (the default setting). Every expected number below is
worked out by hand in the comment next to it.
"""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection
from django.test import override_settings

from config.exceptions import ApplicationError
from exchanges.events import fill_observed
from exchanges.paper import (
    DuplicateClientOrderId,
    InsufficientPaperBalance,
    LivePrices,
    ManualPrices,
    NoPrice,
    PaperExchange,
    StorePrices,
    clear_rules_cache,
    market_rules,
)
from exchanges.paper_models import PaperBalance, PaperFill, PaperOrder
from exchanges.services_paper import (
    paper_account_create,
    paper_account_reset,
    paper_match,
)
from exchanges.trading import MarketRules, OrderRequest, OrderTooSmall, TradingAdapter
from tests.backtester.backtest_factories import make_series, make_user

D = Decimal
RULES = MarketRules(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=D("0.00001"),
    price_tick=D("0.01"),
    min_notional=D("5"),
    taker_fee=D("0.001"),
    maker_fee=D("0.0008"),
)


class Clock:
    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _exchange(account, prices, clock=None) -> PaperExchange:
    return PaperExchange(
        account, price_source=prices, clock=clock or Clock(), rules=lambda s: RULES
    )


def _order(cid, side, type_="market", amount="0.1", price=None, tif="GTC") -> OrderRequest:
    return OrderRequest(
        symbol="BTC/USDT",
        side=side,
        type=type_,
        amount=D(amount),
        client_order_id=cid,
        price=D(price) if price is not None else None,
        time_in_force=tif,
    )


def _free(account, asset) -> Decimal:
    row = PaperBalance.objects.filter(account=account, asset=asset).first()
    return row.free if row else D(0)


def _used(account, asset) -> Decimal:
    row = PaperBalance.objects.filter(account=account, asset=asset).first()
    return row.used if row else D(0)


@pytest.fixture
def account(db):
    return paper_account_create(
        owner=make_user(), label="Paper USDT", quote="USDT", starting_balance="10000"
    )


@pytest.fixture
def prices():
    p = ManualPrices()
    p.set("BTC/USDT", "40000", at_ms=0)
    return p


def test_the_paper_exchange_is_a_trading_adapter(account, prices):
    assert isinstance(_exchange(account, prices), TradingAdapter)


def test_market_round_trip_pays_slippage_and_taker_fees_both_ways(
    account, prices, django_capture_on_commit_callbacks
):
    ex = _exchange(account, prices)
    seen = []

    def receiver(sender, account_id, fill, **kw):
        seen.append((account_id, fill))

    fill_observed.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            buy = ex.create_order(_order("rt-1", "buy"))
        # 40000 x 1.0005 = 40020.00; cost 0.1 x 40020 = 4002.00; fee 0.1 % = 4.002
        assert buy.status == "closed"
        assert buy.average_price == D("40020")
        assert buy.fee == D("4.002")
        assert buy.fee_currency == "USDT"
        assert _free(account, "USDT") == D("5993.998")  # 10000 - 4002 - 4.002
        assert _free(account, "BTC") == D("0.1")

        prices.set("BTC/USDT", "41000", at_ms=1)
        with django_capture_on_commit_callbacks(execute=True):
            sell = ex.create_order(_order("rt-2", "sell"))
        # 41000 x 0.9995 = 40979.50; proceeds 4097.95; fee 4.09795
        assert sell.average_price == D("40979.5")
        assert sell.fee == D("4.09795")
        # 5993.998 + 4097.95 - 4.09795 = 10087.85005
        assert _free(account, "USDT") == D("10087.85005")
        assert _free(account, "BTC") == D(0)
    finally:
        fill_observed.disconnect(receiver)

    # Every fill is a row and one event, after the commit, with the same figures.
    assert [f.fill_id for _, f in seen] == list(
        PaperFill.objects.filter(account=account).order_by("pk").values_list("fill_id", flat=True)
    )
    assert {a for a, _ in seen} == {account.pk}
    assert [(f.side, f.price, f.fee) for _, f in seen] == [
        ("buy", D("40020"), D("4.002")),
        ("sell", D("40979.5"), D("4.09795")),
    ]
    account.refresh_from_db()
    assert account.balances == {"USDT": {"free": "10087.85005", "used": "0"}}
    assert ex.positions() == []


def test_limit_buy_rests_holding_funds_then_fills_at_its_price_with_the_maker_fee(account, prices):
    clock = Clock(1_000)
    ex = _exchange(account, prices, clock)
    # 39000.009 rounds down to the tick: 39000.00
    state = ex.create_order(_order("lim-1", "buy", "limit", "0.2", "39000.009"))
    assert state.status == "open"
    assert state.price == D("39000")
    # held: 0.2 x 39000 = 7800 + maker fee 6.24 = 7806.24
    assert _used(account, "USDT") == D("7806.24")
    assert _free(account, "USDT") == D("2193.76")
    assert [o.client_order_id for o in ex.open_orders("BTC/USDT")] == ["lim-1"]

    # A candle that dipped below 39000 *before* the order was placed does not count ...
    prices.bar("BTC/USDT", at_ms=900, low="38000", high="40100", close="40000")
    prices.set("BTC/USDT", "39500", at_ms=1_500)
    assert paper_match(account, price_source=prices) == []
    # ... one after it does, even though the last price is back above the limit.
    prices.bar("BTC/USDT", at_ms=2_000, low="38999.99", high="39600", close="39400")
    clock.now = 2_500
    fills = PaperExchange(account, price_source=prices, clock=clock, rules=lambda s: RULES).match()
    assert len(fills) == 1
    assert fills[0].price == D("39000")
    assert fills[0].fee == D("6.24")
    assert _free(account, "USDT") == D("2193.76")  # 10000 - 7800 - 6.24
    assert _used(account, "USDT") == D(0)
    assert _free(account, "BTC") == D("0.2")
    done = ex.fetch_order_by_client_id("BTC/USDT", "lim-1")
    assert done.status == "closed"
    assert done.filled == D("0.2")
    assert PaperFill.objects.get(order__client_order_id="lim-1").is_maker
    # Matching again changes nothing.
    assert ex.match() == []
    assert ex.positions()[0].amount == D("0.2")


def test_limit_sell_fills_when_a_high_reaches_it(account, prices):
    clock = Clock(1_000)
    ex = _exchange(account, prices, clock)
    ex.create_order(_order("b", "buy", amount="0.1"))  # leaves 5993.998 USDT, 0.1 BTC
    ex.create_order(_order("s", "sell", "limit", "0.1", "40500.001"))  # sell rounds up: 40500.01
    assert _used(account, "BTC") == D("0.1")
    assert _free(account, "BTC") == D(0)
    prices.bar("BTC/USDT", at_ms=1_200, low="39900", high="40500", close="40200")
    assert ex.match() == []  # 40500 < 40500.01
    prices.bar("BTC/USDT", at_ms=1_300, low="40200", high="40500.01", close="40400")
    (fill,) = ex.match()
    # 0.1 x 40500.01 = 4050.001; maker 0.08 % = 3.2400008
    assert fill.price == D("40500.01")
    assert fill.fee == D("3.2400008")
    assert _free(account, "USDT") == D("5993.998") + D("4050.001") - D("3.2400008")
    assert _used(account, "BTC") == D(0)


def test_a_limit_that_crosses_on_arrival_fills_now_as_a_taker(account, prices):
    ex = _exchange(account, prices)
    state = ex.create_order(_order("x", "buy", "limit", "0.1", "40100"))
    # the better of the limit (40100) and the slipped price (40020): 40020, taker fee 4.002
    assert state.status == "closed"
    assert state.average_price == D("40020")
    assert state.fee == D("4.002")


def test_ioc_limit_that_cannot_fill_is_canceled_and_holds_nothing(account, prices):
    ex = _exchange(account, prices)
    state = ex.create_order(_order("ioc", "buy", "limit", "0.1", "39000", tif="IOC"))
    assert state.status == "canceled"
    assert state.filled == 0
    assert _free(account, "USDT") == D("10000")
    assert _used(account, "USDT") == D(0)
    assert ex.open_orders() == []


def test_cancel_releases_the_held_funds(account, prices):
    ex = _exchange(account, prices)
    ex.create_order(_order("c", "buy", "limit", "0.1", "30000"))
    assert _used(account, "USDT") == D("3002.4")  # 3000 + 0.08 %
    state = ex.cancel_order("BTC/USDT", "c")
    assert state.status == "canceled"
    assert _free(account, "USDT") == D("10000")
    assert _used(account, "USDT") == D(0)
    assert ex.cancel_order("BTC/USDT", "c").status == "canceled"  # idempotent
    with pytest.raises(ApplicationError):
        ex.cancel_order("BTC/USDT", "never-placed")


def test_a_duplicate_client_order_id_is_refused_and_the_original_is_found(account, prices):
    ex = _exchange(account, prices)
    first = ex.create_order(_order("dup", "buy", amount="0.01"))
    with pytest.raises(DuplicateClientOrderId):
        ex.create_order(_order("dup", "buy", amount="0.05"))
    assert PaperOrder.objects.filter(account=account).count() == 1
    assert _free(account, "BTC") == D("0.01")
    found = ex.fetch_order_by_client_id("BTC/USDT", "dup")
    assert found == first
    assert ex.fetch_order_by_client_id("BTC/USDT", "other") is None


def test_an_order_bigger_than_the_balance_is_refused_with_the_balance_shown(account, prices):
    ex = _exchange(account, prices)
    with pytest.raises(InsufficientPaperBalance) as caught:
        ex.create_order(_order("big", "buy", amount="1"))
    # needs 40020 + 40.02 = 40060.02
    assert "40060.02 USDT" in caught.value.message
    assert "free balance is 10000 USDT" in caught.value.message
    with pytest.raises(InsufficientPaperBalance, match="free balance is 0 BTC"):
        ex.create_order(_order("naked", "sell", amount="0.1"))
    assert PaperOrder.objects.filter(account=account).count() == 0
    assert _free(account, "USDT") == D("10000")


def test_amounts_round_to_the_step_and_tiny_orders_are_refused(account, prices):
    ex = _exchange(account, prices)
    state = ex.create_order(_order("r", "buy", amount="0.123456789"))
    assert state.amount == D("0.12345")
    with pytest.raises(OrderTooSmall, match="minimum order value"):
        ex.create_order(_order("tiny", "buy", amount="0.0001"))  # 4 USDT < 5
    with pytest.raises(ApplicationError, match="needs a price"):
        ex.create_order(_order("np", "buy", "limit", "0.1", None))


def test_no_price_means_no_order(account):
    ex = _exchange(account, ManualPrices())
    with pytest.raises(NoPrice):
        ex.create_order(_order("n", "buy"))


def test_fetch_fills_since_a_cursor(account, prices):
    clock = Clock(10)
    ex = _exchange(account, prices, clock)
    ex.create_order(_order("f1", "buy", amount="0.01"))
    clock.now = 20
    ex.create_order(_order("f2", "buy", amount="0.02"))
    assert [f.client_order_id for f in ex.fetch_fills(since_ms=0)] == ["f1", "f2"]
    assert [f.client_order_id for f in ex.fetch_fills(since_ms=15)] == ["f2"]
    assert len(ex.fetch_fills(since_ms=0, limit=1)) == 1


def test_create_validates_the_starting_balance_and_label(db):
    user = make_user()
    for bad, needle in (("0", "more than 0"), ("-5", "more than 0"), ("abc", "as a number")):
        with pytest.raises(ApplicationError, match=needle) as caught:
            paper_account_create(owner=user, label="P", quote="USDT", starting_balance=bad)
        assert caught.value.field == "starting_balance"
    with pytest.raises(ApplicationError) as caught:
        paper_account_create(owner=user, label="P", quote="US DT", starting_balance="1")
    assert caught.value.field == "quote"
    a = paper_account_create(owner=user, label="One", quote="usdt", starting_balance="500")
    b = paper_account_create(owner=user, label="Two", quote="EUR", starting_balance="1.5")
    assert (a.paper_quote, b.paper_quote) == ("USDT", "EUR")
    with pytest.raises(ApplicationError) as caught:
        paper_account_create(owner=user, label="One", quote="USDT", starting_balance="1")
    assert caught.value.field == "label"
    assert user.exchange_accounts.count() == 2


def test_reset_goes_back_to_the_starting_balance(account, prices):
    ex = _exchange(account, prices)
    ex.create_order(_order("a", "buy"))
    ex.create_order(_order("b", "buy", "limit", "0.01", "30000"))
    paper_account_reset(account=account)
    assert _free(account, "USDT") == D("10000")
    assert not PaperOrder.objects.filter(account=account).exists()
    assert ex.balances() == {"USDT": ex.balances()["USDT"]}
    assert ex.balances()["USDT"].free == D("10000")


def test_the_matching_beat_skips_owners_who_lost_pro(account, prices):
    from accounts.models import Subscription
    from exchanges.services_paper import paper_match_all

    clock = Clock(100)
    _exchange(account, prices, clock).create_order(_order("lapsed", "buy", "limit", "0.1", "39000"))
    prices.bar("BTC/USDT", at_ms=200, low="38000", high="39500", close="39100")
    Subscription.objects.filter(user=account.owner).update(status=Subscription.Status.CANCELED)
    assert paper_match_all(price_source=prices) == 0
    assert PaperOrder.objects.get(client_order_id="lapsed").status == "open"
    Subscription.objects.filter(user=account.owner).update(status=Subscription.Status.ACTIVE)
    assert paper_match_all(price_source=prices) == 1
    assert PaperOrder.objects.get(client_order_id="lapsed").status == "closed"


# --- prices and rules from the real parts ------------------------------------------------------


def test_store_prices_read_the_latest_candle_and_the_range_since(db):
    series = make_series(symbol="BTC/USDT", n=50, seed=3)
    from backtester.marketdata.store import load_candles

    c = load_candles(series)
    store = StorePrices()
    assert store.last_price("BTC/USDT") == Decimal(f"{c.close[-1]:.12g}")
    since = int(c.timestamp[40])
    r = store.range_since("BTC/USDT", since)
    assert r.low == Decimal(f"{c.low[40:].min():.12g}")
    assert r.high == Decimal(f"{c.high[40:].max():.12g}")
    assert store.last_price("NOPE/USDT") is None


@override_settings(PAPER_MARKET_EXCHANGE="", PAPER_ALLOW_STALE_PRICES=False)
def test_stale_candles_are_no_price_in_production(account):
    make_series(symbol="BTC/USDT", n=50, seed=3)  # 2024 candles near 100: long closed
    ex = PaperExchange(account, price_source=LivePrices(), rules=lambda s: RULES)
    with pytest.raises(NoPrice):
        ex.create_order(_order("stale", "buy"))
    with override_settings(PAPER_ALLOW_STALE_PRICES=True):  # the offline demo
        ex = PaperExchange(account, price_source=LivePrices(), rules=lambda s: RULES)
        assert ex.create_order(_order("demo", "buy", amount="1")).status == "closed"


def test_rules_and_ticker_come_from_the_real_market(db, monkeypatch, settings):
    import json

    from tests.fakes.binance import FakeBinance

    server = FakeBinance()
    server.serve()
    try:
        monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", json.dumps({"binance": server.base_url}))
        settings.PAPER_MARKET_EXCHANGE = "binance"
        clear_rules_cache()
        rules = market_rules("ETH/USDT")
        # The fake lists ETHUSDT with 2 tick decimals, 4 lot decimals, 5 USDT min notional.
        assert (rules.price_tick, rules.amount_step, rules.min_notional) == (
            D("0.01"),
            D("0.0001"),
            D("5"),
        )
        expected = D(server._ticker("ETHUSDT")["lastPrice"])
        assert LivePrices().last_price("ETH/USDT") == expected
        # A symbol the exchange does not list falls back to the defaults.
        assert market_rules("ZZZ/USDT").min_notional == D("1")
    finally:
        clear_rules_cache()
        server.stop()


# --- concurrency on the real PostgreSQL ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_workers_cannot_spend_the_same_balance():
    account = paper_account_create(
        owner=make_user(), label="Race", quote="USDT", starting_balance="10000"
    )
    prices = ManualPrices()
    prices.set("BTC/USDT", "40000")
    # Each buy needs 0.15 x 40020 x 1.001 = 6009.003 USDT: only one of the two fits in 10000.
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def place(cid: str) -> None:
        try:
            ex = PaperExchange(account, price_source=prices, rules=lambda s: RULES)
            barrier.wait(5)
            ex.create_order(_order(cid, "buy", amount="0.15"))
            outcomes.append("filled")
        except InsufficientPaperBalance:
            outcomes.append("refused")
        finally:
            connection.close()

    for round_ in range(3):
        paper_account_reset(account=account)
        outcomes.clear()
        threads = [threading.Thread(target=place, args=(f"{round_}-{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert sorted(outcomes) == ["filled", "refused"]
        assert _free(account, "USDT") == D("10000") - D("6009.003")
        assert _free(account, "BTC") == D("0.15")


@pytest.mark.django_db(transaction=True)
def test_two_matchers_fill_a_resting_order_once():
    account = paper_account_create(
        owner=make_user(), label="Match race", quote="USDT", starting_balance="10000"
    )
    prices = ManualPrices()
    prices.set("BTC/USDT", "40000", at_ms=0)
    clock = Clock(100)
    _exchange(account, prices, clock).create_order(_order("m", "buy", "limit", "0.1", "39000"))
    prices.bar("BTC/USDT", at_ms=200, low="38000", high="39500", close="39100")
    barrier = threading.Barrier(2)
    made: list[int] = []

    def run() -> None:
        try:
            ex = _exchange(account, prices, clock)
            barrier.wait(5)
            made.append(len(ex.match()))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(made) == [0, 1]
    assert PaperFill.objects.filter(account=account).count() == 1
    # 10000 - 0.1 x 39000 - maker 3.12 = 6096.88, nothing held any more
    assert _free(account, "USDT") == D("6096.88")
    assert _used(account, "USDT") == D(0)
    assert _free(account, "BTC") == D("0.1")


# --- the matching beat in a real worker ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_worker_fills_a_resting_order_from_a_fresh_stored_candle(celery_worker_process):
    import time

    import numpy as np

    from backtester.engine.candles import Candles
    from backtester.marketdata.store import write_candles
    from backtester.models import MarketSeries
    from exchanges.tasks_paper import paper_match_all

    account = paper_account_create(
        owner=make_user(), label="Beat", quote="USDT", starting_balance="10000"
    )
    minute = int(time.time() * 1000) // 60_000 * 60_000
    placed = minute - 120_000
    prices = ManualPrices()
    prices.set("BTC/USDT", "40000")
    ex = PaperExchange(account, price_source=prices, clock=Clock(placed), rules=lambda s: RULES)
    ex.create_order(_order("beat-1", "buy", "limit", "0.1", "39500"))
    # The last closed 1-minute candle (opened after the order) dipped to 39400.
    series = MarketSeries.objects.create(
        exchange="binance", symbol="BTC/USDT", timeframe="1m", source=MarketSeries.Source.CCXT
    )
    write_candles(
        series=series,
        candles=Candles(
            np.array([minute - 60_000], dtype=np.int64),
            np.array([39800.0]),
            np.array([39900.0]),
            np.array([39400.0]),
            np.array([39700.0]),
            np.array([3.0]),
            symbol="BTC/USDT",
            timeframe="1m",
        ),
    )
    paper_match_all.delay()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        order = PaperOrder.objects.get(account=account, client_order_id="beat-1")
        if order.status != PaperOrder.Status.OPEN:
            break
        time.sleep(0.2)
    assert order.status == PaperOrder.Status.CLOSED
    assert order.average_price == D("39500")
    # 0.1 x 39500 = 3950 + the worker's default maker fee (PAPER_DEFAULT_FEE 0.1 %: 3.95)
    assert order.fee == D("3.95")
    assert _free(account, "BTC") == D("0.1")
    assert _free(account, "USDT") == D("10000") - D("3950") - D("3.95")
