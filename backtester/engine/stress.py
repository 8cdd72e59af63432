"""Stress tests: a strategy run over named crisis windows, and over data given synthetic shocks.

Windows. ``NAMED_WINDOWS`` are four crypto crises as half-open UTC spans ``[start, end)`` of
whole days (the end is midnight after the last day named). ``window_slice`` finds a window in a
series and how many warm-up bars before it the data offers; ``run_span`` compiles the rules on
warm-up + window (so indicators are ready at the window's first bar) and simulates only the
window, starting flat with the full capital.

Shocks (applied to every market of the run, each returns new validated Candles):

* ``apply_gap(candles, index=i, change=-0.2)`` — every price from bar ``i`` on is multiplied
  by ``1 + change``: the market opens 20 % below the previous close at bar ``i`` and trades on
  from there. Scaling a valid bar by a positive factor keeps it valid.
* ``apply_vol_spike(candles, start=s, bars=n, factor=3)`` — for bars ``s .. s+n-1`` every
  price's log distance from the previous (shocked) close is multiplied by ``factor``:
  ``X' = C'[t-1] * (X / C[t-1]) ** factor`` for X in open, high, low, close. A power with a
  positive exponent is increasing, so high stays the highest and low the lowest price of each
  bar; bars after the spike keep their own returns (every later price is scaled by the level
  the spike left). Volumes and extra columns are unchanged.

Outcomes use the engine's conventions: returns and drawdowns are fractions (drawdowns <= 0,
the starting capital counting as the first peak); the worst trade is the lowest return on the
entry notional among the closed trades and the position still open at the end (marked at the
last close).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from backtester.engine.candles import Candles, FloatArray
from backtester.engine.errors import ConfigError, EngineError
from backtester.engine.language import ParamValue, StrategySpec, compile_strategy
from backtester.engine.signals import Signals
from backtester.engine.simulate import (
    OpenPosition,
    SimConfig,
    simulate,
    simulate_portfolio,
)


def _utc_ms(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class StressWindow:
    """A span ``[start_ms, end_ms)`` of UTC milliseconds with a name and why it matters."""

    key: str
    label: str
    start_ms: int
    end_ms: int
    description: str = ""


NAMED_WINDOWS: Mapping[str, StressWindow] = {
    w.key: w
    for w in (
        StressWindow(
            "covid",
            "COVID crash (March 2020)",
            _utc_ms(2020, 3, 9),
            _utc_ms(2020, 3, 24),
            "9-23 March 2020: from the oil-price crash and equity circuit breakers of 9 March "
            "through Black Thursday (12-13 March, BTC about -50 % intraday) to the Federal "
            "Reserve's open-ended QE on 23 March, where risk assets bottomed.",
        ),
        StressWindow(
            "luna",
            "LUNA / UST collapse (May 2022)",
            _utc_ms(2022, 5, 7),
            _utc_ms(2022, 5, 15),
            "7-14 May 2022: from the first large UST withdrawals from Curve on 7 May through "
            "the depeg, LUNA's fall to nearly zero and the Terra chain halts (12-13 May), to "
            "the end of that week.",
        ),
        StressWindow(
            "ftx",
            "FTX collapse (November 2022)",
            _utc_ms(2022, 11, 6),
            _utc_ms(2022, 11, 13),
            "6-12 November 2022: from Binance's announcement that it would sell its FTT on "
            "6 November through FTX halting withdrawals (8 November), the bankruptcy filing "
            "(11 November) and the hack of its wallets (12 November).",
        ),
        StressWindow(
            "svb",
            "SVB / USDC depeg (March 2023)",
            _utc_ms(2023, 3, 9),
            _utc_ms(2023, 3, 15),
            "9-14 March 2023: from Silvergate's wind-down and the run on Silicon Valley Bank "
            "(9-10 March) through USDC's depeg to about $0.87 (11 March) and the deposit "
            "guarantee of 12 March, to the rebound of 13-14 March.",
        ),
    )
}


@dataclass(frozen=True, slots=True)
class WindowSlice:
    """Indexes of a window in a series: bars ``[first, stop)`` lie in the window, ``[lo,
    first)`` are the warm-up bars the data offers (``warmup_used`` of them)."""

    lo: int
    first: int
    stop: int

    @property
    def bars(self) -> int:
        return self.stop - self.first

    @property
    def warmup_used(self) -> int:
        return self.first - self.lo


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run over one span went. ``worst_trade`` is a return on the entry notional (NaN
    without any trade), ``market_return`` / ``market_max_drawdown`` those of buying every market
    in equal parts at the span's first open and holding."""

    bars: int
    start_ts: int
    end_ts: int
    total_return: float
    max_drawdown: float
    trades: int
    worst_trade: float
    worst_trade_pnl: float
    open_at_end: bool
    final_equity: float
    market_return: float
    market_max_drawdown: float
    halted: bool

    def as_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


