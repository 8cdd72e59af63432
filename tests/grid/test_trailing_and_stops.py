"""The live grid bot's trailing range and its stop-loss / take-profit inside the candle, each
against the engine's grid simulation on the same candles.

Trailing: a paper bot replayed leg by leg (tests/grid/helpers.py) over candles that climb out
of the range shifts its grid at the same moments as ``simulate_grid`` with ``trailing``: the
same levels leave and join, with the same fills per level; a worker dying in the middle of a
shift (after the lowest buy was canceled, before the new level was stored) leaves a grid the
next step completes, with no order doubled.

Stops inside the candle: the bot reads the candles stored since its last step (the market-data
store, fed by the live feed) and applies the engine's intrabar rule, so a wick through the stop
between two steps is seen, on the bar and at the price the backtest stops at.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

import backtester.engine.gridbot as gb
from backtester.engine.candles import Candles
from backtester.engine.gridbot import CELL_STATES, GridSettings, simulate_grid
from backtester.marketdata.store import write_candles
from backtester.models import GridBot, GridLevel
from backtester.services.grid_bots import grid_bot_create, grid_step
from exchanges.paper import PaperExchange, StorePrices
from exchanges.paper_models import PaperBalance, PaperFill, PaperOrder
from tests.bots.helpers import RULES, Clock, store_series
from tests.grid.helpers import SYMBOL, GridWorld

pytestmark = pytest.mark.django_db(transaction=True)
HOUR = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR

LIVE_STATE = {
    "buy_resting": GridLevel.State.BUY_RESTING,
    "sell_resting": GridLevel.State.SELL_RESTING,
    "done": GridLevel.State.DONE,
}


def climbing_candles(n: int = 70) -> Candles:
    """Around 100, climbing past 113 and falling back: wicks of 0.6 either side."""
    i = np.arange(n, dtype=np.float64)
    close = np.round(100 + 7 * np.sin(i / 6) + i * 0.16, 2)
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) + 0.6
    low = np.minimum(open_, close) - 0.6
    ts = T0 + HOUR * np.arange(n, dtype=np.int64)
    return Candles(ts, open_, high, low, close, np.ones(n), timeframe="1h", symbol=SYMBOL)


GRID: dict[str, Any] = {"lower": "92", "upper": "104", "levels": 7, "investment": "600"}


def simulated(candles: Candles, **extra: Any) -> gb.GridBotResult:
    return simulate_grid(
        candles,
        GridSettings(
            lower=92.0, upper=104.0, levels=7, investment=600.0,
            maker_fee=float(RULES.maker_fee), taker_fee=float(RULES.taker_fee),
            tick=float(RULES.price_tick), min_notional=float(RULES.min_notional), **extra,
        ),
    )  # fmt: skip


def live_fills(account: Any) -> dict[int, list[tuple[int, float]]]:
    out: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for f in PaperFill.objects.filter(account=account).select_related("order").order_by("pk"):
        index = int(f.order.client_order_id.split("-")[1])
        out[index].append((1 if f.side == "buy" else -1, float(f.price)))
    return out


def assert_same_grid(bot: GridBot, w: GridWorld, sim: gb.GridBotResult, open0: float) -> None:
    """Same levels (the engine's cells, by number), same fills per level, same end states."""
    bot.refresh_from_db()
    assert bot.status == GridBot.Status.RUNNING, bot.status_reason
    levels = list(bot.grid_levels.order_by("index"))
    assert [lv.index for lv in levels] == list(range(len(sim.qty)))
    assert [float(lv.price) for lv in levels] == pytest.approx(list(sim.lines[:-1]), abs=1e-8)
    assert bot.trail_shifts == sim.shifts
    live = live_fills(w.account)
    starts = {int(f["cell"]) for f in sim.fills if int(f["kind"]) == 0}
    expected: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for f in sim.fills:
        expected[int(f["cell"])].append((int(f["side"]), float(f["price"])))
    assert sorted(live) == sorted(expected)
    for cell, fills in expected.items():
        got = live[cell]
        assert [s for s, _ in got] == [s for s, _ in fills], cell
        for k, ((_, want), (_, have)) in enumerate(zip(fills, got, strict=True)):
            if k == 0 and cell in starts:  # the start: the open plus the paper's slippage
                assert open0 <= have <= open0 * 1.0005 + 1e-8
            else:
                assert have == pytest.approx(want, abs=1e-8), f"level {cell} fill {k}"
    assert [lv.sells for lv in levels] == list(sim.cell_round_trips)
    assert [lv.state for lv in levels] == [LIVE_STATE[CELL_STATES[s]] for s in sim.cell_state]
    # One order at most per level on the exchange, and only the ones the levels know of.
    resting = PaperOrder.objects.filter(account=w.account, status=PaperOrder.Status.OPEN)
    assert sorted(o.client_order_id for o in resting) == sorted(
        lv.client_order_id for lv in levels if lv.order_status == GridLevel.OrderStatus.OPEN
    )
    ids = Counter(PaperOrder.objects.filter(account=w.account).values_list("client_order_id"))
    assert max(ids.values()) == 1
    sol = PaperBalance.objects.get(account=w.account, asset="SOL")
    assert sol.free + sol.used == sum((lv.held for lv in levels), Decimal(0))


def test_a_trailing_paper_grid_shifts_like_the_simulation() -> None:
    candles = climbing_candles()
    sim = simulated(candles, trailing=True)
    assert sim.shifts >= 3, "the candles should climb out of the range"
    assert sim.round_trips >= 6
    w = GridWorld()
    bot = grid_bot_create(
        user=w.user, account=w.account, symbol=SYMBOL, trailing=True, adapter=w.adapter(), **GRID
    )
    w.replay(bot.pk, candles)
    assert_same_grid(bot, w, sim, float(candles.open[0]))
    done = bot.grid_levels.filter(state=GridLevel.State.DONE).order_by("index")
    assert [lv.index for lv in done] == list(range(sim.lowest_cell))
    assert all("trailed up" in lv.note for lv in done)
    # The same candles without trailing: the grid stays where it was set.
    fixed = simulated(candles)
    assert fixed.shifts == 0
    assert len(fixed.qty) == 6


class Crash(Exception):
    """The worker dies here."""


class CrashingWorld(GridWorld):
    """The first shift dies after the lowest buy was canceled on the exchange and before the
    new level was stored; the bot is stepped again at once (the restart), with a new adapter."""

    crashes = 0

    def step(self, bot_id: int, adapter: Any = None) -> int:
        try:
            return super().step(bot_id, adapter)
        except Crash:
            self.crashes += 1
            return super().step(bot_id, self.adapter())


def test_a_shift_cut_short_by_a_dying_worker_is_completed_by_the_next_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    candles = climbing_candles()
    sim = simulated(candles, trailing=True)
    w = CrashingWorld()
    bot = grid_bot_create(
        user=w.user, account=w.account, symbol=SYMBOL, trailing=True, adapter=w.adapter(), **GRID
    )
    real_create = GridLevel.objects.create
    armed = {"left": 1}

    def create(**kwargs: Any) -> GridLevel:
        if armed["left"]:
            armed["left"] -= 1
            raise Crash
        return real_create(**kwargs)

    monkeypatch.setattr(GridLevel.objects, "create", create)
    w.replay(bot.pk, candles)
    assert w.crashes == 1
    # The canceled buy of the level that was leaving is on the exchange, once.
    canceled = PaperOrder.objects.filter(account=w.account, status=PaperOrder.Status.CANCELED)
    assert canceled.count() >= 1
    assert_same_grid(bot, w, sim, float(candles.open[0]))


# --- stop-loss / take-profit inside the candle ---------------------------------------------------


def bars_from(rows: list[tuple[float, float, float, float]], first_ts: int) -> Candles:
    a = np.asarray(rows, dtype=np.float64)
    n = len(rows)
    ts = first_ts + HOUR * np.arange(n, dtype=np.int64)
    return Candles(ts, a[:, 0], a[:, 1], a[:, 2], a[:, 3], np.ones(n), timeframe="1h",
                   symbol=SYMBOL)  # fmt: skip


def store_world(**bot: Any) -> tuple[GridWorld, GridBot, Any, Clock]:
    """A bot on SOL/USDT whose prices come from the market-data store (one candle at 100)."""
    series = store_series(bars_from([(100, 100, 100, 100)], T0))
    w = GridWorld()
    clock = Clock(T0 + HOUR)

    def adapter() -> PaperExchange:
        return PaperExchange(
            w.account, price_source=StorePrices(), clock=clock, rules=lambda _s: RULES
        )

    made = grid_bot_create(
        user=w.user, account=w.account, symbol=SYMBOL, adapter=adapter(),
        lower="90", upper="110", levels=5, investment="400", **bot,
    )  # fmt: skip
    grid_step(bot_id=made.pk, adapter=adapter())
    made.refresh_from_db()
    assert made.started
    assert made.watch_ts == T0 + HOUR
    return w, made, (series, adapter), clock


@pytest.mark.parametrize(
    ("rows", "stops", "reason", "bar", "price"),
    [
        # Bar 1 wicks to 83 through the stop at 85 and closes back at 96: a step after bar 2
        # sees only 96 as the last price, the candles show the wick. High nearer the open
        # (99 -> 100 -> 83): the stop fires on the way down, at 85.
        ([(100, 101, 97, 99), (99, 100, 83, 96), (96, 97, 95, 96)], {"stop_loss": "85"},
         "stop_loss", 1, 85.0),
        # The take-profit at 115 jumped over by a gap to 118 fills at that open, on bar 1.
        ([(100, 104, 99, 103), (118, 119, 108, 109), (109, 110, 108, 109)],
         {"take_profit": "115", "stop_loss": "80"}, "take_profit", 1, 118.0),
        # Both in one bar (100, 116, 84, 100): a tie (16 and 16) goes high first: the target.
        ([(100, 101, 99, 100), (100, 116, 84, 100)], {"take_profit": "115", "stop_loss": "85"},
         "take_profit", 1, 115.0),
    ],
)  # fmt: skip
def test_a_wick_between_two_steps_exits_on_the_backtests_bar_and_price(
    rows: list[tuple[float, float, float, float]],
    stops: dict[str, str],
    reason: str,
    bar: int,
    price: float,
) -> None:
    _w, bot, (series, adapter), clock = store_world(**stops)
    candles = bars_from(rows, T0 + HOUR)
    sim = simulate_grid(
        candles,
        GridSettings(lower=90.0, upper=110.0, levels=5, investment=400.0,
                     stop_loss=float(stops.get("stop_loss", 0)),
                     take_profit=float(stops.get("take_profit", 0))),
    )  # fmt: skip
    assert (sim.stopped_at, sim.stop_reason) == (bar, reason)
    sim_exit = {float(f["price"]) for f in sim.fills if int(f["kind"]) in (2, 3)}
    assert sim_exit <= {price}
    write_candles(series=series, candles=candles)
    clock.now = int(candles.timestamp[-1]) + HOUR
    last = Decimal(str(rows[-1][3]))
    assert StorePrices().last_price(SYMBOL) == last  # the last price alone shows nothing
    grid_step(bot_id=bot.pk, adapter=adapter())
    bot.refresh_from_db()
    assert bot.status == GridBot.Status.STOPPED, bot.status_reason
    assert bot.exit_reason == reason
    assert bot.exit_trigger_ts == int(candles.timestamp[bar])
    assert bot.exit_trigger_price == Decimal(repr(price))
    assert bot.exit_state == GridBot.ExitState.FILLED
    assert bot.exit_price is not None
    assert abs(bot.exit_price - last) <= last * Decimal("0.001")


def test_candles_that_stay_inside_move_the_cursor_and_exit_nothing() -> None:
    _w, bot, (series, adapter), clock = store_world(stop_loss="85", take_profit="115")
    first = bars_from([(100, 101, 97, 99), (99, 100, 86, 96)], T0 + HOUR)
    write_candles(series=series, candles=first)
    clock.now = int(first.timestamp[-1]) + HOUR
    grid_step(bot_id=bot.pk, adapter=adapter())
    bot.refresh_from_db()
    assert bot.status == GridBot.Status.RUNNING
    assert not bot.exit_reason
    # The newest candle is walked again next time (it may have been forming), from the close
    # before it.
    assert (bot.watch_ts, bot.watch_prev) == (int(first.timestamp[-1]), Decimal("99"))
    # It was still forming: its final form wicks to 84, through the stop.
    write_candles(series=series, candles=bars_from([(99, 100, 84, 96)], int(first.timestamp[-1])))
    grid_step(bot_id=bot.pk, adapter=adapter())
    bot.refresh_from_db()
    assert (bot.exit_reason, bot.exit_trigger_ts) == ("stop_loss", int(first.timestamp[-1]))
    assert bot.exit_trigger_price == Decimal("85")
