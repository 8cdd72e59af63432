"""A grid bot across restarts on the loopback fake Binance, through the real ccxt adapter and
the real risk check: a worker "killed" just before or just after an order is sent, and an order
the exchange books but answers too late (accept-then-timeout). Afterwards: exactly one order on
the exchange per client order id, every level's order known, no level lost; the stop-loss sale
is sent once across a crash.

A "kill" is an exception that is not a trading error, raised by a wrapper around the real
adapter at the chosen point; it propagates out of ``grid_step`` as a dying worker would stop it.
The restart is a new ``grid_step`` with a new adapter and the bot re-read from the database.
The counts are the fake exchange's own book, not our rows.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal as D
from typing import Any

import pytest

from backtester.models import GridBot, GridLevel
from backtester.services.grid_bots import grid_bot_create, grid_bot_stop, grid_step
from exchanges.adapters import adapter_for
from exchanges.services import account_link
from risk.services import risk_profile_update
from tests.backtester.backtest_factories import make_user
from tests.fakes.binance_private import FakeBinancePrivate

pytestmark = pytest.mark.django_db(transaction=True)


class Killed(BaseException):
    """Stands in for the worker process dying at this point (not a trading error)."""


class Crashing:
    """The real adapter, interrupted once around ``create_order`` of a chosen order."""

    def __init__(self, inner: Any, *, when: str, match: str = "") -> None:
        self.inner, self.when, self.match, self.armed = inner, when, match, True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def create_order(self, request: Any) -> Any:
        hit = self.armed and request.client_order_id.endswith(self.match)
        if hit and self.when == "before_send":
            self.armed = False
            raise Killed
        state = self.inner.create_order(request)
        if hit and self.when == "after_send":
            self.armed = False
            raise Killed
        return state


class World:
    def __init__(self, fake: FakeBinancePrivate, **grid: Any) -> None:
        self.fake = fake
        self.user = make_user(pro=True)
        self.key = fake.add_account(balances={"USDT": "5000"})
        self.account = account_link(
            user=self.user, exchange="binance", label="grid", api_key=self.key.api_key,
            secret=self.key.secret,
        )  # fmt: skip
        # The grid's resting buys are its whole investment: heat and size limits off here.
        risk_profile_update(
            user=self.user,
            values={"max_heat": 0.0, "max_position_fraction": 1.0, "max_orders_per_minute": 0},
        )
        settings: dict[str, Any] = {"lower": "90", "upper": "110", "levels": 5, "investment": "400"}
        settings |= grid
        self.bot = grid_bot_create(
            user=self.user, account=self.account, symbol="SOL/USDT", adapter=self.adapter(),
            **settings,
        )  # fmt: skip

    def adapter(self) -> Any:
        # 1.5 s timeout: the fake's held answer (3 s) times out quickly, lookups do not sleep.
        return adapter_for(self.account, timeout_ms=1500, sleep=lambda _s: None)

    def step(self, adapter: Any = None) -> int:
        return grid_step(bot_id=self.bot.pk, adapter=adapter or self.adapter())

    def booked(self) -> list[Any]:
        with self.fake._lock:
            return [o for o in self.fake.orders if o.account is self.key]

    def placements(self) -> Counter[str]:
        """Placements that reached the exchange, per client order id (one account here)."""
        return Counter(r.params.get("newClientOrderId", "") for r in self.fake.order_requests())

    def levels(self) -> list[GridLevel]:
        return list(GridLevel.objects.filter(bot=self.bot).order_by("index"))

    def assert_consistent(self) -> None:
        """One order per client id on the exchange; every level's order is there, in the
        state the level says; the exchange's open orders are exactly the levels' orders."""
        booked = self.booked()
        ids = Counter(o.client_id for o in booked)
        assert all(n == 1 for n in ids.values()), ids
        by_id = {o.client_id: o for o in booked}
        open_ids = {o.client_id for o in booked if o.open}
        level_open = set()
        for lv in self.levels():
            if lv.state in (GridLevel.State.BUY_RESTING, GridLevel.State.SELL_RESTING):
                assert lv.order_status == GridLevel.OrderStatus.OPEN, lv
                order = by_id[lv.client_order_id]
                assert order.open
                assert order.side == lv.order_side.upper()
                level_open.add(lv.client_order_id)
            else:
                assert lv.order_status == "", lv
        assert open_ids == level_open


def test_the_grid_starts_with_one_order_per_level_and_steps_are_idempotent(binance) -> None:
    w = World(binance)
    w.step()
    states = [lv.state for lv in w.levels()]
    # Lines 90 95 100 105 110 at a price of 100: the 100 and 105 cells buy at once (their
    # buys are marketable) and rest their sells at 105 and 110; 90 and 95 rest their buys.
    assert states == ["buy_resting", "buy_resting", "sell_resting", "sell_resting"]
    w.assert_consistent()
    before = len(w.booked())
    assert w.step() == 0  # nothing missing: nothing sent
    assert len(w.booked()) == before
    # The price falls through 95: that buy fills, its sell rests at 100.
    binance.set_price("SOLUSDT", "94")
    w.step()
    lv = w.levels()[1]
    assert (lv.state, lv.buys, lv.order_side) == ("sell_resting", 1, "sell")
    # Back up through 100: the 95 cell completes a round trip and rests its buy again.
    binance.set_price("SOLUSDT", "101")
    w.step()
    lv = w.levels()[1]
    assert (lv.state, lv.sells, lv.order_side) == ("buy_resting", 1, "buy")
    assert lv.realized_pnl > 0
    w.bot.refresh_from_db()
    assert w.bot.grid_profit == lv.realized_pnl
    w.assert_consistent()


@pytest.mark.parametrize("when", ["before_send", "after_send"])
def test_killed_around_a_send_resumes_without_duplicate_or_lost_level(binance, when) -> None:
    w = World(binance)
    with pytest.raises(Killed):
        w.step(Crashing(w.adapter(), when=when, match="-1-1"))  # level 1's first order
    lv = w.levels()[1]
    assert (lv.order_status, lv.client_order_id) == ("planned", f"qfg{w.bot.pk}-1-1")
    assert len(binance.orders_with_client_id(lv.client_order_id)) == (
        1 if when == "after_send" else 0
    )
    # Restart: the stored order is looked up first and sent only if the exchange lacks it.
    w.step()
    assert len(binance.orders_with_client_id(lv.client_order_id)) == 1
    assert w.placements()[lv.client_order_id] == 1
    assert [x.state for x in w.levels()] == [
        "buy_resting", "buy_resting", "sell_resting", "sell_resting"
    ]  # fmt: skip
    w.assert_consistent()
    # The level carries on: its buy fills, its sell rests, once each.
    binance.set_price("SOLUSDT", "94")
    w.step()
    w.step()
    assert w.levels()[1].state == "sell_resting"
    w.assert_consistent()


def test_killed_after_a_fill_before_it_was_booked_books_it_on_restart(binance) -> None:
    w = World(binance)
    w.step()
    binance.set_price("SOLUSDT", "94")  # the 95 buy fills on the exchange while no step runs
    # The sell of that level is the next order: the worker dies right after sending it.
    with pytest.raises(Killed):
        w.step(Crashing(w.adapter(), when="after_send", match="-1-2"))
    w.step()
    lv = w.levels()[1]
    assert (lv.state, lv.buys, lv.order_side, lv.order_seq) == ("sell_resting", 1, "sell", 2)
    assert w.placements()[lv.client_order_id] == 1
    w.assert_consistent()


def test_accept_then_timeout_is_looked_up_not_resent(binance) -> None:
    w = World(binance)
    binance.fault("/api/v3/order", "timeout")  # the first placement: booked, answer held 3 s
    w.step()
    first = f"qfg{w.bot.pk}-0-1"
    assert w.placements()[first] == 1
    assert len(binance.orders_with_client_id(first)) == 1
    lv = w.levels()[0]
    assert (lv.state, lv.order_status) == ("buy_resting", "open")
    assert lv.exchange_order_id == str(binance.orders_with_client_id(first)[0].order_id)
    w.assert_consistent()


def test_stop_loss_sells_the_holdings_once_across_a_crash(binance) -> None:
    w = World(binance, stop_loss="85")
    w.step()
    binance.set_price("SOLUSDT", "94")
    w.step()  # the 95 cell bought too: three cells hold SOL
    held = sum((lv.held for lv in w.levels()), D(0))
    assert held > 0
    binance.set_price("SOLUSDT", "84")  # through the 90 buy and the stop
    with pytest.raises(Killed):
        w.step(Crashing(w.adapter(), when="after_send", match="-exit"))
    w.step()
    w.bot.refresh_from_db()
    exit_id = f"qfg{w.bot.pk}-exit"
    assert w.placements()[exit_id] == 1
    assert len(binance.orders_with_client_id(exit_id)) == 1
    assert (w.bot.status, w.bot.exit_reason, w.bot.exit_state) == (
        "stopped", "stop_loss", "filled"
    )  # fmt: skip
    assert "Stop-loss" in w.bot.status_reason
    assert w.bot.exit_pnl < 0
    assert all(lv.state == "done" for lv in w.levels())
    assert not [o for o in w.booked() if o.open]  # every resting order canceled
    assert w.key.free("SOL") < D("0.01")  # sold, but for the fee dust under the lot
    assert w.step() == 0  # a stopped bot does nothing
    assert w.placements()[exit_id] == 1
    assert GridBot.objects.get(pk=w.bot.pk).status == "stopped"


def test_an_order_lost_after_a_timeout_fails_the_bot_and_stop_still_works(binance) -> None:
    w = World(binance)
    w.step()
    # A level whose next order the exchange never got, left "unknown" by a timed-out run
    # (its previous order ended: canceled here).
    w.adapter().cancel_order("SOL/USDT", f"qfg{w.bot.pk}-0-1")
    GridLevel.objects.filter(bot=w.bot, index=0).update(
        order_seq=2, client_order_id=f"qfg{w.bot.pk}-0-2", order_status="unknown"
    )
    sent = len(binance.order_requests())
    assert w.step() == 0
    w.bot.refresh_from_db()
    assert w.bot.status == "error"
    assert "not resent" in w.bot.status_reason
    assert len(binance.order_requests()) == sent  # looked up, never resent
    w.bot = grid_bot_stop(user=w.user, bot=w.bot, adapter=w.adapter())
    assert w.bot.status == "stopped"
    assert len(binance.order_requests()) == sent
    assert not [o for o in w.booked() if o.open]  # the other levels' orders were canceled
    assert "not on the exchange" in GridLevel.objects.get(bot=w.bot, index=0).note


def test_an_exchange_outage_makes_the_bot_wait_not_fail(binance) -> None:
    w = World(binance)
    w.step()
    binance.fault("/api/v3/openOrders", *["5xx"] * 10)  # every retry of this step fails
    assert w.step() == 0
    w.bot.refresh_from_db()
    assert w.bot.status == "running"
    assert w.bot.status_reason.startswith("Waiting for the exchange")
    binance.faults.clear()
    binance.set_price("SOLUSDT", "94")  # the market moved while the exchange was away
    w.step()
    w.bot.refresh_from_db()
    assert (w.bot.status, w.bot.status_reason) == ("running", "")
    assert w.levels()[1].state == "sell_resting"
    w.assert_consistent()


def test_partial_fills_are_booked_as_they_come_and_the_round_trip_completes(binance) -> None:
    w = World(binance)
    w.step()
    binance.liquidity["SOLUSDT"] = D("0.4")  # each price move fills at most 0.4 SOL
    quantity = w.levels()[1].quantity  # the 95 line's buy
    filled = D(0)
    for price in ("94.9", "94.8", "94.7"):  # three moves fill 0.4 + 0.4 + the rest
        binance.set_price("SOLUSDT", price)
        w.step()
        filled = min(quantity, filled + D("0.4"))
        lv = w.levels()[1]
        if filled < quantity:
            assert (lv.state, lv.held) == ("buy_resting", filled)  # booked, still resting
    lv = w.levels()[1]
    # Bought in full; Binance took its 0.1 % fee in SOL, so the sell is what is left (to the lot).
    assert (lv.state, lv.buys) == ("sell_resting", 1)
    assert lv.held == quantity - quantity * D("0.001")
    assert lv.order_amount == lv.held.quantize(D("0.001"), rounding="ROUND_DOWN")
    for price in ("100", "100.1", "100.2"):  # the sell fills in parts too
        binance.set_price("SOLUSDT", price)
        w.step()
    lv = w.levels()[1]
    assert (lv.state, lv.sells) == ("buy_resting", 1)
    # The round trip's P&L from the exchange's own trades: what the sell brought in (less its
    # USDT fee) minus what the buy cost (its fee was taken in SOL: the dust still held is
    # valued at its share of the cost).
    trades = [t for t in binance.trades if t.order.account is w.key and t.order.client_id in
              (f"qfg{w.bot.pk}-1-1", f"qfg{w.bot.pk}-1-2")]  # fmt: skip
    spent = sum((t.qty * t.price for t in trades if t.order.side == "BUY"), D(0))
    got = sum((t.qty * t.price - t.commission for t in trades if t.order.side == "SELL"), D(0))
    bought = sum((t.qty - t.commission for t in trades if t.order.side == "BUY"), D(0))
    sold = sum((t.qty for t in trades if t.order.side == "SELL"), D(0))
    dust_cost = spent * (bought - sold) / bought
    assert lv.held == bought - sold
    assert abs(lv.realized_pnl - (got - (spent - dust_cost))) < D("0.0001")
    w.assert_consistent()


def test_a_level_sells_what_its_buy_left_and_books_both_fees(binance) -> None:
    """Binance takes the level's buy fee in SOL: the level holds filled - fee, its sell is
    exactly that rounded down to the lot step (the account never runs short), and the round
    trip's P&L and fees are the hand-computed figures (the buy's fee valued at its price)."""
    w = World(binance)
    w.step()
    w.bot.refresh_from_db()
    before = w.bot.fees_paid  # the start's market buy for the levels above the price
    binance.set_price("SOLUSDT", "94.9")  # the 95 line's resting buy fills, in full
    w.step()
    lv = w.levels()[1]
    [buy] = [t for t in binance.trades if t.order.client_id == f"qfg{w.bot.pk}-1-1"]
    assert (buy.commission_asset, buy.qty) == ("SOL", lv.quantity)
    held = buy.qty - buy.commission
    assert (lv.state, lv.held) == ("sell_resting", held)
    assert lv.order_amount == held.quantize(D("0.001"), rounding="ROUND_DOWN")
    # The levels hold exactly the account's SOL (free + locked by the resting sells), the
    # start's market buy for the levels above the price included.
    assert sum(w.key.balances["SOL"]) == sum((x.held for x in w.levels()), D(0))
    binance.set_price("SOLUSDT", "100.1")  # the level's sell at 100 fills, in full
    w.step()
    w.bot.refresh_from_db()
    lv = w.levels()[1]
    [sell] = [t for t in binance.trades if t.order.client_id == f"qfg{w.bot.pk}-1-2"]
    assert sell.qty == held.quantize(D("0.001"), rounding="ROUND_DOWN")
    assert (w.bot.status, lv.state, lv.buys, lv.sells) == ("running", "buy_resting", 1, 1)
    eight = D("1E-8")
    cost = (buy.qty * buy.price).quantize(eight, rounding="ROUND_UP")
    proceeds = (sell.qty * sell.price).quantize(eight, rounding="ROUND_FLOOR")
    sell_fee = (sell.qty * sell.price * D("0.001")).quantize(eight)
    buy_fee = (buy.commission * buy.price).quantize(eight, rounding="ROUND_UP")
    share = (cost * sell.qty / held).quantize(eight)  # the dust keeps the rest of the cost
    assert lv.realized_pnl == w.bot.grid_profit == proceeds - sell_fee - share
    assert w.bot.fees_paid - before == buy_fee + sell_fee
    assert lv.held == held - sell.qty < D("0.001")  # dust below the lot step, still the level's
    w.assert_consistent()
