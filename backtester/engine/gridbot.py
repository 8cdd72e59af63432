"""Grid-bot simulation: a spot grid of resting limit orders replayed over candles.

The grid. ``levels`` price lines from ``lower`` to ``upper`` (arithmetic: equal steps; geometric:
equal ratios), rounded to the market's ``tick``, make ``levels - 1`` cells. Cell i buys at line i
and sells at line i + 1. The investment is split equally over the cells: each trades the fixed
quantity ``q_i = investment / (cells * line_i * (1 + maker_fee))``, so a buy at its line, fee
included, spends exactly its share.

The start. At the first bar's open, every cell whose buy line is at or above the open buys its
quantity at the open (its buy would be marketable: a limit at the open, maker fee) and rests its
sell; every other cell rests its buy. A cell is always in one state: buy resting, sell resting
(holding its quantity) or done (after a stop-loss or take-profit closed the bot).

The intrabar rule. Within a bar the price travels open -> nearest extreme -> other extreme ->
close (the extreme nearer the open first; equal distances: the high first, which completes fewer
buy-then-sell round trips in the bar). Between two bars it jumps from the previous close to the
open. Along a rising leg every resting sell at a line the leg reaches fills (a line exactly
touched fills) and that cell rests its buy; along a falling leg every resting buy the leg
reaches fills and that cell rests its sell. A leg fills an order once; a cell can buy on one leg
and sell on a later leg of the same bar. Within a bar an order fills at its line; an order the
gap between bars jumped over fills at the open (a better price, as a limit order would). Grid
fills pay ``maker_fee``.

Stop-loss and take-profit. ``stop_loss`` (a price below ``lower``, 0 = none): on the falling leg
that reaches it, after that leg's buys, every held quantity is sold at the stop price (at the open
when the gap jumps past it), paying ``taker_fee``, and the bot is done; ``take_profit`` (a price
above ``upper``) likewise on a rising leg, after that leg's sells. Equity is marked at each close
(cash + held quantity x close), then stays flat once the bot is done.

Trailing up (``trailing``, off by default). Lines continue above ``upper`` with the same
spacing (``grid_line``: line ``levels - 1 + k`` is the top after k shifts; arithmetic: the same
step, geometric: the same ratio; rounded to the tick). On a rising leg, after its sells and
take-profit, while the leg reaches the line one spacing above the grid's top line, the grid
shifts up one line: its lowest cell leaves (at that price every cell has sold, so it only had
a resting buy, which is dropped) and a new cell joins on top, buying at the old top line (below
the price: it rests) and selling at the new one. The new cell trades its share of the
investment at its own line, like every cell. The range never trails down; the stop-loss and
take-profit stay where they were set. A cell is named by its number from the original lowest
cell (0), so the cell a shift adds is ``levels - 1 + k``: the live bot's level index.

Profit. Each sell realises ``q x sell price - sell fee - (q x buy price + buy fee)`` against the
buy that filled that cell: grid sells add up to the grid profit, the stop/take-profit sells to
the exit P&L, and the quantities still held at the end give the unrealised P&L (marked at the
last close, net of their buy fee). Grid profit + exit P&L + unrealised P&L = final equity -
investment, exactly as the cash is accounted.

Validation (ConfigError naming the setting): the tick must keep every line distinct (else: "at
most N levels fit"), and each cell's buy must reach the market's ``min_notional`` (else: "at
most N levels for this investment").
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final, Literal, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

from backtester.engine.candles import Candles, FloatArray, IntArray
from backtester.engine.errors import ConfigError
from backtester.engine.metrics import compute_metrics
from backtester.engine.simulate import candle_periods_per_year

_F = TypeVar("_F", bound=Callable[..., Any])

Spacing = Literal["arithmetic", "geometric"]
SPACINGS: Final[tuple[str, ...]] = ("arithmetic", "geometric")
MAX_LEVELS: Final = 10_000  # far past any exchange's grid bots (Binance allows ~170 grids)

# Fill kinds, in FILL_KINDS order.
FILL_KINDS: Final[tuple[str, ...]] = ("start", "grid", "stop_loss", "take_profit")
KIND_START: Final = 0
KIND_GRID: Final = 1
KIND_STOP: Final = 2
KIND_TAKE_PROFIT: Final = 3

# Cell states, in CELL_STATES order.
CELL_STATES: Final[tuple[str, ...]] = ("buy_resting", "sell_resting", "done")
_BUY_RESTING: Final = 0
_SELL_RESTING: Final = 1
_DONE: Final = 2
_NOT_YET: Final = 3  # a trailing grid's cell above the range, not (yet) part of the grid

FILL_DTYPE: Final = np.dtype(
    [
        ("bar", np.int64),
        ("time", np.int64),
        ("cell", np.int64),
        ("side", np.int8),  # +1 buy, -1 sell
        ("kind", np.int8),  # index into FILL_KINDS
        ("price", np.float64),
        ("qty", np.float64),
        ("fee", np.float64),
        ("pnl", np.float64),  # realised by a sell (net of both fees); 0 for buys
    ]
)


@dataclass(frozen=True, slots=True)
class GridSettings:
    """One grid bot's settings; validated on construction (ConfigError names the setting).

    ``levels`` counts price lines (cells = levels - 1). Prices are in the quote currency;
    ``tick`` (0 = none) is the market's price step and ``min_notional`` (0 = none) its smallest
    order value. ``stop_loss``/``take_profit`` are prices (0 = off).
    """

    lower: float
    upper: float
    levels: int
    investment: float
    spacing: Spacing = "arithmetic"
    maker_fee: float = 0.001
    taker_fee: float = 0.001
    tick: float = 0.0
    min_notional: float = 0.0
    stop_loss: float = 0.0
    take_profit: float = 0.0
    trailing: bool = False

    def __post_init__(self) -> None:
        def finite(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name} must be a number")
            if not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number")
            return float(value)

        lower, upper = finite("lower"), finite("upper")
        if lower <= 0.0:
            raise ConfigError("lower must be above 0")
        if upper <= lower:
            raise ConfigError(f"upper ({upper:g}) must be above lower ({lower:g})")
        if isinstance(self.levels, bool) or not isinstance(self.levels, int):
            raise ConfigError("levels must be a whole number")
        if self.levels < 2:
            raise ConfigError("levels must be at least 2 (one grid cell)")
        if self.levels > MAX_LEVELS:
            raise ConfigError(f"levels must be at most {MAX_LEVELS:,}")
        if finite("investment") <= 0.0:
            raise ConfigError("investment must be above 0")
        if self.spacing not in SPACINGS:
            raise ConfigError("spacing must be 'arithmetic' or 'geometric'")
        for name in ("maker_fee", "taker_fee"):
            if not 0.0 <= finite(name) < 0.1:
                raise ConfigError(f"{name} must be at least 0 and below 0.1 (10 %)")
        if finite("tick") < 0.0:
            raise ConfigError("tick must be 0 (none) or positive")
        if finite("min_notional") < 0.0:
            raise ConfigError("min_notional must be 0 (none) or positive")
        stop, take = finite("stop_loss"), finite("take_profit")
        if stop != 0.0 and not 0.0 < stop < lower:
            raise ConfigError(
                f"stop_loss must be 0 (off) or a price between 0 and lower ({lower:g})"
            )
        if take != 0.0 and not take > upper:
            raise ConfigError(f"take_profit must be 0 (off) or a price above upper ({upper:g})")
        if not isinstance(self.trailing, bool):
            raise ConfigError("trailing must be true or false")

    @property
    def cells(self) -> int:
        """Number of grid cells (buy line, sell line pairs)."""
        return self.levels - 1

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> GridSettings:
        """Settings from a plain dict (optimizer rows, forms); unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown grid setting {unknown[0]!r}; known: {', '.join(sorted(known))}"
            )
        for name in ("lower", "upper", "levels", "investment"):
            if name not in values:
                raise ConfigError(f"{name} is required")
        args = dict(values)
        levels = args["levels"]
        # An optimizer may hand whole numbers as floats or numpy integers.
        if isinstance(levels, np.integer) or (isinstance(levels, float) and levels.is_integer()):
            args["levels"] = int(levels)
        for name, value in args.items():
            if isinstance(value, np.floating):
                args[name] = float(value)
        trailing = args.get("trailing", False)
        # An optimizer's row may say on/off as 0/1 or a numpy bool.
        if isinstance(trailing, np.bool_) or (
            isinstance(trailing, int | float)
            and not isinstance(trailing, bool)
            and trailing in (0, 1)
        ):
            args["trailing"] = bool(trailing)
        return cls(**args)  # type: ignore[arg-type]  # values checked by GridSettings.__post_init__


