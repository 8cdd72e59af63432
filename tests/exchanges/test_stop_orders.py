"""Resting stop-loss / take-profit orders through the trading interface: the ccxt adapter
against the loopback fake Binance (what reaches the wire), and the paper exchange (what its
feed triggers and how it fills). Figures are worked out by hand next to each assertion.

Fake Binance BTCUSDT: tick 0.01, lot 0.00001, 5 USDT minimum, 0.1 % fee in the asset received.
Paper BTC/USDT: tick 0.01, lot 0.00001, taker fee 0.1 %, slippage 5 bps (the default).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from config.exceptions import ApplicationError
from exchanges.paper import DuplicateClientOrderId, ManualPrices, PaperExchange
from exchanges.paper_models import PaperBalance, PaperFill, PaperOrder
from exchanges.services_paper import paper_account_create
from exchanges.trading import (
    MarketRules,
    OrderRequest,
    StopOrdersNotSupported,
    supports_stop_orders,
)
from tests.backtester.backtest_factories import make_user
from tests.exchanges.conftest import adapter_of

D = Decimal


def stop(cid: str, kind: str, trigger: str, amount: str = "0.01", **kw) -> OrderRequest:
    return OrderRequest(
        symbol="BTC/USDT",
        side=kw.pop("side", "sell"),
        type=kind,  # type: ignore[arg-type]
        amount=D(amount),
        client_order_id=cid,
        trigger_price=D(trigger),
        **kw,
    )


# --- the rounding rule -------------------------------------------------------------------------


def test_trigger_rounds_to_the_tick_so_the_order_fires_no_later_than_asked():
    rules = MarketRules("BTC/USDT", "BTC", "USDT", D("0.00001"), D("0.01"))
    # A sell stop sits below the market: rounding up fires it a touch earlier, never later.
    assert rules.round_trigger(D("38999.991"), "sell", "stop_market") == D("39000")
    # A sell target sits above: rounding down.
    assert rules.round_trigger(D("41000.129"), "sell", "take_profit_market") == D("41000.12")
    # A buy stop sits above the market, a buy target below: the other way round.
    assert rules.round_trigger(D("41000.121"), "buy", "stop_limit") == D("41000.12")
    assert rules.round_trigger(D("38999.991"), "buy", "take_profit_limit") == D("39000")


# --- ccxt adapter against the fake Binance -----------------------------------------------------


def test_stop_market_goes_to_binance_as_stop_loss_with_the_rounded_stop_price(private_exchange):
    account = private_exchange.add_account(balances={"BTC": "0.05"})
    private_exchange.set_price("BTCUSDT", "40000")
    adapter = adapter_of(account)
    assert supports_stop_orders(adapter, "BTC/USDT")

    state = adapter.create_order(stop("sl-1", "stop_market", "38000.004"))
    sent = private_exchange.order_requests()[-1].params
    assert (sent["type"], sent["side"], sent["newClientOrderId"]) == ("STOP_LOSS", "SELL", "sl-1")
    assert sent["stopPrice"] == "38000.01"  # rounded up to the 0.01 tick
    assert sent["quantity"] == "0.01"
    assert "price" not in sent
    assert (state.type, state.status, state.trigger_price) == ("stop_market", "open", D("38000.01"))

    adapter.create_order(stop("tp-1", "take_profit_market", "42000.009"))
    sent = private_exchange.order_requests()[-1].params
    assert (sent["type"], sent["stopPrice"]) == ("TAKE_PROFIT", "42000")  # rounded down (42000.00)

    limit = stop("sll-1", "stop_limit", "37000", price=D("36900.005"))
    adapter.create_order(limit)
    sent = private_exchange.order_requests()[-1].params
    assert (sent["type"], sent["stopPrice"], sent["price"]) == (
        "STOP_LOSS_LIMIT", "37000", "36900.01",
    )  # fmt: skip
    assert sent["timeInForce"] == "GTC"

    found = adapter.fetch_order_by_client_id("BTC/USDT", "sl-1")
    assert found is not None
    assert (found.type, found.trigger_price, found.filled) == ("stop_market", D("38000.01"), 0)
    assert {o.client_order_id for o in adapter.open_orders("BTC/USDT")} == {
        "sl-1", "tp-1", "sll-1",
    }  # fmt: skip


def test_a_stop_the_price_reaches_fills_at_market_and_cancel_takes_the_other_off(
    private_exchange,
):
    account = private_exchange.add_account(balances={"BTC": "0.05"})
    private_exchange.set_price("BTCUSDT", "40000")
    adapter = adapter_of(account)
    adapter.create_order(stop("sl-2", "stop_market", "38000"))
    adapter.create_order(stop("tp-2", "take_profit_market", "42000"))
    private_exchange.set_price("BTCUSDT", "38500")  # not there yet
    assert adapter.fetch_order_by_client_id("BTC/USDT", "sl-2").status == "open"
    private_exchange.set_price("BTCUSDT", "37990")  # through the stop
    filled = adapter.fetch_order_by_client_id("BTC/USDT", "sl-2")
    assert (filled.status, filled.filled) == ("closed", D("0.01"))
    # A market fill at 37990: 379.9 USDT less the 0.1 % fee (0.3799).
    assert adapter.balances()["USDT"].free == D("379.9") - D("0.3799")

    canceled = adapter.cancel_order("BTC/USDT", "tp-2")
    assert canceled.status == "canceled"
    assert adapter.open_orders("BTC/USDT") == []


def test_a_stop_that_would_trigger_at_once_is_refused_by_the_exchange(private_exchange):
    account = private_exchange.add_account(balances={"BTC": "0.05"})
    private_exchange.set_price("BTCUSDT", "40000")
    with pytest.raises(ApplicationError, match="trigger immediately"):
        adapter_of(account).create_order(stop("sl-now", "stop_market", "40100"))


def test_without_stop_order_types_the_adapter_says_so_and_sends_nothing(private_exchange):
    private_exchange.order_types = ["LIMIT", "LIMIT_MAKER", "MARKET"]
    account = private_exchange.add_account(balances={"BTC": "0.05"})
    private_exchange.set_price("BTCUSDT", "40000")
    adapter = adapter_of(account)
    assert not supports_stop_orders(adapter, "BTC/USDT")
    with pytest.raises(StopOrdersNotSupported):
        adapter.create_order(stop("sl-x", "stop_market", "38000"))
    assert private_exchange.order_requests() == []


def test_a_stop_without_a_trigger_is_a_clear_error_not_sent(private_exchange):
    account = private_exchange.add_account(balances={"BTC": "0.05"})
    private_exchange.set_price("BTCUSDT", "40000")
    bad = OrderRequest("BTC/USDT", "sell", "stop_market", D("0.01"), "sl-bad")
    with pytest.raises(ApplicationError, match="trigger price") as exc:
        adapter_of(account).create_order(bad)
    assert exc.value.field == "trigger_price"
    assert private_exchange.order_requests() == []


# --- the paper exchange ------------------------------------------------------------------------

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
    now = 1_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def paper(db):
    account = paper_account_create(
        owner=make_user(), label="Paper", quote="USDT", starting_balance="1000"
    )
    PaperBalance.objects.create(account=account, asset="BTC", free=D("0.1"))
    prices = ManualPrices()
    prices.set("BTC/USDT", "40000", at_ms=0)
    clock = Clock()
    return PaperExchange(account, price_source=prices, clock=clock, rules=lambda _s: RULES), prices


def _btc(adapter) -> tuple[Decimal, Decimal]:
    row = PaperBalance.objects.get(account=adapter.account, asset="BTC")
    return row.free, row.used


def test_paper_stop_rests_holding_nothing_until_a_candle_low_reaches_it(paper):
    adapter, prices = paper
    assert supports_stop_orders(adapter, "BTC/USDT")
    state = adapter.create_order(stop("p-sl", "stop_market", "38000.004"))
    assert (state.status, state.trigger_price, state.type) == ("open", D("38000.01"), "stop_market")
    adapter.create_order(stop("p-tp", "take_profit_market", "42000"))
    assert _btc(adapter) == (D("0.1"), D(0))  # both rest; nothing held back
    # A candle after placement dips to 38100: not there; the next one reaches 37990.
    prices.bar("BTC/USDT", at_ms=2_000_000, low="38100", high="40100", close="39000")
    assert adapter.match() == []
    prices.bar("BTC/USDT", at_ms=3_000_000, low="37990", high="39000", close="38200")
    fills = adapter.match()
    assert [f.client_order_id for f in fills] == ["p-sl"]
    # Fills from the trigger (the last price 38200 is back above it), slipped 5 bps down:
    # 38000.01 x 0.9995 = 37981.009995 -> 37981.00 (tick, against the trader).
    assert fills[0].price == D("37981")
    # 0.01 x 37981 = 379.81 USDT; taker fee 0.1 % = 0.37981 -> 0.37981.
    assert fills[0].fee == D("0.37981")
    assert PaperFill.objects.get(order__client_order_id="p-sl").is_maker is False
    assert _btc(adapter) == (D("0.09"), D(0))
    assert adapter.fetch_order_by_client_id("BTC/USDT", "p-tp").status == "open"
    assert adapter.cancel_order("BTC/USDT", "p-tp").status == "canceled"


def test_paper_stop_gapped_through_fills_from_the_last_price(paper):
    adapter, prices = paper
    adapter.create_order(stop("p-gap", "stop_market", "38000"))
    prices.set("BTC/USDT", "37000", at_ms=2_000_000)  # the price opens far below the stop
    [fill] = adapter.match()
    # From the last price 37000, slipped: 37000 x 0.9995 = 36981.5.
    assert fill.price == D("36981.5")


def test_paper_take_profit_limit_becomes_a_resting_limit_once_triggered(paper):
    adapter, prices = paper
    adapter.create_order(stop("p-tpl", "take_profit_limit", "41000", price=D("41500")))
    prices.set("BTC/USDT", "41100", at_ms=2_000_000)  # triggers; 41100 is below the limit
    assert adapter.match() == []
    order = PaperOrder.objects.get(client_order_id="p-tpl")
    assert (order.triggered_ms, order.status) == (1_000_000, "open")
    assert _btc(adapter) == (D("0.09"), D("0.01"))  # now held like a limit sell
    prices.set("BTC/USDT", "41600", at_ms=3_000_000)
    [fill] = adapter.match()
    assert fill.price == D("41500")  # at its limit, as a resting limit fills


def test_paper_refuses_a_duplicate_id_and_a_stop_that_would_trigger_at_once(paper):
    adapter, _prices = paper
    adapter.create_order(stop("p-dup", "stop_market", "38000"))
    with pytest.raises(DuplicateClientOrderId):
        adapter.create_order(stop("p-dup", "stop_market", "37000"))
    with pytest.raises(ApplicationError, match="trigger immediately"):
        adapter.create_order(stop("p-now", "stop_market", "40500"))
    with pytest.raises(ApplicationError, match="trigger immediately"):
        adapter.create_order(stop("p-now2", "take_profit_market", "39500"))
    assert PaperOrder.objects.filter(account=adapter.account).count() == 1


def test_paper_stop_whose_coins_are_gone_when_it_triggers_expires(paper):
    adapter, prices = paper
    adapter.create_order(stop("p-exp", "stop_market", "38000", amount="0.1"))
    adapter.create_order(OrderRequest("BTC/USDT", "sell", "market", D("0.05"), "p-sell"))
    prices.set("BTC/USDT", "37900", at_ms=2_000_000)
    assert adapter.match() == []
    state = adapter.fetch_order_by_client_id("BTC/USDT", "p-exp")
    assert (state.status, state.filled) == ("expired", 0)
    assert _btc(adapter) == (D("0.05"), D(0))
