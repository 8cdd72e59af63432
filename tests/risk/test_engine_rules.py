"""The backtest kernel obeys risk/rules.py: a run under a risk profile sizes, caps and halts
exactly as the rules computed by hand (and as ``check_order`` decides at the same points).

Every test runs through the compiled kernel and through its pure-Python functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pytest

import backtester.engine.simulate as sim
from backtester.engine.candles import Candles
from backtester.engine.signals import Signals
from backtester.engine.simulate import SimConfig, simulate, simulate_portfolio
from risk.rules import Limits, OpenPosition, Proposal, RiskState, check_order, engine_settings

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
NO_FEES: dict[str, Any] = {"taker_fee": 0.0, "maker_fee": 0.0, "fill": "close"}


@pytest.fixture(autouse=True, params=["numba", "python"])
def kernel_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "python":
        for name in sim.NJIT_FUNCTIONS:
            monkeypatch.setattr(sim, name, getattr(sim, name).py_func)
    return str(request.param)


def candles(rows: Sequence[tuple[float, float, float, float]], ts: Sequence[int]) -> Candles:
    a = np.asarray(rows, dtype=np.float64)
    return Candles(
        np.asarray(ts, dtype=np.int64), a[:, 0], a[:, 1], a[:, 2], a[:, 3], np.ones(len(rows))
    )


def flat(prices: Sequence[float], ts: Sequence[int] | None = None) -> Candles:
    times = ts if ts is not None else [T0 + i * HOUR for i in range(len(prices))]
    return candles([(p, p, p, p) for p in prices], times)


def signals(n: int, el: Iterable[int] = (), xl: Iterable[int] = ()) -> Signals:
    out = Signals.empty(n)
    out.entry_long[list(el)] = True
    out.exit_long[list(xl)] = True
    return out


def test_a_backtest_under_the_default_profile_sizes_and_halts_as_computed_by_hand():
    profile = Limits()  # 2 % risk, 25 % position cap, 20 % drawdown, 5 % daily loss, 6 % heat
    cfg = SimConfig(stop_loss=0.05, **NO_FEES, **engine_settings(profile, bar_ms=HOUR))
    ts = [T0, T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR, T0 + DAY, T0 + DAY + HOUR, T0 + 2 * DAY]
    rows = [
        (100, 100, 100, 100),  # 0: entry
        (100, 100, 94, 96),  # 1: stop 95 hit inside the bar; entry at 96
        (70, 70, 70, 70),  # 2: gaps through the stop 91.2; daily breaker trips; entry refused
        (70, 70, 70, 70),  # 3: same UTC day: entry refused
        (70, 70, 70, 70),  # 4: next day: entry
        (30, 30, 30, 30),  # 5: gaps through the stop 66.5; drawdown breaker halts
        (30, 30, 30, 30),  # 6: halted for good
    ]
    r = simulate(candles(rows, ts), signals(7, el=[0, 1, 2, 3, 4, 5, 6]), cfg)

    # Bar 0: risk sizing 10,000*0.02/(100*0.05) = 40 units, capped at 25 % of equity:
    # 2,500/100 = 25. Heat 25*5 = 125 is under 6 % (600): no cap.
    q0 = 25.0
    eq1 = 10_000 - q0 * 5  # stopped at 95: 9,875
    # Bar 1: 9,875*0.02/(96*0.05) = 41.1 units; cap 9,875*0.25/96 = 25.716...
    q1 = eq1 * 0.25 / 96
    eq2 = eq1 - q1 * (96 - 70)  # gap: filled at the open 70 -> 9,206.38 (-7.9 % today)
    # Bar 4: new UTC day, opening equity eq2; 2 % risk -> 52.6 units; cap eq2*0.25/70.
    q4 = eq2 * 0.25 / 70
    eq5 = eq2 - q4 * (70 - 30)  # drawdown 1 - eq5/10,000 = 21.1 % >= 20 %: halted
    assert [t["entry_index"] for t in r.trades] == [0, 1, 4]
    assert [t["qty"] for t in r.trades] == pytest.approx([q0, q1, q4], rel=1e-12)
    assert [t["exit_price"] for t in r.trades] == pytest.approx([95.0, 70.0, 30.0])
    assert r.equity[[1, 2, 5]] == pytest.approx([eq1, eq2, eq5], rel=1e-12)
    assert r.halted_at == 5
    assert r.open_position is None

    # check_order decides the same at the same points.
    def order(eq: float, price: float, **kw: Any) -> object:
        s = RiskState(now_ms=T0, equity=eq, limits=profile, peak_equity=10_000.0, **kw)
        return check_order(s, Proposal("X", 1, price, stop=price * 0.95, fee_rate=0.0))

    d0 = order(10_000.0, 100.0, day_start_equity=10_000.0)
    d1 = order(eq1, 96.0, day_start_equity=10_000.0)
    assert (d0.status, d0.qty) == ("reduced", pytest.approx(q0, rel=1e-12))
    assert d1.qty == pytest.approx(q1, rel=1e-12)
    assert order(eq2, 70.0, day_start_equity=10_000.0).code == "daily_loss"
    assert order(eq2, 70.0, day_start_equity=eq2).qty == pytest.approx(q4, rel=1e-12)
    assert order(eq5, 30.0, day_start_equity=eq5).code == "drawdown"


def test_portfolio_heat_and_max_positions_cap_entries_in_list_order():
    # Weights 0.4/0.3/0.3, all-in fraction sizing, 10 % stops, heat 5 %, two positions max.
    cfg = SimConfig(stop_loss=0.1, max_heat=0.05, max_open_positions=2, **NO_FEES)
    a, b, c = flat([100.0] * 4), flat([50.0] * 4), flat([20.0] * 4)
    sigs = [signals(4, el=[0]), signals(4, el=[0]), signals(4, el=[0])]
    r = simulate_portfolio([a, b, c], sigs, cfg, weights=[0.4, 0.3, 0.3])
    pos = r.position[0]
    # A: 4,000/100 = 40 units; heat 40*10 = 400 (4 %).
    # B: 3,000/50 = 60 units asked; heat room 500 - 400 = 100 at 5 a unit -> 20 units.
    # C: two positions already open -> refused.
    assert pos == pytest.approx([40.0, 20.0, 0.0])
    # The same figures from check_order with the same limits.
    lim = Limits(
        sizing="fraction", risk_per_trade=1.0, max_heat=0.05, max_open_positions=2,
        max_position_fraction=1.0, max_leverage=0.0, daily_loss_limit=0.0, drawdown_limit=0.0,
        max_orders_per_minute=0,
    )  # fmt: skip
    held = (OpenPosition("A", 40.0, 100.0, stop=90.0),)
    st = RiskState(now_ms=T0, equity=10_000.0, limits=lim, positions=held)
    d = check_order(st, Proposal("B", 1, 50.0, qty=60.0, stop=45.0))
    assert (d.status, d.qty, d.reasons[0].startswith("Portfolio heat")) == (
        "reduced",
        pytest.approx(20.0),
        True,
    )
    st2 = RiskState(
        now_ms=T0,
        equity=10_000.0,
        limits=lim,
        positions=(*held, OpenPosition("B", 20.0, 50.0, stop=45.0)),
    )
    assert check_order(st2, Proposal("C", 1, 20.0, qty=1.0)).code == "max_positions"


def test_cooldown_bars_block_entries_right_after_an_exit():
    cfg = SimConfig(cooldown_bars=2, **NO_FEES)
    r = simulate(flat([100.0] * 7), signals(7, el=[0, 3, 4, 5], xl=[2]), cfg)
    # Exit at bar 2; bars 3 and 4 cool down; the bar-5 signal opens.
    assert [t["entry_index"] for t in r.trades] == [0]
    assert r.open_position is not None
    assert r.open_position.entry_index == 5


def test_correlation_filter_refuses_a_position_moving_with_an_open_one():
    rng = np.random.default_rng(4)
    path = 100 * np.cumprod(1 + rng.normal(0, 0.01, 30))
    a = flat(list(path))
    twin = flat(list(path * 0.5))  # correlation 1
    other = flat(list(100 * np.cumprod(1 + rng.normal(0, 0.01, 30))))
    sigs = [signals(30, el=[25]), signals(30, el=[26]), signals(30, el=[26])]
    cfg = SimConfig(correlation_threshold=0.8, correlation_lookback=10, **NO_FEES)
    r = simulate_portfolio([a, twin, other], sigs, cfg, weights=[0.3, 0.3, 0.3])
    ret = (
        np.diff(np.stack([path, path * 0.5, other.close]))
        / np.stack([path, path * 0.5, other.close])[:, :-1]
    )
    corr_other = np.corrcoef(ret[0, 16:26], ret[2, 16:26])[0, 1]
    assert corr_other < 0.8  # the independent series passes the filter
    assert r.position[-1][0] > 0.0
    assert r.position[-1][1] == 0.0  # the twin is refused
    assert r.position[-1][2] > 0.0
    off = simulate_portfolio([a, twin, other], sigs, SimConfig(**NO_FEES), weights=[0.3, 0.3, 0.3])
    assert off.position[-1][1] > 0.0  # without the filter the twin opens