def _line_values(settings: GridSettings, n: int, js: FloatArray) -> FloatArray:
    """Line number ``js`` (0 = lower, n - 1 = upper, beyond: the same spacing continued
    upwards) of an n-line grid, rounded to the tick."""
    lower, upper = settings.lower, settings.upper
    steps = js / (n - 1)
    if settings.spacing == "arithmetic":
        lines = lower + (upper - lower) * steps
    else:
        lines = lower * np.power(upper / lower, steps)
    lines[js == 0] = lower
    lines[js == n - 1] = upper
    if settings.tick > 0.0:
        lines = np.round(lines / settings.tick) * settings.tick
    return np.ascontiguousarray(lines)


def _lines(settings: GridSettings, n: int) -> FloatArray:
    """n lines from lower to upper with the settings' spacing, rounded to the tick."""
    return _line_values(settings, n, np.arange(n, dtype=np.float64))


MAX_TRAIL_LINES: Final = 1_000_000


def grid_line(settings: GridSettings, j: int) -> float:
    """Line ``j`` of the grid: lines 0..levels-1 are ``grid_levels``; a trailing grid's line
    ``levels - 1 + k`` is the top line of its k-th shift up (the spacing continued)."""
    return float(_line_values(settings, settings.levels, np.array([float(j)]))[0])


