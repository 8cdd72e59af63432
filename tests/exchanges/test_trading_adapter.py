"""The ccxt trading adapter against the stateful fake Binance on loopback: market rules,
balances, orders by client order id (rounded, minimums checked locally), partial fills, the
ambiguous timeout, rate limits and 5xx on submission, and fills since a cursor."""

from __future__ import annotations

from decimal import Decimal

import pytest

from config.exceptions import ApplicationError
from exchanges.clients import (
    CLIENT_ORDER_ID_PARAM,
    ExchangeRefused,
    OrderRejected,
    market_rules_from_ccxt,
    submit_order,
)
from exchanges.trading import OrderRequest, OrderStatusUnknown, OrderTooSmall, TradingAdapter
from tests.exchanges.conftest import adapter_of


def buy(cid: str, amount: str, *, kind="market", price=None, tif="GTC") -> OrderRequest:
    return OrderRequest(
        symbol="BTC/USDT",
        side="buy",
        type=kind,
        amount=Decimal(amount),
        client_order_id=cid,
        price=Decimal(price) if price else None,
        time_in_force=tif,
    )


def test_the_adapter_implements_the_trading_interface(private_exchange):
    account = private_exchange.add_account(balances={"USDT": "1000"})
    assert isinstance(adapter_of(account), TradingAdapter)


def test_market_rules_come_from_the_exchange_filters_as_decimals(private_exchange):
    account = private_exchange.add_account()
    rules = adapter_of(account).market("SOL/USDT")
    # The fake's SOLUSDT: tickSize 0.001, stepSize 0.001, minQty 0.001, minNotional 5.
    assert rules.price_tick == Decimal("0.001")
    assert rules.amount_step == Decimal("0.001")
    assert rules.min_amount == Decimal("0.001")
    assert rules.min_notional == Decimal("5")


def test_decimal_places_precision_mode_is_turned_into_a_step():
    import ccxt

    market = {
        "symbol": "X/USD",
        "base": "X",
        "quote": "USD",
        "precision": {"amount": 3, "price": 2},
    }
    rules = market_rules_from_ccxt(market, ccxt.DECIMAL_PLACES)
    assert (rules.amount_step, rules.price_tick) == (Decimal("0.001"), Decimal("0.01"))
    ticks = {**market, "precision": {"amount": 0.005, "price": 0.5}}
    rules = market_rules_from_ccxt(ticks, ccxt.TICK_SIZE)
    assert (rules.amount_step, rules.price_tick) == (Decimal("0.005"), Decimal("0.5"))


def test_balances_are_decimals_from_the_account(private_exchange):
    account = private_exchange.add_account(balances={"USDT": "1234.5", "BTC": "0.25"})
    balances = adapter_of(account).balances()
    assert balances["USDT"].free == Decimal("1234.5")
    assert balances["BTC"].total == Decimal("0.25")


def test_market_order_is_rounded_down_and_sent_with_the_callers_client_id(private_exchange):
    account = private_exchange.add_account(balances={"USDT": "10000"})
    private_exchange.set_price("BTCUSDT", "40000")
    state = adapter_of(account).create_order(buy("cid-round-1", "0.0123456789"))
    sent = private_exchange.order_requests()[-1].params
    assert sent["newClientOrderId"] == "cid-round-1"
    assert sent["quantity"] == "0.01234"  # step 0.00001, rounded down
    assert state.client_order_id == "cid-round-1"
    assert state.status == "closed"
    assert state.filled == Decimal("0.01234")
    # 0.01234 BTC at 40000 = 493.6 USDT; the fee (0.1 %) is taken in BTC.
    balances = adapter_of(account).balances()
    assert balances["USDT"].free == Decimal("10000") - Decimal("493.6")
    assert balances["BTC"].free == Decimal("0.01234") - Decimal("0.00001234")


def test_client_order_id_goes_to_each_exchanges_own_field():
    assert CLIENT_ORDER_ID_PARAM == {
        "binance": "newClientOrderId",
        "okx": "clOrdId",
        "bybit": "orderLinkId",
        "kucoin": "clientOid",
        "kraken": "cl_ord_id",
        "coinbase": "client_order_id",
    }


def test_limit_price_rounds_to_the_tick_on_the_safe_side(private_exchange):
    account = private_exchange.add_account(balances={"USDT": "10000", "BTC": "1"})
    private_exchange.set_price("BTCUSDT", "40000")
    adapter = adapter_of(account)
    adapter.create_order(buy("cid-lim-buy", "0.01", kind="limit", price="39000.129"))
    assert private_exchange.order_requests()[-1].params["price"] == "39000.12"
    sell = OrderRequest("BTC/USDT", "sell", "limit", Decimal("0.01"), "cid-lim-sell",
                        price=Decimal("41000.121"))  # fmt: skip
    adapter.create_order(sell)
    assert private_exchange.order_requests()[-1].params["price"] == "41000.13"