# --- windows --------------------------------------------------------------------------------


def window_slice(timestamp: npt.ArrayLike, start_ms: int, end_ms: int, warmup: int) -> WindowSlice:
    """Where ``[start_ms, end_ms)`` lies in the sorted ``timestamp`` and up to ``warmup`` bars
    before it. A window the data misses has ``bars == 0``."""
    if end_ms <= start_ms:
        raise ConfigError("a window must end after it starts")
    if warmup < 0:
        raise ConfigError("warmup must be 0 or more bars")
    ts = np.asarray(timestamp, dtype=np.int64)
    first = int(np.searchsorted(ts, start_ms, side="left"))
    stop = int(np.searchsorted(ts, end_ms, side="left"))
    return WindowSlice(lo=max(0, first - warmup), first=first, stop=max(stop, first))


# --- shocks ---------------------------------------------------------------------------------


def _prices(candles: Candles) -> dict[str, FloatArray]:
    return {name: np.array(getattr(candles, name), dtype=np.float64) for name in _OHLC}


_OHLC = ("open", "high", "low", "close")


def _rebuilt(candles: Candles, prices: Mapping[str, FloatArray]) -> Candles:
    return Candles(
        timestamp=candles.timestamp,
        open=prices["open"],
        high=prices["high"],
        low=prices["low"],
        close=prices["close"],
        volume=candles.volume,
        extra=dict(candles.extra),
        symbol=candles.symbol,
        timeframe=candles.timeframe,
    )


def apply_gap(candles: Candles, *, index: int, change: float) -> Candles:
    """Candles whose prices from bar ``index`` on are multiplied by ``1 + change`` (a gap
    between bar ``index - 1``'s close and bar ``index``'s open). ``1 <= index < len`` and
    ``change > -1``."""
    n = len(candles)
    if not isinstance(index, int | np.integer) or not 1 <= index < n:
        raise ConfigError(f"the gap must be at bar 1 to {n - 1} (there is no bar before bar 0)")
    if not math.isfinite(change) or change <= -1.0:
        raise ConfigError("a gap must be a change above -100 %")
    prices = _prices(candles)
    for name in _OHLC:
        prices[name][index:] *= 1.0 + change
    return _rebuilt(candles, prices)


def apply_vol_spike(candles: Candles, *, start: int, bars: int, factor: float) -> Candles:
    """Candles whose bars ``start .. start+bars-1`` move ``factor`` times as far (in log terms)
    from the previous close as they did; later bars keep their returns. For bar 0 the
    previous close is taken to be its own open. Prices must be positive."""
    n = len(candles)
    if not isinstance(start, int | np.integer) or not 0 <= start < n:
        raise ConfigError(f"the volatility spike must start at bar 0 to {n - 1}")
    if not isinstance(bars, int | np.integer) or bars < 1:
        raise ConfigError("the volatility spike must last at least 1 bar")
    if not math.isfinite(factor) or factor <= 0.0:
        raise ConfigError("the volatility factor must be more than 0")
    stop = min(n, start + int(bars))
    prices = _prices(candles)
    close = prices["close"]
    anchor = float(close[start - 1]) if start > 0 else float(prices["open"][0])
    window = {name: prices[name][start:stop] for name in _OHLC}
    if anchor <= 0.0 or any(np.any(v <= 0.0) for v in window.values()):
        raise ConfigError("a volatility spike needs positive prices")
    prev = np.concatenate(([anchor], close[start : stop - 1]))
    new_close = anchor * np.exp(np.cumsum(factor * np.log(window["close"] / prev)))
    new_prev = np.concatenate(([anchor], new_close[:-1]))
    level = float(new_close[-1] / close[stop - 1])
    for name in ("open", "high", "low"):
        prices[name][start:stop] = new_prev * np.power(window[name] / prev, factor)
    prices["close"][start:stop] = new_close
    for name in _OHLC:
        prices[name][stop:] *= level
    # Rounding may leave high a hair under max(open, close) (or low over the min); the power
    # is monotone, so any such excess is a last-bit error and is clipped away.
    hi, lo = prices["high"], prices["low"]
    np.maximum(hi, np.maximum(prices["open"], prices["close"]), out=hi)
    np.minimum(lo, np.minimum(prices["open"], prices["close"]), out=lo)
    return _rebuilt(candles, prices)