def trail_lines(settings: GridSettings, highest: float) -> FloatArray:
    """The grid's lines continued upwards (same spacing, same tick rounding) until one lies
    above ``highest``: every line a trailing grid can shift to while the price stays at or
    below ``highest``. ConfigError when the tick merges two of them."""
    n = settings.levels
    base = grid_levels(settings)
    if not settings.trailing or highest < base[-1]:
        return base
    if settings.spacing == "arithmetic":
        guess = (highest - settings.upper) / ((settings.upper - settings.lower) / (n - 1))
    else:
        guess = math.log(highest / settings.upper) / (
            math.log(settings.upper / settings.lower) / (n - 1)
        )
    extra = int(min(max(guess, 0.0), MAX_TRAIL_LINES)) + 2
    while True:
        if n + extra > MAX_TRAIL_LINES:
            raise ConfigError(
                f"trailing: the price reaches {highest:g}, over {MAX_TRAIL_LINES:,} lines above "
                "the range; use a wider spacing"
            )
        more = _line_values(settings, n, np.arange(n, n + extra, dtype=np.float64))
        if more[-1] > highest:
            break
        extra *= 2
    lines = np.concatenate([base, more[: int(np.searchsorted(more, highest, side="right")) + 1]])
    if not np.all(np.diff(lines) > 0.0):
        raise ConfigError(
            f"trailing: a tick of {settings.tick:g} merges two lines above the range; use fewer "
            "levels or turn trailing off"
        )
    return np.ascontiguousarray(lines)


def _lines_fit(settings: GridSettings, n: int) -> bool:
    lines = _lines(settings, n)
    return bool(lines[0] > 0.0 and np.all(np.diff(lines) > 0.0))


def _order_fits(settings: GridSettings, n: int) -> bool:
    per_order = settings.investment / (n - 1) / (1.0 + settings.maker_fee)
    return settings.min_notional <= 0.0 or per_order >= settings.min_notional


def _largest(fits: Callable[[int], bool], guess: float) -> int:
    """The largest n in 2..MAX_LEVELS with fits(n) true, searched from ``guess`` (1 when not
    even 2 fits); fits is monotone: true up to some n, false beyond."""
    n = max(2, min(int(guess), MAX_LEVELS))
    while n > 2 and not fits(n):
        n -= 1
    if not fits(n):
        return 1
    while n < MAX_LEVELS and fits(n + 1):
        n += 1
    return n


