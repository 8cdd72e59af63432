"""simulate_portfolio: several symbols on one cash balance, hand-checked, plus input checks.

Runs through the compiled kernel and its pure-Python version like test_simulate.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from backtester.engine.candles import Candles
from backtester.engine.errors import ConfigError
from backtester.engine.signals import Signals
from backtester.engine.simulate import EXIT_REASONS, SimConfig, simulate, simulate_portfolio
from tests.engine.test_simulate import (  # noqa: F401 - the fixture and hook apply here too
    HOUR,
    NO_FEES,
    T0,
    bars,
    flat,
    kernel_mode,
    pytest_generate_tests,
    random_market,
    signals,
)


def named(c: Candles, symbol: str) -> Candles:
    return Candles(c.timestamp, c.open, c.high, c.low, c.close, c.volume, symbol=symbol)


def test_portfolio_shares_one_cash_balance() -> None:
    a = named(bars(flat(100, 100, 120, 120, 130)), "AAA")
    b = named(bars(flat(50, 50, 50, 60, 60)), "BBB")
    r = simulate_portfolio(
        [a, b], [signals(5, el=[0], xl=[3]), signals(5, el=[1])], SimConfig(**NO_FEES)
    )
    # Bar 1 open: A buys half of 10,000 at 100 -> 50 units, 5,000 cash left.
    # Bar 2 open: equity 5,000 + 50*120 = 11,000, B's half is 5,500 at 50 = 110 units, but only
    # 5,000 cash is left -> 100 units, cash 0.
    # Bar 4 open: A sells 50 at 130 -> cash 6,500.
    np.testing.assert_allclose(r.cash, [10_000, 5_000, 0, 0, 6_500], atol=1e-9)
    np.testing.assert_allclose(r.position, [[0, 0], [50, 0], [50, 100], [50, 100], [0, 100]])
    # Equity = cash + each position at its close.
    np.testing.assert_allclose(r.equity, [10_000, 10_000, 11_000, 12_000, 12_500], rtol=1e-12)
    (t,) = r.trades
    assert (t["symbol"], t["entry_index"], t["exit_index"]) == (0, 1, 4)
    assert t["pnl"] == pytest.approx(1_500.0, rel=1e-12)
    assert EXIT_REASONS[t["exit_reason"]] == "signal"
    (pos,) = r.open_positions
    assert (pos.symbol, pos.qty, pos.entry_price, pos.entry_index) == (1, 100.0, 50.0, 2)
    assert pos.unrealized_pnl == pytest.approx(1_000.0)
    assert r.symbols == ("AAA", "BBB")
    assert list(r.weights) == [0.5, 0.5]
    assert r.turnover == pytest.approx(5_000 + 5_000 + 6_500)
    assert r.halted_at == -1
    assert r.fees_paid == 0.0


def test_portfolio_weights_set_each_symbols_share_of_equity() -> None:
    a = bars(flat(100, 100, 100))
    b = bars(flat(50, 50, 50))
    cfg = SimConfig(**NO_FEES)
    r = simulate_portfolio([a, b], [signals(3, el=[0]), signals(3, el=[0])], cfg, [0.25, 0.75])
    # Both buy at bar 1's open: 2,500 of A (25 units) and 7,500 of B (150 units).
    np.testing.assert_allclose(r.position[-1], [25, 150])
    assert r.cash[-1] == pytest.approx(0.0, abs=1e-9)


def test_portfolio_drawdown_halt_cancels_another_symbols_resting_order() -> None:
    # Buy limits 10 % under each signal close, resting up to five bars.
    a = bars(flat(100, 90, 54, 54, 54))
    b = bars(
        [(50, 50, 50, 50), (50, 50, 50, 50), (50, 50, 48, 49), (40, 40, 40, 40), (40, 40, 40, 40)]
    )
    sigs = [signals(5, el=[0]), signals(5, el=[1])]
    base = SimConfig(entry_order="limit", entry_offset=0.1, entry_valid_bars=5, **NO_FEES)
    # A's limit (90) fills at bar 1's open: 5,000/90 units. B's limit (45, placed at bar 1's
    # close) is first reached by bar 3's open at 40.
    free = simulate_portfolio([a, b], sigs, base)
    assert free.halted_at == -1
    got = {p.symbol: (p.entry_index, p.entry_price) for p in free.open_positions}
    assert got == {0: (1, 90.0), 1: (3, 40.0)}
    # With a 10 % breaker: A at 54 leaves 5,000 + 5,000/90*54 = 8,000 at bar 2's close, 20 %
    # under the peak -> halted, and B's resting order is withdrawn before bar 3 can fill it.
    halted = simulate_portfolio([a, b], sigs, replace(base, max_drawdown_halt=0.1))
    assert halted.halted_at == 2
    assert halted.equity[2] == pytest.approx(8_000.0, rel=1e-12)
    assert [p.symbol for p in halted.open_positions] == [0]


def test_portfolio_of_one_symbol_matches_simulate() -> None:
    c, s = random_market(4, 1_500)
    for cfg in (
        SimConfig(stop_loss=0.02, take_profit=0.04, slippage_bps=3),
        SimConfig(trailing_atr_mult=3.0, atr_period=10, sizing="vol_target", size_value=0.4),
        SimConfig(entry_order="stop", entry_offset=0.002, entry_valid_bars=3, trailing_stop=0.03),
    ):
        one = simulate(c, s, cfg)
        port = simulate_portfolio([c], [s], cfg)
        np.testing.assert_array_equal(port.equity, one.equity)
        np.testing.assert_array_equal(port.trades, one.trades)
        assert port.position.shape == (1_500, 1)
        assert len(one.trades) > 10


def test_portfolio_refuses_misaligned_timestamps() -> None:
    a = bars(flat(100, 100, 100))
    shifted = bars(flat(100, 100, 100), timestamps=[T0, T0 + HOUR, T0 + 3 * HOUR])
    with pytest.raises(ConfigError, match="not aligned"):
        simulate_portfolio([a, shifted], [Signals.empty(3), Signals.empty(3)])
    shorter = bars(flat(100, 100))
    with pytest.raises(ConfigError, match="not aligned"):
        simulate_portfolio([a, shorter], [Signals.empty(3), Signals.empty(2)])


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0], "one value per symbol"),
        ([0.5, -0.1], "greater than 0"),
        ([0.5, float("nan")], "finite"),
        ([0.7, 0.7], "sum to at most 1"),
    ],
)
def test_portfolio_refuses_bad_weights(weights: list[float], message: str) -> None:
    a = bars(flat(100, 100, 100))
    with pytest.raises(ConfigError, match=message):
        simulate_portfolio([a, a], [Signals.empty(3), Signals.empty(3)], weights=weights)


def test_portfolio_refuses_missing_symbols_or_signals() -> None:
    a = bars(flat(100, 100, 100))
    with pytest.raises(ConfigError, match="at least one symbol"):
        simulate_portfolio([], [])
    with pytest.raises(ConfigError, match="signal sets"):
        simulate_portfolio([a, a], [Signals.empty(3)])
    with pytest.raises(ConfigError, match="symbol 1"):
        simulate_portfolio([a, a], [Signals.empty(3), Signals.empty(4)])
