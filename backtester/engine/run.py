"""One call from candles and a strategy to signals, a simulation and its metrics.

``run`` is the only place that sequences the engine: it resolves the strategy's parameters,
compiles the rules to signals, simulates them and computes every metric, timing each stage.
Every caller goes through it: ``run_backtest`` (one symbol) and ``run_portfolio`` (several
symbols, one cash balance) for the CLI, the research runners and the tests, and the web worker,
which passes ``on_stage`` (called before each stage; it may raise to stop the run) and
``on_segment`` (the growing equity curve) so it can report progress between the stages.
``result_to_dict`` turns a result into the JSON-ready summary the CLI prints and the app stores.

The growing equity curve. The numba kernel cannot resume from a saved state, but it is causal:
the equity at bar i depends only on candles and signals up to bar i (a next-open signal on the
last bar of a prefix is dropped, and in the full run it would only move bar i+1). So simulating
the prefix ``[0, m)`` yields exactly the full run's ``equity[:m]``. With ``segments`` K > 1 the
simulation runs on growing prefixes (m = n/K, 2n/K, ..., n; the last one *is* the full run) and
hands each segment's new equity values to ``on_segment``; every point a page shows is a real
equity value of this run. The price is (K+1)/2 simulations instead of one, and the simulation is
the cheap part (~8 ms per 500,000 bars), so ``segment_count`` keeps K small and growing with the
bar count (one segment below 50,000 bars, at most five).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from backtester.engine.candles import Candles, FloatArray, IntArray
from backtester.engine.errors import ConfigError, EngineError
from backtester.engine.language import ParamValue, StrategySpec, compile_strategy
from backtester.engine.metrics import compute_metrics
from backtester.engine.signals import Signals
from backtester.engine.simulate import (
    EXIT_REASONS,
    OpenPosition,
    PortfolioResult,
    SimConfig,
    SimResult,
    candle_periods_per_year,
    simulate,
    simulate_portfolio,
)

# Called with the stage about to start: "signals", "simulating" or "metrics".
StageCallback = Callable[[str], None]
# (timestamps, equity) of bars [start, stop) and the fraction of bars simulated so far.
SegmentCallback = Callable[[IntArray, FloatArray, float], None]

# A frozen dataclass is immutable, so one shared default instance is safe.
DEFAULT_CONFIG = SimConfig()
BARS_PER_SEGMENT = 50_000
# Five pieces make a visibly growing curve; each extra one costs a simulation of the prefix
# and a progress message, so a year of minutes (3x the single simulation) stays cheap.
MAX_SEGMENTS = 5
EMPTY = "the candles are empty: nothing to backtest"


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """Everything one single-symbol backtest produced.

    ``metrics`` is keyed as ``metrics.METRICS``; ``engine_seconds`` is the wall time spent in
    compile + simulate + metrics (reading the data is not included), ``stage_seconds`` the same
    split by stage ("signals", "simulate", "metrics").
    """

    strategy: str
    params: dict[str, ParamValue]
    signals: Signals
    sim: SimResult
    metrics: dict[str, float]
    engine_seconds: float
    symbol: str = ""
    stage_seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PortfolioBacktestResult:
    """A backtest of one strategy over several symbols sharing one cash balance."""

    strategy: str
    params: dict[str, ParamValue]
    signals: tuple[Signals, ...]
    sim: PortfolioResult
    metrics: dict[str, float]
    engine_seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)


EngineRun = BacktestResult | PortfolioBacktestResult


def segment_count(bars: int) -> int:
    """How many growing prefixes to simulate for ``bars`` bars (1..MAX_SEGMENTS)."""
    return max(1, min(MAX_SEGMENTS, bars // BARS_PER_SEGMENT))


def check_aligned(candles_list: Sequence[Candles], labels: Sequence[str]) -> None:
    """Raise EngineError, naming the symbols, unless every symbol has exactly the same bars
    (a shared-cash portfolio is simulated bar by bar across symbols)."""
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


def _benchmark_close(benchmark: Candles | npt.ArrayLike | None, candles: Candles) -> FloatArray:
    if benchmark is None:
        return candles.close
    arr = benchmark.close if isinstance(benchmark, Candles) else np.asarray(benchmark, np.float64)
    if arr.shape != candles.close.shape:
        raise EngineError(
            f"benchmark has {arr.shape[0] if arr.ndim else 0} values but the candles have "
            f"{len(candles)}"
        )
    return arr


def _metrics(
    sim: SimResult | PortfolioResult, benchmark_close: FloatArray | None, ppy: float
) -> dict[str, float]:
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
        benchmark_close=benchmark_close,
        bars_per_year=ppy,
        # Bars with a position (any symbol) open; a held position is a nonzero quantity.
        exposure_bars=sim.position if sim.position.ndim == 1 else np.abs(sim.position).sum(1),
    )


def _prefix(signals: Signals, stop: int) -> Signals:
    return Signals(
        signals.entry_long[:stop],
        signals.exit_long[:stop],
        signals.entry_short[:stop],
        signals.exit_short[:stop],
    )


def _simulate_in_segments(
    simulate_prefix: Callable[[Sequence[Candles], Sequence[Signals]], SimResult | PortfolioResult],
    candles_list: Sequence[Candles],
    signals_list: Sequence[Signals],
    segments: int,
    on_segment: SegmentCallback | None,
) -> SimResult | PortfolioResult:
    """Simulate on growing prefixes, calling ``on_segment`` with each new stretch of equity;
    returns the full run's result (the last prefix is the whole data)."""
    n = len(candles_list[0])
    count = max(1, min(segments, n))
    done = 0
    result: SimResult | PortfolioResult | None = None
    for stop in (round(n * (k + 1) / count) for k in range(count)):
        if stop <= done:
            continue
        if stop == n:
            result = simulate_prefix(candles_list, signals_list)
        else:
            result = simulate_prefix(
                [c.slice(0, stop) for c in candles_list], [_prefix(s, stop) for s in signals_list]
            )
        if on_segment is not None:
            on_segment(result.timestamp[done:stop], result.equity[done:stop], stop / n)
        done = stop
    if result is None:  # pragma: no cover - n >= 1 always yields one segment
        raise EngineError(EMPTY)
    return result