def max_levels_for_tick(settings: GridSettings) -> int:
    """The most lines the tick keeps distinct between lower and upper with this spacing."""
    tick, lower, upper = settings.tick, settings.lower, settings.upper
    if tick <= 0.0:
        return MAX_LEVELS
    if settings.spacing == "arithmetic":
        guess = (upper - lower) / tick + 1  # lines a whole tick apart round apart
    else:
        guess = math.log(upper / lower) / math.log1p(tick / lower) + 1  # the lowest step binds
    return _largest(lambda n: _lines_fit(settings, n), guess)


def max_levels_for_investment(settings: GridSettings) -> int:
    """The most lines for which every cell's buy (its share of the investment, fee included)
    still reaches the minimum notional; 1 when not even one cell does."""
    if settings.min_notional <= 0.0:
        return MAX_LEVELS
    guess = settings.investment / (settings.min_notional * (1.0 + settings.maker_fee)) + 1
    return _largest(lambda n: _order_fits(settings, n), guess)


def grid_levels(settings: GridSettings) -> FloatArray:
    """The price lines, ascending, rounded to the tick; ConfigError when the tick merges two
    lines or a cell's order would fall under the minimum notional (each says the maximum)."""
    n = settings.levels
    if not _lines_fit(settings, n):
        raise ConfigError(
            f"levels: a tick of {settings.tick:g} cannot separate {n} {settings.spacing} "
            f"levels between {settings.lower:g} and {settings.upper:g}; at most "
            f"{max_levels_for_tick(settings)} fit"
        )
    if not _order_fits(settings, n):
        per_order = settings.investment / settings.cells / (1.0 + settings.maker_fee)
        most = max_levels_for_investment(settings)
        limit = (
            f"at most {most} levels for this investment"
            if most >= 2
            else "the investment does not cover even one cell (2 levels)"
        )
        raise ConfigError(
            f"levels: {settings.investment:g} over {settings.cells} cells is {per_order:.6g} "
            f"per order, below the minimum notional of {settings.min_notional:g}; {limit}"
        )
    return _lines(settings, n)


def cell_quantities(settings: GridSettings, lines: FloatArray) -> FloatArray:
    """Each cell's fixed quantity: its share of the investment buys it at its line, fee in."""
    share = settings.investment / settings.cells
    return np.ascontiguousarray(share / (lines[:-1] * (1.0 + settings.maker_fee)))


def bar_path(prev_close: float, o: float, h: float, low: float, c: float) -> tuple[float, ...]:
    """The points the price passes through in one bar by the intrabar rule: the previous close
    (the gap leg), the open, the extreme nearer the open (the high on a tie), the other, the
    close."""
    if o - low < h - o:
        return (prev_close, o, low, h, c)
    return (prev_close, o, h, low, c)


def bar_exit(
    prev_close: float, o: float, h: float, low: float, c: float, *, stop: float, take: float
) -> tuple[str, float] | None:
    """Whether the stop-loss or take-profit (0 = off) fires in this bar, by the kernel's rule:
    the first leg that reaches it, at its price, or at the open when the gap jumped past it.
    Returns (FILL_KINDS name, price) or None. The live bot calls this on the candles it did
    not see between two steps, so it exits on the bar and at the price the backtest would."""
    pts = bar_path(prev_close, o, h, low, c)
    for leg in range(4):
        a, b = pts[leg], pts[leg + 1]
        if b > a and take > 0.0 and a < take <= b:
            return "take_profit", (b if leg == 0 else take)
        if b < a and stop > 0.0 and b <= stop < a:
            return "stop_loss", (b if leg == 0 else stop)
    return None


# --------------------------------------------------------------------------------------------
# The compiled bar loop. Plain functions (the tests also run them as Python) compiled by numba.


def _jit(fn: _F) -> _F:
    return cast(_F, numba.njit(cache=True, nogil=True, error_model="numpy")(fn))


def _frontier_py(lines: FloatArray, state: IntArray) -> tuple[float, float]:
    """(lowest line a holding cell sells at, highest line a resting buy waits at); +inf / -inf
    when there is none."""
    next_sell = math.inf
    next_buy = -math.inf
    for c in range(state.shape[0]):
        if state[c] == 1:
            if lines[c + 1] < next_sell:
                next_sell = lines[c + 1]
        elif state[c] == 0 and lines[c] > next_buy:
            next_buy = lines[c]
    return next_sell, next_buy


