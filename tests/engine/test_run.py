"""run_backtest, run_portfolio and result_to_dict end to end on series checked by hand."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pytest

from backtester.engine.candles import Candles
from backtester.engine.errors import EngineError, StrategyError
from backtester.engine.language import Param, StrategySpec
from backtester.engine.run import (
    BacktestResult,
    result_to_dict,
    run_backtest,
    run_portfolio,
)
from backtester.engine.simulate import SimConfig

HOUR_MS = 3_600_000
FEE = 0.001
LONG_ONLY = SimConfig(taker_fee=FEE, maker_fee=FEE, allow_short=False)

# Plain SMA cross with ranges wide enough for tiny windows (the preset starts at 5/20).
CROSS = StrategySpec(
    name="cross",
    entry_long="cross_above(sma(close, fast), sma(close, slow))",
    exit_long="cross_below(sma(close, fast), sma(close, slow))",
    params=(Param("fast", "int", 2, 1, 10), Param("slow", "int", 4, 2, 20)),
)

# The 12-bar series. Opens equal the previous close except bars 6 and 10, which gap up by 0.5
# so next-open and same-close fills give different prices.
#
#  bar  close  sma2   sma4
#   0    10    nan    nan
#   1    10    10     nan
#   2    10    10     nan
#   3    10    10     10
#   4    10    10     10
#   5    11    10.5   10.25   sma2 > sma4 and 10 <= 10 before: cross above -> entry signal
#   6    12    11.5   10.75   (open 11.5)
#   7    13    12.5   11.5
#   8    12    12.5   12.0
#   9    10    11     11.75   sma2 < sma4 and 12.5 >= 12 before: cross below -> exit signal
#  10     9    9.5    11.0    (open 10.5)
#  11     9    9      10
CLOSE = [10, 10, 10, 10, 10, 11, 12, 13, 12, 10, 9, 9]

# Next-open fills: buy at open[6] = 11.5 with all 10,000 and the 0.1 % fee fitted inside,
# qty = 10000 / (11.5 * 1.001); sell at open[10] = 10.5 paying 0.1 % of the proceeds.
QTY = 10_000 / (11.5 * 1.001)
FINAL_NEXT_OPEN = QTY * 10.5 * (1 - FEE)  # = 9112.1921...
# Close fills: buy at close[5] = 11, sell at close[9] = 10.
FINAL_AT_CLOSE = 10_000 / (11 * 1.001) * 10 * (1 - FEE)  # = 9072.7454...


def candles_from(close: Sequence[float], gaps: dict[int, float] | None = None) -> Candles:
    c = np.asarray(close, dtype=np.float64)
    o = np.r_[c[0], c[:-1]]
    for i, price in (gaps or {}).items():
        o[i] = price
    ts = 1_700_000_000_000 + HOUR_MS * np.arange(c.shape[0], dtype=np.int64)
    return Candles(
        ts, o, np.maximum(o, c) + 0.25, np.minimum(o, c) - 0.25, c, np.ones(c.shape[0]),
        symbol="TEST", timeframe="1h",
    )  # fmt: skip


@pytest.fixture(scope="module")
def twelve() -> Candles:
    return candles_from(CLOSE, {6: 11.5, 10: 10.5})


@pytest.fixture(scope="module")
def result(twelve: Candles) -> BacktestResult:
    return run_backtest(twelve, CROSS, {"fast": 2, "slow": 4}, LONG_ONLY)


def test_one_cross_fills_at_next_open_and_ends_at_hand_computed_equity(
    result: BacktestResult,
) -> None:
    assert np.flatnonzero(result.signals.entry_long).tolist() == [5]
    assert np.flatnonzero(result.signals.exit_long).tolist() == [9]
    trades = result.sim.trades
    assert trades.shape[0] == 1
    assert (int(trades["entry_index"][0]), int(trades["exit_index"][0])) == (6, 10)
    assert float(trades["entry_price"][0]) == pytest.approx(11.5)
    assert float(trades["exit_price"][0]) == pytest.approx(10.5)
    assert result.sim.equity[-1] == pytest.approx(FINAL_NEXT_OPEN, rel=1e-12)
    assert result.sim.open_position is None


def test_equity_is_marked_at_each_close_while_the_position_is_held(
    result: BacktestResult,
) -> None:
    expected = [10_000.0] * 6 + [QTY * 12, QTY * 13, QTY * 12, QTY * 10]
    expected += [FINAL_NEXT_OPEN, FINAL_NEXT_OPEN]
    np.testing.assert_allclose(result.sim.equity, expected, rtol=1e-12)


def test_metrics_match_the_hand_computed_return_and_drawdown(result: BacktestResult) -> None:
    m = result.metrics
    assert m["total_return"] == pytest.approx(FINAL_NEXT_OPEN / 10_000 - 1, rel=1e-12)
    # Peak at bar 7's close (qty * 13), trough at bar 9's close (qty * 10).
    assert m["max_drawdown"] == pytest.approx(10 / 13 - 1, rel=1e-12)
    assert m["trades"] == 1
    assert m["win_rate"] == 0.0
    # One hour bars: 24 * 365 bars a year.
    assert m["annualization_periods"] == pytest.approx(8_760)
    # Buying and holding the same symbol: close 9 over close... the first close 10.
    assert m["buy_hold_return"] == pytest.approx(9 / 10 - 1)


def test_result_records_params_strategy_and_engine_time(result: BacktestResult) -> None:
    assert result.params == {"fast": 2, "slow": 4}
    assert result.strategy == "cross"
    assert result.symbol == "TEST"
    assert 0.0 < result.engine_seconds < 60.0


def test_params_default_when_not_given(twelve: Candles) -> None:
    r = run_backtest(twelve, CROSS, None, LONG_ONLY)
    assert r.params == {"fast": 2, "slow": 4}
    assert r.sim.equity[-1] == pytest.approx(FINAL_NEXT_OPEN, rel=1e-12)


def test_fill_at_close_uses_the_signal_bars_close(twelve: Candles) -> None:
    cfg = SimConfig(taker_fee=FEE, maker_fee=FEE, allow_short=False, fill="close")
    r = run_backtest(twelve, CROSS, {"fast": 2, "slow": 4}, cfg)
    assert r.sim.equity[-1] == pytest.approx(FINAL_AT_CLOSE, rel=1e-12)


def test_position_open_at_the_end_is_marked_at_last_close_without_exit_fee() -> None:
    # The first eight bars: the entry fills at bar 6's open and nothing closes it.
    candles = candles_from(CLOSE[:8], {6: 11.5})
    r = run_backtest(candles, CROSS, {"fast": 2, "slow": 4}, LONG_ONLY)
    assert r.sim.trades.shape[0] == 0
    assert r.sim.equity[-1] == pytest.approx(QTY * 13, rel=1e-12)
    pos = r.sim.open_position
    assert pos is not None
    entry_fee = QTY * 11.5 * FEE
    assert pos.unrealized_pnl == pytest.approx(QTY * (13 - 11.5) - entry_fee, rel=1e-12)
    d = result_to_dict(r)
    assert d["trades"] == 0
    assert d["open_position"]["side"] == "long"
    assert d["open_position"]["qty"] == pytest.approx(QTY)
    assert d["open_position"]["entry_price"] == pytest.approx(11.5)
    assert d["open_position"]["mark_price"] == 13.0
    assert d["final_equity"] == pytest.approx(QTY * 13, rel=1e-12)


def test_result_to_dict_is_strict_json_with_nulls_for_undefined_metrics(
    result: BacktestResult,
) -> None:
    d = result_to_dict(result)
    text = json.dumps(d, allow_nan=False)  # raises on NaN or inf
    back = json.loads(text)
    for key in ("final_equity", "total_return", "trades", "sharpe", "max_drawdown"):
        assert key in back
    assert back["final_equity"] == pytest.approx(FINAL_NEXT_OPEN, rel=1e-12)
    assert back["total_return"] == pytest.approx(FINAL_NEXT_OPEN / 10_000 - 1, rel=1e-12)
    assert back["max_drawdown"] == pytest.approx(10 / 13 - 1, rel=1e-12)
    assert back["trades"] == 1
    assert back["open_position"] is None
    assert back["engine_seconds"] == result.engine_seconds
    # SQN needs two trades and there is no winning trade to average: both undefined.
    assert back["metrics"]["sqn"] is None
    assert back["metrics"]["avg_win"] is None
    assert set(back["metrics"]) == set(result.metrics)
    (trade,) = back["trade_list"]
    assert trade["side"] == "long"
    assert trade["exit_reason"] == "signal"
    assert trade["entry_at"] == "2023-11-15T04:13:20Z"  # bar 6: epoch 1.7e12 ms + 6 hours
    assert trade["pnl"] == pytest.approx(FINAL_NEXT_OPEN - 10_000, rel=1e-12)
    assert trade["fees"] == pytest.approx(QTY * 11.5 * FEE + QTY * 10.5 * FEE, rel=1e-12)


def test_result_to_dict_can_leave_the_trade_list_out(result: BacktestResult) -> None:
    assert "trade_list" not in result_to_dict(result, include_trades=False)


def test_benchmark_array_changes_only_benchmark_metrics(
    twelve: Candles, result: BacktestResult
) -> None:
    flat_then_up = np.linspace(100.0, 200.0, len(twelve))
    r = run_backtest(twelve, CROSS, {"fast": 2, "slow": 4}, LONG_ONLY, benchmark=flat_then_up)
    assert r.metrics["buy_hold_return"] == pytest.approx(1.0)
    assert r.metrics["sharpe"] == result.metrics["sharpe"]


def test_benchmark_of_the_wrong_length_is_refused(twelve: Candles) -> None:
    with pytest.raises(EngineError, match="benchmark has 3 values"):
        run_backtest(twelve, CROSS, None, LONG_ONLY, benchmark=[1.0, 2.0, 3.0])


def test_empty_candles_are_refused() -> None:
    e = np.array([])
    empty = Candles(np.array([], np.int64), e, e, e, e, e)
    with pytest.raises(EngineError, match="empty"):
        run_backtest(empty, CROSS)


def test_out_of_range_param_raises_strategy_error_naming_it(twelve: Candles) -> None:
    with pytest.raises(StrategyError) as info:
        run_backtest(twelve, CROSS, {"fast": 50})
    assert info.value.field == "fast"


def test_portfolio_of_one_symbol_at_full_weight_matches_the_hand_result(
    twelve: Candles,
) -> None:
    r = run_portfolio([twelve], CROSS, {"fast": 2, "slow": 4}, LONG_ONLY, weights=[1.0])
    assert r.sim.equity[-1] == pytest.approx(FINAL_NEXT_OPEN, rel=1e-12)
    d = result_to_dict(r)
    assert d["trades"] == 1
    assert d["trade_list"][0]["symbol"] == "TEST"
    assert d["open_position"] is None


def test_portfolio_trades_every_symbol_and_reports_open_positions() -> None:
    a = candles_from(CLOSE, {6: 11.5, 10: 10.5})
    b = candles_from([*CLOSE[:8], 14, 15, 16, 17], {6: 11.5})  # enters, never exits
    b = Candles(b.timestamp, b.open, b.high, b.low, b.close, b.volume, symbol="B")
    r = run_portfolio([a, b], CROSS, {"fast": 2, "slow": 4}, LONG_ONLY)
    d = result_to_dict(r)
    assert d["trades"] == 1
    assert [p["symbol"] for p in d["open_position"]] == ["B"]
    assert d["total_return"] == pytest.approx(r.sim.equity[-1] / 10_000 - 1, rel=1e-12)
    json.dumps(d, allow_nan=False)
    assert math.isfinite(d["final_equity"])
