"""The engine run in stages, so a worker can report progress and stop when asked.

``backtester.engine.run.run_backtest`` / ``run_portfolio`` do compile → simulate → metrics in
one call. The web task needs to speak between those steps (progress messages, a cancel check)
and to show the equity curve while the simulation advances, so this module composes the same
public engine pieces (``compile_strategy``, ``simulate``/``simulate_portfolio``,
``compute_metrics``) in the same order with the same arguments, and returns the engine's own
result dataclasses, which ``results.result_save`` stores.

The growing equity curve. The numba kernel cannot resume from a saved state, but it is causal:
the equity at bar i depends only on candles and signals up to bar i (a next-open signal on the
last bar of a prefix is dropped, and in the full run it would only move bar i+1). So simulating
the prefix ``[0, m)`` yields exactly the full run's ``equity[:m]``. ``simulate_in_segments``
runs the simulation on growing prefixes (m = n/K, 2n/K, ..., n; the last one *is* the full
run) and hands each segment's new equity values to a callback; every point shown in the browser
is a real equity value of this run. The price is (K+1)/2 simulations instead of one, and the
simulation is the cheap part (~8 ms per 500,000 bars), so K is kept small and grows with the
bar count (one segment below 50,000 bars, at most five).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from backtester.engine.candles import Candles
from backtester.engine.errors import ConfigError, EngineError
from backtester.engine.language import ParamValue, StrategySpec, compile_strategy
from backtester.engine.metrics import compute_metrics
from backtester.engine.run import BacktestResult, PortfolioBacktestResult
from backtester.engine.signals import Signals
from backtester.engine.simulate import (
    PortfolioResult,
    SimConfig,
    SimResult,
    candle_periods_per_year,
    simulate,
    simulate_portfolio,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
EngineRun = BacktestResult | PortfolioBacktestResult
# (timestamps, equity) of bars [start, stop) and the fraction of bars simulated so far.
SegmentCallback = Callable[[IntArray, FloatArray, float], None]

BARS_PER_SEGMENT = 50_000
# Five pieces make a visibly growing curve; each extra one costs a simulation of the prefix
# and a progress message, so a year of minutes (3x the single simulation) stays cheap.
MAX_SEGMENTS = 5


@dataclass
class StageTimes:
    """Wall seconds spent in each engine stage."""

    signals: float = 0.0
    simulate: float = 0.0
    metrics: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def engine(self) -> float:
        return self.signals + self.simulate + self.metrics


def segment_count(bars: int) -> int:
    """How many growing prefixes to simulate for ``bars`` bars (1..MAX_SEGMENTS)."""
    return max(1, min(MAX_SEGMENTS, bars // BARS_PER_SEGMENT))


def aligned_timestamps(candles_list: Sequence[Candles], labels: Sequence[str]) -> None:
    """Raise EngineError unless every symbol has exactly the same bars (a shared-cash
    portfolio is simulated bar by bar across symbols)."""
    first = candles_list[0]
    for candles, label in zip(candles_list[1:], labels[1:], strict=True):
        if len(candles) != len(first) or not np.array_equal(candles.timestamp, first.timestamp):
            only_here = np.setdiff1d(candles.timestamp, first.timestamp).shape[0]
            only_there = np.setdiff1d(first.timestamp, candles.timestamp).shape[0]
            raise EngineError(
                f"{label} and {labels[0]} do not have the same candles in this range "
                f"({only_here} bars only in {label}, {only_there} only in {labels[0]}); a "
                "portfolio backtest needs every symbol on the same bars. Fill the gaps or "
                "pick a range where both are complete."
            )


def compile_signals(
    spec: StrategySpec, candles_list: Sequence[Candles], params: dict[str, ParamValue]
) -> list[Signals]:
    """Each symbol's signals from the same rules and params (indicators shared within one
    symbol's entry and exit rules, as ``run_backtest`` does)."""
    return [compile_strategy(spec, candles, params, {}) for candles in candles_list]


def _prefix(signals: Signals, stop: int) -> Signals:
    return Signals(
        signals.entry_long[:stop],
        signals.exit_long[:stop],
        signals.entry_short[:stop],
        signals.exit_short[:stop],
    )


def _simulate(
    candles_list: Sequence[Candles], signals_list: Sequence[Signals], config: SimConfig
) -> SimResult | PortfolioResult:
    if len(candles_list) == 1:
        return simulate(candles_list[0], signals_list[0], config)
    return simulate_portfolio(candles_list, signals_list, config)


def simulate_in_segments(
    candles_list: Sequence[Candles],
    signals_list: Sequence[Signals],
    config: SimConfig,
    *,
    on_segment: SegmentCallback | None = None,
    segments: int | None = None,
) -> SimResult | PortfolioResult:
    """Simulate on growing prefixes, calling ``on_segment`` with each new stretch of equity;
    returns the full run's result (the last prefix is the whole data).

    ``on_segment`` may raise to stop early (a cancel); the exception propagates.
    """
    n = len(candles_list[0])
    count = segments if segments is not None else segment_count(n)
    count = max(1, min(count, n))
    bounds = [round(n * (k + 1) / count) for k in range(count)]
    done = 0
    result: SimResult | PortfolioResult | None = None
    for stop in bounds:
        if stop <= done:
            continue
        if stop == n:
            part_candles: Sequence[Candles] = candles_list
            part_signals: Sequence[Signals] = signals_list
        else:
            part_candles = [c.slice(0, stop) for c in candles_list]
            part_signals = [_prefix(s, stop) for s in signals_list]
        result = _simulate(part_candles, part_signals, config)
        if on_segment is not None:
            on_segment(result.timestamp[done:stop], result.equity[done:stop], stop / n)
        done = stop
    if result is None:  # pragma: no cover - n >= 1 always yields one segment
        raise EngineError("the candles are empty: nothing to backtest")
    return result