# --- runs -----------------------------------------------------------------------------------


def _part(signals: Signals, first: int) -> Signals:
    return Signals(
        signals.entry_long[first:],
        signals.exit_long[first:],
        signals.entry_short[first:],
        signals.exit_short[first:],
    )


def _max_drawdown(equity: FloatArray, initial: float) -> float:
    peak = np.maximum(np.maximum.accumulate(equity), initial)
    return float(min(0.0, float(np.min(equity / peak)) - 1.0))


def _open_return(pos: OpenPosition) -> tuple[float, float]:
    notional = abs(pos.qty) * pos.entry_price
    ret = pos.unrealized_pnl / notional if notional > 0 else math.nan
    return ret, pos.unrealized_pnl


def run_span(
    spec: StrategySpec,
    params: Mapping[str, ParamValue],
    config: SimConfig,
    candles_list: Sequence[Candles],
    *,
    first: int = 0,
) -> Outcome:
    """Run ``spec`` on bars ``first:`` of ``candles_list`` (one market, or several with the
    same timestamps sharing one cash balance), with the rules compiled on all the bars so the
    ``first`` earlier ones serve as indicator warm-up. Raises EngineError when there is no bar
    from ``first`` on or the markets' bars differ."""
    if not candles_list:
        raise EngineError("no market to run")
    n = len(candles_list[0])
    if not 0 <= first < n:
        raise EngineError("the span holds no bar")
    for other in candles_list[1:]:
        if len(other) != n or not np.array_equal(other.timestamp, candles_list[0].timestamp):
            raise EngineError("the markets do not have the same bars in this span")
    resolved = spec.resolve_params(params)
    signals = [_part(compile_strategy(spec, c, resolved, {}), first) for c in candles_list]
    parts = [c.slice(first, None) for c in candles_list]
    opened: tuple[OpenPosition, ...]
    if len(parts) == 1:
        sim = simulate(parts[0], signals[0], config)
        opened = () if sim.open_position is None else (sim.open_position,)
        equity, trades, halted = sim.equity, sim.trades, sim.halted_at
    else:
        port = simulate_portfolio(parts, signals, config)
        opened = port.open_positions
        equity, trades, halted = port.equity, port.trades, port.halted_at
    initial = float(config.initial_cash)
    returns = [float(v) for v in np.asarray(trades["return"], dtype=np.float64)]
    pnls = [float(v) for v in np.asarray(trades["pnl"], dtype=np.float64)]
    for pos in opened:
        ret, pnl = _open_return(pos)
        returns.append(ret)
        pnls.append(pnl)
    worst = int(np.argmin(returns)) if returns else -1
    growth = np.mean([p.close / p.open[0] for p in parts], axis=0)
    return Outcome(
        bars=len(parts[0]),
        start_ts=int(parts[0].timestamp[0]),
        end_ts=int(parts[0].timestamp[-1]),
        total_return=float(equity[-1] / initial - 1.0),
        max_drawdown=_max_drawdown(np.asarray(equity, dtype=np.float64), initial),
        trades=int(trades.shape[0]),
        worst_trade=returns[worst] if worst >= 0 else math.nan,
        worst_trade_pnl=pnls[worst] if worst >= 0 else math.nan,
        open_at_end=bool(opened),
        final_equity=float(equity[-1]),
        market_return=float(growth[-1] - 1.0),
        market_max_drawdown=_max_drawdown(growth, 1.0),
        halted=halted >= 0,
    )
