"""Monte Carlo resampling of a finished backtest: how much of its result was the luck of order.

Three ways to make alternative histories out of one run, all compounding from the same
starting capital:

* ``shuffle`` — the closed trades' equity returns in a random order (a permutation per path).
  The final return is the same on every path (a product does not depend on the order of its
  factors); the drawdowns are not.
* ``bootstrap`` — as many trades as the run had, drawn with replacement from its trades.
* ``block`` — the per-bar returns of the equity curve, resampled as a circular block bootstrap
  (Politis & Romano): blocks of ``block_length`` consecutive returns starting at uniform random
  bars, wrapping past the end, laid end to end and cut at the run's length. Blocks keep the
  short-range dependence (volatility clusters, multi-bar trades) that a bar-by-bar draw loses.
  Long curves are first compounded into at most ``max_steps`` equal groups of bars (a year of
  minutes would otherwise be 525,600 columns per path); drawdowns are then measured at that
  step, and the block length is converted to steps.

Everything is vectorized over paths: iterations are processed in chunks of ``CHUNK`` paths,
each chunk drawn from its own random stream ``SeedSequence(seed).spawn(...)[i]``. So a run is
reproducible from its seed, and the first 1,000 paths of a 10,000-path run are exactly the
paths of a 1,000-path run with the same seed. Working memory per chunk is a few
``CHUNK x steps`` float64 arrays (4 MB each at 500 steps); what is kept for the whole run is
four floats per path and the equity of every path at ``fan_points`` sampled steps (about 80 MB
for 100,000 paths x 101 points).

Conventions: a path's equity starts at 1 (the initial capital) and the starting capital counts
as the first peak, as ``metrics.max_drawdown`` does; drawdowns are negative fractions; a path is
ruined when its maximum drawdown reaches ``-ruin_threshold`` or goes past it; confidence
intervals are percentile intervals (the 2.5th and 97.5th percentiles for 95 %) with numpy's
linear interpolation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from backtester.engine.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

METHODS = ("shuffle", "bootstrap", "block")
FAN_LEVELS = (5.0, 25.0, 50.0, 75.0, 95.0)
CHUNK = 1_000
MAX_ITERATIONS = 100_000
MAX_STEPS = 2_000
FAN_POINTS = 101
HISTOGRAM_BINS = 40
# Columns of the (paths x fan points) matrix handed to np.percentile at once: percentile copies
# its input, so doing it in slices keeps that copy small for 100,000 paths.
_PERCENTILE_COLUMNS = 16
_BLOCK_TABLE_MAX = 1 << 22
_SAME_VALUE = 1e-9  # relative spread below which a histogram's values count as one


@dataclass(frozen=True, slots=True)
class MonteCarloConfig:
    """What to simulate. ``block_length`` is in bars (block method only; None: the default,
    ``default_block_length``); ``years`` is the run's span for CAGR (None: no CAGR);
    ``periods_per_year`` is bars per year for the block method's Sharpe (None: no Sharpe)."""

    method: str
    iterations: int = 1_000
    seed: int = 0
    block_length: int | None = None
    ruin_threshold: float = 0.5
    years: float | None = None
    periods_per_year: float | None = None
    fan_points: int = FAN_POINTS
    max_steps: int = MAX_STEPS
    ci_level: float = 0.95

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if not _is_int(self.iterations) or not 1 <= self.iterations <= MAX_ITERATIONS:
            raise ConfigError(f"iterations must be a whole number from 1 to {MAX_ITERATIONS:,}")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**63:
            raise ConfigError("seed must be a whole number from 0 to 2**63 - 1")
        if self.block_length is not None and (
            not _is_int(self.block_length) or self.block_length < 1
        ):
            raise ConfigError("block_length must be a whole number of bars, at least 1")
        if not _finite(self.ruin_threshold) or not 0.0 < self.ruin_threshold <= 1.0:
            raise ConfigError("ruin_threshold must be a drawdown fraction above 0 and at most 1")
        if self.years is not None and (not _finite(self.years) or self.years <= 0.0):
            raise ConfigError("years must be more than 0")
        if self.periods_per_year is not None and (
            not _finite(self.periods_per_year) or self.periods_per_year <= 0.0
        ):
            raise ConfigError("periods_per_year must be more than 0")
        if not _is_int(self.fan_points) or self.fan_points < 2:
            raise ConfigError("fan_points must be a whole number, at least 2")
        if not _is_int(self.max_steps) or self.max_steps < 2:
            raise ConfigError("max_steps must be a whole number, at least 2")
        if not _finite(self.ci_level) or not 0.0 < self.ci_level < 1.0:
            raise ConfigError("ci_level must be between 0 and 1")