def test_order_under_min_notional_is_refused_locally_and_never_sent(private_exchange):
    account = private_exchange.add_account(balances={"USDT": "10000"})
    private_exchange.set_price("BTCUSDT", "40000")
    adapter = adapter_of(account)
    # 0.0001 BTC x 40000 = 4 USDT < 5 USDT minimum.
    with pytest.raises(OrderTooSmall, match="minimum order value"):
        adapter.create_order(buy("cid-small", "0.0001"))
    # Rounding to the step leaves nothing: refused on the amount.
    with pytest.raises(OrderTooSmall, match="minimum amount"):
        adapter.create_order(buy("cid-dust", "0.000004"))
    assert private_exchange.order_requests() == []


def test_limit_order_fills_partially_as_the_price_moves_across_it(private_exchange):
    account = private_exchange.add_account(balances={"USDT": "100000"})
    private_exchange.set_price("BTCUSDT", "40000")
    private_exchange.liquidity["BTCUSDT"] = Decimal("0.4")
    adapter = adapter_of(account)
    placed = adapter.create_order(buy("cid-partial", "1", kind="limit", price="39000"))
    assert (placed.status, placed.filled) == ("open", Decimal(0))
    assert adapter.balances()["USDT"].used == Decimal("39000")  # reserved for the bid

    private_exchange.set_price("BTCUSDT", "38900")
    state = adapter.fetch_order_by_client_id("BTC/USDT", "cid-partial")
    assert (state.status, state.filled) == ("open", Decimal("0.4"))
    assert [o.client_order_id for o in adapter.open_orders("BTC/USDT")] == ["cid-partial"]

    private_exchange.set_price("BTCUSDT", "38950")
    private_exchange.set_price("BTCUSDT", "38800")
    state = adapter.fetch_order_by_client_id("BTC/USDT", "cid-partial")
    assert (state.status, state.filled) == ("closed", Decimal("1"))
    fills = adapter.fetch_fills(since_ms=0, symbol="BTC/USDT")
    assert [f.amount for f in fills] == [Decimal("0.4"), Decimal("0.4"), Decimal("0.2")]
    assert all(f.price == Decimal("39000") for f in fills)  # a resting bid fills at its limit
    assert adapter.open_orders("BTC/USDT") == []


def test_ioc_limit_fills_what_crosses_and_expires_the_rest(private_exchange):
    account = private_exchange.add_account(balances={"USDT": "100000"})
    private_exchange.set_price("BTCUSDT", "40000")
    private_exchange.liquidity["BTCUSDT"] = Decimal("0.3")
    state = adapter_of(account).create_order(
        buy("cid-ioc", "1", kind="limit", price="40100", tif="IOC")
    )
    assert private_exchange.order_requests()[-1].params["timeInForce"] == "IOC"
    assert (state.status, state.filled) == ("expired", Decimal("0.3"))


def test_cancel_by_client_order_id_releases_the_reserved_funds(private_exchange):
    account = private_exchange.add_account(balances={"USDT": "1000"})
    private_exchange.set_price("BTCUSDT", "40000")
    adapter = adapter_of(account)
    adapter.create_order(buy("cid-cancel", "0.01", kind="limit", price="30000"))
    assert adapter.balances()["USDT"].free == Decimal("700")
    state = adapter.cancel_order("BTC/USDT", "cid-cancel")
    assert state.status == "canceled"
    assert adapter.balances()["USDT"].free == Decimal("1000")
    with pytest.raises(OrderRejected, match="no open order"):
        adapter.cancel_order("BTC/USDT", "cid-cancel")


def test_unknown_client_order_id_is_none_not_an_error(private_exchange):
    account = private_exchange.add_account()
    assert adapter_of(account).fetch_order_by_client_id("BTC/USDT", "never-sent") is None


def test_timeout_after_the_exchange_accepted_leaves_exactly_one_order(private_exchange):
    """The ambiguous timeout: the fake books the order and answers too late. submit_order
    looks it up by client order id instead of resending; a caller's retry finds it too."""
    account = private_exchange.add_account(balances={"USDT": "10000"})
    private_exchange.set_price("BTCUSDT", "40000")
    private_exchange.hang_seconds = 3.0
    private_exchange.fault("/api/v3/order", "timeout")
    adapter = adapter_of(account, timeout_ms=800)
    with pytest.raises(OrderStatusUnknown):
        adapter.create_order(buy("cid-amb-0", "0.01"))  # the raw adapter: status unknown
    assert len(private_exchange.orders_with_client_id("cid-amb-0")) == 1

    private_exchange.fault("/api/v3/order", "timeout")
    state = submit_order(adapter, buy("cid-amb-1", "0.01"), sleep=lambda _s: None)
    assert state.client_order_id == "cid-amb-1"
    assert state.filled == Decimal("0.01")
    # The retry of a caller that does not know whether its first attempt went out.
    again = submit_order(adapter, buy("cid-amb-1", "0.01"), may_exist=True)
    assert again.exchange_order_id == state.exchange_order_id
    assert len(private_exchange.orders_with_client_id("cid-amb-1")) == 1
    assert len([r for r in private_exchange.order_requests()
                if r.params["newClientOrderId"] == "cid-amb-1"]) == 1  # fmt: skip