def run(
    spec: StrategySpec,
    candles_list: Sequence[Candles],
    params: Mapping[str, object] | None = None,
    config: SimConfig = DEFAULT_CONFIG,
    *,
    portfolio: bool | None = None,
    benchmark: Candles | npt.ArrayLike | None = None,
    weights: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    on_stage: StageCallback | None = None,
    on_segment: SegmentCallback | None = None,
    segments: int | None = 1,
) -> EngineRun:
    """Compile ``spec`` with ``params`` (defaults for the rest) on each symbol, simulate and
    measure: a BacktestResult for one symbol, a PortfolioBacktestResult for several (or for
    one with ``portfolio=True``).

    The benchmark is ``benchmark`` (one symbol only; Candles or a close array of the same
    length), else the symbol's own close, else the equal-weight buy-and-hold of the closes.
    Several symbols must share their bars (EngineError naming them by ``labels``, default their
    symbols). ``on_stage`` is called before each stage and may raise to stop the run;
    ``segments`` (None: ``segment_count`` of the bars) growing prefixes feed ``on_segment``.
    Raises StrategyError, ConfigError or EngineError on bad input.
    """
    if not candles_list:
        raise ConfigError("a backtest needs at least one symbol")
    if any(len(c) == 0 for c in candles_list):
        raise EngineError(EMPTY)
    as_portfolio = len(candles_list) > 1 if portfolio is None else portfolio
    if len(candles_list) > 1:
        check_aligned(candles_list, labels or [c.symbol for c in candles_list])
    resolved = spec.resolve_params(params or {})
    if as_portfolio:
        # Growth of one unit split equally across the symbols at the first close.
        bench: FloatArray = np.mean([c.close / c.close[0] for c in candles_list], axis=0)
    else:
        bench = _benchmark_close(benchmark, candles_list[0])
    spent: dict[str, float] = {}

    if on_stage:
        on_stage("signals")
    t0 = time.perf_counter()
    # A private cache per symbol still pays: entry and exit rules usually share indicators.
    signals = [compile_strategy(spec, c, resolved, {}) for c in candles_list]
    spent["signals"] = time.perf_counter() - t0

    if on_stage:
        on_stage("simulating")
    t0 = time.perf_counter()

    def simulate_prefix(
        part: Sequence[Candles], part_signals: Sequence[Signals]
    ) -> SimResult | PortfolioResult:
        if as_portfolio:
            return simulate_portfolio(part, part_signals, config, weights)
        return simulate(part[0], part_signals[0], config)

    count = segment_count(len(candles_list[0])) if segments is None else segments
    sim = _simulate_in_segments(simulate_prefix, candles_list, signals, count, on_segment)
    spent["simulate"] = time.perf_counter() - t0

    if on_stage:
        on_stage("metrics")
    t0 = time.perf_counter()
    metrics = _metrics(sim, bench, candle_periods_per_year(candles_list[0]))
    spent["metrics"] = time.perf_counter() - t0

    engine_seconds = sum(spent.values())
    if isinstance(sim, PortfolioResult):
        return PortfolioBacktestResult(
            strategy=spec.name,
            params=resolved,
            signals=tuple(signals),
            sim=sim,
            metrics=metrics,
            engine_seconds=engine_seconds,
            stage_seconds=spent,
        )
    return BacktestResult(
        strategy=spec.name,
        params=resolved,
        signals=signals[0],
        sim=sim,
        metrics=metrics,
        engine_seconds=engine_seconds,
        symbol=candles_list[0].symbol,
        stage_seconds=spent,
    )


