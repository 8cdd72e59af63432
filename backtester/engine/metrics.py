"""Performance metrics of one backtest, computed from plain numpy arrays with vectorized numpy.

Conventions, stated once here and in each metric's definition:

* The per-bar return series is the simple return of the account curve
  ``(initial_cash, equity[0], ..., equity[-1])``: one return per bar, so compounding them gives
  ``total_return`` exactly and the first bar's fees count. If the equity ever reaches zero or
  below, the returns stop at that bar (nothing is left to earn a return on).
* Annualization uses ``bars_per_year`` (365-day years: crypto trades every day) and a risk-free
  rate of 0. Wherever empyrical has the metric, the formula is empyrical's, including its
  choices (sample standard deviation with ddof=1, CAGR over the number of bars rather than
  calendar time, alpha compounded from the mean per-bar residual), so the numbers can be checked
  against it.
* Benchmark statistics pair the strategy's returns on bars 1..N-1 with the benchmark's
  close-to-close returns on the same bars.
* A metric that is undefined (no trades, zero variance, no benchmark...) is NaN. A ratio whose
  denominator is zero but whose numerator is not is +/-inf (Sharpe of a curve that earns the
  same return every bar, profit factor with no losing trade), as empyrical does; JSON
  callers map every non-finite value to null.
* ``fmt`` is a value's unit (pages format by it): "pct" is a fraction (0.12 = 12 %), "ratio"
  and "number" are plain numbers, "money" is in the account currency, "bars" counts bars and
  "duration" is milliseconds. Labels and formatting are the results package's.

The full list of metrics, generated from ``METRICS``, is appended to this docstring and to
``compute_metrics.__doc__``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar, cast

import numpy as np
import numpy.typing as npt
from numba import njit

from backtester.engine.errors import EngineError

Group = Literal["returns", "risk", "risk_adjusted", "drawdown", "trades", "benchmark", "costs"]
Fmt = Literal["pct", "ratio", "number", "money", "bars", "duration"]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_F = TypeVar("_F", bound=Callable[..., Any])

_YEAR_MS: Final = 365 * 24 * 60 * 60 * 1000
_NAN: Final = math.nan
_INF: Final = math.inf


@dataclass(frozen=True, slots=True)
class MetricDef:
    """How one metric is grouped, in which unit it is, and how it is defined; ``key`` is its
    result-dict key. (How a page names and shows it is the results package's.)"""

    key: str
    group: Group
    fmt: Fmt
    definition: str


METRICS: tuple[MetricDef, ...] = (
    # returns
    MetricDef(
        "total_return",
        "returns",
        "pct",
        "Final equity divided by the initial cash, minus one.",
    ),
    MetricDef(
        "cagr",
        "returns",
        "pct",
        "Compound annual growth rate over the number of bars, (final / initial cash) ** "
        "(bars_per_year / bars) - 1, as empyrical's annual_return (bars, not calendar time, "
        "so gaps in the data do not stretch the year).",
    ),
    MetricDef(
        "annualization_periods",
        "returns",
        "number",
        "The number of bars in a 365-day year used to annualize every other metric.",
    ),
    MetricDef(
        "backtest_duration",
        "returns",
        "duration",
        "Calendar time from the first bar's open to the last bar's close, in milliseconds.",
    ),
    # risk
    MetricDef(
        "annual_volatility",
        "risk",
        "pct",
        "Sample standard deviation (ddof=1) of the per-bar returns times sqrt(bars_per_year), "
        "as empyrical's annual_volatility.",
    ),
    MetricDef(
        "downside_risk",
        "risk",
        "pct",
        "Root mean square of the per-bar returns below zero (gains counted as zero) times "
        "sqrt(bars_per_year), as empyrical's downside_risk.",
    ),
    MetricDef(
        "var_95",
        "risk",
        "pct",
        "The 5th percentile of the per-bar returns (linear interpolation), as empyrical's "
        "value_at_risk.",
    ),
    MetricDef(
        "cvar_95",
        "risk",
        "pct",
        "Mean of the worst int((bars - 1) * 0.05) + 1 per-bar returns, as empyrical's "
        "conditional_value_at_risk.",
    ),
    MetricDef(
        "skew",
        "risk",
        "ratio",
        "Sample skewness of the per-bar returns without bias correction, as scipy.stats.skew.",
    ),
    MetricDef(
        "kurtosis",
        "risk",
        "ratio",
        "Excess (Fisher) kurtosis of the per-bar returns without bias correction, as "
        "scipy.stats.kurtosis.",
    ),
    MetricDef(
        "tail_ratio",
        "risk",
        "ratio",
        "Absolute 95th percentile of the per-bar returns over the absolute 5th percentile, as "
        "empyrical's tail_ratio.",
    ),
    # risk-adjusted
    MetricDef(
        "sharpe",
        "risk_adjusted",
        "ratio",
        "Mean per-bar return over its sample standard deviation (ddof=1) times "
        "sqrt(bars_per_year), risk-free rate 0, as empyrical's sharpe_ratio.",
    ),
    MetricDef(
        "sortino",
        "risk_adjusted",
        "ratio",
        "Mean per-bar return times bars_per_year over the downside risk, as empyrical's "
        "sortino_ratio.",
    ),
    MetricDef(
        "calmar",
        "risk_adjusted",
        "ratio",
        "CAGR over the absolute maximum drawdown, NaN without a drawdown, as empyrical's "
        "calmar_ratio.",
    ),
    MetricDef(
        "omega",
        "risk_adjusted",
        "ratio",
        "Sum of positive per-bar returns over the absolute sum of negative ones (threshold 0), "
        "NaN without a losing bar, as empyrical's omega_ratio.",
    ),
    MetricDef(
        "stability",
        "risk_adjusted",
        "ratio",
        "R squared of a least-squares line through the cumulative log returns, as empyrical's "
        "stability_of_timeseries (NaN for a flat curve).",
    ),
    # drawdown
    MetricDef(
        "max_drawdown",
        "drawdown",
        "pct",
        "Largest fall of equity from its running peak (initial cash included) as a negative "
        "fraction, as empyrical's max_drawdown.",
    ),
    MetricDef(
        "max_drawdown_duration",
        "drawdown",
        "bars",
        "Most bars from a peak to the bar where equity first gets back to it, or to the last "
        "bar for a drawdown still open at the end.",
    ),
    MetricDef(
        "max_drawdown_time",
        "drawdown",
        "duration",
        "Longest calendar time, in milliseconds, from a peak to its recovery or to the last "
        "bar's close, gaps in the data included.",
    ),
    MetricDef(
        "avg_drawdown",
        "drawdown",
        "pct",
        "Mean depth of the separate drawdowns (each peak-to-recovery episode counted once at "
        "its lowest point, an open one included), 0 when there is none.",
    ),
    MetricDef(
        "longest_recovery",
        "drawdown",
        "bars",
        "Most bars from a drawdown's lowest point (its first bar there) back to the previous "
        "peak, over drawdowns that recovered; 0 when none did.",
    ),
    # trades
    MetricDef(
        "trades",
        "trades",
        "number",
        "Number of closed round trips.",
    ),
    MetricDef(
        "exposure",
        "trades",
        "pct",
        "Fraction of bars with a position open.",
    ),
    MetricDef(
        "win_rate",
        "trades",
        "pct",
        "Fraction of trades with a positive net profit (break-even trades count as not won).",
    ),
    MetricDef(
        "profit_factor",
        "trades",
        "ratio",
        "Gross profit of winning trades over the absolute gross loss of losing trades, +inf "
        "with wins and no loss, NaN with neither.",
    ),
    MetricDef(
        "expectancy",
        "trades",
        "money",
        "Mean net profit per trade.",
    ),
    MetricDef(
        "avg_trade_return",
        "trades",
        "pct",
        "Mean of the trades' net returns on their entry notional.",
    ),
    MetricDef(
        "avg_win",
        "trades",
        "money",
        "Mean net profit of the winning trades.",
    ),
    MetricDef(
        "avg_loss",
        "trades",
        "money",
        "Mean net profit of the losing trades (a negative amount).",
    ),
    MetricDef(
        "payoff_ratio",
        "trades",
        "ratio",
        "Average win over the absolute average loss, +inf with wins and no loss, NaN without "
        "a win.",
    ),
    MetricDef(
        "largest_win",
        "trades",
        "money",
        "Net profit of the best winning trade, NaN without a win.",
    ),
    MetricDef(
        "largest_loss",
        "trades",
        "money",
        "Net profit of the worst losing trade (negative), NaN without a loss.",
    ),
    MetricDef(
        "avg_bars_held",
        "trades",
        "bars",
        "Mean number of bars a trade was held.",
    ),
    MetricDef(
        "max_consecutive_wins",
        "trades",
        "number",
        "Longest run of winning trades in exit order (a break-even trade ends the run).",
    ),
    MetricDef(
        "max_consecutive_losses",
        "trades",
        "number",
        "Longest run of losing trades in exit order (a break-even trade ends the run).",
    ),
    MetricDef(
        "sqn",
        "trades",
        "ratio",
        "System quality number, sqrt(trades) times the mean trade return over its sample "
        "standard deviation (ddof=1), NaN with fewer than two trades.",
    ),
    MetricDef(
        "kelly",
        "trades",
        "pct",
        "Kelly criterion win_rate - (1 - win_rate) / payoff_ratio, equal to the win rate when "
        "no trade lost.",
    ),
    # benchmark
    MetricDef(
        "buy_hold_return",
        "benchmark",
        "pct",
        "Benchmark's last close over its first close, minus one.",
    ),
    MetricDef(
        "alpha",
        "benchmark",
        "pct",
        "Annualized CAPM alpha against the benchmark's per-bar returns, (1 + mean residual) ** "
        "bars_per_year - 1, as empyrical's alpha_beta.",
    ),
    MetricDef(
        "beta",
        "benchmark",
        "ratio",
        "Covariance of the per-bar returns with the benchmark's over the benchmark's variance, "
        "as empyrical's alpha_beta.",
    ),
    MetricDef(
        "information_ratio",
        "benchmark",
        "ratio",
        "Mean per-bar return in excess of the benchmark over the excess's sample standard "
        "deviation, times sqrt(bars_per_year) (empyrical's excess_sharpe, annualized).",
    ),
    MetricDef(
        "benchmark_correlation",
        "benchmark",
        "ratio",
        "Pearson correlation of the per-bar returns with the benchmark's.",
    ),
    # costs
    MetricDef(
        "fees_paid",
        "costs",
        "money",
        "Total fees paid on every fill.",
    ),
    MetricDef(
        "turnover",
        "costs",
        "ratio",
        "Traded notional of every fill over the average equity.",
    ),
)


def compute_metrics(
    *,
    equity: npt.ArrayLike,
    timestamps: npt.ArrayLike,
    trade_pnl: npt.ArrayLike,
    trade_returns: npt.ArrayLike,
    trade_bars_held: npt.ArrayLike,
    fees_paid: float,
    turnover: float,
    initial_cash: float,
    benchmark_close: npt.ArrayLike | None,
    bars_per_year: float,
    exposure_bars: float | npt.ArrayLike | None = None,
) -> dict[str, float]:
    """Every metric of ``METRICS``, keyed and ordered as there, as plain Python floats.

    ``equity`` is the account value at each bar's close and ``timestamps`` the bars' open times
    in ms (same length); ``trade_*`` hold one value per closed trade in exit order; ``turnover``
    is the traded notional of every fill in money; ``benchmark_close`` (same length as equity,
    or None for NaN benchmark metrics) is usually the traded symbol's close; ``exposure_bars``
    is the number of bars with a position open, or a per-bar mask/position array whose nonzero
    entries count, defaulting to the sum of ``trade_bars_held``. Raises EngineError on empty
    equity, mismatched lengths or a non-positive ``initial_cash`` or ``bars_per_year``.
    """
    eq = np.asarray(equity, dtype=np.float64)
    ts = np.asarray(timestamps, dtype=np.int64)
    if eq.ndim != 1 or eq.size == 0:
        raise EngineError("equity must be a non-empty 1-D array")
    n = int(eq.shape[0])
    if ts.shape != eq.shape:
        raise EngineError(f"timestamps has {ts.size} values, equity has {n}")
    if not (initial_cash > 0 and math.isfinite(initial_cash)):
        raise EngineError("initial_cash must be positive")
    if not (bars_per_year > 0 and math.isfinite(bars_per_year)):
        raise EngineError("bars_per_year must be positive")
    # The compiled passes want contiguous arrays (a no-op for the simulator's).
    eq = np.ascontiguousarray(eq)
    ts = np.ascontiguousarray(ts)

    ann = float(bars_per_year)
    init = float(initial_cash)
    # Two arrays of n floats are all the memory this takes: the returns and one work buffer
    # that serves the partitions, the logs and the benchmark's returns in turn. Every fresh
    # 8 MB array costs ~1.5 ms in page faults on a 1e6-bar run, more than most of the maths;
    # the rest runs as compiled single passes that keep their sums in registers.
    rets = _bar_returns(eq, init, np.empty(n, dtype=np.float64))
    work = np.empty(n, dtype=np.float64)

    out: dict[str, float] = {}
    out["total_return"] = float(eq[-1] / init - 1.0)
    out["annualization_periods"] = ann
    bar_ms = _YEAR_MS / ann
    # The curve's first point is the first bar's open; every other point is a bar's close.
    out["backtest_duration"] = float(ts[-1] - ts[0]) + bar_ms
    out.update(_return_stats(rets, eq, init, ann, work))
    out.update(_drawdown_stats(eq, init, ts, bar_ms))
    out["calmar"] = _calmar(out["cagr"], out["max_drawdown"])
    out.update(_trade_stats(trade_pnl, trade_returns, trade_bars_held))
    out["exposure"] = _exposure(exposure_bars, trade_bars_held, n)
    out.update(_benchmark_stats(rets, benchmark_close, n, ann, work))
    out["fees_paid"] = float(fees_paid)
    mean_equity = float(eq.mean())
    out["turnover"] = float(turnover) / mean_equity if mean_equity > 0 else _NAN
    return {m.key: out[m.key] for m in METRICS}


# --------------------------------------------------------------------------------------------
# Compiled single-pass kernels. Each is a plain function (the tests also run it as Python)
# compiled with numba. Sums are plain inside blocks of _BLOCK values and compensated
# (Neumaier) across blocks: as accurate as numpy's pairwise sums, one pass for many sums.

_BLOCK: Final = 256


def _fold_py(total: FloatArray, comp: FloatArray, k: int, x: float) -> None:
    """Add x to the compensated sum (total[k], comp[k]) (Neumaier)."""
    t = total[k] + x
    if abs(total[k]) >= abs(x):
        comp[k] += (total[k] - t) + x
    else:
        comp[k] += (x - t) + total[k]
    total[k] = t


def _result_py(total: FloatArray, comp: FloatArray, k: int) -> float:
    """The compensated sum k; an infinite or NaN total stays as it is."""
    c = comp[k]
    return float(total[k] + c) if c - c == 0.0 else float(total[k])


def _moments_py(r: FloatArray, mean: float) -> tuple[float, float, float, float, float, bool]:
    """Sums of d**2, d**3 and d**4 (d = r - mean), of the losses min(r, 0) and of their
    squares, and whether r holds two different values (a NaN counts as different)."""
    m = r.shape[0]
    total = np.zeros(5)
    comp = np.zeros(5)
    first = r[0]
    # min != max without the branches of a running min and max; an integer count is much
    # cheaper in numba's loop than or-ing booleans.
    differ = 0
    for start in range(0, m, _BLOCK):
        s2 = 0.0
        s3 = 0.0
        s4 = 0.0
        l1 = 0.0
        l2 = 0.0
        for i in range(start, min(start + _BLOCK, m)):
            x = r[i]
            differ += x != first
            d = x - mean
            d2 = d * d
            s2 += d2
            s3 += d2 * d
            s4 += d2 * d2
            loss = 0.0 if x >= 0.0 else x
            l1 += loss
            l2 += loss * loss
        _fold(total, comp, 0, s2)
        _fold(total, comp, 1, s3)
        _fold(total, comp, 2, s4)
        _fold(total, comp, 3, l1)
        _fold(total, comp, 4, l2)
    return (
        _result(total, comp, 0),
        _result(total, comp, 1),
        _result(total, comp, 2),
        _result(total, comp, 3),
        _result(total, comp, 4),
        differ > 0,
    )


def _trend_fit_py(y: FloatArray, mean: float) -> tuple[float, float, bool]:
    """Sum of i * (y[i] - mean), sum of (y[i] - mean)**2, and whether y holds two different
    values."""
    m = y.shape[0]
    total = np.zeros(2)
    comp = np.zeros(2)
    first = y[0]
    differ = 0
    for start in range(0, m, _BLOCK):
        sxy = 0.0
        syy = 0.0
        for i in range(start, min(start + _BLOCK, m)):
            v = y[i]
            differ += v != first
            d = v - mean
            sxy += i * d
            syy += d * d
        _fold(total, comp, 0, sxy)
        _fold(total, comp, 1, syy)
    return _result(total, comp, 0), _result(total, comp, 1), differ > 0


def _drawdown_py(
    eq: FloatArray, init: float, ts: IntArray, bar_ms: float
) -> tuple[float, float, float, float, float]:
    """(max drawdown, longest episode in bars, longest episode in ms, mean episode depth,
    longest recovery in bars) of the curve (init, *eq); see _drawdown_stats."""
    size = eq.shape[0] + 1
    peak = init
    max_dd = 0.0
    episodes = 0
    depth_sum = 0.0
    longest = 0
    longest_ms = 0.0
    longest_recovery = 0
    under = False
    start = 0
    depth = 0.0
    trough = 0
    low = 0.0  # the lowest point of the episode so far
    for p in range(1, size + 1):
        if p < size:
            c = eq[p - 1]
            if c < peak:  # under water: c / peak - 1 < 0 exactly when c < peak
                # Division rounds monotonically, so only a point at or below the episode's
                # lowest can deepen it: the others skip the division (most of them).
                if not under:
                    under = True
                    start = p
                    depth = c / peak - 1.0
                    trough = p
                    low = c
                    if depth < max_dd:
                        max_dd = depth
                elif c <= low:
                    low = c
                    dd = c / peak - 1.0
                    if dd < depth:
                        depth = dd
                        trough = p
                        if dd < max_dd:
                            max_dd = dd
                continue
            if c >= peak:
                peak = c
            else:  # a NaN spoils the peak and the drawdown for good, as maximum.accumulate
                peak = math.nan
                max_dd = math.nan
        if not under:
            continue
        # The episode [start, p) ends: recovered at point p, or still open at the last point.
        under = False
        last = p if p < size else size - 1
        begin = start - 1
        if last - begin > longest:
            longest = last - begin
        t_last = float(ts[last - 1]) + bar_ms
        t_begin = float(ts[0]) if begin == 0 else float(ts[begin - 1]) + bar_ms
        if t_last - t_begin > longest_ms:
            longest_ms = t_last - t_begin
        episodes += 1
        depth_sum += depth
        if p < size and p - trough > longest_recovery:
            longest_recovery = p - trough
    avg = depth_sum / episodes if episodes > 0 else 0.0
    return max_dd, float(longest), longest_ms, avg, float(longest_recovery)


def _bench_sums_py(
    strat: FloatArray, bench: FloatArray
) -> tuple[float, float, float, bool, bool, bool]:
    """Sums of bench, strat and strat - bench, and whether each of the three holds two
    different values (a NaN counts as different)."""
    size = strat.shape[0]
    total = np.zeros(3)
    comp = np.zeros(3)
    b0 = bench[0]
    s0 = strat[0]
    a0 = s0 - b0
    b_differ = 0
    s_differ = 0
    a_differ = 0
    for start in range(0, size, _BLOCK):
        sb = 0.0
        ss = 0.0
        sa = 0.0
        for i in range(start, min(start + _BLOCK, size)):
            b = bench[i]
            s = strat[i]
            a = s - b
            sb += b
            ss += s
            sa += a
            b_differ += b != b0
            s_differ += s != s0
            a_differ += a != a0
        _fold(total, comp, 0, sb)
        _fold(total, comp, 1, ss)
        _fold(total, comp, 2, sa)
    return (
        _result(total, comp, 0),
        _result(total, comp, 1),
        _result(total, comp, 2),
        b_differ > 0,
        s_differ > 0,
        a_differ > 0,
    )


def _bench_products_py(
    strat: FloatArray, bench: FloatArray, s_mean: float, b_mean: float, a_mean: float
) -> tuple[float, float, float, float]:
    """Sums of (b - b_mean)**2, (b - b_mean) * s, (s - s_mean)**2 and (s - b - a_mean)**2."""
    size = strat.shape[0]
    total = np.zeros(4)
    comp = np.zeros(4)
    for start in range(0, size, _BLOCK):
        bb = 0.0
        bs = 0.0
        sq = 0.0
        aa = 0.0
        for i in range(start, min(start + _BLOCK, size)):
            b = bench[i]
            s = strat[i]
            db = b - b_mean
            ds = s - s_mean
            da = (s - b) - a_mean
            bb += db * db
            bs += db * s
            sq += ds * ds
            aa += da * da
        _fold(total, comp, 0, bb)
        _fold(total, comp, 1, bs)
        _fold(total, comp, 2, sq)
        _fold(total, comp, 3, aa)
    return (
        _result(total, comp, 0),
        _result(total, comp, 1),
        _result(total, comp, 2),
        _result(total, comp, 3),
    )


# The tail percentiles. numpy's partition slows down 10-30x on returns with many equal values
# (the zeros of the bars out of the market), so the order statistics come from a sample-bracketed
# single pass instead, whose cost does not depend on how the values are distributed.
_TAIL_SAMPLE: Final = 8192  # sampled returns that place the brackets
_TAIL_MARGIN: Final = 112  # sample positions either side of a rank: ~8 standard deviations
_TAIL_DIRECT_BELOW: Final = 65_536  # shorter series are selected directly, whole
_TAIL_SEED: Final = 0x9E3779B97F4A7C15


def _select_py(a: FloatArray, lo: int, hi: int, k: int) -> float:
    """Rearrange a[lo:hi] so that a[k] holds the value of rank k - lo there, with no larger
    value before it and no smaller one after, and return it (NaN-free input).

    Three-way partitions around the median of three: values equal to the pivot are gathered in
    the middle and never visited again, so long runs of equal values make it faster, not
    slower. After 64 rounds (far more than a random pivot needs) the rest is sorted, which bounds
    the cost on any order of the data.
    """
    rounds = 0
    while hi - lo > 1:
        rounds += 1
        if rounds > 64:
            a[lo:hi].sort()
            return float(a[k])
        x = a[lo]
        y = a[lo + (hi - lo) // 2]
        z = a[hi - 1]
        pivot = max(min(x, y), min(max(x, y), z))  # the median of the three
        lt = lo
        i = lo
        gt = hi
        while i < gt:
            v = a[i]
            if v < pivot:
                a[i] = a[lt]
                a[lt] = v
                lt += 1
                i += 1
            elif v > pivot:
                gt -= 1
                a[i] = a[gt]
                a[gt] = v
            else:
                i += 1
        if k < lt:
            hi = lt
        elif k >= gt:
            lo = gt
        else:
            return float(pivot)
    return float(a[k])


def _ranked_py(a: FloatArray, lo: int, hi: int, k: int) -> tuple[float, float, float]:
    """(value of rank k, of rank k + 1 (the same when k is the last), sum of ranks 0..k) of the
    values a[lo:hi], k counted from lo; rearranges a[lo:hi]."""
    v = _select(a, lo, hi, lo + k)
    nxt = v
    if lo + k + 1 < hi:
        nxt = a[lo + k + 1]
        for i in range(lo + k + 2, hi):
            if a[i] < nxt:
                nxt = a[i]
    total = np.zeros(1)
    comp = np.zeros(1)
    for start in range(lo, lo + k + 1, _BLOCK):
        s = 0.0
        for i in range(start, min(start + _BLOCK, lo + k + 1)):
            s += a[i]
        _fold(total, comp, 0, s)
    return v, nxt, _result(total, comp, 0)


def _bracket_py(sample: FloatArray, m: int, k: int) -> tuple[float, float]:
    """Values bracketing ranks k and k + 1 of m values, from a sorted sample: the sample value
    _TAIL_MARGIN positions below the rank's expected place and the one above (or -inf/+inf)."""
    s = sample.shape[0]
    where = k * (s - 1) / (m - 1) if m > 1 else 0.0
    below = math.floor(where) - _TAIL_MARGIN
    above = math.ceil(where) + 1 + _TAIL_MARGIN
    lo = sample[below] if below >= 0 else -math.inf
    hi = sample[above] if above < s else math.inf
    return lo, hi


def _in_bracket_py(
    work: FloatArray,
    b0: int,
    nb: int,
    k: int,
    n_lt: int,
    n_lo: int,
    lo: float,
    n_hi: int,
    hi: float,
) -> tuple[bool, float, float, float]:
    """(found, value of rank k, of rank k + 1, sum of the ranks below n_lt excluded) from a
    bracket's counts: n_lt values below ``lo``, n_lo equal to it, the nb values strictly
    between in work[b0:b0+nb], n_hi equal to ``hi``. found is False when rank k or k + 1 lies
    outside the bracket (the sample misled; the caller selects on the whole series)."""
    if k < n_lt or k + 1 >= n_lt + n_lo + nb + n_hi:
        return False, 0.0, 0.0, 0.0
    r = k - n_lt  # rank inside the bracket
    part = 0.0  # sum of the bracket's values of ranks 0..r
    if r < n_lo:
        v = lo
        part = (r + 1) * lo
        if r + 1 < n_lo:
            nxt = lo
        elif nb > 0:
            nxt = _select(work, b0, b0 + nb, b0)
        else:
            nxt = hi
        return True, v, nxt, part
    r -= n_lo
    part = n_lo * lo
    if r < nb:
        v, nxt, s = _ranked(work, b0, b0 + nb, r)
        if r + 1 >= nb:
            nxt = hi
        return True, v, nxt, part + s
    r -= nb
    v = hi
    for i in range(b0, b0 + nb):
        part += work[i]
    part += (r + 1) * hi
    return True, v, hi, part


def _tail_py(r: FloatArray, work: FloatArray, i5: int, i95: int) -> tuple[int, FloatArray]:
    """Order statistics of r at ranks i5, i5 + 1, i95, i95 + 1 and the sum of ranks 0..i5.

    Returns (status, [v5, next5, v95, next95, sum5]): status 0 when the brackets found every
    rank, 2 when the whole series was selected (short, or the brackets missed), 1 when r holds a
    NaN (nothing computed). ``work`` is a scratch buffer of r's length. For series of
    _TAIL_DIRECT_BELOW values or more, a seeded random sample of _TAIL_SAMPLE values, sorted,
    brackets each rank; one pass counts the values below, on and above each bracket, sums those
    below the lower one and copies the few inside; a selection inside the copies finishes. A
    rank a bracket missed (about never) falls back to selecting on a copy of the whole series.
    """
    m = r.shape[0]
    out = np.zeros(5)
    use_direct = m < _TAIL_DIRECT_BELOW
    if not use_direct:
        sample = np.empty(_TAIL_SAMPLE)
        state = np.uint64(_TAIL_SEED)
        for s in range(_TAIL_SAMPLE):
            state ^= state << np.uint64(13)
            state ^= state >> np.uint64(7)
            state ^= state << np.uint64(17)
            sample[s] = r[int(state % np.uint64(m))]
        sample.sort()
        lo5, hi5 = _bracket(sample, m, i5)
        lo95, hi95 = _bracket(sample, m, i95)
        half = m // 2  # the copies of the 5 % bracket go low in work, the 95 % ones high
        nan = 0
        n_lt5 = 0
        n_lo5 = 0
        n_hi5 = 0
        nb5 = 0
        n_gt95 = 0
        n_lo95 = 0
        n_hi95 = 0
        nb95 = 0
        total = np.zeros(1)
        comp = np.zeros(1)
        for start in range(0, m, _BLOCK):
            below = 0.0
            for i in range(start, min(start + _BLOCK, m)):
                x = r[i]
                if x != x:
                    nan += 1
                elif x <= hi5:
                    if x < lo5:
                        n_lt5 += 1
                        below += x
                    elif x == lo5:
                        n_lo5 += 1
                    elif x == hi5:
                        n_hi5 += 1
                    else:
                        if nb5 < half:
                            work[nb5] = x
                        nb5 += 1
                if x >= lo95:
                    if x > hi95:
                        n_gt95 += 1
                    elif x == lo95:
                        n_lo95 += 1
                    elif x == hi95:
                        n_hi95 += 1
                    else:
                        if nb95 < m - half:
                            work[half + nb95] = x
                        nb95 += 1
            _fold(total, comp, 0, below)
        if nan > 0:
            return 1, out
        n_lt95 = m - n_gt95 - n_lo95 - n_hi95 - nb95
        ok5 = nb5 <= half
        ok95 = nb95 <= m - half
        if ok5:
            ok5, out[0], out[1], part = _in_bracket(work, 0, nb5, i5, n_lt5, n_lo5, lo5, n_hi5, hi5)
            out[4] = _result(total, comp, 0) + part
        if ok5 and ok95:
            ok95, out[2], out[3], _ = _in_bracket(
                work, half, nb95, i95, n_lt95, n_lo95, lo95, n_hi95, hi95
            )
        use_direct = not (ok5 and ok95)
    if use_direct:
        for i in range(m):
            x = r[i]
            if x != x:
                return 1, out
            work[i] = x
        out[0], out[1], out[4] = _ranked(work, 0, m, i5)
        # Ranks above i5 now all sit in work[i5 + 1:], so the second selection looks only there.
        if i95 > i5:
            out[2], out[3], _ = _ranked(work, i5 + 1, m, i95 - i5 - 1)
        else:
            out[2], out[3] = out[0], out[1]
        return 2, out
    return 0, out


def _jit(fn: _F) -> _F:
    # numba ships no type information: keep the Python signature visible to mypy.
    # error_model="numpy": x/0 gives inf/NaN as numpy does instead of raising.
    return cast(_F, njit(cache=True, nogil=True, error_model="numpy")(fn))


_fold = _jit(_fold_py)
_result = _jit(_result_py)
_moments = _jit(_moments_py)
_trend_fit = _jit(_trend_fit_py)
_drawdown = _jit(_drawdown_py)
_bench_sums = _jit(_bench_sums_py)
_bench_products = _jit(_bench_products_py)
_select = _jit(_select_py)
_ranked = _jit(_ranked_py)
_bracket = _jit(_bracket_py)
_in_bracket = _jit(_in_bracket_py)
_tail = _jit(_tail_py)


# --------------------------------------------------------------------------------------------
# Metric groups


def _bar_returns(eq: FloatArray, init: float, into: FloatArray) -> FloatArray:
    """Simple returns of the curve (init, *eq), cut after its first non-positive point."""
    n = eq.shape[0]
    stop = n
    if n > 1:
        bad = eq[:-1] <= 0.0
        first = int(bad.argmax())  # argmax stops at the first True
        if bad[first]:
            stop = first + 1
    # init > 0 is checked by the caller, so at least one return is always left.
    rets = into[:stop]
    with np.errstate(divide="ignore", invalid="ignore"):
        rets[0] = eq[0] / init
        np.divide(eq[1:stop], eq[: stop - 1], out=rets[1:])
    rets -= 1.0
    return rets


def _ratio(num: float, den: float) -> float:
    """num / den with IEEE semantics instead of ZeroDivisionError: x/0 is +/-inf, 0/0 NaN."""
    if den == 0.0:
        if num == 0.0 or math.isnan(num):
            return _NAN
        return math.copysign(_INF, num) * math.copysign(1.0, den)
    return num / den


def _return_stats(
    rets: FloatArray, eq: FloatArray, init: float, ann: float, work: FloatArray
) -> dict[str, float]:
    """Statistics of the per-bar return series (empyrical / scipy conventions)."""
    m = int(rets.shape[0])
    out: dict[str, float] = {}

    ending = float(eq[m - 1] / init)
    if ending > 0.0:
        with np.errstate(over="ignore"):
            out["cagr"] = float(np.power(ending, ann / m) - 1.0)
    else:
        out["cagr"] = -1.0 if ending == 0.0 else _NAN

    total = float(rets.sum())
    mean = total / m
    ss, s3, s4, loss_total, loss_sq, varied = _moments(rets, mean)
    constant = not varied  # empyrical: a constant series has zero std
    m2 = ss / m
    if constant:
        out["skew"] = out["kurtosis"] = _NAN
    else:
        out["skew"] = s3 / m / m2**1.5
        out["kurtosis"] = s4 / m / (m2 * m2) - 3.0
    if m >= 2:
        std = 0.0 if constant else math.sqrt(ss / (m - 1))
        out["annual_volatility"] = std * math.sqrt(ann)
        out["sharpe"] = _ratio(mean, std) * math.sqrt(ann)
    else:
        out["annual_volatility"] = out["sharpe"] = _NAN

    downside = math.sqrt(loss_sq / m) * math.sqrt(ann)
    out["downside_risk"] = downside
    out["sortino"] = _ratio(mean * ann, downside) if m >= 2 else _NAN
    loss_sum = -loss_total
    gain_sum = total + loss_sum  # the positive returns' sum without another pass
    out["omega"] = gain_sum / loss_sum if m >= 2 and loss_sum > 0.0 else _NAN

    out.update(_tail_stats(rets, work))
    out["stability"] = _stability(eq[:m], work[:m])
    return out


def _tail_stats(rets: FloatArray, work: FloatArray) -> dict[str, float]:
    """VaR and CVaR at 95 % and the tail ratio (empyrical's definitions) from one compiled
    selection (_tail_py) whose cost is the same whatever the shape of the returns.

    numpy's ``partition`` took ~10 ms on 10^6 random returns but 150-300 ms when most of them
    were equal (a strategy out of the market most of the time); the bracketed pass takes a few
    milliseconds on either.
    """
    m = int(rets.shape[0])
    # numpy's linear percentile sits at fractional position q * (m - 1) of the sorted values.
    pos5, pos95 = 0.05 * (m - 1), 0.95 * (m - 1)
    i5, i95 = math.floor(pos5), math.floor(pos95)
    status, found = _tail(rets, work, i5, i95)
    if status == 1:
        return _tail_stats_with_nan(rets, work)
    v5, next5, v95, next95, low_sum = (float(x) for x in found)
    # empyrical's CVaR averages the int((m - 1) * 0.05) + 1 smallest returns.
    cvar = low_sum / (i5 + 1)
    q5 = _lerp(v5, next5, pos5 - i5)
    q95 = _lerp(v95, next95, pos95 - i95)
    return {"var_95": q5, "cvar_95": cvar, "tail_ratio": _ratio(abs(q95), abs(q5))}


def _tail_stats_with_nan(rets: FloatArray, work: FloatArray) -> dict[str, float]:
    """Returns holding a NaN (an equity curve with a NaN), as empyrical: VaR is numpy's
    percentile, so NaN; CVaR and the tail ratio leave the NaNs out."""
    clean = rets[~np.isnan(rets)]
    if clean.size == 0:
        return {"var_95": _NAN, "cvar_95": _NAN, "tail_ratio": _NAN}
    found = _tail_stats(clean, work)
    return {"var_95": _NAN, "cvar_95": found["cvar_95"], "tail_ratio": found["tail_ratio"]}


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's linear percentile between ``a`` and the next larger order statistic ``b``."""
    if t == 0.0:
        return a
    # numpy interpolates from the nearer end, so t close to 1 lands exactly on b.
    return b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t


def _stability(eq: FloatArray, y: FloatArray) -> float:
    """R squared of the cumulative log returns on the bar index, as scipy's linregress.

    The cumulative log return at bar i is log(eq[i] / initial cash), one log per point instead
    of empyrical's log1p-then-cumsum; the constant log(initial cash) drops out of the centred
    fit, so log(eq) itself is fitted. ``y`` is a spare buffer of len(eq) floats.
    """
    m = int(eq.shape[0])
    if m < 2:
        return _NAN
    with np.errstate(divide="ignore", invalid="ignore"):
        np.log(eq, out=y)
    mean = float(y.mean())
    if not math.isfinite(mean):
        return _NAN  # a zero or negative point (log values cannot add up to an overflow)
    sxy, syy, varied = _trend_fit(y, mean)
    if not varied:
        return _NAN  # a flat line has no R squared (empyrical's linregress gives NaN)
    # The centred y sums to zero, so the raw bar index can stand in for the centred one.
    sxx = m * (m * m - 1.0) / 12.0
    return min(sxy * sxy / (sxx * syy), 1.0)


def _calmar(cagr: float, max_dd: float) -> float:
    """CAGR over |max drawdown| as empyrical: NaN without a drawdown or when infinite."""
    if not max_dd < 0.0:
        return _NAN
    value = cagr / abs(max_dd)
    return value if math.isfinite(value) else _NAN


def _drawdown_stats(
    eq: FloatArray, init: float, ts: npt.NDArray[np.int64], bar_ms: float
) -> dict[str, float]:
    """Depth, duration and recovery of the drawdown episodes of the account curve.

    An episode is a run of curve points under the running peak: its peak is the point before
    the run, it recovers at the first point back at the peak (or is still open at the last
    point); the depth is its lowest drawdown and the recovery counts from the first point at
    that depth. Point 0 is the initial cash at bar 0's open, point i >= 1 bar i-1's close.
    """
    max_dd, longest, longest_ms, avg, recovery = _drawdown(eq, init, ts, bar_ms)
    return {
        "max_drawdown": max_dd,
        "max_drawdown_duration": longest,
        "max_drawdown_time": longest_ms,
        "avg_drawdown": avg,
        "longest_recovery": recovery,
    }


def _longest_run(mask: npt.NDArray[np.bool_]) -> float:
    """Length of the longest run of True."""
    if not mask.any():
        return 0.0
    padded = np.zeros(mask.shape[0] + 2, dtype=np.int8)
    padded[1:-1] = mask
    edges = np.diff(padded)
    return float((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max())


def _trade_stats(
    trade_pnl: npt.ArrayLike, trade_returns: npt.ArrayLike, trade_bars_held: npt.ArrayLike
) -> dict[str, float]:
    """Win/loss statistics of the closed trades."""
    pnl = np.asarray(trade_pnl, dtype=np.float64)
    ret = np.asarray(trade_returns, dtype=np.float64)
    held = np.asarray(trade_bars_held, dtype=np.float64)
    k = int(pnl.shape[0])
    if ret.shape[0] != k or held.shape[0] != k:
        raise EngineError("trade_pnl, trade_returns and trade_bars_held differ in length")

    wins = pnl > 0.0
    losses = pnl < 0.0
    n_win, n_loss = int(wins.sum()), int(losses.sum())
    gross_win = float(pnl[wins].sum())
    gross_loss = -float(pnl[losses].sum())
    avg_win = gross_win / n_win if n_win else _NAN
    avg_loss = -gross_loss / n_loss if n_loss else _NAN
    win_rate = n_win / k if k else _NAN

    if n_loss:
        profit_factor = gross_win / gross_loss
        payoff = avg_win / abs(avg_loss) if n_win else _NAN
    else:
        profit_factor = _INF if n_win else _NAN
        payoff = _INF if n_win else _NAN

    if k >= 2:
        std = 0.0 if ret.min() == ret.max() else float(ret.std(ddof=1))
        sqn = math.sqrt(k) * _ratio(float(ret.mean()), std)
    else:
        sqn = _NAN

    return {
        "trades": float(k),
        "win_rate": win_rate,
        "profit_factor": profit_factor,
        "expectancy": float(pnl.mean()) if k else _NAN,
        "avg_trade_return": float(ret.mean()) if k else _NAN,
        "avg_win": avg_win,
        "avg_loss": avg_loss,
        "payoff_ratio": payoff,
        "largest_win": float(pnl.max()) if n_win else _NAN,
        "largest_loss": float(pnl.min()) if n_loss else _NAN,
        "avg_bars_held": float(held.mean()) if k else _NAN,
        "max_consecutive_wins": _longest_run(wins),
        "max_consecutive_losses": _longest_run(losses),
        "sqn": sqn,
        # (1 - w) / inf is 0, so an all-winning record gives Kelly = win rate = 1.
        "kelly": win_rate - (1.0 - win_rate) / payoff,
    }


def _exposure(
    exposure_bars: float | npt.ArrayLike | None, trade_bars_held: npt.ArrayLike, n: int
) -> float:
    """Fraction of the n bars with a position open."""
    if exposure_bars is None:
        bars = float(np.asarray(trade_bars_held, dtype=np.float64).sum())
    elif np.ndim(exposure_bars) == 0:
        bars = float(np.asarray(exposure_bars, dtype=np.float64))
    else:
        bars = float(np.count_nonzero(np.asarray(exposure_bars)))
    return min(bars, float(n)) / n


def _benchmark_stats(
    rets: FloatArray,
    benchmark_close: npt.ArrayLike | None,
    n: int,
    ann: float,
    work: FloatArray,
) -> dict[str, float]:
    """Buy-and-hold return and CAPM statistics against the benchmark's per-bar returns."""
    out = {
        "buy_hold_return": _NAN,
        "alpha": _NAN,
        "beta": _NAN,
        "information_ratio": _NAN,
        "benchmark_correlation": _NAN,
    }
    if benchmark_close is None:
        return out
    close = np.ascontiguousarray(benchmark_close, dtype=np.float64)
    if close.shape != (n,):
        raise EngineError(f"benchmark_close has {close.size} values, equity has {n}")
    with np.errstate(divide="ignore", invalid="ignore"):
        out["buy_hold_return"] = float(close[-1] / close[0] - 1.0)
    # Bar t's strategy return rets[t] (curve point t+1 over t) pairs with close[t] / close[t-1].
    strat = rets[1:]
    size = int(strat.shape[0])
    if size < 2:
        return out
    bench = work[:size]
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(close[1 : size + 1], close[:size], out=bench)
    bench -= 1.0
    sb, ss, sa, b_varied, s_varied, a_varied = _bench_sums(strat, bench)
    b_mean, s_mean, a_mean = sb / size, ss / size, sa / size
    var_b, cov, var_s, track_ss = _bench_products(strat, bench, s_mean, b_mean, a_mean)
    var_b /= size
    cov /= size
    var_s /= size
    # empyrical treats a benchmark variance under 1e-30 as zero and gives NaN beta.
    beta = cov / var_b if var_b >= 1.0e-30 else _NAN
    out["beta"] = beta
    if not math.isnan(beta):
        with np.errstate(over="ignore", invalid="ignore"):
            out["alpha"] = float(np.power(1.0 + s_mean - beta * b_mean, ann) - 1.0)
    if b_varied and s_varied:
        out["benchmark_correlation"] = cov / math.sqrt(var_b * var_s)
    # empyrical: no dispersion means exactly zero tracking error
    track = math.sqrt(track_ss / (size - 1)) if a_varied else 0.0
    out["information_ratio"] = _ratio(a_mean, track) * math.sqrt(ann)
    return out


def _metric_listing() -> str:
    """The generated reference list that closes the module and compute_metrics docstrings."""
    lines = ["", "Metrics (key [group, fmt]: definition):", ""]
    lines += [f"* ``{m.key}`` [{m.group}, {m.fmt}]: {m.definition}" for m in METRICS]
    return "\n".join(lines) + "\n"


if __doc__ is not None:
    __doc__ += _metric_listing()
if compute_metrics.__doc__ is not None:
    compute_metrics.__doc__ += _metric_listing()