def test_timeout_before_the_exchange_saw_the_order_stays_unknown_and_is_not_resent(
    private_exchange,
):
    account = private_exchange.add_account(balances={"USDT": "10000"})
    private_exchange.set_price("BTCUSDT", "40000")
    private_exchange.fault("/api/v3/order", "5xx")  # Binance: 5xx = execution status unknown
    waits: list[float] = []
    with pytest.raises(OrderStatusUnknown, match="not resent"):
        submit_order(adapter_of(account), buy("cid-5xx", "0.01"), lookups=3, spacing=2.0,
                     sleep=waits.append)  # fmt: skip
    assert waits == [2.0, 2.0, 2.0]
    assert len(private_exchange.order_requests()) == 1
    assert private_exchange.orders_with_client_id("cid-5xx") == []


def test_duplicate_client_id_of_an_open_order_answers_with_that_order(private_exchange):
    account = private_exchange.add_account(balances={"USDT": "10000"})
    private_exchange.set_price("BTCUSDT", "40000")
    adapter = adapter_of(account)
    first = adapter.create_order(buy("cid-dup", "0.01", kind="limit", price="35000"))
    second = adapter.create_order(buy("cid-dup", "0.01", kind="limit", price="35000"))
    assert second.exchange_order_id == first.exchange_order_id
    assert len(private_exchange.orders_with_client_id("cid-dup")) == 1


def test_rate_limited_submission_waits_retry_after_and_sends_once_more(private_exchange):
    account = private_exchange.add_account(balances={"USDT": "10000"})
    private_exchange.set_price("BTCUSDT", "40000")
    private_exchange.retry_after = "7"
    private_exchange.fault("/api/v3/order", "429")
    waits: list[float] = []
    adapter = adapter_of(account, sleep=waits.append)
    state = adapter.create_order(buy("cid-429", "0.01"))
    assert state.status == "closed"
    assert waits == [7.0]
    assert len(private_exchange.order_requests()) == 2
    assert len(private_exchange.orders_with_client_id("cid-429")) == 1


def test_reads_retry_5xx_with_backoff(private_exchange):
    account = private_exchange.add_account(balances={"USDT": "10"})
    private_exchange.fault("/api/v3/account", "5xx", "5xx")
    waits: list[float] = []
    balances = adapter_of(account, sleep=waits.append, backoff_start=1.0).balances()
    assert balances["USDT"].free == Decimal("10")
    assert waits == [1.0, 2.0]


def test_insufficient_funds_is_a_rejection_in_the_exchanges_words(private_exchange):
    account = private_exchange.add_account(balances={"USDT": "10"})
    private_exchange.set_price("BTCUSDT", "40000")
    with pytest.raises(OrderRejected, match="insufficient balance"):
        adapter_of(account).create_order(buy("cid-poor", "0.01"))


def test_wrong_secret_gets_binances_signature_error(private_exchange):
    account = private_exchange.add_account()
    account_copy = type(account)(api_key=account.api_key, secret="not-the-secret")
    with pytest.raises(
        ExchangeRefused, match=r"Signature for this request is not valid\. \(code -1022\)"
    ):
        adapter_of(account_copy).balances()


def test_fills_since_a_cursor(private_exchange):
    account = private_exchange.add_account(balances={"USDT": "10000"})
    private_exchange.set_price("BTCUSDT", "40000")
    adapter = adapter_of(account)
    adapter.create_order(buy("cid-f1", "0.01"))
    cursor = private_exchange.now_ms + 60_000
    private_exchange.now_ms = cursor
    adapter.create_order(buy("cid-f2", "0.02"))
    fills = adapter.fetch_fills(since_ms=cursor, symbols=["BTC/USDT", "ETH/USDT"])
    assert [(f.amount, f.timestamp_ms) for f in fills] == [(Decimal("0.02"), cursor)]
    # Without a symbol, Binance is asked for the markets of the assets held.
    assert len(adapter.fetch_fills(since_ms=0)) == 2


def test_spot_positions_are_the_holdings(private_exchange):
    account = private_exchange.add_account(balances={"USDT": "100", "ETH": "1.5"})
    positions = adapter_of(account).positions()
    assert [(p.symbol, p.amount) for p in positions] == [("ETH/USDT", Decimal("1.5"))]


def test_reduce_only_on_a_spot_venue_without_it_is_refused_before_sending(private_exchange):
    account = private_exchange.add_account(balances={"USDT": "10000"})
    private_exchange.set_price("BTCUSDT", "40000")
    request = OrderRequest("BTC/USDT", "sell", "market", Decimal("0.01"), "cid-ro",
                           reduce_only=True)  # fmt: skip
    with pytest.raises(ApplicationError) as err:
        adapter_of(account).create_order(request)
    assert err.value.field == "reduce_only"
    assert private_exchange.order_requests() == []