@dataclass(frozen=True, slots=True)
class Summary:
    """Distribution of one per-path statistic. ``original`` is the value of the unresampled
    sequence measured the same way (NaN when undefined)."""

    mean: float
    std: float
    median: float
    p5: float
    p95: float
    ci_low: float
    ci_high: float
    original: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class MonteCarloResult:
    """Every path's statistics and the percentile fan of equity (relative: 1 = the capital).

    ``steps`` is the path length (trades, or groups of ``bars_per_step`` bars for the block
    method); ``block_steps`` the block length in steps (block method, else None). ``fan_x``
    are the sampled steps (0 = the start), ``fan`` has one row per ``FAN_LEVELS`` entry and
    ``original`` the unresampled path at the same steps. ``cagr`` and ``sharpe`` are None when
    the config did not ask for them (Sharpe only exists for the block method: a trade shuffle
    does not change it)."""

    config: MonteCarloConfig
    steps: int
    bars_per_step: int
    block_steps: int | None
    fan_x: IntArray
    fan_levels: tuple[float, ...]
    fan: FloatArray
    original: FloatArray
    final_return: FloatArray
    max_drawdown: FloatArray
    cagr: FloatArray | None
    sharpe: FloatArray | None
    original_final_return: float
    original_max_drawdown: float
    original_cagr: float
    original_sharpe: float
    ruined: int

    @property
    def iterations(self) -> int:
        return int(self.final_return.shape[0])

    @property
    def probability_of_ruin(self) -> float:
        """Share of paths whose maximum drawdown reached ``-ruin_threshold``."""
        return self.ruined / self.iterations

    def summaries(self) -> dict[str, Summary]:
        """final_return, max_drawdown, and cagr / sharpe when computed."""
        level = self.config.ci_level
        out = {
            "final_return": summarize(self.final_return, self.original_final_return, level),
            "max_drawdown": summarize(self.max_drawdown, self.original_max_drawdown, level),
        }
        if self.cagr is not None:
            out["cagr"] = summarize(self.cagr, self.original_cagr, level)
        if self.sharpe is not None:
            out["sharpe"] = summarize(self.sharpe, self.original_sharpe, level)
        return out


# --- inputs ---------------------------------------------------------------------------------


def trade_equity_returns(pnl: npt.ArrayLike, initial_capital: float) -> FloatArray:
    """Each closed trade's P&L over the realized equity before it (the capital plus the P&L of
    the trades closed earlier), in closing order. Compounding them reproduces the realized
    equity exactly: prod(1 + r) = (capital + sum(pnl)) / capital. A loss larger than the
    equity left is capped at -1 (the account is gone); once it is, later returns are 0."""
    values = np.asarray(pnl, dtype=np.float64)
    if values.ndim != 1:
        raise ConfigError("pnl must be one-dimensional")
    if not _finite(initial_capital) or initial_capital <= 0.0:
        raise ConfigError("initial_capital must be more than 0")
    if not np.all(np.isfinite(values)):
        raise ConfigError("pnl holds a non-finite value")
    before = initial_capital + np.concatenate(([0.0], np.cumsum(values)[:-1]))
    out = np.zeros_like(values)
    alive = before > 0.0
    np.divide(values, before, out=out, where=alive)
    # The first trade that takes the equity to zero or below loses everything that was left.
    return np.maximum(out, -1.0)


