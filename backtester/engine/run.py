"""One call from candles and a strategy to signals, a simulation and its metrics.

``run_backtest`` is the path every caller takes (web task, CLI, tests): it resolves the
strategy's parameters, compiles the rules to signals, simulates them and computes every metric,
timing the whole engine part. ``result_to_dict`` turns a result into the JSON-ready summary the
CLI prints and the app stores.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from backtester.engine.candles import Candles
from backtester.engine.errors import EngineError
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

FloatArray = npt.NDArray[np.float64]

# A frozen dataclass is immutable, so one shared default instance is safe.
DEFAULT_CONFIG = SimConfig()


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """Everything one single-symbol backtest produced.

    ``metrics`` is keyed as ``metrics.METRICS``; ``engine_seconds`` is the wall time spent in
    compile + simulate + metrics (reading the data is not included).
    """

    strategy: str
    params: dict[str, ParamValue]
    signals: Signals
    sim: SimResult
    metrics: dict[str, float]
    engine_seconds: float
    symbol: str = ""


@dataclass(frozen=True, slots=True)
class PortfolioBacktestResult:
    """A backtest of one strategy over several symbols sharing one cash balance."""

    strategy: str
    params: dict[str, ParamValue]
    signals: tuple[Signals, ...]
    sim: PortfolioResult
    metrics: dict[str, float]
    engine_seconds: float


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


def run_backtest(
    candles: Candles,
    spec: StrategySpec,
    params: Mapping[str, object] | None = None,
    config: SimConfig = DEFAULT_CONFIG,
    *,
    benchmark: Candles | npt.ArrayLike | None = None,
) -> BacktestResult:
    """Compile ``spec`` with ``params`` (defaults for the rest), simulate it and measure it.

    ``benchmark`` (Candles or a close array of the same length) feeds the benchmark metrics;
    None compares with buying and holding the traded symbol. Raises StrategyError, ConfigError
    or EngineError on bad input.
    """
    if len(candles) == 0:
        raise EngineError("the candles are empty: nothing to backtest")
    start = time.perf_counter()
    resolved = spec.resolve_params(params or {})
    bench = _benchmark_close(benchmark, candles)
    # A private cache still pays: entry and exit rules usually share their indicators.
    signals = compile_strategy(spec, candles, resolved, {})
    sim = simulate(candles, signals, config)
    metrics = _metrics(sim, bench, candle_periods_per_year(candles))
    elapsed = time.perf_counter() - start
    return BacktestResult(
        strategy=spec.name,
        params=resolved,
        signals=signals,
        sim=sim,
        metrics=metrics,
        engine_seconds=elapsed,
        symbol=candles.symbol,
    )


def run_portfolio(
    candles_list: Sequence[Candles],
    spec: StrategySpec,
    params: Mapping[str, object] | None = None,
    config: SimConfig = DEFAULT_CONFIG,
    *,
    weights: Sequence[float] | None = None,
) -> PortfolioBacktestResult:
    """Run one strategy on several symbols with identical timestamps and one cash balance.

    Each symbol gets its own signals from the same rules and params; the benchmark is the
    equal-weight buy-and-hold of the symbols' closes.
    """
    if not candles_list:
        raise EngineError("a portfolio needs at least one symbol")
    if len(candles_list[0]) == 0:
        raise EngineError("the candles are empty: nothing to backtest")
    start = time.perf_counter()
    resolved = spec.resolve_params(params or {})
    signals = tuple(compile_strategy(spec, c, resolved, {}) for c in candles_list)
    sim = simulate_portfolio(candles_list, signals, config, weights)
    # Growth of one unit split equally across the symbols at the first close.
    bench = np.mean([c.close / c.close[0] for c in candles_list], axis=0)
    metrics = _metrics(sim, bench, candle_periods_per_year(candles_list[0]))
    elapsed = time.perf_counter() - start
    return PortfolioBacktestResult(
        strategy=spec.name,
        params=resolved,
        signals=signals,
        sim=sim,
        metrics=metrics,
        engine_seconds=elapsed,
    )


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
