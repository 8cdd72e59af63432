"""Live grid on the paper exchange against the engine's grid simulation on the same candles.

The replay walks each demo candle along the simulation's intrabar path (tests/grid/helpers.py),
so both see the same price path. Expected: the same fills per level in the same order at the
same lines, the same final level states, and grid profit and unrealised P&L within a bound
computed from the two stated convention differences:

* quantities: the live levels buy the engine's per-cell quantity rounded down to the market's
  lot (0.001 SOL), so each round trip's P&L can be smaller by up to one lot x the cell's width;
* the start: the cells whose line is at or above the first open are bought with a marketable
  limit, which the paper exchange fills at once at the open moved by its slippage (5 bps,
  capped at the line) with the taker fee, where the simulation assumes the open and the maker
  fee (both 0.1 % here).

Fees are rounded up to 8 decimals on the paper exchange (a few 1e-8 per fill).
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import numpy as np
import pytest

from backtester.engine.gridbot import CELL_STATES, GridSettings, simulate_grid
from backtester.models import GridBot, GridLevel
from backtester.services.grid_bots import grid_bot_create, grid_unrealized
from exchanges.paper_models import PaperBalance, PaperFill
from tests.bots.helpers import RULES, demo_candles
from tests.grid.helpers import SYMBOL, GridWorld, dec

pytestmark = pytest.mark.django_db(transaction=True)

LIVE_STATE = {
    "buy_resting": GridLevel.State.BUY_RESTING,
    "sell_resting": GridLevel.State.SELL_RESTING,
}


@pytest.mark.parametrize("spacing", ["arithmetic", "geometric"])
def test_paper_grid_matches_the_simulation_on_the_same_candles(spacing: str) -> None:
    candles = demo_candles(days=6)
    w = GridWorld()
    bot = grid_bot_create(
        user=w.user, account=w.account, symbol=SYMBOL, lower="88", upper="104", levels=9,
        investment="800", spacing=spacing, adapter=w.adapter(),
    )  # fmt: skip
    w.replay(bot.pk, candles)

    sim = simulate_grid(
        candles,
        GridSettings(
            # (type: ignore below) a plain str from the parametrized case
            lower=88.0, upper=104.0, levels=9, investment=800.0, spacing=spacing,  # type: ignore[arg-type]
            maker_fee=float(RULES.maker_fee), taker_fee=float(RULES.taker_fee),
            tick=float(RULES.price_tick), min_notional=float(RULES.min_notional),
        ),
    )  # fmt: skip
    bot.refresh_from_db()
    assert bot.status == GridBot.Status.RUNNING, bot.status_reason
    levels = list(bot.grid_levels.order_by("index"))
    assert [float(lv.price) for lv in levels] == pytest.approx(list(sim.lines[:-1]), abs=1e-8)

    # Every fill, per level, in order: (side, price).
    live: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for f in PaperFill.objects.filter(account=w.account).select_related("order").order_by("pk"):
        index = int(f.order.client_order_id.split("-")[1])
        live[index].append((1 if f.side == "buy" else -1, float(f.price)))
    expected: dict[int, list[tuple[int, float]]] = defaultdict(list)
    starts = set()
    for f in sim.fills:
        expected[int(f["cell"])].append((int(f["side"]), float(f["price"])))
        if int(f["kind"]) == 0:
            starts.add(int(f["cell"]))
    assert sim.round_trips >= 8, "the candles should make the grid trade"
    assert sorted(live) == sorted(expected)
    open0 = float(candles.open[0])
    for cell, fills in expected.items():
        got = live[cell]
        assert [s for s, _ in got] == [s for s, _ in fills], (
            cell,
            [(lv.state, lv.note) for lv in levels],
        )
        for k, ((_, want), (_, have)) in enumerate(zip(fills, got, strict=True)):
            if k == 0 and cell in starts:  # the start: the open plus the paper's slippage
                assert open0 <= have <= min(open0 * 1.0005 + 1e-8, float(levels[cell].price))
            else:
                assert have == pytest.approx(want, abs=1e-8), f"level {cell} fill {k}"

    # The levels' counters and final states.
    sim_buys = np.bincount(sim.fills["cell"][sim.fills["side"] > 0], minlength=len(levels))
    assert [lv.buys for lv in levels] == list(sim_buys)
    assert [lv.sells for lv in levels] == list(sim.cell_round_trips)
    assert [lv.state for lv in levels] == [LIVE_STATE[CELL_STATES[s]] for s in sim.cell_state]

    # Grid profit and unrealised P&L within the bound of the two convention differences.
    width = float(max(lv.sell_price - lv.price for lv in levels))
    lot = float(RULES.amount_step)
    max_q = float(max(sim.qty))
    start_bound = len(starts) * max_q * open0 * 0.0006
    trips_bound = sim.round_trips * lot * (width + 0.01)
    tolerance = start_bound + trips_bound + 1e-6 * len(sim.fills)
    assert float(bot.grid_profit) == pytest.approx(sim.grid_profit, abs=tolerance)
    holding = sum(1 for s in sim.cell_state if s == 1)
    last = float(candles.close[-1])
    unrealized = float(grid_unrealized(bot, dec(last)))
    assert unrealized == pytest.approx(
        sim.unrealized_pnl, abs=start_bound + holding * lot * last + 1e-6 * len(sim.fills)
    )
    # The account holds exactly what the levels say they hold.
    sol = PaperBalance.objects.get(account=w.account, asset="SOL")
    assert sol.free + sol.used == sum((lv.held for lv in levels), Decimal(0))
    print(
        f"\n{spacing}: live grid profit {bot.grid_profit:.4f} vs simulated "
        f"{sim.grid_profit:.4f} (bound {tolerance:.4f}); unrealised {unrealized:.4f} vs "
        f"{sim.unrealized_pnl:.4f}; {sim.round_trips} round trips, {len(sim.fills)} fills"
    )
