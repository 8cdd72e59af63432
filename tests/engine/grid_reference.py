"""An independent plain-Python grid bot, written from the rules in gridbot.py's docstring.

It shares no code with the engine's kernel: each cell is a small dict, every leg of the price
path checks every cell, and equity is summed cell by cell at every close. Tests replay random
series through both and compare fills, equity and profits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class RefFill:
    bar: int
    cell: int
    side: int  # +1 buy, -1 sell
    kind: str  # start, grid, stop_loss, take_profit
    price: float
    qty: float
    fee: float
    pnl: float


@dataclass
class RefResult:
    fills: list[RefFill] = field(default_factory=list)
    equity: list[float] = field(default_factory=list)
    cell_pnl: list[float] = field(default_factory=list)
    grid_profit: float = 0.0
    exit_pnl: float = 0.0
    unrealized: float = 0.0
    cash: float = 0.0
    stopped_at: int = -1
    shifts: list[int] = field(default_factory=list)  # the bar of each shift up
    lowest: int = 0


def reference_grid(
    bars: Sequence[tuple[float, float, float, float]],
    lines: Sequence[float],
    investment: float,
    *,
    maker: float,
    taker: float,
    stop: float = 0.0,
    take: float = 0.0,
    above: Sequence[float] = (),
) -> RefResult:
    """Replay (open, high, low, close) bars through a grid with the given (already rounded)
    lines; quantities are computed here from the investment, as the module docstring says.
    ``above``: a trailing grid's next lines above the range (empty: not trailing); when the
    price reaches the line above the top, the lowest cell leaves and a cell joins on top."""
    ncells = len(lines) - 1
    share = investment / ncells
    every = list(lines) + list(above)
    cells = [
        {"buy": every[c], "sell": every[c + 1], "q": share / (every[c] * (1 + maker)),
         "active": c < ncells}
        for c in range(len(every) - 1)
    ]  # fmt: skip
    ncells = len(cells)
    first_cell, top = 0, len(lines) - 1
    out = RefResult(cell_pnl=[0.0] * ncells)
    cash = investment
    if not bars:
        out.cash = cash
        return out

    def buy(c: int, bar: int, price: float, kind: str) -> None:
        nonlocal cash
        cell = cells[c]
        fee = cell["q"] * price * maker
        cash -= cell["q"] * price + fee
        cell["holding"] = True
        cell["cost"] = cell["q"] * price + fee
        out.fills.append(RefFill(bar, c, 1, kind, price, cell["q"], fee, 0.0))

    def sell(c: int, bar: int, price: float, kind: str, rate: float) -> None:
        nonlocal cash
        cell = cells[c]
        fee = cell["q"] * price * rate
        proceeds = cell["q"] * price - fee
        pnl = proceeds - cell["cost"]
        cash += proceeds
        cell["holding"] = False
        out.cell_pnl[c] += pnl
        if kind == "grid":
            out.grid_profit += pnl
        else:
            out.exit_pnl += pnl
        out.fills.append(RefFill(bar, c, -1, kind, price, cell["q"], fee, pnl))

    first_open = bars[0][0]
    for c, cell in enumerate(cells):
        cell["holding"] = False
        if cell["active"] and cell["buy"] >= first_open:
            buy(c, 0, first_open, "start")

    previous_close = first_open
    done = False
    for i, (o, h, lo, cl) in enumerate(bars):
        if not done:
            # Nearer extreme first; a tie goes to the high.
            path = (
                [previous_close, o, lo, h, cl]
                if (o - lo) < (h - o)
                else [previous_close, o, h, lo, cl]
            )
            for leg in range(4):
                start, end = path[leg], path[leg + 1]
                jumped = leg == 0
                if end > start:
                    for c in range(ncells):  # low to high, as a rising price meets them
                        cell = cells[c]
                        if cell["active"] and cell["holding"] and start < cell["sell"] <= end:
                            sell(c, i, end if jumped else cell["sell"], "grid", maker)
                    if take and start < take <= end:
                        for c in range(ncells):
                            if cells[c]["holding"]:
                                sell(c, i, end if jumped else take, "take_profit", taker)
                        done = True
                    while (
                        not done and top + 1 < len(every) and end >= every[top + 1]
                        and not cells[first_cell]["holding"]
                    ):  # fmt: skip
                        cells[first_cell]["active"] = False
                        first_cell += 1
                        cells[top]["active"] = True
                        top += 1
                        out.shifts.append(i)
                elif end < start:
                    for c in reversed(range(ncells)):  # high to low
                        cell = cells[c]
                        if cell["active"] and not cell["holding"] and end <= cell["buy"] < start:
                            buy(c, i, end if jumped else cell["buy"], "grid")
                    if stop and end <= stop < start:
                        for c in range(ncells):
                            if cells[c]["holding"]:
                                sell(c, i, end if jumped else stop, "stop_loss", taker)
                        done = True
                if done:
                    out.stopped_at = i
                    break
        previous_close = cl
        held = 0.0 if done else math.fsum(cell["q"] * cl for cell in cells if cell["holding"])
        out.equity.append(cash + held)
    last = bars[-1][3]
    out.unrealized = (
        0.0 if done else sum(cell["q"] * last - cell["cost"] for cell in cells if cell["holding"])
    )
    out.cash = cash
    out.lowest = first_cell
    return out