def run_metrics(
    sim: SimResult | PortfolioResult, candles_list: Sequence[Candles]
) -> dict[str, float]:
    """The engine's metrics of ``sim``, benchmarked as ``run_backtest`` / ``run_portfolio`` do:
    the symbol's own close, or the equal-weight buy-and-hold of the closes for a portfolio."""
    if len(candles_list) == 1:
        benchmark: FloatArray = candles_list[0].close
    else:
        benchmark = np.mean([c.close / c.close[0] for c in candles_list], axis=0)
    trades = sim.trades
    return compute_metrics(
        equity=sim.equity,
        timestamps=sim.timestamp,
        trade_pnl=trades["pnl"],
        trade_returns=trades["return"],
        trade_bars_held=trades["bars_held"],
        fees_paid=sim.fees_paid,
        turnover=sim.turnover,
        initial_cash=sim.initial_cash,
        benchmark_close=benchmark,
        bars_per_year=candle_periods_per_year(candles_list[0]),
        exposure_bars=sim.position if sim.position.ndim == 1 else np.abs(sim.position).sum(1),
    )


def build_result(
    spec: StrategySpec,
    params: dict[str, ParamValue],
    candles_list: Sequence[Candles],
    signals_list: Sequence[Signals],
    sim: SimResult | PortfolioResult,
    metrics: dict[str, float],
    engine_seconds: float,
) -> EngineRun:
    """The engine's result dataclass for what the stages produced."""
    if isinstance(sim, PortfolioResult):
        return PortfolioBacktestResult(
            strategy=spec.name,
            params=params,
            signals=tuple(signals_list),
            sim=sim,
            metrics=metrics,
            engine_seconds=engine_seconds,
        )
    return BacktestResult(
        strategy=spec.name,
        params=params,
        signals=signals_list[0],
        sim=sim,
        metrics=metrics,
        engine_seconds=engine_seconds,
        symbol=candles_list[0].symbol,
    )


def run_staged(
    spec: StrategySpec,
    candles_list: Sequence[Candles],
    params: dict[str, ParamValue],
    config: SimConfig,
    *,
    labels: Sequence[str] | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_segment: SegmentCallback | None = None,
    segments: int | None = None,
    times: StageTimes | None = None,
) -> EngineRun:
    """Compile, simulate (in segments) and measure; the same result as ``run_backtest`` (one
    symbol) or ``run_portfolio`` (several) with these params and config.

    ``on_stage("signals" | "simulating" | "metrics")`` is called before each stage and may raise
    to stop the run. ``params`` must already be resolved (``spec.resolve_params``).
    """
    if not candles_list:
        raise ConfigError("a backtest needs at least one symbol")
    if any(len(c) == 0 for c in candles_list):
        raise EngineError("the candles are empty: nothing to backtest")
    if len(candles_list) > 1:
        aligned_timestamps(candles_list, labels or [c.symbol for c in candles_list])
    spent = times if times is not None else StageTimes()

    if on_stage:
        on_stage("signals")
    t0 = time.perf_counter()
    signals_list = compile_signals(spec, candles_list, params)
    spent.signals = time.perf_counter() - t0

    if on_stage:
        on_stage("simulating")
    t0 = time.perf_counter()
    sim = simulate_in_segments(
        candles_list, signals_list, config, on_segment=on_segment, segments=segments
    )
    spent.simulate = time.perf_counter() - t0

    if on_stage:
        on_stage("metrics")
    t0 = time.perf_counter()
    metrics = run_metrics(sim, candles_list)
    spent.metrics = time.perf_counter() - t0
    return build_result(spec, params, candles_list, signals_list, sim, metrics, spent.engine)


def warm_up() -> None:
    """Run a tiny single-symbol and two-symbol backtest so the numba kernels are loaded (from
    their on-disk cache, or compiled once) before the first real task arrives."""
    n = 300
    rng = np.random.default_rng(7)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.concatenate(([close[0]], close[:-1]))
    high = np.maximum(open_, close) * 1.002
    low = np.minimum(open_, close) * 0.998
    ts = np.arange(n, dtype=np.int64) * 60_000
    candles = Candles(ts, open_, high, low, close, np.ones(n), symbol="WARM", timeframe="1m")
    spec = StrategySpec(
        name="warm_up",
        entry_long="cross_above(sma(close, 5), sma(close, 20))",
        exit_long="cross_below(sma(close, 5), sma(close, 20))",
    )
    config = SimConfig(stop_loss=0.02, take_profit=0.05, trailing_stop=0.03)
    run_staged(spec, [candles], {}, config, segments=2)
    run_staged(spec, [candles, candles], {}, config, segments=1)
    # The live curve is thinned with the LTTB kernel (numba too) before it is sent.
    from backtester.downsample import lttb_indices

    lttb_indices(ts.astype(np.float64), close, 50)
