"""Specification of backtester.engine.metrics.

Metrics that empyrical (or scipy) has are checked against it on deterministic random curves;
the others against small cases worked out by hand in the comments.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

import empyrical
import numpy as np
import pytest
import scipy.stats

import backtester.engine.metrics as metrics_module
from backtester.engine.errors import EngineError
from backtester.engine.metrics import METRICS, MetricDef, compute_metrics

HOUR_MS = 3_600_000
HOURS_PER_YEAR = 8760.0
REL = 1e-9


def run(
    equity: Any,
    *,
    initial_cash: float = 100.0,
    timestamps: Any = None,
    pnl: Any = (),
    rets: Any = None,
    held: Any = None,
    benchmark: Any = None,
    bars_per_year: float = HOURS_PER_YEAR,
    fees_paid: float = 0.0,
    turnover: float = 0.0,
    exposure_bars: Any = None,
) -> dict[str, float]:
    """compute_metrics with hourly bars and neutral defaults for whatever a test leaves out."""
    eq = np.asarray(equity, dtype=np.float64)
    pnl_arr = np.asarray(pnl, dtype=np.float64)
    return compute_metrics(
        equity=eq,
        timestamps=np.arange(eq.size, dtype=np.int64) * HOUR_MS
        if timestamps is None
        else np.asarray(timestamps, dtype=np.int64),
        trade_pnl=pnl_arr,
        trade_returns=pnl_arr / 1000.0 if rets is None else np.asarray(rets, dtype=np.float64),
        trade_bars_held=np.ones(pnl_arr.size) if held is None else np.asarray(held),
        fees_paid=fees_paid,
        turnover=turnover,
        initial_cash=initial_cash,
        benchmark_close=None if benchmark is None else np.asarray(benchmark, dtype=np.float64),
        bars_per_year=bars_per_year,
        exposure_bars=exposure_bars,
    )


def account_returns(initial_cash: float, equity: np.ndarray) -> np.ndarray:
    """The documented per-bar return series: simple returns of (initial_cash, *equity)."""
    points = np.concatenate(([initial_cash], equity))
    return np.diff(points) / points[:-1]


def random_case(seed: int, drift: float) -> tuple[np.ndarray, np.ndarray, float]:
    """A 3,000-bar equity curve that partly follows a random benchmark, and that benchmark."""
    rng = np.random.default_rng(seed)
    bench_ret = rng.normal(0.0002, 0.01, 3000)
    bench_ret[0] = 0.0
    close = 25_000.0 * np.cumprod(1.0 + bench_ret)
    strat_ret = 0.6 * bench_ret + rng.normal(drift, 0.004, 3000)
    strat_ret[0] = -0.001  # an entry fee on the first bar, so the first return is not zero
    equity = 10_000.0 * np.cumprod(1.0 + strat_ret)
    return equity, close, 10_000.0


# --------------------------------------------------------------------------- the catalogue


def test_catalogue_has_at_least_36_metrics_each_defined_once() -> None:
    keys = [m.key for m in METRICS]
    assert len(keys) >= 36
    assert len(set(keys)) == len(keys)
    required = {
        "total_return", "cagr", "annual_volatility", "sharpe", "sortino", "calmar", "omega",
        "max_drawdown", "max_drawdown_duration", "avg_drawdown", "longest_recovery", "var_95",
        "cvar_95", "skew", "kurtosis", "tail_ratio", "stability", "exposure", "trades",
        "win_rate", "profit_factor", "expectancy", "avg_win", "avg_loss", "payoff_ratio",
        "largest_win", "largest_loss", "avg_bars_held", "max_consecutive_wins",
        "max_consecutive_losses", "sqn", "kelly", "fees_paid", "turnover", "buy_hold_return",
        "alpha", "beta", "information_ratio", "benchmark_correlation", "annualization_periods",
    }  # fmt: skip
    assert required <= set(keys)


def test_catalogue_groups_and_formats_come_from_the_allowed_sets() -> None:
    groups = set(typing.get_args(metrics_module.Group))
    fmts = set(typing.get_args(metrics_module.Fmt))
    assert groups == {
        "returns",
        "risk",
        "risk_adjusted",
        "drawdown",
        "trades",
        "benchmark",
        "costs",
    }
    assert fmts == {"pct", "ratio", "number", "money", "bars", "duration"}
    for m in METRICS:
        assert m.group in groups, m.key
        assert m.fmt in fmts, m.key
        assert m.definition.endswith("."), m.key
    assert {m.group for m in METRICS} == groups


def test_metric_definitions_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        METRICS[0].key = "other"  # type: ignore[misc]  # assigning to a frozen dataclass on purpose
    assert isinstance(METRICS[0], MetricDef)


def test_docstrings_list_every_metric_with_its_definition() -> None:
    for doc in (metrics_module.__doc__, compute_metrics.__doc__):
        assert doc is not None
        for m in METRICS:
            assert f"``{m.key}`` [{m.group}, {m.fmt}]: {m.definition}" in doc


def test_result_has_the_catalogue_keys_in_order_as_plain_floats() -> None:
    equity, close, cash = random_case(1, 0.0001)
    result = run(equity, initial_cash=cash, benchmark=close, pnl=[1.0, -2.0], held=[3, 4])
    assert list(result) == [m.key for m in METRICS]
    assert all(type(v) is float for v in result.values())


# --------------------------------------------------------------------------- empyrical oracle


def _empyrical_expectations(
    equity: np.ndarray, close: np.ndarray, cash: float, ann: float
) -> dict[str, float]:
    r = account_returns(cash, equity)
    # Benchmark statistics pair strategy returns on bars 1.. with close-to-close returns.
    strat, bench = r[1:], np.diff(close) / close[:-1]
    alpha, beta = empyrical.alpha_beta_aligned(strat, bench, annualization=ann)
    return {
        "total_return": empyrical.cum_returns_final(r),
        "cagr": empyrical.annual_return(r, annualization=ann),
        "annual_volatility": empyrical.annual_volatility(r, annualization=ann),
        "downside_risk": empyrical.downside_risk(r, annualization=ann),
        "sharpe": empyrical.sharpe_ratio(r, annualization=ann),
        "sortino": empyrical.sortino_ratio(r, annualization=ann),
        "calmar": empyrical.calmar_ratio(r, annualization=ann),
        "omega": empyrical.omega_ratio(r, annualization=ann),
        "max_drawdown": empyrical.max_drawdown(r),
        "var_95": empyrical.value_at_risk(r),
        "cvar_95": empyrical.conditional_value_at_risk(r),
        "tail_ratio": empyrical.tail_ratio(r),
        "stability": empyrical.stability_of_timeseries(r),
        "skew": scipy.stats.skew(r),
        "kurtosis": scipy.stats.kurtosis(r),
        "alpha": alpha,
        "beta": beta,
        "information_ratio": empyrical.excess_sharpe(strat, bench) * math.sqrt(ann),
        "benchmark_correlation": np.corrcoef(strat, bench)[0, 1],
        "buy_hold_return": close[-1] / close[0] - 1.0,
    }


@pytest.mark.parametrize(
    ("seed", "drift"),
    [(7, 0.0002), (8, -0.0003)],
    ids=["rising-curve", "falling-curve"],
)
def test_metrics_that_empyrical_has_match_it_to_1e_9(seed: int, drift: float) -> None:
    equity, close, cash = random_case(seed, drift)
    result = run(equity, initial_cash=cash, benchmark=close)
    expected = _empyrical_expectations(equity, close, cash, HOURS_PER_YEAR)
    for key, value in expected.items():
        assert math.isfinite(value), key  # the oracle case must exercise the formula
        assert result[key] == pytest.approx(float(value), rel=REL), key


def test_empyrical_match_holds_for_daily_bars_and_a_short_curve() -> None:
    equity, close, cash = random_case(3, 0.001)
    equity, close = equity[:40], close[:40]
    result = run(equity, initial_cash=cash, benchmark=close, bars_per_year=365.0)
    expected = _empyrical_expectations(equity, close, cash, 365.0)
    for key, value in expected.items():
        assert result[key] == pytest.approx(float(value), rel=REL), key


@pytest.mark.parametrize("bars", [1, 2, 3, 5, 20, 21, 22, 101, 1000])
def test_value_at_risk_cvar_and_tail_ratio_match_empyrical_at_every_size(bars: int) -> None:
    # Sizes around 21 move the 5th and 95th percentiles between the same or different values.
    rng = np.random.default_rng(bars)
    equity = 100.0 * np.cumprod(1.0 + rng.normal(0.0, 0.02, bars))
    r = account_returns(100.0, equity)
    result = run(equity)
    assert result["var_95"] == pytest.approx(empyrical.value_at_risk(r), rel=REL)
    assert result["cvar_95"] == pytest.approx(empyrical.conditional_value_at_risk(r), rel=REL)
    assert result["tail_ratio"] == pytest.approx(empyrical.tail_ratio(r), rel=REL)


def test_returns_count_the_first_bar_against_the_initial_cash() -> None:
    # Initial cash 100, equity 99 after the first bar's fee, then 108.9: returns -1 % and +10 %,
    # so the total is 0.99 * 1.1 - 1 = 8.9 % and the CAGR spans two bars.
    result = run([99.0, 108.9], bars_per_year=2.0)
    assert result["total_return"] == pytest.approx(0.089, rel=REL)
    assert result["cagr"] == pytest.approx(0.089, rel=REL)  # two bars of a two-bar year
    assert result["max_drawdown"] == pytest.approx(-0.01, rel=REL)


def test_a_curve_that_doubles_every_bar_has_infinite_sharpe_as_empyrical() -> None:
    # every return is exactly 1.0, so the standard deviation is exactly zero (a curve like
    # 1.01 ** k has returns that differ in the last bit and a huge but finite Sharpe instead)
    equity = 100.0 * 2.0 ** np.arange(1, 21)
    r = account_returns(100.0, equity)
    result = run(equity)
    assert result["sharpe"] == math.inf == empyrical.sharpe_ratio(r, annualization=HOURS_PER_YEAR)
    assert result["sortino"] == math.inf == empyrical.sortino_ratio(r, annualization=HOURS_PER_YEAR)
    assert math.isnan(result["omega"])  # no losing bar: empyrical's omega is NaN
    assert math.isnan(empyrical.omega_ratio(r))
    assert math.isnan(result["calmar"])  # no drawdown
    assert result["stability"] == pytest.approx(empyrical.stability_of_timeseries(r), rel=REL)
    assert math.isnan(result["skew"])


# --------------------------------------------------------------------------- drawdowns by hand


def test_drawdown_duration_average_and_recovery_on_a_ten_bar_curve() -> None:
    # initial 100, equity [100, 110, 99, 88, 104.5, 110, 121, 115, 130, 117]
    # curve points 0..10 = 100 | 100 110  99  88 104.5 110 121 115    130 117
    # running peak         100 | 100 110 110 110 110   110 121 121    130 130
    # drawdown               0 |   0   0 -.1 -.2 -.05    0   0 -6/121   0 -.1
    # episode A: points 3-5, peak at 2, back to 110 at 6 -> 4 bars; trough 4 -> 2 bars recovery
    # episode B: point 8, peak 7, back at 9 -> 2 bars; trough 8 -> 1 bar recovery
    # episode C: point 10, peak 9, still open at the end -> 1 bar, not recovered
    equity = [100, 110, 99, 88, 104.5, 110, 121, 115, 130, 117]
    # hourly bars with a 12-hour gap before the last: episode C spans bar 8's close (9 h) to
    # bar 9's close (20 h + 1 h), 12 h, longer in time than A's 4 h (2 h to 6 h).
    hours = [0, 1, 2, 3, 4, 5, 6, 7, 8, 20]
    result = run(equity, timestamps=np.array(hours) * HOUR_MS)
    assert result["max_drawdown"] == pytest.approx(-0.2, rel=REL)
    assert result["max_drawdown_duration"] == 4.0
    assert result["max_drawdown_time"] == 12 * HOUR_MS
    assert result["avg_drawdown"] == pytest.approx((-0.2 - 6 / 121 - 0.1) / 3, rel=REL)
    assert result["longest_recovery"] == 2.0
    # first bar's open (0 h) to the last bar's close (21 h)
    assert result["backtest_duration"] == 21 * HOUR_MS


def _loop_drawdowns(curve: list[float], times: list[float]) -> dict[str, float]:
    """Plain-loop oracle: walk the points keeping the last peak, close an episode on recovery."""
    durations, spans, depths, recoveries = [0], [0.0], [], [0]
    peak, trough, depth = 0, -1, 0.0
    for i in range(1, len(curve)):
        if curve[i] >= curve[peak]:
            if trough >= 0:  # the episode that started after `peak` ends here
                durations.append(i - peak)
                spans.append(times[i] - times[peak])
                depths.append(depth)
                recoveries.append(i - trough)
                trough = -1
            peak = i
        else:
            dd = curve[i] / curve[peak] - 1.0
            if trough < 0 or dd < depth:
                trough, depth = i, dd
    last = len(curve) - 1
    if trough >= 0:
        durations.append(last - peak)
        spans.append(times[last] - times[peak])
        depths.append(depth)
    return {
        "max_drawdown_duration": float(max(durations)),
        "max_drawdown_time": max(spans),
        "avg_drawdown": sum(depths) / len(depths) if depths else 0.0,
        "longest_recovery": float(max(recoveries)),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drawdown_episodes_match_a_plain_loop_on_a_whole_number_walk(seed: int) -> None:
    # Whole-number steps make exact recoveries to the peak and repeated lows common.
    rng = np.random.default_rng(seed)
    equity = 1000.0 + np.cumsum(rng.integers(-3, 4, 2000)).astype(np.float64)
    ts = np.cumsum(rng.integers(1, 4, 2000)) * HOUR_MS  # irregular gaps
    curve = [1000.0, *equity.tolist()]
    times = [float(ts[0])] + [float(t + HOUR_MS) for t in ts]
    expected = _loop_drawdowns(curve, times)
    result = run(equity, initial_cash=1000.0, timestamps=ts)
    assert expected["max_drawdown_duration"] > 10  # the walk has real drawdowns to compare
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=REL), key


def test_a_curve_that_never_recovers_counts_its_drawdown_to_the_last_bar() -> None:
    # curve 100 | 100 90 80 85 70: the peak is point 1 (the first bar's close, equal to the
    # initial cash), under water from point 2 to the end (point 5) -> 4 bars, depth -30 %.
    result = run([100, 90, 80, 85, 70])
    assert result["max_drawdown"] == pytest.approx(-0.3, rel=REL)
    assert result["avg_drawdown"] == pytest.approx(-0.3, rel=REL)
    assert result["max_drawdown_duration"] == 4.0
    assert result["max_drawdown_time"] == 4 * HOUR_MS
    assert result["longest_recovery"] == 0.0
    assert result["total_return"] == pytest.approx(-0.3, rel=REL)


def test_a_drawdown_in_the_first_bar_starts_at_the_initial_cash() -> None:
    # curve 100 | 95 100: peak is the initial cash (point 0, bar 0's open), recovered at point 2
    # -> 2 bars; trough at point 1 -> 1 bar of recovery; in time 0 h to bar 1's close, 2 h.
    result = run([95, 100])
    assert result["max_drawdown_duration"] == 2.0
    assert result["longest_recovery"] == 1.0
    assert result["max_drawdown_time"] == 2 * HOUR_MS


# --------------------------------------------------------------------------- trades by hand


def test_trade_statistics_of_five_trades() -> None:
    # pnl [100, 200, 75, -50, -25], returns pnl / 1000, held [3, 5, 2, 4, 6]
    # wins 100 200 75 (3 of 5, win rate 0.6), losses -50 -25
    # profit factor 375 / 75 = 5; expectancy 300 / 5 = 60; avg win 125, avg loss -37.5
    # payoff 125 / 37.5 = 10/3; Kelly 0.6 - 0.4 / (10/3) = 0.48
    # streaks: W W W L L -> 3 wins, 2 losses; average bars held 20 / 5 = 4
    # SQN: returns .1 .2 .075 -.05 -.025, mean .06; deviations .04 .14 .015 -.11 -.085,
    # squares sum to .04075, sample variance .04075 / 4 -> sqrt(5) * .06 / sqrt(.0101875)
    result = run(
        np.full(10, 100.0), pnl=[100, 200, 75, -50, -25], held=[3, 5, 2, 4, 6], exposure_bars=8
    )
    assert result["trades"] == 5.0
    assert result["win_rate"] == pytest.approx(0.6, rel=REL)
    assert result["profit_factor"] == pytest.approx(5.0, rel=REL)
    assert result["expectancy"] == pytest.approx(60.0, rel=REL)
    assert result["avg_trade_return"] == pytest.approx(0.06, rel=REL)
    assert result["avg_win"] == pytest.approx(125.0, rel=REL)
    assert result["avg_loss"] == pytest.approx(-37.5, rel=REL)
    assert result["payoff_ratio"] == pytest.approx(10 / 3, rel=REL)
    assert result["largest_win"] == 200.0
    assert result["largest_loss"] == -50.0
    assert result["avg_bars_held"] == 4.0
    assert result["max_consecutive_wins"] == 3.0
    assert result["max_consecutive_losses"] == 2.0
    assert result["sqn"] == pytest.approx(math.sqrt(5) * 0.06 / math.sqrt(0.0101875), rel=REL)
    assert result["kelly"] == pytest.approx(0.48, rel=REL)
    assert result["exposure"] == pytest.approx(0.8, rel=REL)  # 8 of 10 bars


def test_a_break_even_trade_is_no_win_and_ends_a_streak() -> None:
    # W 0 W W L 0 L: win rate 3/7; longest win run 2 (the 0 splits them), longest loss run 1
    result = run(np.full(10, 100.0), pnl=[5, 0, 5, 5, -3, 0, -3])
    assert result["win_rate"] == pytest.approx(3 / 7, rel=REL)
    assert result["max_consecutive_wins"] == 2.0
    assert result["max_consecutive_losses"] == 1.0
    assert result["profit_factor"] == pytest.approx(15 / 6, rel=REL)


def test_all_winning_trades_give_infinite_profit_factor_and_kelly_of_one() -> None:
    result = run(np.full(10, 100.0), pnl=[10, 20, 30])
    assert result["win_rate"] == 1.0
    assert result["profit_factor"] == math.inf
    assert result["payoff_ratio"] == math.inf
    assert result["kelly"] == 1.0
    assert math.isnan(result["avg_loss"])
    assert math.isnan(result["largest_loss"])
    assert result["max_consecutive_wins"] == 3.0
    assert result["max_consecutive_losses"] == 0.0


def test_all_losing_trades_give_zero_profit_factor_and_undefined_payoff() -> None:
    result = run(np.full(10, 100.0), pnl=[-10, -20])
    assert result["win_rate"] == 0.0
    assert result["profit_factor"] == 0.0
    assert math.isnan(result["payoff_ratio"])
    assert math.isnan(result["kelly"])
    assert math.isnan(result["largest_win"])
    assert result["max_consecutive_losses"] == 2.0


def test_identical_trade_returns_make_sqn_infinite_like_a_zero_volatility_sharpe() -> None:
    result = run(np.full(10, 100.0), pnl=[10, 10, 10])
    assert result["sqn"] == math.inf


def test_no_trades_leave_trade_statistics_undefined_without_error() -> None:
    result = run(np.full(10, 100.0))
    assert result["trades"] == 0.0
    for key in (
        "win_rate", "profit_factor", "expectancy", "avg_trade_return", "avg_win", "avg_loss",
        "payoff_ratio", "largest_win", "largest_loss", "avg_bars_held", "sqn", "kelly",
    ):  # fmt: skip
        assert math.isnan(result[key]), key
    assert result["max_consecutive_wins"] == 0.0
    assert result["max_consecutive_losses"] == 0.0
    assert result["exposure"] == 0.0


def test_a_single_trade_has_no_sqn() -> None:
    assert math.isnan(run(np.full(3, 100.0), pnl=[4.0])["sqn"])


# --------------------------------------------------------------------------- edge cases


@pytest.mark.filterwarnings("error")
def test_flat_equity_gives_nan_ratios_not_a_crash() -> None:
    equity = np.full(50, 10_000.0)
    result = run(equity, initial_cash=10_000.0, benchmark=np.linspace(100.0, 150.0, 50))
    r = account_returns(10_000.0, equity)
    for key in ("sharpe", "sortino", "calmar", "omega", "skew", "kurtosis", "tail_ratio"):
        assert math.isnan(result[key]), key
    # empyrical agrees on the zero-dispersion cases
    assert math.isnan(empyrical.sharpe_ratio(r, annualization=HOURS_PER_YEAR))
    assert math.isnan(result["stability"])
    assert math.isnan(empyrical.stability_of_timeseries(r))
    assert result["annual_volatility"] == 0.0
    assert result["total_return"] == result["cagr"] == result["max_drawdown"] == 0.0
    assert result["var_95"] == result["cvar_95"] == 0.0
    assert result["max_drawdown_duration"] == result["longest_recovery"] == 0.0
    assert result["avg_drawdown"] == 0.0
    # a flat strategy against a moving benchmark: beta 0, alpha 0, no correlation
    assert result["beta"] == 0.0
    assert result["alpha"] == 0.0
    assert math.isnan(result["benchmark_correlation"])
    assert result["buy_hold_return"] == pytest.approx(0.5, rel=REL)


@pytest.mark.filterwarnings("error")
def test_a_flat_benchmark_leaves_beta_alpha_and_correlation_undefined() -> None:
    equity, _, cash = random_case(5, 0.0)
    result = run(equity[:100], initial_cash=cash, benchmark=np.full(100, 50.0))
    assert math.isnan(result["beta"])
    assert math.isnan(result["alpha"])
    assert math.isnan(result["benchmark_correlation"])
    assert result["buy_hold_return"] == 0.0
    # active return = the strategy's own returns, so IR is its per-bar Sharpe on bars 1..
    r = account_returns(cash, equity[:100])[1:]
    expected = empyrical.sharpe_ratio(r, annualization=HOURS_PER_YEAR)
    assert result["information_ratio"] == pytest.approx(expected, rel=REL)


def test_a_strategy_identical_to_the_benchmark_has_beta_one_and_undefined_ir() -> None:
    close = 100.0 * np.cumprod(1.0 + np.random.default_rng(2).normal(0, 0.01, 200))
    # the account holds the asset from the start: equity is proportional to the close
    result = run(close, initial_cash=close[0], benchmark=close)
    assert result["beta"] == pytest.approx(1.0, rel=REL)
    assert result["alpha"] == pytest.approx(0.0, abs=1e-9)
    assert result["benchmark_correlation"] == pytest.approx(1.0, rel=REL)
    assert math.isnan(result["information_ratio"])  # zero tracking error, zero mean excess
    assert result["total_return"] == pytest.approx(result["buy_hold_return"], rel=REL)


def test_without_a_benchmark_the_benchmark_metrics_are_nan() -> None:
    result = run(np.linspace(100.0, 120.0, 30))
    for m in METRICS:
        if m.group == "benchmark":
            assert math.isnan(result[m.key]), m.key


def test_a_single_bar_gives_nan_dispersion_metrics() -> None:
    result = run([110.0], benchmark=[5.0], bars_per_year=1.0)
    assert result["total_return"] == pytest.approx(0.1, rel=REL)
    assert result["cagr"] == pytest.approx(0.1, rel=REL)  # one bar of a one-bar year
    for key in ("annual_volatility", "sharpe", "sortino", "omega", "stability", "beta"):
        assert math.isnan(result[key]), key
    assert result["var_95"] == result["cvar_95"] == pytest.approx(0.1, rel=REL)


@pytest.mark.filterwarnings("error")
def test_a_wiped_out_account_stops_the_return_series_at_zero_equity() -> None:
    # curve 100 | 100 50 0 0: returns 0, -50 %, -100 %, then nothing to earn a return on
    result = run([100.0, 50.0, 0.0, 0.0], benchmark=[10.0, 11.0, 12.0, 13.0])
    assert result["total_return"] == -1.0
    assert result["cagr"] == -1.0
    assert result["max_drawdown"] == -1.0
    assert result["var_95"] == pytest.approx(np.percentile([0.0, -0.5, -1.0], 5), rel=REL)
    assert math.isnan(result["stability"])  # log of zero equity
    assert result["calmar"] == -1.0  # CAGR of -100 % over a 100 % drawdown
    assert result["max_drawdown_duration"] == 3.0


def test_negative_final_equity_has_no_cagr() -> None:
    result = run([50.0, -10.0])
    assert math.isnan(result["cagr"])
    assert result["total_return"] == pytest.approx(-1.1, rel=REL)


def test_an_overflowing_cagr_is_infinite_not_an_exception() -> None:
    # a tenfold gain in 2 one-minute bars, 10 ** (525,600 / 2), is past the float range;
    # with a 10 % drawdown on the way the Calmar ratio would be inf too, which empyrical makes NaN
    result = run([90.0, 1000.0], bars_per_year=525_600.0)
    assert result["cagr"] == math.inf
    assert result["max_drawdown"] == pytest.approx(-0.1, rel=REL)
    assert math.isnan(result["calmar"])


# --------------------------------------------------------------------------- costs, exposure


def test_fees_turnover_and_annualization_are_reported() -> None:
    # equity 100, 110, 120 -> average 110; 550 traded -> turnover 5
    result = run([100.0, 110.0, 120.0], fees_paid=3.5, turnover=550.0, bars_per_year=365.0)
    assert result["fees_paid"] == 3.5
    assert result["turnover"] == pytest.approx(5.0, rel=REL)
    assert result["annualization_periods"] == 365.0
    assert result["backtest_duration"] == 2 * HOUR_MS + 86_400_000  # 365-day year: 1-day bars


def test_exposure_counts_a_position_mask_or_defaults_to_bars_held() -> None:
    mask = np.array([0, 1, 1, 0, -1, 0, 0, 0, 0, 0])  # position sign per bar: 3 bars in market
    assert run(np.full(10, 100.0), exposure_bars=mask)["exposure"] == pytest.approx(0.3)
    held = run(np.full(10, 100.0), pnl=[1.0, 2.0], held=[2, 3])
    assert held["exposure"] == pytest.approx(0.5)
    capped = run(np.full(4, 100.0), pnl=[1.0], held=[9])
    assert capped["exposure"] == 1.0


# --------------------------------------------------------------------------- input errors


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"equity": np.array([])}, "non-empty"),
        ({"timestamps": np.arange(3, dtype=np.int64)}, "timestamps"),
        ({"benchmark_close": np.ones(3)}, "benchmark_close"),
        ({"trade_returns": np.ones(2)}, "differ in length"),
        ({"initial_cash": 0.0}, "initial_cash"),
        ({"initial_cash": math.nan}, "initial_cash"),
        ({"bars_per_year": 0.0}, "bars_per_year"),
    ],
)
def test_inconsistent_inputs_raise_engine_error(change: dict[str, Any], message: str) -> None:
    kwargs: dict[str, Any] = {
        "equity": np.full(5, 100.0),
        "timestamps": np.arange(5, dtype=np.int64),
        "trade_pnl": np.ones(1),
        "trade_returns": np.ones(1),
        "trade_bars_held": np.ones(1),
        "fees_paid": 0.0,
        "turnover": 0.0,
        "initial_cash": 100.0,
        "benchmark_close": np.ones(5),
        "bars_per_year": 365.0,
    }
    kwargs.update(change)
    with pytest.raises(EngineError, match=message):
        compute_metrics(**kwargs)


# --------------------------------------------------------------------------- compiled passes
# Each pass is a plain function compiled with numba; the tests run both, against math.fsum.


def _returns_with_ties(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = rng.normal(2e-4, 1e-2, size)
    r[::7] = 0.0  # flat bars, as out of the market
    return r


@pytest.mark.parametrize("name", ["_moments_py", "_moments"])
def test_moments_pass_matches_exactly_rounded_sums(name: str) -> None:
    moments = getattr(metrics_module, name)
    r = _returns_with_ties(1000, 1)  # four blocks of 256 and a partial one
    mean = math.fsum(r) / r.size
    d = r - mean
    losses = np.minimum(r, 0.0)
    expected = [
        math.fsum(d * d),
        math.fsum(d * d * d),
        math.fsum((d * d) ** 2),
        math.fsum(losses),
        math.fsum(losses * losses),
    ]
    *sums, varied = moments(r, mean)
    assert sums == pytest.approx(expected, rel=1e-13)
    assert varied
    assert not moments(np.full(600, 0.01), 0.01)[-1]  # a constant series
    with np.errstate(invalid="ignore"):
        spoiled = moments(np.array([0.01, np.nan, 0.02]), 0.0)
    assert math.isnan(spoiled[0])
    assert spoiled[-1]  # like numpy's min != max with a NaN: not constant


@pytest.mark.parametrize("name", ["_trend_fit_py", "_trend_fit"])
def test_trend_fit_pass_matches_exactly_rounded_sums(name: str) -> None:
    fit = getattr(metrics_module, name)
    y = np.cumsum(_returns_with_ties(700, 2))
    mean = math.fsum(y) / y.size
    d = y - mean
    sxy, syy, varied = fit(y, mean)
    assert sxy == pytest.approx(math.fsum(np.arange(700) * d), rel=1e-13)
    assert syy == pytest.approx(math.fsum(d * d), rel=1e-13)
    assert varied
    assert not fit(np.full(10, 3.0), 3.0)[-1]


@pytest.mark.parametrize("suffix", ["_py", ""])
def test_benchmark_passes_match_exactly_rounded_sums(suffix: str) -> None:
    sums = getattr(metrics_module, "_bench_sums" + suffix)
    products = getattr(metrics_module, "_bench_products" + suffix)
    rng = np.random.default_rng(3)
    close = 100.0 * np.cumprod(1.0 + rng.normal(0.0, 0.01, 900))
    bench = close[1:] / close[:-1] - 1.0
    strat = _returns_with_ties(899, 4)
    active = strat - bench
    sb, ss, sa, b_varied, s_varied, a_varied = sums(strat, bench)
    assert [sb, ss, sa] == pytest.approx(
        [math.fsum(bench), math.fsum(strat), math.fsum(active)], rel=1e-13
    )
    assert b_varied
    assert s_varied
    assert a_varied
    b_mean, s_mean, a_mean = sb / 899, ss / 899, sa / 899
    db, ds, da = bench - b_mean, strat - s_mean, active - a_mean
    assert list(products(strat, bench, s_mean, b_mean, a_mean)) == pytest.approx(
        [math.fsum(db * db), math.fsum(db * strat), math.fsum(ds * ds), math.fsum(da * da)],
        rel=1e-13,
    )
    # flat strategy and flat benchmark: nothing varies; flat strategy, moving benchmark
    flat = np.zeros(4)
    assert sums(np.full(4, 0.5), flat)[3:] == (False, False, False)
    assert sums(flat + 0.5, bench[:4])[3:] == (True, False, True)


@pytest.mark.parametrize("seed", [0, 1])
def test_drawdown_pass_as_python_matches_the_plain_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    equity = 1000.0 + np.cumsum(rng.integers(-3, 4, 600)).astype(np.float64)
    ts = np.cumsum(rng.integers(1, 4, 600)) * HOUR_MS
    curve = [1000.0, *equity.tolist()]
    times = [float(ts[0])] + [float(t + HOUR_MS) for t in ts]
    expected = _loop_drawdowns(curve, times)
    peak = np.maximum.accumulate(np.array(curve))
    max_dd, longest, longest_ms, avg, recovery = metrics_module._drawdown_py(
        equity, 1000.0, ts, float(HOUR_MS)
    )
    assert max_dd == float((np.array(curve) / peak - 1.0).min())
    assert longest == expected["max_drawdown_duration"]
    assert longest_ms == expected["max_drawdown_time"]
    assert avg == pytest.approx(expected["avg_drawdown"], rel=1e-12)
    assert recovery == expected["longest_recovery"]


def test_drawdown_pass_as_python_stops_at_a_nan() -> None:
    # curve 100 | 100 90 nan 95: under water at point 2 (-10 %); the NaN spoils the peak for
    # good (as numpy's maximum.accumulate), which ends that episode at point 3 and leaves
    # the maximum drawdown NaN.
    max_dd, longest, _, avg, recovery = metrics_module._drawdown_py(
        np.array([100.0, 90.0, math.nan, 95.0]), 100.0, np.arange(4) * HOUR_MS, float(HOUR_MS)
    )
    assert math.isnan(max_dd)
    assert (longest, avg, recovery) == (2.0, pytest.approx(-0.1), 1.0)


def test_a_nan_in_the_equity_leaves_the_drawdown_nan_instead_of_raising() -> None:
    with np.errstate(invalid="ignore"):
        result = run([100.0, 90.0, math.nan, 95.0])
    assert math.isnan(result["max_drawdown"])
    assert math.isnan(result["stability"])


def test_return_statistics_stay_exact_on_a_long_curve_whose_mean_almost_cancels() -> None:
    # 300,000 returns whose mean is a thousandth of their spread: the sums behind Sharpe,
    # skew and kurtosis are checked against exactly rounded ones (math.fsum).
    rng = np.random.default_rng(12)
    r = rng.normal(1e-6, 1e-3, 300_000)
    equity = 100.0 * np.cumprod(1.0 + r)
    rets = account_returns(100.0, equity)
    m = rets.size
    mean = math.fsum(rets) / m
    d = rets - mean
    m2 = math.fsum(d * d) / m
    result = run(equity, bars_per_year=525_600.0)
    sharpe = mean / math.sqrt(math.fsum(d * d) / (m - 1)) * math.sqrt(525_600.0)
    assert result["sharpe"] == pytest.approx(sharpe, rel=REL)
    assert result["skew"] == pytest.approx(math.fsum(d**3) / m / m2**1.5, rel=REL)
    assert result["kurtosis"] == pytest.approx(math.fsum(d**4) / m / m2**2 - 3.0, rel=REL)


def test_compensated_fold_keeps_what_plain_addition_loses_and_lets_infinity_through() -> None:
    # 1e16 + 1 rounds to 1e16 (the spacing there is 2); the compensation keeps the 1, so
    # after subtracting 1e16 again the sum is exactly 1 where plain addition gives 0.
    total, comp = np.zeros(2), np.zeros(2)
    for x in (1e16, 1.0, -1e16):
        metrics_module._fold_py(total, comp, 0, x)
    assert (1e16 + 1.0) - 1e16 == 0.0
    assert metrics_module._result_py(total, comp, 0) == 1.0
    # an overflowing sum stays infinite instead of inf - inf = NaN in the compensation
    with np.errstate(invalid="ignore", over="ignore"):
        for x in (1e308, 1e308, 5.0):
            metrics_module._fold_py(total, comp, 1, x)
    assert metrics_module._result_py(total, comp, 1) == math.inf


# ------------------------------------------------- tail percentiles: cost independent of shape


def _tail_shape(name: str, size: int) -> np.ndarray:
    """Per-bar returns of one shape; the equity built from them is what the metrics see."""
    rng = np.random.default_rng(size)
    r = rng.normal(0.0, 1e-3, size)
    if name == "flat_92_percent":  # out of the market on most bars: many exact zeros
        r[rng.random(size) < 0.92] = 0.0
    elif name == "flat_runs":  # long flat stretches between trades
        r[(np.arange(size) // 500) % 5 != 0] = 0.0
    elif name == "constant":
        r[:] = 1e-4
    elif name == "two_values":
        r = rng.choice([-1e-4, 2e-4], size)
    elif name == "rising":
        r = np.sort(r)
    elif name == "falling":
        r = np.sort(r)[::-1].copy()
    elif name == "every_7th_bar":
        r = np.where(np.arange(size) % 7 == 0, 1e-3, 0.0)
    return r


TAIL_SHAPES = (
    "normal", "flat_92_percent", "flat_runs", "constant", "two_values", "rising", "falling",
    "every_7th_bar",
)  # fmt: skip


@pytest.mark.parametrize("size", [1_000, 200_000])
@pytest.mark.parametrize("shape", TAIL_SHAPES)
def test_var_cvar_and_tail_ratio_match_empyrical_whatever_the_shape(shape: str, size: int) -> None:
    equity = 100.0 * np.cumprod(1.0 + _tail_shape(shape, size))
    r = account_returns(100.0, equity)
    result = run(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = {
            "var_95": empyrical.value_at_risk(r),
            "cvar_95": empyrical.conditional_value_at_risk(r),
            "tail_ratio": empyrical.tail_ratio(r),
        }
    for key, value in expected.items():
        assert result[key] == pytest.approx(float(value), rel=REL, nan_ok=True), key


def _tail_direct(r: np.ndarray) -> tuple[float, float, float, float, float]:
    """The five order statistics _tail_py returns, from a full sort (the oracle)."""
    m = r.size
    i5, i95 = math.floor(0.05 * (m - 1)), math.floor(0.95 * (m - 1))
    s = np.sort(r)
    return (
        float(s[i5]),
        float(s[min(i5 + 1, m - 1)]),
        float(s[i95]),
        float(s[min(i95 + 1, m - 1)]),
        math.fsum(s[: i5 + 1]),
    )


def _sampled_positions(m: int) -> np.ndarray:
    """The positions the tail pass samples (the same xorshift as metrics._tail_py)."""
    state = int(metrics_module._TAIL_SEED)
    mask = (1 << 64) - 1
    out = []
    for _ in range(metrics_module._TAIL_SAMPLE):
        state ^= (state << 13) & mask
        state ^= state >> 7
        state ^= (state << 17) & mask
        out.append(state % m)
    return np.array(out)


@pytest.fixture(params=["numba", "python"])
def tail_kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """metrics._tail compiled, or with it and every helper it calls as plain Python."""
    if request.param == "python":
        for name in ("_select", "_ranked", "_bracket", "_in_bracket", "_fold", "_result"):
            monkeypatch.setattr(metrics_module, name, getattr(metrics_module, name + "_py"))
        return metrics_module._tail_py
    return metrics_module._tail


@pytest.mark.parametrize("shape", ["normal", "flat_92_percent", "constant", "every_7th_bar"])
def test_tail_pass_finds_the_ranks_through_its_brackets_on_long_series(
    tail_kernel: Any, shape: str
) -> None:
    r = _tail_shape(shape, 70_000)
    i5, i95 = math.floor(0.05 * 69_999), math.floor(0.95 * 69_999)
    status, found = tail_kernel(r, np.empty(r.size), i5, i95)
    assert status == 0  # bracketed, not the whole-series fallback
    assert list(found[:4]) == list(_tail_direct(r)[:4])
    assert found[4] == pytest.approx(_tail_direct(r)[4], rel=1e-13, abs=1e-300)


def test_tail_pass_selects_short_series_whole(tail_kernel: Any) -> None:
    for size in (1, 2, 3, 21, 22, 500):
        r = _tail_shape("flat_92_percent", size)
        i5, i95 = math.floor(0.05 * (size - 1)), math.floor(0.95 * (size - 1))
        status, found = tail_kernel(r, np.empty(size), i5, i95)
        assert status == 2
        assert list(found[:4]) == list(_tail_direct(r)[:4])
        assert found[4] == pytest.approx(_tail_direct(r)[4], rel=1e-13, abs=1e-300)


def test_a_sample_that_misleads_the_brackets_falls_back_to_the_whole_series(
    tail_kernel: Any,
) -> None:
    # Every sampled position holds 1.0 and every other one a small return: both brackets
    # collapse onto 1.0, far from the real 5th and 95th percentiles.
    m = 70_000
    r = _tail_shape("normal", m)
    r[_sampled_positions(m)] = 1.0
    i5, i95 = math.floor(0.05 * (m - 1)), math.floor(0.95 * (m - 1))
    status, found = tail_kernel(r, np.empty(m), i5, i95)
    assert status == 2
    assert list(found[:4]) == list(_tail_direct(r)[:4])
    assert found[4] == pytest.approx(_tail_direct(r)[4], rel=1e-13)


@pytest.mark.parametrize("size", [1_001, 70_001])
def test_a_nan_in_the_returns_gives_what_empyrical_gives(size: int) -> None:
    # empyrical's VaR is numpy's percentile, NaN when a NaN is present; its CVaR and tail
    # ratio leave the NaNs out.
    equity = 100.0 * np.cumprod(1.0 + _tail_shape("normal", size))
    equity[500] = np.nan
    r = account_returns(100.0, equity)
    assert metrics_module._tail(r, np.empty(r.size), 50, 950)[0] == 1
    result = run(equity)
    assert math.isnan(result["var_95"])
    assert math.isnan(empyrical.value_at_risk(r))
    assert result["cvar_95"] == pytest.approx(empyrical.conditional_value_at_risk(r), rel=REL)
    assert result["tail_ratio"] == pytest.approx(empyrical.tail_ratio(r), rel=REL)