def _cell_fill_py(
    side: int,
    c: int,
    bar: int,
    price: float,
    fee_rate: float,
    kind: int,
    qty: FloatArray,
    state: IntArray,
    buy_px: FloatArray,
    buy_fee: FloatArray,
    cell_pnl: FloatArray,
    cell_trips: IntArray,
    acc: FloatArray,
    counts: IntArray,
    record: bool,
    f_bar: IntArray,
    f_cell: IntArray,
    f_side: IntArray,
    f_kind: IntArray,
    f_num: FloatArray,
) -> None:
    """Cell c buys (side 1: its sell then rests) or sells (side -1: realised P&L goes to the
    cell and the totals) its quantity at ``price``; the fill is counted and, when recording,
    written as a row."""
    q = qty[c]
    gross = q * price
    fee = gross * fee_rate
    pnl = 0.0
    if side == 1:
        acc[0] -= gross + fee
        acc[1] += q
        acc[2] += fee
        buy_px[c] = price
        buy_fee[c] = fee
        state[c] = 1
    else:
        pnl = gross - fee - (q * buy_px[c] + buy_fee[c])
        acc[0] += gross - fee  # cash
        acc[1] -= q  # base held
        acc[2] += fee  # fees paid
        if kind == 1:
            acc[3] += pnl  # grid profit
            cell_trips[c] += 1
        else:
            acc[4] += pnl  # exit P&L
        cell_pnl[c] += pnl
        state[c] = 0
    k = counts[0]
    if record:
        f_bar[k] = bar
        f_cell[k] = c
        f_side[k] = side
        f_kind[k] = kind
        f_num[k, 0] = price
        f_num[k, 1] = q
        f_num[k, 2] = fee
        f_num[k, 3] = pnl
    counts[0] = k + 1


