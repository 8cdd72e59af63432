"""A bot's decisions on one closed candle, taken from the backtest's own simulation.

No re-implementation of the rules: the bot compiles its strategy with the engine's
``compile_strategy`` over its candle history and runs the engine's ``simulate`` over the bars
since it was deployed, with one extra *pending* bar appended after the just-closed bar ``t``.
The pending bar is flat at bar t's close (open = high = low = close) and carries no signals, so
the simulation does on it exactly what it does at a bar's open and nothing else:

* a signal exit (or an opposite-signal reversal) decided at t's close fills there  -> ``exit``;
* an entry decided at t's close fills there                                         -> ``enter``;
* a protective level the pending bar's open is beyond (a gap, as the kernel fills it at the
  open) also exits there; the open is the next candle's open when the history has it, else
  the market price as the bar opens (only asked for when the settings have such levels).

Protective exits (stop-loss, take-profit, trailing stop) are the simulation's trades that left
on bar t itself with one of those reasons: the level was reached inside bar t's high/low, as
the kernel checks it. The bot acts on them this way (market order once seen) where the exchange
cannot rest stop orders; where it can, the resting stop/target usually fills first and this
decision only confirms it (``backtester.services.live_bots``, "Resting stops and targets").

Pure: numpy and the engine, no Django.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from backtester.engine.candles import Candles
from backtester.engine.language import ParamValue, StrategySpec, compile_strategy
from backtester.engine.signals import Signals
from backtester.engine.simulate import (
    EXIT_REASONS,
    EXIT_STOP_LOSS,
    EXIT_TAKE_PROFIT,
    EXIT_TRAILING_STOP,
    SimConfig,
    SimResult,
    simulate,
)

WATCHED = frozenset({EXIT_STOP_LOSS, EXIT_TAKE_PROFIT, EXIT_TRAILING_STOP})


@dataclass(frozen=True, slots=True)
class Action:
    """One thing to do now. ``bar_ts`` is the bar the order belongs to (the pending bar for
    open-time orders, bar t for a watched level); ``level`` is the engine's price for it."""

    kind: Literal["enter", "exit"]
    side: int  # +1 long, -1 short: the position entered or left
    reason: str  # exit reason as EXIT_REASONS names it; "signal" for entries
    bar_ts: int
    level: float


@dataclass(frozen=True, slots=True)
class Decision:
    actions: tuple[Action, ...]
    sim: SimResult  # the simulation up to and including the pending bar (for drift/equity)


def _with_pending_bar(candles: Candles, tf_ms: int, price: float | None) -> Candles:
    last = float(candles.close[-1]) if price is None else float(price)
    return Candles(
        timestamp=np.append(candles.timestamp, candles.timestamp[-1] + tf_ms),
        open=np.append(candles.open, last),
        high=np.append(candles.high, last),
        low=np.append(candles.low, last),
        close=np.append(candles.close, last),
        volume=np.append(candles.volume, 0.0),
        extra={k: np.append(v, v[-1]) for k, v in candles.extra.items()},
        symbol=candles.symbol,
        timeframe=candles.timeframe,
    )


def _slice_signals(signals: Signals, start: int) -> Signals:
    def cut(a: np.ndarray) -> np.ndarray:
        return np.append(a[start:], False)

    return Signals(
        entry_long=cut(signals.entry_long),
        exit_long=cut(signals.exit_long),
        entry_short=cut(signals.entry_short),
        exit_short=cut(signals.exit_short),
    )


def decide(
    history: Candles,
    spec: StrategySpec,
    params: dict[str, ParamValue],
    config: SimConfig,
    *,
    act_from: int,
    tf_ms: int,
    next_open: float | None = None,
) -> Decision:
    """What to do after the last bar of ``history`` closed.

    ``history`` runs from the bot's data start to bar t (closed); ``act_from`` indexes the
    first bar the bot may trade on (its deployment). The engine compiles the rules over the
    whole history (indicators see the same past as in the backtest) and simulates from
    ``act_from`` with ``config.initial_cash``. ``next_open`` is the price the pending bar opens
    at when it is known (the next stored candle's open, or the market price as the bar opens);
    it only matters to protective levels the open gaps through. None: bar t's close.
    """
    n = len(history)
    if n == 0 or act_from >= n:
        raise ValueError("decide needs at least one closed bar at or after act_from")
    signals = compile_strategy(spec, history, params, {})
    window = Candles(
        timestamp=history.timestamp[act_from:],
        open=history.open[act_from:],
        high=history.high[act_from:],
        low=history.low[act_from:],
        close=history.close[act_from:],
        volume=history.volume[act_from:],
        extra={k: v[act_from:] for k, v in history.extra.items()},
        symbol=history.symbol,
        timeframe=history.timeframe,
    )
    pending_bars = _with_pending_bar(window, tf_ms, next_open)
    sim = simulate(pending_bars, _slice_signals(signals, act_from), config)
    pending = len(window)  # index of the pending bar in the simulation
    bar_t = pending - 1
    t_ts = int(window.timestamp[-1])
    actions: list[Action] = []
    trades = sim.trades
    for k in range(trades.shape[0]):
        reason = int(trades["exit_reason"][k])
        exit_index = int(trades["exit_index"][k])
        side = int(trades["side"][k])
        level = float(trades["exit_price"][k])
        if exit_index == bar_t and reason in WATCHED:
            actions.append(Action("exit", side, EXIT_REASONS[reason], t_ts, level))
        elif exit_index == pending:
            # A signal exit at the open, or a protective level the open gapped through.
            actions.append(Action("exit", side, EXIT_REASONS[reason], t_ts + tf_ms, level))
    opened = sim.open_position
    if opened is not None and opened.entry_index == pending:
        actions.append(Action("enter", opened.side, "signal", t_ts + tf_ms, opened.entry_price))
    return Decision(actions=tuple(actions), sim=sim)
