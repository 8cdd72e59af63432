"""A deliberately plain, slow re-statement of the simulator's rules, used as a test oracle.

It covers one symbol, market orders, fraction-of-equity sizing with the fee fitted inside the
cash, taker fee, slippage, both fill modes, long and short, reversal on an opposite signal, and
an optional fixed stop-loss / take-profit. It shares no code with backtester.engine.simulate:
it is written from the rules in that module's docstring, one bar at a time, with objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


@dataclass
class RefTrade:
    side: int
    entry_index: int
    exit_index: int
    qty: float
    entry_price: float
    exit_price: float
    entry_fee: float
    exit_fee: float
    pnl: float
    reason: str


@dataclass
class _Holding:
    side: int  # +1 long, -1 short
    qty: float
    price: float  # fill price, slippage included
    fee: float
    bar: int


@dataclass
class RefResult:
    equity: list[float] = field(default_factory=list)
    trades: list[RefTrade] = field(default_factory=list)
    open_side: int = 0
    open_qty: float = 0.0
    open_fee: float = 0.0


def reference_simulate(
    open_: npt.NDArray[np.float64],
    high: npt.NDArray[np.float64],
    low: npt.NDArray[np.float64],
    close: npt.NDArray[np.float64],
    entry_long: npt.NDArray[np.bool_],
    exit_long: npt.NDArray[np.bool_],
    entry_short: npt.NDArray[np.bool_],
    exit_short: npt.NDArray[np.bool_],
    *,
    cash: float = 10_000.0,
    fee: float = 0.0,
    slippage_bps: float = 0.0,
    fraction: float = 1.0,
    fill_close: bool = False,
    stop_loss: float = 0.0,
    take_profit: float = 0.0,
    maker_fee: float = 0.0,
    allow_short: bool = True,
) -> RefResult:
    """Walk the bars in order and apply the simulator's rules by hand."""
    slip = slippage_bps / 10_000.0
    result = RefResult()
    holding: _Holding | None = None
    queued_exit: str | None = None
    queued_entry = 0

    def buy_price(price: float) -> float:
        return price * (1.0 + slip)

    def sell_price(price: float) -> float:
        return price * (1.0 - slip)

    def enter(side: int, raw: float, bar: int) -> None:
        nonlocal cash, holding
        price = buy_price(raw) if side == 1 else sell_price(raw)
        # Flat, so equity is the cash; the fee has to fit inside the money spent.
        qty = cash * fraction / (price * (1.0 + fee))
        if qty <= 0:
            return
        paid_fee = qty * price * fee
        cash = cash - qty * price - paid_fee if side == 1 else cash + qty * price - paid_fee
        holding = _Holding(side, qty, price, paid_fee, bar)

    def leave(price: float, rate: float, bar: int, reason: str) -> None:
        nonlocal cash, holding
        assert holding is not None
        h = holding
        paid_fee = h.qty * price * rate
        cash = cash + h.qty * price - paid_fee if h.side == 1 else cash - h.qty * price - paid_fee
        pnl = h.side * h.qty * (price - h.price) - h.fee - paid_fee
        result.trades.append(
            RefTrade(h.side, h.bar, bar, h.qty, h.price, price, h.fee, paid_fee, pnl, reason)
        )
        holding = None

    def market_exit(raw: float, bar: int, reason: str) -> None:
        assert holding is not None
        price = sell_price(raw) if holding.side == 1 else buy_price(raw)
        leave(price, fee, bar, reason)

    n = len(close)
    for t in range(n):
        # 1. the open: orders queued at the previous close
        if queued_exit is not None and holding is not None:
            market_exit(open_[t], t, queued_exit)
        queued_exit = None
        if queued_entry != 0:
            enter(queued_entry, open_[t], t)
        queued_entry = 0

        # 2. inside the bar: fixed stop and target
        if holding is not None and (stop_loss > 0 or take_profit > 0):
            h = holding
            if h.side == 1:
                stop = h.price * (1 - stop_loss) if stop_loss > 0 else None
                target = h.price * (1 + take_profit) if take_profit > 0 else None
                gap_stop = stop is not None and h.bar != t and open_[t] <= stop
                gap_target = target is not None and h.bar != t and open_[t] >= target
                hit_stop = stop is not None and low[t] <= stop
                hit_target = target is not None and high[t] >= target
            else:
                stop = h.price * (1 + stop_loss) if stop_loss > 0 else None
                target = h.price * (1 - take_profit) if take_profit > 0 else None
                gap_stop = stop is not None and h.bar != t and open_[t] >= stop
                gap_target = target is not None and h.bar != t and open_[t] <= target
                hit_stop = stop is not None and high[t] >= stop
                hit_target = target is not None and low[t] <= target
            if gap_stop:
                market_exit(open_[t], t, "stop_loss")
            elif gap_target:
                leave(open_[t], maker_fee, t, "take_profit")
            elif hit_stop:
                assert stop is not None
                market_exit(stop, t, "stop_loss")
            elif hit_target:
                assert target is not None
                leave(target, maker_fee, t, "take_profit")

        # 3. the close: exit rules, then entry rules
        long_ok = bool(entry_long[t]) and not bool(exit_long[t])
        short_ok = allow_short and bool(entry_short[t]) and not bool(exit_short[t])
        wish = 0
        if long_ok and not short_ok:
            wish = 1
        if short_ok and not long_ok:
            wish = -1

        exiting = False
        if holding is not None:
            reason = None
            if (holding.side == 1 and exit_long[t]) or (holding.side == -1 and exit_short[t]):
                reason = "signal"
            elif wish == -holding.side:
                reason = "opposite_signal"
            if reason is not None:
                exiting = True
                if fill_close:
                    market_exit(close[t], t, reason)
                else:
                    queued_exit = reason
        if wish != 0 and (holding is None or exiting):
            if fill_close:
                enter(wish, close[t], t)
            elif t + 1 < n:
                queued_entry = wish

        marked = cash
        if holding is not None:
            marked += holding.side * holding.qty * close[t]
        result.equity.append(marked)

    if holding is not None:
        result.open_side = holding.side
        result.open_qty = holding.qty
        result.open_fee = holding.fee
    return result