def _grid_kernel_py(
    open_: FloatArray,
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    lines: FloatArray,
    qty: FloatArray,
    investment: float,
    maker: float,
    taker: float,
    stop: float,
    take: float,
    active: int,
    trailing: bool,
    record: bool,
    eq_out: FloatArray,
    base_out: FloatArray,
    state: IntArray,
    buy_px: FloatArray,
    buy_fee: FloatArray,
    cell_pnl: FloatArray,
    cell_trips: IntArray,
    acc: FloatArray,
    counts: IntArray,
    f_bar: IntArray,
    f_cell: IntArray,
    f_side: IntArray,
    f_kind: IntArray,
    f_num: FloatArray,
    shift_bar: IntArray,
) -> tuple[int, int]:
    """Replay the grid over the bars. Returns (bar the bot stopped at or -1, fill kind of the
    stop). ``acc`` = [cash, base held, fees, grid profit, exit P&L]; ``counts`` = [fills,
    shifts, lowest cell, top line]. Cells ``active`` and above are a trailing grid's cells to
    come (``lines`` continued upwards); ``shift_bar[k]`` is the bar of the k-th shift."""
    n = open_.shape[0]
    cells = qty.shape[0]
    acc[0] = investment
    stopped_at = -1
    stop_kind = -1
    low_cell = 0
    top = active  # index of the grid's top line
    counts[2] = low_cell
    counts[3] = top
    for c in range(active, cells):
        state[c] = 3
    if n == 0:
        return stopped_at, stop_kind
    o0 = open_[0]
    for c in range(active):
        if lines[c] >= o0:
            _cell_fill(1, c, 0, o0, maker, 0, qty, state, buy_px, buy_fee, cell_pnl, cell_trips,
                       acc, counts, record, f_bar, f_cell, f_side, f_kind, f_num)  # fmt: skip
        else:
            state[c] = 0
    pts = np.empty(5)
    prev_close = o0
    exit_px = 0.0  # where a take-profit or stop-loss sells
    # The nearest lines where something rests: a leg that reaches neither (nor a stop) is
    # skipped without a search. Recomputed after every fill (fills are rare next to bars).
    next_sell, next_buy = _frontier(lines, state)
    trail_at = lines[top + 1] if trailing and top + 1 < lines.shape[0] else math.inf
    for i in range(n):
        if stopped_at >= 0:
            eq_out[i] = acc[0]
            base_out[i] = 0.0
            continue
        o = open_[i]
        h = high[i]
        lo = low[i]
        pts[0] = prev_close
        pts[1] = o
        if o - lo < h - o:
            pts[2] = lo
            pts[3] = h
        else:
            pts[2] = h
            pts[3] = lo
        pts[4] = close[i]
        for leg in range(4):
            a = pts[leg]
            b = pts[leg + 1]
            gap = leg == 0
            if b > a:
                if b < next_sell and b < trail_at and not (take > 0.0 and b >= take):
                    continue
                # Sells at lines in (a, b]: line j is cell j - 1's sell.
                j = np.searchsorted(lines, a, side="right")
                stop_j = np.searchsorted(lines, b, side="right")
                while j < stop_j:
                    c = j - 1
                    if c >= 0 and state[c] == 1:
                        px = b if gap else lines[j]
                        _cell_fill(-1, c, i, px, maker, 1, qty, state, buy_px, buy_fee,
                                   cell_pnl, cell_trips, acc, counts, record, f_bar, f_cell,
                                   f_side, f_kind, f_num)  # fmt: skip
                    j += 1
                if take > 0.0 and a < take <= b:
                    exit_px = b if gap else take
                    stopped_at = i
                    stop_kind = 3
                # Trailing: the price reached one spacing above the top line, so every cell has
                # sold and rests its buy. The lowest cell's buy is dropped and a cell is added
                # on top (buying at the old top line, below the price: it rests).
                while stopped_at < 0 and b >= trail_at and state[low_cell] == 0:
                    state[low_cell] = 2
                    low_cell += 1
                    state[top] = 0
                    shift_bar[counts[1]] = i
                    counts[1] += 1
                    top += 1
                    trail_at = lines[top + 1] if top + 1 < lines.shape[0] else math.inf
            elif b < a:
                if b > next_buy and not (stop > 0.0 and b <= stop):
                    continue
                # Buys at lines in [b, a), highest first (the price reaches them in that order).
                c = min(np.searchsorted(lines, a, side="left"), cells) - 1
                first = np.searchsorted(lines, b, side="left")
                while c >= first:
                    if state[c] == 0:
                        px = b if gap else lines[c]
                        _cell_fill(1, c, i, px, maker, 1, qty, state, buy_px, buy_fee,
                                   cell_pnl, cell_trips, acc, counts, record, f_bar, f_cell,
                                   f_side, f_kind, f_num)  # fmt: skip
                    c -= 1
                if stop > 0.0 and b <= stop < a:
                    exit_px = b if gap else stop
                    stopped_at = i
                    stop_kind = 2
            if stopped_at >= 0:
                # Take-profit or stop-loss on this leg: every holding cell sells at the taker
                # fee, then the bot stops.
                for c2 in range(cells):
                    if state[c2] == 1:
                        _cell_fill(-1, c2, i, exit_px, taker, stop_kind, qty, state, buy_px,
                                   buy_fee, cell_pnl, cell_trips, acc, counts, record, f_bar,
                                   f_cell, f_side, f_kind, f_num)  # fmt: skip
                for c3 in range(cells):
                    state[c3] = 2
                acc[1] = 0.0
                break
            next_sell, next_buy = _frontier(lines, state)
        prev_close = close[i]
        eq_out[i] = acc[0] + acc[1] * close[i]
        base_out[i] = acc[1]
    counts[2] = low_cell
    counts[3] = top
    return stopped_at, stop_kind


