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
* ``fmt`` says how the UI shows a value: "pct" is a fraction (0.12 = 12 %), "ratio" and
  "number" are plain numbers, "money" is in the account currency, "bars" counts bars and
  "duration" is milliseconds.

The full list of metrics, generated from ``METRICS``, is appended to this docstring and to
``compute_metrics.__doc__``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from backtester.engine.errors import EngineError

Group = Literal["returns", "risk", "risk_adjusted", "drawdown", "trades", "benchmark", "costs"]
Fmt = Literal["pct", "ratio", "number", "money", "bars", "duration"]
FloatArray = npt.NDArray[np.float64]

_YEAR_MS: Final = 365 * 24 * 60 * 60 * 1000
_NAN: Final = math.nan
_INF: Final = math.inf


@dataclass(frozen=True, slots=True)
class MetricDef:
    """How one metric is named, grouped, formatted and defined; ``key`` is its result-dict key."""

    key: str
    label: str
    group: Group
    fmt: Fmt
    definition: str


METRICS: tuple[MetricDef, ...] = (
    # returns
    MetricDef(
        "total_return",
        "Total return",
        "returns",
        "pct",
        "Final equity divided by the initial cash, minus one.",
    ),
    MetricDef(
        "cagr",
        "CAGR",
        "returns",
        "pct",
        "Compound annual growth rate over the number of bars, (final / initial cash) ** "
        "(bars_per_year / bars) - 1, as empyrical's annual_return (bars, not calendar time, "
        "so gaps in the data do not stretch the year).",
    ),
    MetricDef(
        "annualization_periods",
        "Bars per year",
        "returns",
        "number",
        "The number of bars in a 365-day year used to annualize every other metric.",
    ),
    MetricDef(
        "backtest_duration",
        "Duration",
        "returns",
        "duration",
        "Calendar time from the first bar's open to the last bar's close, in milliseconds.",
    ),
    # risk
    MetricDef(
        "annual_volatility",
        "Annual volatility",
        "risk",
        "pct",
        "Sample standard deviation (ddof=1) of the per-bar returns times sqrt(bars_per_year), "
        "as empyrical's annual_volatility.",
    ),
    MetricDef(
        "downside_risk",
        "Downside risk",
        "risk",
        "pct",
        "Root mean square of the per-bar returns below zero (gains counted as zero) times "
        "sqrt(bars_per_year), as empyrical's downside_risk.",
    ),
    MetricDef(
        "var_95",
        "VaR 95 %",
        "risk",
        "pct",
        "The 5th percentile of the per-bar returns (linear interpolation), as empyrical's "
        "value_at_risk.",
    ),
    MetricDef(
        "cvar_95",
        "CVaR 95 %",
        "risk",
        "pct",
        "Mean of the worst int((bars - 1) * 0.05) + 1 per-bar returns, as empyrical's "
        "conditional_value_at_risk.",
    ),
    MetricDef(
        "skew",
        "Skewness",
        "risk",
        "ratio",
        "Sample skewness of the per-bar returns without bias correction, as scipy.stats.skew.",
    ),
    MetricDef(
        "kurtosis",
        "Excess kurtosis",
        "risk",
        "ratio",
        "Excess (Fisher) kurtosis of the per-bar returns without bias correction, as "
        "scipy.stats.kurtosis.",
    ),
    MetricDef(
        "tail_ratio",
        "Tail ratio",
        "risk",
        "ratio",
        "Absolute 95th percentile of the per-bar returns over the absolute 5th percentile, as "
        "empyrical's tail_ratio.",
    ),
    # risk-adjusted
    MetricDef(
        "sharpe",
        "Sharpe ratio",
        "risk_adjusted",
        "ratio",
        "Mean per-bar return over its sample standard deviation (ddof=1) times "
        "sqrt(bars_per_year), risk-free rate 0, as empyrical's sharpe_ratio.",
    ),
    MetricDef(
        "sortino",
        "Sortino ratio",
        "risk_adjusted",
        "ratio",
        "Mean per-bar return times bars_per_year over the downside risk, as empyrical's "
        "sortino_ratio.",
    ),
    MetricDef(
        "calmar",
        "Calmar ratio",
        "risk_adjusted",
        "ratio",
        "CAGR over the absolute maximum drawdown, NaN without a drawdown, as empyrical's "
        "calmar_ratio.",
    ),
    MetricDef(
        "omega",
        "Omega ratio",
        "risk_adjusted",
        "ratio",
        "Sum of positive per-bar returns over the absolute sum of negative ones (threshold 0), "
        "NaN without a losing bar, as empyrical's omega_ratio.",
    ),
    MetricDef(
        "stability",
        "Stability",
        "risk_adjusted",
        "ratio",
        "R squared of a least-squares line through the cumulative log returns, as empyrical's "
        "stability_of_timeseries (NaN for a flat curve).",
    ),
    # drawdown
    MetricDef(
        "max_drawdown",
        "Max drawdown",
        "drawdown",
        "pct",
        "Largest fall of equity from its running peak (initial cash included) as a negative "
        "fraction, as empyrical's max_drawdown.",
    ),
    MetricDef(
        "max_drawdown_duration",
        "Max drawdown duration",
        "drawdown",
        "bars",
        "Most bars from a peak to the bar where equity first gets back to it, or to the last "
        "bar for a drawdown still open at the end.",
    ),
    MetricDef(
        "max_drawdown_time",
        "Max drawdown time",
        "drawdown",
        "duration",
        "Longest calendar time, in milliseconds, from a peak to its recovery or to the last "
        "bar's close, gaps in the data included.",
    ),
    MetricDef(
        "avg_drawdown",
        "Average drawdown",
        "drawdown",
        "pct",
        "Mean depth of the separate drawdowns (each peak-to-recovery episode counted once at "
        "its lowest point, an open one included), 0 when there is none.",
    ),
    MetricDef(
        "longest_recovery",
        "Longest recovery",
        "drawdown",
        "bars",
        "Most bars from a drawdown's lowest point (its first bar there) back to the previous "
        "peak, over drawdowns that recovered; 0 when none did.",
    ),
    # trades
    MetricDef(
        "trades",
        "Trades",
        "trades",
        "number",
        "Number of closed round trips.",
    ),
    MetricDef(
        "exposure",
        "Exposure",
        "trades",
        "pct",
        "Fraction of bars with a position open.",
    ),
    MetricDef(
        "win_rate",
        "Win rate",
        "trades",
        "pct",
        "Fraction of trades with a positive net profit (break-even trades count as not won).",
    ),
    MetricDef(
        "profit_factor",
        "Profit factor",
        "trades",
        "ratio",
        "Gross profit of winning trades over the absolute gross loss of losing trades, +inf "
        "with wins and no loss, NaN with neither.",
    ),
    MetricDef(
        "expectancy",
        "Expectancy",
        "trades",
        "money",
        "Mean net profit per trade.",
    ),
    MetricDef(
        "avg_trade_return",
        "Average trade return",
        "trades",
        "pct",
        "Mean of the trades' net returns on their entry notional.",
    ),
    MetricDef(
        "avg_win",
        "Average win",
        "trades",
        "money",
        "Mean net profit of the winning trades.",
    ),
    MetricDef(
        "avg_loss",
        "Average loss",
        "trades",
        "money",
        "Mean net profit of the losing trades (a negative amount).",
    ),
    MetricDef(
        "payoff_ratio",
        "Payoff ratio",
        "trades",
        "ratio",
        "Average win over the absolute average loss, +inf with wins and no loss, NaN without "
        "a win.",
    ),
    MetricDef(
        "largest_win",
        "Largest win",
        "trades",
        "money",
        "Net profit of the best winning trade, NaN without a win.",
    ),
    MetricDef(
        "largest_loss",
        "Largest loss",
        "trades",
        "money",
        "Net profit of the worst losing trade (negative), NaN without a loss.",
    ),
    MetricDef(
        "avg_bars_held",
        "Average bars held",
        "trades",
        "bars",
        "Mean number of bars a trade was held.",
    ),
    MetricDef(
        "max_consecutive_wins",
        "Max consecutive wins",
        "trades",
        "number",
        "Longest run of winning trades in exit order (a break-even trade ends the run).",
    ),
    MetricDef(
        "max_consecutive_losses",
        "Max consecutive losses",
        "trades",
        "number",
        "Longest run of losing trades in exit order (a break-even trade ends the run).",
    ),
    MetricDef(
        "sqn",
        "SQN",
        "trades",
        "ratio",
        "System quality number, sqrt(trades) times the mean trade return over its sample "
        "standard deviation (ddof=1), NaN with fewer than two trades.",
    ),
    MetricDef(
        "kelly",
        "Kelly fraction",
        "trades",
        "pct",
        "Kelly criterion win_rate - (1 - win_rate) / payoff_ratio, equal to the win rate when "
        "no trade lost.",
    ),
    # benchmark
    MetricDef(
        "buy_hold_return",
        "Buy & hold return",
        "benchmark",
        "pct",
        "Benchmark's last close over its first close, minus one.",
    ),
    MetricDef(
        "alpha",
        "Alpha",
        "benchmark",
        "pct",
        "Annualized CAPM alpha against the benchmark's per-bar returns, (1 + mean residual) ** "
        "bars_per_year - 1, as empyrical's alpha_beta.",
    ),
    MetricDef(
        "beta",
        "Beta",
        "benchmark",
        "ratio",
        "Covariance of the per-bar returns with the benchmark's over the benchmark's variance, "
        "as empyrical's alpha_beta.",
    ),
    MetricDef(
        "information_ratio",
        "Information ratio",
        "benchmark",
        "ratio",
        "Mean per-bar return in excess of the benchmark over the excess's sample standard "
        "deviation, times sqrt(bars_per_year) (empyrical's excess_sharpe, annualized).",
    ),
    MetricDef(
        "benchmark_correlation",
        "Benchmark correlation",
        "benchmark",
        "ratio",
        "Pearson correlation of the per-bar returns with the benchmark's.",
    ),
    # costs
    MetricDef(
        "fees_paid",
        "Fees paid",
        "costs",
        "money",
        "Total fees paid on every fill.",
    ),
    MetricDef(
        "turnover",
        "Turnover",
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

    ann = float(bars_per_year)
    # Two work arrays of n + 1 floats serve every step through out= and views: holding
    # several fresh 8 MB temporaries at once costs more on a 1e6-bar run than the maths does.
    curve = np.empty(n + 1, dtype=np.float64)
    curve[0] = initial_cash
    curve[1:] = eq
    buf_a = np.empty(n + 1, dtype=np.float64)
    buf_b = np.empty(n + 1, dtype=np.float64)
    rets = _bar_returns(curve, np.empty(n, dtype=np.float64))

    out: dict[str, float] = {}
    out["total_return"] = float(eq[-1] / initial_cash - 1.0)
    out["annualization_periods"] = ann
    bar_ms = _YEAR_MS / ann
    # The curve's first point is the first bar's open; every other point is a bar's close.
    out["backtest_duration"] = float(ts[-1] - ts[0]) + bar_ms
    out.update(_return_stats(rets, curve, ann, buf_a, buf_b))
    out.update(_drawdown_stats(curve, ts, bar_ms, buf_a))
    out["calmar"] = _calmar(out["cagr"], out["max_drawdown"])
    out.update(_trade_stats(trade_pnl, trade_returns, trade_bars_held))
    out["exposure"] = _exposure(exposure_bars, trade_bars_held, n)
    out.update(_benchmark_stats(rets, benchmark_close, n, ann, buf_a, buf_b))
    out["fees_paid"] = float(fees_paid)
    mean_equity = float(eq.mean())
    out["turnover"] = float(turnover) / mean_equity if mean_equity > 0 else _NAN
    return {m.key: out[m.key] for m in METRICS}


def _bar_returns(curve: FloatArray, into: FloatArray) -> FloatArray:
    """Simple returns between consecutive curve points, cut after the first non-positive one."""
    bad = np.flatnonzero(curve[:-1] <= 0.0)
    stop = int(bad[0]) if bad.size else curve.shape[0] - 1
    # curve[0] > 0 is checked by the caller, so at least one return is always left.
    rets = into[:stop]
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(curve[1 : stop + 1], curve[:stop], out=rets)
    rets -= 1.0
    return rets


def _dot(a: FloatArray, b: FloatArray) -> float:
    """Sum of products on one thread: BLAS dot spreads 1e6 elements over threads, which is
    several times slower than this on a machine whose cores are busy with other work."""
    return float(np.einsum("i,i->", a, b))


def _ratio(num: float, den: float) -> float:
    """num / den with IEEE semantics instead of ZeroDivisionError: x/0 is +/-inf, 0/0 NaN."""
    if den == 0.0:
        if num == 0.0 or math.isnan(num):
            return _NAN
        return math.copysign(_INF, num) * math.copysign(1.0, den)
    return num / den


def _return_stats(
    rets: FloatArray, curve: FloatArray, ann: float, buf_a: FloatArray, buf_b: FloatArray
) -> dict[str, float]:
    """Statistics of the per-bar return series (empyrical / scipy conventions)."""
    m = int(rets.shape[0])
    out: dict[str, float] = {}

    ending = float(curve[m] / curve[0])
    if ending > 0.0:
        with np.errstate(over="ignore"):
            out["cagr"] = float(np.power(ending, ann / m) - 1.0)
    else:
        out["cagr"] = -1.0 if ending == 0.0 else _NAN

    total = float(rets.sum())
    mean = total / m
    constant = float(rets.min()) == float(rets.max())  # empyrical: a constant has zero std
    dev = np.subtract(rets, mean, out=buf_a[:m])
    dev2 = np.multiply(dev, dev, out=buf_b[:m])
    ss = float(dev2.sum())
    m2 = ss / m
    if constant:
        out["skew"] = out["kurtosis"] = _NAN
    else:
        out["skew"] = _dot(dev2, dev) / m / m2**1.5
        out["kurtosis"] = _dot(dev2, dev2) / m / (m2 * m2) - 3.0
    if m >= 2:
        std = 0.0 if constant else math.sqrt(ss / (m - 1))
        out["annual_volatility"] = std * math.sqrt(ann)
        out["sharpe"] = _ratio(mean, std) * math.sqrt(ann)
    else:
        out["annual_volatility"] = out["sharpe"] = _NAN

    losses = np.minimum(rets, 0.0, out=buf_b[:m])
    downside = math.sqrt(_dot(losses, losses) / m) * math.sqrt(ann)
    out["downside_risk"] = downside
    out["sortino"] = _ratio(mean * ann, downside) if m >= 2 else _NAN
    loss_sum = -float(losses.sum())
    gain_sum = total + loss_sum  # the positive returns' sum without another pass
    out["omega"] = gain_sum / loss_sum if m >= 2 and loss_sum > 0.0 else _NAN

    out.update(_tail_stats(rets, buf_a[:m]))
    out["stability"] = _stability(curve[: m + 1], buf_a[:m])
    return out


def _tail_stats(rets: FloatArray, work: FloatArray) -> dict[str, float]:
    """VaR, CVaR and tail ratio from two single-kth partitions (a multi-kth one is far slower)."""
    m = int(rets.shape[0])
    # numpy's linear percentile sits at fractional position q * (m - 1) of the sorted values.
    pos5, pos95 = 0.05 * (m - 1), 0.95 * (m - 1)
    i5, i95 = math.floor(pos5), math.floor(pos95)
    part = work
    part[:] = rets
    part.partition(i5)
    # empyrical's CVaR averages the int((m - 1) * 0.05) + 1 smallest returns: part[: i5 + 1].
    cvar = float(part[: i5 + 1].mean())
    upper = part[i5 + 1 :]
    q5 = _lerp(float(part[i5]), upper, pos5 - i5)
    if i95 > i5:
        upper.partition(i95 - i5 - 1)
        q95 = _lerp(float(upper[i95 - i5 - 1]), upper[i95 - i5 :], pos95 - i95)
    else:  # fewer than 21 returns: both percentiles fall between the same two values
        q95 = _lerp(float(part[i95]), upper, pos95 - i95)
    return {"var_95": q5, "cvar_95": cvar, "tail_ratio": _ratio(abs(q95), abs(q5))}


def _lerp(a: float, above: FloatArray, t: float) -> float:
    """numpy's linear percentile between ``a`` and the smallest value of ``above`` at fraction t."""
    if t == 0.0:
        return a
    b = float(above.min())
    # numpy interpolates from the nearer end, so t close to 1 lands exactly on b.
    return b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t


def _stability(curve: FloatArray, y: FloatArray) -> float:
    """R squared of the cumulative log returns on the bar index, as scipy's linregress.

    The cumulative log return at point i is log(curve[i] / curve[0]), one log per point instead
    of empyrical's log1p-then-cumsum; ``y`` is a spare buffer of len(curve) - 1 floats.
    """
    m = int(curve.shape[0]) - 1
    if m < 2:
        return _NAN
    with np.errstate(divide="ignore", invalid="ignore"):
        np.log(curve[1:], out=y)
    if not np.isfinite(y).all():
        return _NAN
    if float(y.min()) == float(y.max()):
        return _NAN  # a flat line has no R squared (empyrical's linregress gives NaN)
    y -= y.mean()
    # The centred y sums to zero, so the raw bar index can stand in for the centred one.
    sxy = _dot(np.arange(m, dtype=np.float64), y)
    sxx = m * (m * m - 1.0) / 12.0
    syy = _dot(y, y)
    return min(sxy * sxy / (sxx * syy), 1.0)


def _calmar(cagr: float, max_dd: float) -> float:
    """CAGR over |max drawdown| as empyrical: NaN without a drawdown or when infinite."""
    if not max_dd < 0.0:
        return _NAN
    value = cagr / abs(max_dd)
    return value if math.isfinite(value) else _NAN


def _drawdown_stats(
    curve: FloatArray, ts: npt.NDArray[np.int64], bar_ms: float, work: FloatArray
) -> dict[str, float]:
    """Depth, duration and recovery of the drawdown episodes of the account curve."""
    size = int(curve.shape[0])
    dd = np.maximum.accumulate(curve, out=work)
    np.divide(curve, dd, out=dd)
    dd -= 1.0
    under = dd < 0.0
    zero = {
        "max_drawdown": float(dd.min()),
        "max_drawdown_duration": 0.0,
        "max_drawdown_time": 0.0,
        "avg_drawdown": 0.0,
        "longest_recovery": 0.0,
    }
    if not under.any():
        return zero

    # An episode is a run of points under water: [start, end), its peak at start - 1 and its
    # recovery at end (end == size means still under water at the last bar).
    edges = np.diff(under.view(np.int8))
    starts = np.flatnonzero(edges == 1) + 1
    ends = np.flatnonzero(edges == -1) + 1
    if ends.shape[0] < starts.shape[0]:
        ends = np.append(ends, size)
    recovered = ends < size
    last_point = np.where(recovered, ends, size - 1)

    depth = np.minimum.reduceat(dd, starts)
    durations = last_point - (starts - 1)
    spans = _point_time(last_point, ts, bar_ms) - _point_time(starts - 1, ts, bar_ms)

    longest_recovery = 0.0
    if recovered.any():
        # First point of each reduceat segment that equals its segment's minimum.
        seg_len = np.diff(np.append(starts, size))
        hits = np.flatnonzero(dd[starts[0] :] == np.repeat(depth, seg_len)) + starts[0]
        seg = np.searchsorted(starts, hits, side="right") - 1
        first = np.ones(hits.shape[0], dtype=np.bool_)
        first[1:] = seg[1:] != seg[:-1]
        troughs = hits[first]
        longest_recovery = float((ends - troughs)[recovered].max())

    zero.update(
        max_drawdown_duration=float(durations.max()),
        max_drawdown_time=float(spans.max()),
        avg_drawdown=float(depth.mean()),
        longest_recovery=longest_recovery,
    )
    return zero


def _point_time(
    points: npt.NDArray[np.intp], ts: npt.NDArray[np.int64], bar_ms: float
) -> FloatArray:
    """Time in ms of curve points: point 0 is bar 0's open, point i >= 1 is bar i-1's close."""
    closes = ts[np.maximum(points - 1, 0)] + bar_ms
    return np.where(points == 0, float(ts[0]), closes)


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
    buf_a: FloatArray,
    buf_b: FloatArray,
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
    close = np.asarray(benchmark_close, dtype=np.float64)
    if close.shape != (n,):
        raise EngineError(f"benchmark_close has {close.size} values, equity has {n}")
    with np.errstate(divide="ignore", invalid="ignore"):
        out["buy_hold_return"] = float(close[-1] / close[0] - 1.0)
    # Bar t's strategy return rets[t] (curve point t+1 over t) pairs with close[t] / close[t-1].
    strat = rets[1:]
    size = int(strat.shape[0])
    if size < 2:
        return out
    bench = buf_b[:size]
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(close[1 : size + 1], close[:size], out=bench)
    bench -= 1.0

    b_mean, s_mean = float(bench.mean()), float(strat.mean())
    work = np.subtract(bench, b_mean, out=buf_a[:size])
    var_b = _dot(work, work) / size
    cov = _dot(work, strat) / size
    # empyrical treats a benchmark variance under 1e-30 as zero and gives NaN beta.
    beta = cov / var_b if var_b >= 1.0e-30 else _NAN
    out["beta"] = beta
    if not math.isnan(beta):
        with np.errstate(over="ignore", invalid="ignore"):
            out["alpha"] = float(np.power(1.0 + s_mean - beta * b_mean, ann) - 1.0)

    b_flat = float(bench.min()) == float(bench.max())
    s_flat = float(strat.min()) == float(strat.max())
    if not (b_flat or s_flat):
        np.subtract(strat, s_mean, out=work)
        var_s = _dot(work, work) / size
        out["benchmark_correlation"] = cov / math.sqrt(var_b * var_s)

    active = np.subtract(strat, bench, out=work)
    a_mean = float(active.mean())
    if float(active.min()) == float(active.max()):
        track = 0.0  # empyrical: no dispersion means exactly zero tracking error
    else:
        active -= a_mean
        track = math.sqrt(_dot(active, active) / (size - 1))
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