def bar_returns(equity: npt.ArrayLike, initial_capital: float) -> FloatArray:
    """Simple returns of ``(initial_capital, *equity)``: one per bar, as ``compute_metrics``."""
    eq = np.asarray(equity, dtype=np.float64)
    if eq.ndim != 1 or eq.shape[0] == 0:
        raise ConfigError("equity must be a non-empty one-dimensional array")
    if not _finite(initial_capital) or initial_capital <= 0.0:
        raise ConfigError("initial_capital must be more than 0")
    prev = np.concatenate(([initial_capital], eq[:-1]))
    out = np.zeros_like(eq)
    np.divide(eq, prev, out=out, where=prev > 0.0)
    out -= 1.0
    out[prev <= 0.0] = 0.0  # a dead account stays dead: no return after it
    return out


def default_block_length(bars: int) -> int:
    """The cube root of the series length, rounded (at least 1): the usual order of the block
    length that minimises a block bootstrap's error (Hall, Horowitz & Jing 1995)."""
    return max(1, round(math.pow(bars, 1.0 / 3.0)))


def aggregate_returns(returns: npt.ArrayLike, max_steps: int) -> tuple[FloatArray, int]:
    """Compound consecutive returns into at most ``max_steps`` steps of ``k`` returns each (the
    last step may hold fewer). Returns (step returns, k); k = 1 leaves the series as it is."""
    r = np.asarray(returns, dtype=np.float64)
    n = int(r.shape[0])
    k = max(1, math.ceil(n / max_steps))
    if k == 1:
        return r.copy(), 1
    steps = math.ceil(n / k)
    grown = np.zeros(steps * k, dtype=np.float64)
    grown[:n] = r
    grown += 1.0
    return np.prod(grown.reshape(steps, k), axis=1) - 1.0, k


# --- path statistics ------------------------------------------------------------------------


def path_stats(growth: FloatArray, ruin_threshold: float) -> tuple[FloatArray, FloatArray, int]:
    """Final return, maximum drawdown (<= 0) and the number of ruined paths of equity paths
    ``growth`` (paths x steps, each path's equity after each step over the starting capital;
    the start itself, 1, is implied and counts as the first peak)."""
    peak = np.maximum.accumulate(growth, axis=1)
    np.maximum(peak, 1.0, out=peak)
    np.divide(growth, peak, out=peak)
    max_dd = peak.min(axis=1) - 1.0
    np.minimum(max_dd, 0.0, out=max_dd)
    final = growth[:, -1] - 1.0
    ruined = int(np.count_nonzero(max_dd <= -ruin_threshold))
    return final, max_dd, ruined