_frontier = _jit(_frontier_py)
_cell_fill = _jit(_cell_fill_py)
_grid_kernel = _jit(_grid_kernel_py)
NJIT_FUNCTIONS: Final[tuple[str, ...]] = ("_frontier", "_cell_fill", "_grid_kernel")


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class GridBotResult:
    """What a grid replay produced.

    ``equity``/``base`` per bar (marked at the close); ``fills`` a FILL_DTYPE array in the order
    they happened; per cell: ``cell_pnl`` (realised), ``cell_unrealized`` (marked at the last
    close, net of the buy fee; 0 when not holding), ``cell_round_trips`` (grid sells),
    ``cell_state`` (index into CELL_STATES). ``stopped_at`` is the bar of the stop-loss or
    take-profit (-1: none) and ``stop_reason`` "", "stop_loss" or "take_profit".

    A trailing grid: ``lines`` (and every per-cell array) run up to the top line it reached;
    cells below ``lowest_cell`` were dropped by its ``shifts`` (state done), which happened at
    the bars ``shift_bars``.
    """

    settings: GridSettings
    lines: FloatArray
    qty: FloatArray
    timestamp: IntArray
    equity: FloatArray
    base: FloatArray
    fills: npt.NDArray[np.void]
    cell_pnl: FloatArray
    cell_unrealized: FloatArray
    cell_round_trips: IntArray
    cell_state: IntArray
    cash: float
    fees_paid: float
    grid_profit: float
    exit_pnl: float
    unrealized_pnl: float
    stopped_at: int
    stop_reason: str
    shifts: int = 0
    shift_bars: IntArray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    lowest_cell: int = 0

    @property
    def final_range(self) -> tuple[float, float]:
        """(lowest, highest line) of the grid at the end: a trailing grid's range moved up."""
        return float(self.lines[self.lowest_cell]), float(self.lines[-1])

    @property
    def final_equity(self) -> float:
        """Cash plus held quantity at the last close (the investment when there is no bar)."""
        return float(self.equity[-1]) if self.equity.size else self.settings.investment

    @property
    def round_trips(self) -> int:
        """Completed grid buy-then-sell pairs."""
        return int(self.cell_round_trips.sum())


def simulate_grid(candles: Candles, settings: GridSettings) -> GridBotResult:
    """Replay ``settings``' grid over ``candles`` (see the module docstring for every rule)."""
    n = len(candles)
    highest = float(np.max(candles.high)) if n else 0.0
    lines = trail_lines(settings, max(highest, float(candles.open[0]) if n else 0.0))
    qty = cell_quantities(settings, lines)
    cells = len(lines) - 1
    if n:
        first = float(candles.open[0])
        if settings.stop_loss > 0.0 and first <= settings.stop_loss:
            raise ConfigError(
                f"stop_loss: the first open {first:g} is already at or below the stop "
                f"{settings.stop_loss:g}"
            )
        if settings.take_profit > 0.0 and first >= settings.take_profit:
            raise ConfigError(
                f"take_profit: the first open {first:g} is already at or above the target "
                f"{settings.take_profit:g}"
            )
    arrays = (candles.open, candles.high, candles.low, candles.close)

    def run(record: bool, capacity: int) -> tuple[Any, ...]:
        eq = np.empty(n)
        base = np.empty(n)
        state = np.zeros(cells, dtype=np.int64)
        buy_px = np.zeros(cells)
        buy_fee = np.zeros(cells)
        cell_pnl = np.zeros(cells)
        trips = np.zeros(cells, dtype=np.int64)
        acc = np.zeros(5)
        counts = np.zeros(4, dtype=np.int64)
        f_int = np.zeros((4, capacity), dtype=np.int64)
        f_num = np.zeros((capacity, 4))
        shift_bar = np.zeros(max(cells, 1), dtype=np.int64)
        stopped_at, kind = _grid_kernel(
            *arrays, lines, qty, settings.investment, settings.maker_fee, settings.taker_fee,
            settings.stop_loss, settings.take_profit, settings.cells, settings.trailing, record,
            eq, base, state, buy_px, buy_fee, cell_pnl, trips, acc, counts, f_int[0], f_int[1],
            f_int[2], f_int[3], f_num, shift_bar,
        )  # fmt: skip
        return (
            eq,
            base,
            state,
            buy_px,
            buy_fee,
            cell_pnl,
            trips,
            acc,
            counts,
            f_int,
            f_num,
            (
                stopped_at,
                kind,
            ),
            shift_bar,
        )

    # First count the fills, then replay recording them into arrays of exactly that size.
    counted = run(False, 1)
    total = int(counted[8][0])
    eq, base, state, buy_px, buy_fee, cell_pnl, trips, acc, counts, f_int, f_num, stop, sb = run(
        True, max(total, 1)
    )
    # A trailing grid's per-cell arrays end at the top line it reached.
    shifts, lowest, top = int(counts[1]), int(counts[2]), int(counts[3])
    used = top
    lines, qty = lines[: used + 1], qty[:used]
    state, buy_px, buy_fee = state[:used], buy_px[:used], buy_fee[:used]
    cell_pnl, trips = cell_pnl[:used], trips[:used]
    fills = np.zeros(total, dtype=FILL_DTYPE)
    fills["bar"] = f_int[0, :total]
    fills["time"] = candles.timestamp[f_int[0, :total]] if total else 0
    fills["cell"] = f_int[1, :total]
    fills["side"] = f_int[2, :total]
    fills["kind"] = f_int[3, :total]
    fills["price"] = f_num[:total, 0]
    fills["qty"] = f_num[:total, 1]
    fills["fee"] = f_num[:total, 2]
    fills["pnl"] = f_num[:total, 3]
    holding = state == _SELL_RESTING
    last = float(candles.close[-1]) if n else 0.0
    unrealized = np.where(holding, qty * last - (qty * buy_px + buy_fee), 0.0)
    stopped_at, kind = int(stop[0]), int(stop[1])
    return GridBotResult(
        settings=settings,
        lines=lines,
        qty=qty,
        timestamp=candles.timestamp,
        equity=eq,
        base=base,
        fills=fills,
        cell_pnl=cell_pnl,
        cell_unrealized=unrealized,
        cell_round_trips=trips,
        cell_state=state,
        cash=float(acc[0]),
        fees_paid=float(acc[2]),
        grid_profit=float(acc[3]),
        exit_pnl=float(acc[4]),
        unrealized_pnl=float(unrealized.sum()),
        stopped_at=stopped_at,
        stop_reason=FILL_KINDS[kind] if kind >= 0 else "",
        shifts=shifts,
        shift_bars=sb[:shifts].copy(),
        lowest_cell=lowest,
    )


def round_trip_trades(result: GridBotResult) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(pnl, return, bars held) of every sell, pairing it with its cell's previous buy: the
    trade lists compute_metrics wants. Return is P&L over the buy's cost (fee included)."""
    fills = result.fills
    last_buy_bar = np.zeros(result.qty.shape[0], dtype=np.int64)
    last_cost = np.zeros(result.qty.shape[0])
    pnl: list[float] = []
    rets: list[float] = []
    held: list[float] = []
    for f in fills:
        c = int(f["cell"])
        if int(f["side"]) > 0:
            last_buy_bar[c] = int(f["bar"])
            last_cost[c] = float(f["qty"]) * float(f["price"]) + float(f["fee"])
        else:
            pnl.append(float(f["pnl"]))
            rets.append(float(f["pnl"]) / last_cost[c])
            held.append(float(int(f["bar"]) - last_buy_bar[c]))
    return np.asarray(pnl), np.asarray(rets), np.asarray(held)


GRID_ONLY_METRICS: Final[tuple[str, ...]] = (
    "grid_profit",
    "exit_pnl",
    "unrealized_pnl",
    "round_trips",
    "final_equity",
    "stopped",
    "shifts",
)


def grid_metrics(candles: Candles, settings: Mapping[str, object]) -> dict[str, float]:
    """Run the grid described by a plain settings dict and return plain-float metrics: every
    key of ``compute_metrics`` (trades are the sells, each paired with its buy) followed by
    GRID_ONLY_METRICS. This is the objective function an optimizer searches over."""
    grid = GridSettings.from_mapping(settings)
    if len(candles) == 0:
        raise ConfigError("the grid needs at least one candle")
    result = simulate_grid(candles, grid)
    pnl, rets, held = round_trip_trades(result)
    turnover = float(np.sum(result.fills["qty"] * result.fills["price"]))
    out = compute_metrics(
        equity=result.equity,
        timestamps=candles.timestamp,
        trade_pnl=pnl,
        trade_returns=rets,
        trade_bars_held=held,
        fees_paid=result.fees_paid,
        turnover=turnover,
        initial_cash=grid.investment,
        benchmark_close=candles.close,
        bars_per_year=candle_periods_per_year(candles),
        exposure_bars=result.base,
    )
    out["grid_profit"] = result.grid_profit
    out["exit_pnl"] = result.exit_pnl
    out["unrealized_pnl"] = result.unrealized_pnl
    out["round_trips"] = float(result.round_trips)
    out["final_equity"] = result.final_equity
    out["stopped"] = 1.0 if result.stopped_at >= 0 else 0.0
    out["shifts"] = float(result.shifts)
    return out