def run_backtest(
    candles: Candles,
    spec: StrategySpec,
    params: Mapping[str, object] | None = None,
    config: SimConfig = DEFAULT_CONFIG,
    *,
    benchmark: Candles | npt.ArrayLike | None = None,
) -> BacktestResult:
    """``run`` on one symbol: compile ``spec`` with ``params`` (defaults for the rest), simulate
    it and measure it.

    ``benchmark`` (Candles or a close array of the same length) feeds the benchmark metrics;
    None compares with buying and holding the traded symbol. Raises StrategyError, ConfigError
    or EngineError on bad input.
    """
    result = run(spec, [candles], params, config, portfolio=False, benchmark=benchmark)
    assert isinstance(result, BacktestResult)
    return result


def run_portfolio(
    candles_list: Sequence[Candles],
    spec: StrategySpec,
    params: Mapping[str, object] | None = None,
    config: SimConfig = DEFAULT_CONFIG,
    *,
    weights: Sequence[float] | None = None,
) -> PortfolioBacktestResult:
    """``run`` on several symbols with identical timestamps and one cash balance.

    Each symbol gets its own signals from the same rules and params; the benchmark is the
    equal-weight buy-and-hold of the symbols' closes.
    """
    if not candles_list:
        raise EngineError("a portfolio needs at least one symbol")
    result = run(spec, candles_list, params, config, portfolio=True, weights=weights)
    assert isinstance(result, PortfolioBacktestResult)
    return result


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
    run(spec, [candles], {}, config, segments=2)
    run(spec, [candles, candles], {}, config, segments=1)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def _side(side: int) -> str:
    return "long" if side > 0 else "short"


def _open_position_dict(pos: OpenPosition, symbols: Sequence[str]) -> dict[str, Any]:
    return {
        "symbol": symbols[pos.symbol] if pos.symbol < len(symbols) else str(pos.symbol),
        "side": _side(pos.side),
        "qty": pos.qty,
        "entry_index": pos.entry_index,
        "entry_time": pos.entry_time,
        "entry_at": _iso(pos.entry_time),
        "entry_price": pos.entry_price,
        "entry_fee": pos.entry_fee,
        "mark_price": pos.mark_price,
        "unrealized_pnl": pos.unrealized_pnl,
    }


def _trade_list(trades: npt.NDArray[np.void], symbols: Sequence[str]) -> list[dict[str, Any]]:
    # Column-wise tolist() is far cheaper than touching numpy scalars trade by trade.
    cols = {name: trades[name].tolist() for name in trades.dtype.names or ()}
    out: list[dict[str, Any]] = []
    for i in range(trades.shape[0]):
        sym = int(cols["symbol"][i])
        out.append(
            {
                "symbol": symbols[sym] if sym < len(symbols) else str(sym),
                "side": _side(int(cols["side"][i])),
                "entry_index": cols["entry_index"][i],
                "exit_index": cols["exit_index"][i],
                "entry_time": cols["entry_time"][i],
                "exit_time": cols["exit_time"][i],
                "entry_at": _iso(cols["entry_time"][i]),
                "exit_at": _iso(cols["exit_time"][i]),
                "qty": cols["qty"][i],
                "entry_price": cols["entry_price"][i],
                "exit_price": cols["exit_price"][i],
                "fees": cols["entry_fee"][i] + cols["exit_fee"][i],
                "pnl": cols["pnl"][i],
                "return": cols["return"][i],
                "bars_held": cols["bars_held"][i],
                "exit_reason": EXIT_REASONS[int(cols["exit_reason"][i])],
            }
        )
    return out


def result_to_dict(
    result: BacktestResult | PortfolioBacktestResult, *, include_trades: bool = True
) -> dict[str, Any]:
    """A JSON-ready summary: headline numbers, params, open position, all metrics, trades.

    Ratios are fractions (0.25 = 25 %), drawdowns negative; every non-finite number is None.
    ``trades`` is the count of closed round trips and ``trade_list`` lists them.
    """
    m = result.metrics
    sim = result.sim
    if isinstance(result, PortfolioBacktestResult):
        symbols: Sequence[str] = result.sim.symbols
        opened = [_open_position_dict(p, symbols) for p in result.sim.open_positions]
        open_position: Any = opened or None
    else:
        symbols = (result.symbol,)
        pos = result.sim.open_position
        open_position = None if pos is None else _open_position_dict(pos, symbols)
    summary: dict[str, Any] = {
        "strategy": result.strategy,
        "params": dict(result.params),
        "final_equity": _finite(float(sim.equity[-1])),
        "total_return": _finite(m["total_return"]),
        "trades": int(sim.trades.shape[0]),
        "sharpe": _finite(m["sharpe"]),
        "max_drawdown": _finite(m["max_drawdown"]),
        "engine_seconds": result.engine_seconds,
        "open_position": open_position,
        "metrics": {key: _finite(float(value)) for key, value in m.items()},
    }
    if include_trades:
        summary["trade_list"] = _trade_list(sim.trades, symbols)
    return summary