def percentile_interval(values: npt.ArrayLike, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of the finite values (NaN, NaN if none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.shape[0] == 0:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(v, [tail, 100.0 - tail])
    return float(low), float(high)


def summarize(values: npt.ArrayLike, original: float, level: float = 0.95) -> Summary:
    """Mean, std (ddof=0), median, 5th/95th percentiles and the ``level`` percentile interval
    of the finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.shape[0] == 0:
        nan = math.nan
        return Summary(nan, nan, nan, nan, nan, nan, nan, float(original))
    p5, median, p95 = np.percentile(v, [5.0, 50.0, 95.0])
    low, high = percentile_interval(v, level)
    return Summary(
        mean=float(v.mean()),
        std=float(v.std()),
        median=float(median),
        p5=float(p5),
        p95=float(p95),
        ci_low=low,
        ci_high=high,
        original=float(original),
    )


def histogram(values: npt.ArrayLike, bins: int = HISTOGRAM_BINS) -> tuple[FloatArray, IntArray]:
    """(edges, counts) of the finite values in ``bins`` equal bins. Values that differ only by
    rounding (a shuffle's final returns: the same product taken in other orders) get one bin
    around them."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.shape[0] == 0:
        return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.int64)
    low, high = float(v.min()), float(v.max())
    if high - low <= _SAME_VALUE * max(1.0, abs(low), abs(high)):
        half = max(abs(low) * 1e-6, 1e-9)
        counts = np.array([v.shape[0]], dtype=np.int64)
        return np.array([low - half, high + half], dtype=np.float64), counts
    counts_raw, edges = np.histogram(v, bins=bins, range=(low, high))
    return edges.astype(np.float64), counts_raw.astype(np.int64)


def fan_steps(steps: int, points: int) -> IntArray:
    """The steps 0..steps sampled at ``points`` (about) evenly spaced places, ends included."""
    if steps + 1 <= points:
        return np.arange(steps + 1, dtype=np.int64)
    return np.unique(np.rint(np.linspace(0.0, float(steps), points)).astype(np.int64))


def _cagr(final_return: FloatArray, years: float) -> FloatArray:
    growth = np.maximum(final_return + 1.0, 0.0)
    with np.errstate(divide="ignore"):
        out: FloatArray = np.power(growth, 1.0 / years) - 1.0
    return out


# --- the simulation -------------------------------------------------------------------------


def _block_rows(source: FloatArray, block: int) -> FloatArray:
    """Every block a circular block bootstrap can draw, one per row: row i holds the returns at
    i, i+1, ..., i+block-1 (wrapping past the end). Drawing a block is then one row gather."""
    n = int(source.shape[0])
    wrapped = np.concatenate((source, source[: block - 1]))
    rows: FloatArray = np.lib.stride_tricks.sliding_window_view(wrapped, block)[:n].copy()
    return rows


def _draw(
    rng: np.random.Generator,
    method: str,
    paths: int,
    source: FloatArray,
    block: int,
    block_rows: FloatArray | None,
) -> FloatArray:
    """A fresh (paths x n) array of resampled returns, one path per row (block rows, when
    given, are ``_block_rows(source, block)``)."""
    n = int(source.shape[0])
    if method == "shuffle":
        # One independent permutation per row: argsort of uniform keys (ties have probability
        # ~0 and only swap two equal-probability orders).
        drawn: FloatArray = source[np.argsort(rng.random((paths, n)), axis=1)]
        return drawn
    if method == "bootstrap" or block == 1:
        drawn = source[rng.integers(0, n, size=(paths, n))]
        return drawn
    blocks = math.ceil(n / block)
    starts = rng.integers(0, n, size=(paths, blocks))
    if block_rows is not None:
        return block_rows[starts].reshape(paths, blocks * block)[:, :n]
    idx = starts[:, :, np.newaxis] + np.arange(block)
    idx %= n
    drawn = source[idx.reshape(paths, blocks * block)[:, :n]]
    return drawn


def run_monte_carlo(returns: npt.ArrayLike, config: MonteCarloConfig) -> MonteCarloResult:
    """Resample ``returns`` (per-trade equity returns for shuffle/bootstrap, per-bar returns for
    block; each >= -1) ``config.iterations`` times and measure every path.

    Raises ConfigError for an empty or non-finite series or a return below -1.
    """
    source = np.asarray(returns, dtype=np.float64)
    if source.ndim != 1 or source.shape[0] == 0:
        raise ConfigError("returns must be a non-empty one-dimensional array")
    if not np.all(np.isfinite(source)):
        raise ConfigError("returns hold a non-finite value")
    if np.any(source < -1.0):
        raise ConfigError("a return below -1 (a loss of more than everything) is not possible")

    bars_per_step = 1
    block_steps: int | None = None
    if config.method == "block":
        bars = int(source.shape[0])
        source, bars_per_step = aggregate_returns(source, config.max_steps)
        block_bars = config.block_length or default_block_length(bars)
        block_steps = max(1, min(round(block_bars / bars_per_step), int(source.shape[0])))
    n = int(source.shape[0])
    iterations = config.iterations
    want_sharpe = config.method == "block" and config.periods_per_year is not None

    fan_x = fan_steps(n, config.fan_points)
    sample_cols = np.maximum(fan_x - 1, 0)  # column of the equity after step x (x >= 1)
    fan_values = np.empty((iterations, fan_x.shape[0]), dtype=np.float64)
    final = np.empty(iterations, dtype=np.float64)
    max_dd = np.empty(iterations, dtype=np.float64)
    sharpe = np.empty(iterations, dtype=np.float64) if want_sharpe else None
    ruined = 0

    block = block_steps or 1
    # The table of every block costs n x block floats: worth it unless blocks are very long.
    block_rows = _block_rows(source, block) if block > 1 and n * block <= _BLOCK_TABLE_MAX else None
    chunks = math.ceil(iterations / CHUNK)
    streams = np.random.SeedSequence(config.seed).spawn(chunks)
    for c, stream in enumerate(streams):
        lo, hi = c * CHUNK, min(iterations, (c + 1) * CHUNK)
        rng = np.random.Generator(np.random.PCG64(stream))
        drawn = _draw(rng, config.method, hi - lo, source, block, block_rows)  # used in place
        if sharpe is not None:
            sharpe[lo:hi] = _sharpe(drawn, float(config.periods_per_year or 0.0) / bars_per_step)
        drawn += 1.0
        np.cumprod(drawn, axis=1, out=drawn)
        fan_values[lo:hi] = drawn[:, sample_cols]
        chunk_final, chunk_dd, chunk_ruined = path_stats(drawn, config.ruin_threshold)
        final[lo:hi] = chunk_final
        max_dd[lo:hi] = chunk_dd
        ruined += chunk_ruined
    fan_values[:, fan_x == 0] = 1.0

    fan = np.empty((len(FAN_LEVELS), fan_x.shape[0]), dtype=np.float64)
    for start in range(0, fan_x.shape[0], _PERCENTILE_COLUMNS):
        cols = slice(start, start + _PERCENTILE_COLUMNS)
        fan[:, cols] = np.percentile(fan_values[:, cols], FAN_LEVELS, axis=0)
    del fan_values

    growth = np.cumprod(source + 1.0, dtype=np.float64)[np.newaxis, :]
    o_final, o_dd, _ = path_stats(growth, config.ruin_threshold)
    original = np.concatenate(([1.0], growth[0]))[fan_x]
    cagr = None if config.years is None else _cagr(final, config.years)
    o_cagr = math.nan if config.years is None else float(_cagr(o_final, config.years)[0])
    o_sharpe = (
        float(_sharpe(source[np.newaxis, :], float(config.periods_per_year) / bars_per_step)[0])
        if want_sharpe and config.periods_per_year is not None
        else math.nan
    )
    return MonteCarloResult(
        config=config,
        steps=n,
        bars_per_step=bars_per_step,
        block_steps=block_steps,
        fan_x=fan_x,
        fan_levels=FAN_LEVELS,
        fan=fan,
        original=original,
        final_return=final,
        max_drawdown=max_dd,
        cagr=cagr,
        sharpe=sharpe,
        original_final_return=float(o_final[0]),
        original_max_drawdown=float(o_dd[0]),
        original_cagr=o_cagr,
        original_sharpe=o_sharpe,
        ruined=ruined,
    )


def _sharpe(step_returns: FloatArray, steps_per_year: float) -> FloatArray:
    """Annualised Sharpe (risk-free 0, ddof=1) of each row; NaN for a constant row or one step."""
    n = step_returns.shape[1]
    if n < 2:
        return np.full(step_returns.shape[0], math.nan)
    mean = step_returns.mean(axis=1)
    centred = step_returns - mean[:, np.newaxis]
    std = np.sqrt(np.einsum("ij,ij->i", centred, centred) / (n - 1))
    out = np.full(step_returns.shape[0], math.nan)
    np.divide(mean, std, out=out, where=std > 0.0)
    out *= math.sqrt(steps_per_year)
    return out


def result_summary(result: MonteCarloResult) -> dict[str, Any]:
    """A JSON-ready digest (plain floats, NaN kept as NaN for the caller to map)."""
    return {
        "method": result.config.method,
        "iterations": result.iterations,
        "seed": result.config.seed,
        "steps": result.steps,
        "bars_per_step": result.bars_per_step,
        "block_steps": result.block_steps,
        "ruin_threshold": result.config.ruin_threshold,
        "probability_of_ruin": result.probability_of_ruin,
        "ruined": result.ruined,
        "summaries": {k: v.as_dict() for k, v in result.summaries().items()},
    }


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _finite(value: object) -> bool:
    return (
        isinstance(value, int | float | np.floating | np.integer)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )
