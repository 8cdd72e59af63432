"""The bar-by-bar simulator: one numba bar loop for single symbols and shared-cash portfolios.

Conventions (each has a test named after it in tests/engine/test_simulate.py):

* A signal on bar t's close fills at bar t+1's open (``fill="next_open"``) or at bar t's close
  (``fill="close"``). With next-open fills a signal on the last bar has nothing to fill on and
  is dropped.
* Market orders (entries, signal exits) and stop orders (stop-loss, trailing stop, stop entries)
  pay ``taker_fee`` and slippage; limit orders (limit entries, take-profit) pay ``maker_fee`` and
  no slippage. Slippage is adverse: a buy pays ``price*(1+bps/1e4)``, a sell receives
  ``price*(1-bps/1e4)``.
* Limit and stop entries rest from bar t+1 for ``entry_valid_bars`` bars whatever ``fill`` is.
  A limit fills at its price, or at the open when the bar opens through it (better); a stop
  entry fills at its price, or at the open when the bar gaps through it (worse).
* Protective exits are checked against every bar's high and low after the entry's fill. On the
  bar the entry filled (next-open and resting entries) the whole high-low range counts as
  reachable after the fill, and there is no gap: levels fill at the level. On later bars an open
  beyond the stop fills the stop at the open, an open beyond the target fills the target at the
  open. When stop and target both fall inside one bar the stop comes first (pessimistic).
  Stop-loss and the trailing stops are one stop: the tightest level binds.
* The trailing stop trails the most favourable price since entry: the fill price, then each
  bar's high (long) or low (short) once that bar's stop check is done, so a bar never raises
  its own stop. The ATR distance uses the ATR of the previous completed bar.
* Exit rules act before entry rules on the same bar; one position per symbol (no pyramiding).
  A bar whose exit rule for a side is true never opens that side. When both entry rules are
  true, neither acts. With ``reverse_on_opposite`` an opposite entry signal closes the position
  (reason ``opposite_signal``) and opens the other side on the same fill; without it opposite
  entries are ignored while a position is open.
* While a limit or stop entry rests, new entry signals are ignored; the exit rule of the
  order's side cancels it.
* Sizing with a fee fits the fee inside the money: ``qty = equity*fraction/(price*(1+fee))``.
  Every mode is then capped at ``max_position_fraction`` of equity (fee fitted the same way),
  a long at the cash available, rounded down to ``lot_step`` and skipped under
  ``min_notional``. In a portfolio each symbol sizes against ``weight * equity`` and symbols
  are served in list order when cash runs short.
* The drawdown breaker and the daily loss limit look at the equity marked at each close
  (before that close's own orders); they stop new entries from filling, never exits. The UTC
  day's opening equity is the previous bar's closing equity.
* A position still open at the end is marked to market at the last close, not closed, and pays
  no exit fee; it is reported in ``open_position``. ``trades`` holds closed round trips only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

from backtester.engine.candles import Candles, FloatArray, IntArray, bars_per_year
from backtester.engine.errors import ConfigError
from backtester.engine.indicators import atr as atr_indicator
from backtester.engine.signals import Signals
from risk import rules

BoolArray = npt.NDArray[np.bool_]

_F = TypeVar("_F", bound=Callable[..., Any])


# _nrt is numba's own switch for its runtime (not in its type stubs, hence the dict).
_KERNEL_OPTIONS: Final[dict[str, Any]] = {
    "cache": True,
    "nogil": True,
    "error_model": "numpy",
    "_nrt": False,
}


def _njit(fn: _F) -> _F:
    # numba ships no type information; keep the Python signature visible to mypy. nogil lets
    # a grid run kernels on threads in parallel; error_model="numpy" drops the zero-division
    # checks (every division here is guarded or cannot see a zero). _nrt=False compiles the
    # kernels without the runtime's reference counting: they allocate nothing, and the
    # increments and decrements numba wraps around an inlined helper's array arguments are
    # atomic calls, a dozen or more per fill (~2 ms of a ~10 ms kernel on an SMA cross with
    # 40,000 fills in 10^6 bars).
    return cast(_F, numba.njit(**_KERNEL_OPTIONS)(fn))


def _njit_inline(fn: _F) -> _F:
    # Helpers are inlined into the kernel at numba-IR level: a real call per bar costs more
    # than the whole bar.
    return cast(_F, numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")(fn))


EXIT_REASONS: Final[tuple[str, ...]] = (
    "signal",
    "stop_loss",
    "take_profit",
    "trailing_stop",
    "opposite_signal",
)
EXIT_SIGNAL: Final = 0
EXIT_STOP_LOSS: Final = 1
EXIT_TAKE_PROFIT: Final = 2
EXIT_TRAILING_STOP: Final = 3
EXIT_OPPOSITE_SIGNAL: Final = 4

TRADE_DTYPE: Final = np.dtype(
    [
        ("symbol", np.int64),
        ("side", np.int64),
        ("entry_index", np.int64),
        ("exit_index", np.int64),
        ("entry_time", np.int64),
        ("exit_time", np.int64),
        ("qty", np.float64),
        ("entry_price", np.float64),
        ("exit_price", np.float64),
        ("entry_fee", np.float64),
        ("exit_fee", np.float64),
        ("pnl", np.float64),
        ("return", np.float64),
        ("bars_held", np.int64),
        ("exit_reason", np.int64),
    ]
)

# Upper bound of the protections' bar counts (lookbacks and locks): ten million bars.
_MAX_BARS: Final = 10_000_000

# Order kinds and sizing modes as the kernel sees them.
_ORDER_MARKET: Final = 0
_ORDER_LIMIT: Final = 1
_ORDER_STOP: Final = 2
_ORDER_KINDS: Final = {"market": _ORDER_MARKET, "limit": _ORDER_LIMIT, "stop": _ORDER_STOP}
# The sizing modes are risk.rules' (one sizing core for backtests and live orders).
_SIZE_FRACTION: Final = rules.SIZE_FRACTION
_SIZE_NOTIONAL: Final = rules.SIZE_NOTIONAL
_SIZE_RISK: Final = rules.SIZE_RISK
_SIZE_VOL_TARGET: Final = rules.SIZE_VOL_TARGET
_SIZINGS: Final = {
    "fraction": _SIZE_FRACTION,
    "notional": _SIZE_NOTIONAL,
    "risk": _SIZE_RISK,
    "vol_target": _SIZE_VOL_TARGET,
}

# Positions in the float vector that carries the configuration into the kernel: one array
# keeps the compiled signature fixed however many settings there are.
_C_INIT_CASH: Final = 0
_C_FILL_CLOSE: Final = 1
_C_TAKER: Final = 2
_C_MAKER: Final = 3
_C_SLIP: Final = 4
_C_ENTRY_KIND: Final = 5
_C_ENTRY_OFFSET: Final = 6
_C_ENTRY_VALID: Final = 7
_C_STOP_LOSS: Final = 8
_C_TAKE_PROFIT: Final = 9
_C_TRAIL: Final = 10
_C_TRAIL_ATR: Final = 11
_C_SIZING: Final = 12
_C_SIZE_VALUE: Final = 13
_C_LOT: Final = 14
_C_MIN_NOTIONAL: Final = 15
_C_MAX_FRACTION: Final = 16
_C_ALLOW_SHORT: Final = 17
_C_DD_HALT: Final = 18
_C_DAILY_LIMIT: Final = 19
_C_REVERSE: Final = 20
_C_MAX_POSITIONS: Final = 21
_C_MAX_HEAT: Final = 22
_C_COOLDOWN: Final = 23
_C_CORR_THRESHOLD: Final = 24
_C_CORR_LOOKBACK: Final = 25
_C_CORR_SHRINK: Final = 26
_C_WEEKLY_LIMIT: Final = 27
_C_MONTHLY_LIMIT: Final = 28
_C_MAX_NOTIONAL: Final = 29
_C_MAX_LEVERAGE: Final = 30
_C_GUARD_COUNT: Final = 31
_C_GUARD_LOOKBACK: Final = 32
_C_GUARD_LOCK: Final = 33
_C_GUARD_ALL: Final = 34
_C_LOW_PROFIT_LOOKBACK: Final = 35
_C_LOW_PROFIT_MIN: Final = 36
_C_LOW_PROFIT_LOCK: Final = 37
_N_CFG: Final = 38

# Trade columns written by the kernel.
_T_SYMBOL: Final = 0
_T_SIDE: Final = 1
_T_ENTRY_IDX: Final = 2
_T_EXIT_IDX: Final = 3
_T_REASON: Final = 4
_N_TI: Final = 5
_T_QTY: Final = 0
_T_ENTRY_PX: Final = 1
_T_EXIT_PX: Final = 2
_T_ENTRY_FEE: Final = 3
_T_EXIT_FEE: Final = 4
_T_PNL: Final = 5
_T_RET: Final = 6
_N_TF: Final = 7

# Run statistics written by the kernel (max drawdown and return sums only without record).
_S_FINAL_EQUITY: Final = 0
_S_MAX_DD: Final = 1
_S_RET_SUM: Final = 2
_S_RET_SUMSQ: Final = 3
_S_N_RET: Final = 4
_S_FEES: Final = 5
_S_TURNOVER: Final = 6
_S_HALTED_AT: Final = 7
_S_N_TRADES: Final = 8
_N_STATS: Final = 9

# Rows of the kernel's per-symbol work arrays (see _sim_body).
_N_FSTATE: Final = 6
_N_ISTATE: Final = 9
# Rows of the protections' work array (one column per symbol, plus one for every symbol):
# the bar up to which entries are locked, stops pushed to the guard ring, exits pushed to the
# low-profit ring.
_P_LOCK_UNTIL: Final = 0
_P_GUARD_N: Final = 1
_P_PROFIT_N: Final = 2
_N_PSTATE: Final = 3


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Simulation settings; every value is checked on construction (``ConfigError``).

    Fractions are plain fractions (0.02 = 2 %); 0 switches a stop, target or limit off.
    """

    initial_cash: float = 10_000.0
    fill: Literal["next_open", "close"] = "next_open"
    taker_fee: float = 0.001
    maker_fee: float = 0.0005
    slippage_bps: float = 0.0
    entry_order: Literal["market", "limit", "stop"] = "market"
    entry_offset: float = 0.0
    entry_valid_bars: int = 1
    stop_loss: float = 0.0
    take_profit: float = 0.0
    trailing_stop: float = 0.0
    trailing_atr_mult: float = 0.0
    atr_period: int = 14
    sizing: Literal["fraction", "notional", "risk", "vol_target"] = "fraction"
    size_value: float = 1.0
    vol_lookback: int = 20
    lot_step: float = 0.0
    min_notional: float = 0.0
    max_position_fraction: float = 1.0
    allow_short: bool = True
    max_drawdown_halt: float = 0.0
    daily_loss_limit: float = 0.0
    reverse_on_opposite: bool = True
    max_open_positions: int = 0
    max_heat: float = 0.0
    cooldown_bars: int = 0
    correlation_threshold: float = 0.0
    correlation_lookback: int = 20
    correlation_shrink: bool = False
    weekly_loss_limit: float = 0.0
    monthly_loss_limit: float = 0.0
    max_order_notional: float = 0.0
    max_leverage: float = 0.0
    stoploss_guard_count: int = 0
    stoploss_guard_lookback_bars: int = 0
    stoploss_guard_lock_bars: int = 0
    stoploss_guard_all: bool = False
    low_profit_lookback_bars: int = 0
    low_profit_min: float = 0.0
    low_profit_lock_bars: int = 0

    def __post_init__(self) -> None:
        _check_number("initial_cash", self.initial_cash, low=0.0, low_open=True)
        if self.fill not in ("next_open", "close"):
            raise ConfigError(f"fill must be 'next_open' or 'close', got {self.fill!r}")
        _check_number("taker_fee", self.taker_fee, low=0.0, high=0.1)
        _check_number("maker_fee", self.maker_fee, low=0.0, high=0.1)
        _check_number("slippage_bps", self.slippage_bps, low=0.0, high=1000.0)
        if self.entry_order not in _ORDER_KINDS:
            raise ConfigError(
                f"entry_order must be 'market', 'limit' or 'stop', got {self.entry_order!r}"
            )
        _check_number("entry_offset", self.entry_offset, low=0.0, high=1.0, high_open=True)
        _check_int("entry_valid_bars", self.entry_valid_bars, low=1)
        _check_number("stop_loss", self.stop_loss, low=0.0, high=1.0, high_open=True)
        _check_number("take_profit", self.take_profit, low=0.0, high=100.0)
        _check_number("trailing_stop", self.trailing_stop, low=0.0, high=1.0, high_open=True)
        _check_number("trailing_atr_mult", self.trailing_atr_mult, low=0.0, high=100.0)
        _check_int("atr_period", self.atr_period, low=1)
        if self.sizing not in _SIZINGS:
            raise ConfigError(
                "sizing must be 'fraction', 'notional', 'risk' or 'vol_target', "
                f"got {self.sizing!r}"
            )
        _check_number("size_value", self.size_value, low=0.0, low_open=True)
        if self.sizing in ("fraction", "risk") and self.size_value > 1.0:
            raise ConfigError(
                f"size_value is a fraction of equity for sizing={self.sizing!r} and must be "
                f"at most 1, got {self.size_value}"
            )
        if self.sizing == "risk" and self.stop_loss <= 0.0:
            raise ConfigError("sizing='risk' sizes from the stop distance and needs stop_loss > 0")
        _check_int("vol_lookback", self.vol_lookback, low=2)
        _check_number("lot_step", self.lot_step, low=0.0)
        _check_number("min_notional", self.min_notional, low=0.0)
        _check_number(
            "max_position_fraction", self.max_position_fraction, low=0.0, low_open=True, high=1.0
        )
        _check_bool("allow_short", self.allow_short)
        _check_number(
            "max_drawdown_halt", self.max_drawdown_halt, low=0.0, high=1.0, high_open=True
        )
        _check_number("daily_loss_limit", self.daily_loss_limit, low=0.0, high=1.0, high_open=True)
        _check_bool("reverse_on_opposite", self.reverse_on_opposite)
        _check_int("max_open_positions", self.max_open_positions, low=0)
        _check_number("max_heat", self.max_heat, low=0.0, high=1.0)
        _check_int("cooldown_bars", self.cooldown_bars, low=0)
        _check_number("correlation_threshold", self.correlation_threshold, low=0.0, high=1.0)
        _check_int("correlation_lookback", self.correlation_lookback, low=2)
        _check_bool("correlation_shrink", self.correlation_shrink)
        _check_number(
            "weekly_loss_limit", self.weekly_loss_limit, low=0.0, high=1.0, high_open=True
        )
        _check_number(
            "monthly_loss_limit", self.monthly_loss_limit, low=0.0, high=1.0, high_open=True
        )
        _check_number("max_order_notional", self.max_order_notional, low=0.0, high=1e12)
        if 0.0 < self.max_order_notional < self.min_notional:
            raise ConfigError(
                f"max_order_notional must be 0 (off) or at least min_notional "
                f"({self.min_notional:g}), got {self.max_order_notional!r}"
            )
        _check_number("max_leverage", self.max_leverage, low=0.0, high=100.0)
        _check_int("stoploss_guard_count", self.stoploss_guard_count, low=0, high=1000)
        _check_int(
            "stoploss_guard_lookback_bars", self.stoploss_guard_lookback_bars, low=0, high=_MAX_BARS
        )
        _check_int("stoploss_guard_lock_bars", self.stoploss_guard_lock_bars, low=0, high=_MAX_BARS)
        _check_bool("stoploss_guard_all", self.stoploss_guard_all)
        _check_int("low_profit_lookback_bars", self.low_profit_lookback_bars, low=0, high=_MAX_BARS)
        _check_number("low_profit_min", self.low_profit_min, low=-1.0, high=1.0)
        _check_int("low_profit_lock_bars", self.low_profit_lock_bars, low=0, high=_MAX_BARS)

    @property
    def guard_on(self) -> bool:
        """The stop-loss guard acts: a count of stops and a lock of at least one bar."""
        return self.stoploss_guard_count > 0 and self.stoploss_guard_lock_bars > 0

    @property
    def low_profit_on(self) -> bool:
        """The low-profit lock acts: a lookback and a lock of at least one bar each."""
        return self.low_profit_lookback_bars > 0 and self.low_profit_lock_bars > 0

    def as_vector(self) -> FloatArray:
        """The settings packed as the float vector the kernel reads."""
        v = np.zeros(_N_CFG, dtype=np.float64)
        v[_C_INIT_CASH] = self.initial_cash
        v[_C_FILL_CLOSE] = 1.0 if self.fill == "close" else 0.0
        v[_C_TAKER] = self.taker_fee
        v[_C_MAKER] = self.maker_fee
        v[_C_SLIP] = self.slippage_bps / 1e4
        v[_C_ENTRY_KIND] = _ORDER_KINDS[self.entry_order]
        v[_C_ENTRY_OFFSET] = self.entry_offset
        v[_C_ENTRY_VALID] = self.entry_valid_bars
        v[_C_STOP_LOSS] = self.stop_loss
        v[_C_TAKE_PROFIT] = self.take_profit
        v[_C_TRAIL] = self.trailing_stop
        v[_C_TRAIL_ATR] = self.trailing_atr_mult
        v[_C_SIZING] = _SIZINGS[self.sizing]
        v[_C_SIZE_VALUE] = self.size_value
        v[_C_LOT] = self.lot_step
        v[_C_MIN_NOTIONAL] = self.min_notional
        v[_C_MAX_FRACTION] = self.max_position_fraction
        v[_C_ALLOW_SHORT] = 1.0 if self.allow_short else 0.0
        v[_C_DD_HALT] = self.max_drawdown_halt
        v[_C_DAILY_LIMIT] = self.daily_loss_limit
        v[_C_REVERSE] = 1.0 if self.reverse_on_opposite else 0.0
        v[_C_MAX_POSITIONS] = self.max_open_positions
        v[_C_MAX_HEAT] = self.max_heat
        v[_C_COOLDOWN] = self.cooldown_bars
        v[_C_CORR_THRESHOLD] = self.correlation_threshold
        v[_C_CORR_LOOKBACK] = self.correlation_lookback
        v[_C_CORR_SHRINK] = 1.0 if self.correlation_shrink else 0.0
        v[_C_WEEKLY_LIMIT] = self.weekly_loss_limit
        v[_C_MONTHLY_LIMIT] = self.monthly_loss_limit
        v[_C_MAX_NOTIONAL] = self.max_order_notional
        v[_C_MAX_LEVERAGE] = self.max_leverage
        v[_C_GUARD_COUNT] = self.stoploss_guard_count if self.guard_on else 0
        v[_C_GUARD_LOOKBACK] = self.stoploss_guard_lookback_bars
        v[_C_GUARD_LOCK] = self.stoploss_guard_lock_bars
        v[_C_GUARD_ALL] = 1.0 if self.stoploss_guard_all else 0.0
        v[_C_LOW_PROFIT_LOOKBACK] = self.low_profit_lookback_bars if self.low_profit_on else 0
        v[_C_LOW_PROFIT_MIN] = self.low_profit_min
        v[_C_LOW_PROFIT_LOCK] = self.low_profit_lock_bars
        return v


def _check_number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        bound = f"greater than {low:g}" if low_open else f"at least {low:g}"
        raise ConfigError(f"{name} must be {bound}, got {value!r}")
    if high is not None and (v > high or (high_open and v == high)):
        bound = f"less than {high:g}" if high_open else f"at most {high:g}"
        raise ConfigError(f"{name} must be {bound}, got {value!r}")


def _check_int(name: str, value: object, *, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if value < low:
        raise ConfigError(f"{name} must be at least {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be at most {high}, got {value!r}")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool | np.bool_):
        raise ConfigError(f"{name} must be true or false, got {value!r}")


@dataclass(frozen=True, slots=True)
class OpenPosition:
    """A position still open after the last bar, marked at the last close (no exit fee).

    ``unrealized_pnl`` is net of the entry fee, so final equity = initial cash + realized
    trade P&L + unrealized P&L.
    """

    symbol: int
    side: int
    qty: float
    entry_index: int
    entry_time: int
    entry_price: float
    entry_fee: float
    mark_price: float
    unrealized_pnl: float


@dataclass(frozen=True, slots=True)
class SimResult:
    """One symbol's run: per-bar arrays, closed trades (``TRADE_DTYPE``) and run totals.

    ``halted_at`` is the bar where the drawdown breaker tripped, or -1.
    """

    timestamp: IntArray
    equity: FloatArray
    cash: FloatArray
    position: FloatArray
    trades: npt.NDArray[np.void]
    open_position: OpenPosition | None
    fees_paid: float
    turnover: float
    halted_at: int
    initial_cash: float
    config: SimConfig


@dataclass(frozen=True, slots=True)
class PortfolioResult:
    """Several symbols on one cash balance; ``position`` has one column per symbol.

    ``trades["symbol"]`` indexes ``symbols``; ``open_positions`` lists what is still open.
    """

    timestamp: IntArray
    equity: FloatArray
    cash: FloatArray
    position: FloatArray
    trades: npt.NDArray[np.void]
    open_positions: tuple[OpenPosition, ...]
    fees_paid: float
    turnover: float
    halted_at: int
    initial_cash: float
    symbols: tuple[str, ...]
    weights: FloatArray
    config: SimConfig


class GridStats(NamedTuple):
    """What a parameter grid keeps of one run, computed without per-bar arrays.

    Per-bar returns are ``equity[i]/equity[i-1]-1`` with ``equity[-1]`` = initial cash;
    ``std_return`` uses ddof=1.
    """

    final_equity: float
    total_return: float
    n_trades: int
    max_drawdown: float
    mean_return: float
    std_return: float
    n_returns: int
    fees_paid: float
    turnover: float
    halted_at: int

    def sharpe(self, periods_per_year: float) -> float:
        """Annualised Sharpe ratio of the per-bar returns (risk-free 0); 0 when undefined."""
        if self.n_returns < 2 or not self.std_return > 0.0:
            return 0.0
        return self.mean_return / self.std_return * math.sqrt(periods_per_year)


# --------------------------------------------------------------------------------------------
# The kernel. Helpers are njit functions the kernel calls; numba compiles them into it.


@_njit_inline
def _mark(prices: FloatArray, i: int, pos: FloatArray, cash: float) -> float:
    eq = cash
    for j in range(pos.shape[0]):
        if pos[j] != 0.0:
            eq += pos[j] * prices[i, j]
    return eq


@_njit_inline
def _order_qty(
    side: float,
    px: float,
    fee_rate: float,
    equity: float,
    cash: float,
    weight: float,
    vol_now: float,
    cfg: FloatArray,
    scale: float,
    heat_room: float,
    qty_cap: float,
) -> float:
    # One sizing core: risk.rules.sized_qty_capped, inlined here as in every live order check.
    return rules.sized_qty_capped(
        side, px, fee_rate, equity, cash, weight, vol_now,
        int(cfg[_C_SIZING]), cfg[_C_SIZE_VALUE], cfg[_C_STOP_LOSS], cfg[_C_MAX_FRACTION],
        cfg[_C_LOT], cfg[_C_MIN_NOTIONAL], scale, heat_room, qty_cap,
    )  # fmt: skip


@_njit_inline
def _entry_gate(
    j: int,
    i: int,
    sig: int,
    side: float,
    px: float,
    marks: FloatArray,
    pos: FloatArray,
    entry_px: FloatArray,
    last_exit: IntArray,
    lock_until: IntArray,
    close: FloatArray,
    equity: float,
    cfg: FloatArray,
) -> tuple[float, float, float]:
    """The risk limits of risk.rules at an entry's fill on bar ``i`` (signal bar ``sig``) at
    price ``px``: (size scale, heat room in money, cap in units); a scale of 0 refuses it.

    Cooldown: no entry on the ``cooldown_bars`` bars after the symbol's last exit. Locks of
    the stop-loss guard and the low-profit lock: no entry up to and including the bar in
    ``lock_until`` (set by ``_protect_after_exit``). Max open
    positions counts positions after this bar's exits. Heat: room = max_heat * equity minus
    each open position's loss to its stop-loss level (its whole value without one), marked
    at ``marks``. Correlation (portfolios): the highest side-signed correlation of returns
    with an open position over the lookback ending at the signal bar; above the threshold
    the entry is refused, or shrunk by ``risk.rules.correlation_scale``. Max order value and
    max leverage (gross exposure at ``marks`` over equity): the cap in units, from
    ``risk.rules.max_notional_qty`` / ``leverage_room_qty``.
    """
    cooldown = int(cfg[_C_COOLDOWN])
    if cooldown > 0 and last_exit[j] >= 0 and i <= last_exit[j] + cooldown:
        return 0.0, 0.0, 0.0
    if i <= lock_until[j]:
        return 0.0, 0.0, 0.0
    k = pos.shape[0]
    max_positions = int(cfg[_C_MAX_POSITIONS])
    if max_positions > 0:
        n_open = 0
        for m in range(k):
            if pos[m] != 0.0:
                n_open += 1
        if n_open >= max_positions:
            return 0.0, 0.0, 0.0
    scale = 1.0
    threshold = cfg[_C_CORR_THRESHOLD]
    if threshold > 0.0 and k > 1:
        lookback = int(cfg[_C_CORR_LOOKBACK])
        worst = -math.inf
        for m in range(k):
            if m == j or pos[m] == 0.0:
                continue
            c = rules.window_correlation(close, sig, j, m, lookback)
            if not math.isnan(c):
                c = c * side * (1.0 if pos[m] > 0.0 else -1.0)
                if c > worst:
                    worst = c
        if worst > threshold:
            if cfg[_C_CORR_SHRINK] < 0.5:
                return 0.0, 0.0, 0.0
            scale = rules.correlation_scale(worst, threshold)
            if scale <= 0.0:
                return 0.0, 0.0, 0.0
    heat_room = math.inf
    max_heat = cfg[_C_MAX_HEAT]
    if max_heat > 0.0:
        stop_loss = cfg[_C_STOP_LOSS]
        heat = 0.0
        for m in range(k):
            if pos[m] != 0.0:
                s = 1.0 if pos[m] > 0.0 else -1.0
                lvl = entry_px[m] * (1.0 - s * stop_loss) if stop_loss > 0.0 else 0.0
                heat += rules.position_heat(pos[m], marks[i, m], lvl)
        heat_room = max_heat * equity - heat
        if heat_room <= 0.0:
            return 0.0, 0.0, 0.0
    qty_cap = rules.max_notional_qty(cfg[_C_MAX_NOTIONAL], px)
    max_leverage = cfg[_C_MAX_LEVERAGE]
    if max_leverage > 0.0:
        gross = 0.0
        for m in range(k):
            if pos[m] != 0.0:
                gross += abs(pos[m]) * marks[i, m]
        room = rules.leverage_room_qty(max_leverage, equity, gross, px)
        if room <= 0.0:
            return 0.0, 0.0, 0.0
        if room < qty_cap:
            qty_cap = room
    return scale, heat_room, qty_cap


# Not inlined: it runs only with a protection on, and inlined at the three exits it would
# bloat the bar loop that every other run goes through.
@_njit
def _protect_after_exit(
    j: int,
    i: int,
    reason: int,
    ret: float,
    cfg: FloatArray,
    pstate: IntArray,
    ring_t: IntArray,
    profit_r: FloatArray,
) -> None:
    """The protections' bookkeeping at an exit of symbol ``j`` on bar ``i`` returning ``ret``
    (a fraction of the entry value, fees included), in bars as risk.rules counts in ms.
    ``ring_t`` holds both rings' bars: columns [0, stoploss_guard_count) the guard's (row k:
    every symbol's), the rest the low-profit exits, whose returns are in ``profit_r``.

    Stop-loss guard: a stop-loss or trailing-stop exit at a loss goes into the symbol's ring
    of its latest ``stoploss_guard_count`` stops (the shared ring with
    ``stoploss_guard_all``); ``risk.rules.stoploss_guard_lock_end`` then says whether they
    fall within the lookback, and the symbol (or every symbol) is locked up to bar
    i + lock. Low-profit lock: every exit goes into the symbol's ring of (bar, return),
    sized to hold every exit of a lookback; ``risk.rules.low_profit_lock_end`` sums them.
    """
    k = pstate.shape[1] - 1
    lock_until = pstate[_P_LOCK_UNTIL]
    g = int(cfg[_C_GUARD_COUNT])
    stop_exit = reason in (EXIT_STOP_LOSS, EXIT_TRAILING_STOP)
    if g > 0 and stop_exit and ret < 0.0:
        row = k if cfg[_C_GUARD_ALL] > 0.5 else j
        c = pstate[_P_GUARD_N, row]
        ring_t[row, c % g] = i
        pstate[_P_GUARD_N, row] = c + 1
        end = rules.stoploss_guard_lock_end(
            ring_t[row, :g], c + 1 if c + 1 < g else g, i, g,
            int(cfg[_C_GUARD_LOOKBACK]), int(cfg[_C_GUARD_LOCK]),
        )  # fmt: skip
        if end != rules.NO_LOCK:
            for m in range(k):
                if (row == k or m == j) and end > lock_until[m]:
                    lock_until[m] = end
    r = profit_r.shape[1]
    if r > 0:
        c = pstate[_P_PROFIT_N, j]
        ring_t[j, g + c % r] = i
        profit_r[j, c % r] = ret
        pstate[_P_PROFIT_N, j] = c + 1
        end = rules.low_profit_lock_end(
            ring_t[j, g:], profit_r[j], c + 1 if c + 1 < r else r, i,
            int(cfg[_C_LOW_PROFIT_LOOKBACK]), cfg[_C_LOW_PROFIT_MIN],
            int(cfg[_C_LOW_PROFIT_LOCK]), 1,
        )  # fmt: skip
        if end > lock_until[j]:
            lock_until[j] = end


@_njit_inline
def _open_position(
    j: int,
    i: int,
    side: float,
    raw_px: float,
    px: float,
    fee_rate: float,
    qty: float,
    pos: FloatArray,
    entry_px: FloatArray,
    entry_fee: FloatArray,
    entry_idx: IntArray,
    ext: FloatArray,
    acc: FloatArray,
) -> None:
    fee = qty * px * fee_rate
    acc[0] -= side * qty * px + fee
    acc[1] += fee
    acc[2] += qty * px
    pos[j] = side * qty
    entry_px[j] = px
    entry_fee[j] = fee
    entry_idx[j] = i
    ext[j] = raw_px


@_njit_inline
def _close_position(
    j: int,
    i: int,
    px: float,
    fee_rate: float,
    reason: int,
    pos: FloatArray,
    entry_px: FloatArray,
    entry_fee: FloatArray,
    entry_idx: IntArray,
    acc: FloatArray,
    ntr: IntArray,
    record: bool,
    tr_i: IntArray,
    tr_f: FloatArray,
    last_exit: IntArray,
    protect: bool,
    cfg: FloatArray,
    pstate: IntArray,
    ring_t: IntArray,
    profit_r: FloatArray,
) -> None:
    q = pos[j]
    side = 1.0 if q > 0.0 else -1.0
    qty = abs(q)
    fee = qty * px * fee_rate
    acc[0] += q * px - fee
    acc[1] += fee
    acc[2] += qty * px
    t = ntr[0]
    if record and t < tr_i.shape[0]:
        pnl = side * qty * (px - entry_px[j]) - entry_fee[j] - fee
        tr_i[t, _T_SYMBOL] = j
        tr_i[t, _T_SIDE] = int(side)
        tr_i[t, _T_ENTRY_IDX] = entry_idx[j]
        tr_i[t, _T_EXIT_IDX] = i
        tr_i[t, _T_REASON] = reason
        tr_f[t, _T_QTY] = qty
        tr_f[t, _T_ENTRY_PX] = entry_px[j]
        tr_f[t, _T_EXIT_PX] = px
        tr_f[t, _T_ENTRY_FEE] = entry_fee[j]
        tr_f[t, _T_EXIT_FEE] = fee
        tr_f[t, _T_PNL] = pnl
        tr_f[t, _T_RET] = pnl / (qty * entry_px[j])
    ntr[0] = t + 1
    if protect:
        ret = (side * qty * (px - entry_px[j]) - entry_fee[j] - fee) / (qty * entry_px[j])
        _protect_after_exit(j, i, reason, ret, cfg, pstate, ring_t, profit_r)
    pos[j] = 0.0
    last_exit[j] = i


# The kernel's arguments, in order: prices, period ids and signals; atr, vol, weights and the
# config vector; record; per-bar outputs; trade rows; open positions; stats; work arrays.
_KernelArrays = tuple[
    FloatArray, FloatArray, FloatArray, FloatArray, IntArray, BoolArray, BoolArray, BoolArray,
    BoolArray, FloatArray, FloatArray, FloatArray, FloatArray, bool, FloatArray, FloatArray,
    FloatArray, IntArray, FloatArray, IntArray, FloatArray, FloatArray, FloatArray, IntArray,
    FloatArray, IntArray, IntArray, IntArray, FloatArray,
]  # fmt: skip


@_njit_inline
def _sim_body(k: int, arrays: _KernelArrays) -> None:
    """Run the bar loop over (bars, symbols) arrays; see the module docstring for the rules.

    Writes per-bar equity/cash/position and closed trades (when ``record``), the return sums
    and max drawdown of GridStats (when not), and the still-open positions' entry data and
    the other run statistics (always). ``k`` is the number of symbols (columns); ``arrays``
    holds the kernel's arguments in the order unpacked below.
    """
    (
        open_, high, low, close, period, entry_long, exit_long, entry_short, exit_short, atr,
        vol, weights, cfg, record, eq_out, cash_out, pos_out, tr_i, tr_f, open_i, open_f, stats,
        fstate, istate, acc, ntr, pstate, ring_t, profit_r,
    ) = arrays  # fmt: skip
    n = close.shape[0]
    init_cash = cfg[_C_INIT_CASH]
    fill_close = cfg[_C_FILL_CLOSE] > 0.5
    taker = cfg[_C_TAKER]
    maker = cfg[_C_MAKER]
    slip = cfg[_C_SLIP]
    entry_kind = int(cfg[_C_ENTRY_KIND])
    entry_offset = cfg[_C_ENTRY_OFFSET]
    entry_valid = int(cfg[_C_ENTRY_VALID])
    stop_loss = cfg[_C_STOP_LOSS]
    take_profit = cfg[_C_TAKE_PROFIT]
    trail = cfg[_C_TRAIL]
    trail_atr = cfg[_C_TRAIL_ATR]
    use_vol = int(cfg[_C_SIZING]) == _SIZE_VOL_TARGET
    short_ok = cfg[_C_ALLOW_SHORT] > 0.5
    dd_halt = cfg[_C_DD_HALT]
    daily_limit = cfg[_C_DAILY_LIMIT]
    weekly_limit = cfg[_C_WEEKLY_LIMIT]
    monthly_limit = cfg[_C_MONTHLY_LIMIT]
    reverse = cfg[_C_REVERSE] > 0.5
    protect = stop_loss > 0.0 or take_profit > 0.0 or trail > 0.0 or trail_atr > 0.0
    # The period breakers: daily, weekly and monthly loss (UTC periods from ``period``).
    periods = daily_limit > 0.0 or weekly_limit > 0.0 or monthly_limit > 0.0
    breakers = dd_halt > 0.0 or periods
    # The protections' rings exist only when a protection is on (see _run_kernel).
    prot = ring_t.shape[1] > 0
    limits = (
        cfg[_C_MAX_POSITIONS] > 0.0
        or cfg[_C_MAX_HEAT] > 0.0
        or cfg[_C_COOLDOWN] > 0.0
        or cfg[_C_CORR_THRESHOLD] > 0.0
        or cfg[_C_MAX_NOTIONAL] > 0.0
        or cfg[_C_MAX_LEVERAGE] > 0.0
        or prot
    )

    # Per-symbol state lives in rows of two work arrays the caller allocates: the kernel is
    # compiled without the runtime's reference counting (see _njit), so it allocates nothing.
    fstate[:, :] = 0.0
    istate[:, :] = 0
    pos = fstate[0]
    entry_px = fstate[1]
    entry_fee = fstate[2]
    ext = fstate[3]  # most favourable price since entry, for the trailing stop
    pend_price = fstate[4]
    bar_open = fstate[5]
    entry_idx = istate[0]
    entry_idx[:] = -1
    pend_exit = istate[1]  # exit reason + 1 to do at the next open, 0 = none
    pend_side = istate[2]  # side of the entry order waiting, 0 = none
    pend_kind = istate[3]
    pend_from = istate[4]
    pend_until = istate[5]
    pend_sig = istate[6]
    wants = istate[7]  # this close's entry wish per symbol: 1, -1 or 0
    last_exit = istate[8]  # bar of the symbol's last exit, for the cooldown
    last_exit[:] = -1
    pstate[:, :] = 0
    lock_until = pstate[_P_LOCK_UNTIL]
    lock_until[:] = -1
    acc[:] = 0.0  # cash, fees, turnover
    acc[0] = init_cash
    ntr[0] = 0

    pending = False  # any exit or entry order waiting for a later bar
    halted = False
    halted_at = -1
    peak_eq = init_cash
    daily_blocked = False
    weekly_blocked = False
    monthly_blocked = False
    cur_day = period[0, 0] if periods and n > 0 else 0
    cur_week = period[0, 1] if periods and n > 0 else 0
    cur_month = period[0, 2] if periods and n > 0 else 0
    day_start_eq = init_cash
    week_start_eq = init_cash
    month_start_eq = init_cash
    prev_eq = init_cash
    run_peak = init_cash
    max_dd = 0.0
    ret_sum = 0.0
    ret_sumsq = 0.0

    for i in range(n):
        # Every bar's open is read, not only those of the bars with a fill: fills come at
        # scattered bars, and reading a column the loop does not stream through is a cache
        # miss that costs more than a whole bar.
        for j in range(k):
            bar_open[j] = open_[i, j]
        if periods:
            # A new UTC day / week / month opens at the previous close's equity.
            if period[i, 0] != cur_day:
                cur_day = period[i, 0]
                day_start_eq = prev_eq
                daily_blocked = False
            if period[i, 1] != cur_week:
                cur_week = period[i, 1]
                week_start_eq = prev_eq
                weekly_blocked = False
            if period[i, 2] != cur_month:
                cur_month = period[i, 2]
                month_start_eq = prev_eq
                monthly_blocked = False
        gates_open = not halted and not (daily_blocked or weekly_blocked or monthly_blocked)

        # Most bars have no order waiting; the flag skips the open-time loops for them.
        if pending:
            # Signal exits decided at the previous close go first, freeing cash for entries.
            for j in range(k):
                if pend_exit[j] != 0:
                    if pos[j] != 0.0:
                        s = 1.0 if pos[j] > 0.0 else -1.0
                        _close_position(
                            j, i, bar_open[j] * (1.0 - s * slip), taker, pend_exit[j] - 1,
                            pos, entry_px, entry_fee, entry_idx, acc, ntr, record, tr_i, tr_f,
                            last_exit, prot, cfg, pstate, ring_t, profit_r,
                        )  # fmt: skip
                    pend_exit[j] = 0

            # Entry orders: market ones at the open, limit/stop ones wherever the bar reaches them.
            for j in range(k):
                if pend_side[j] == 0 or pend_from[j] > i:
                    continue
                if not gates_open:
                    pend_side[j] = 0
                    continue
                s = float(pend_side[j])
                kind = pend_kind[j]
                o = bar_open[j]
                raw = math.nan
                if kind == _ORDER_MARKET:
                    raw = o
                    px = o * (1.0 + s * slip)
                    fee_rate = taker
                elif kind == _ORDER_LIMIT:
                    lvl = pend_price[j]
                    reach = low[i, j] if s > 0.0 else high[i, j]
                    if s * (o - lvl) <= 0.0:
                        raw = o
                    elif s * (reach - lvl) <= 0.0:
                        raw = lvl
                    px = raw
                    fee_rate = maker
                else:
                    lvl = pend_price[j]
                    reach = high[i, j] if s > 0.0 else low[i, j]
                    if s * (o - lvl) >= 0.0:
                        raw = o
                    elif s * (reach - lvl) >= 0.0:
                        raw = lvl
                    px = raw * (1.0 + s * slip)
                    fee_rate = taker
                if math.isnan(raw):
                    if i >= pend_until[j]:
                        pend_side[j] = 0
                    continue
                pend_side[j] = 0
                eq = _mark(open_, i, pos, acc[0])
                v = vol[pend_sig[j], j] if use_vol else 0.0
                scale = 1.0
                heat_room = math.inf
                qty_cap = math.inf
                if limits:
                    scale, heat_room, qty_cap = _entry_gate(
                        j, i, pend_sig[j], s, px, open_, pos, entry_px, last_exit, lock_until,
                        close, eq, cfg,
                    )  # fmt: skip
                    if scale <= 0.0:
                        continue
                qty = _order_qty(
                    s, px, fee_rate, eq, acc[0], weights[j], v, cfg, scale, heat_room, qty_cap
                )
                if qty > 0.0:
                    _open_position(
                        j,
                        i,
                        s,
                        raw,
                        px,
                        fee_rate,
                        qty,
                        pos,
                        entry_px,
                        entry_fee,
                        entry_idx,
                        ext,
                        acc,
                    )
            pending = False
            for j in range(k):
                if pend_side[j] != 0:
                    pending = True

        # Stop-loss, trailing stop and take-profit against this bar's range.
        if protect:
            for j in range(k):
                if pos[j] == 0.0:
                    continue
                s = 1.0 if pos[j] > 0.0 else -1.0
                e = entry_px[j]
                o = open_[i, j]
                adverse = low[i, j] if s > 0.0 else high[i, j]
                favour = high[i, j] if s > 0.0 else low[i, j]
                has_stop = False
                stop_lvl = 0.0
                stop_reason = EXIT_STOP_LOSS
                if stop_loss > 0.0:
                    stop_lvl = e * (1.0 - s * stop_loss)
                    has_stop = True
                if trail > 0.0:
                    lvl = ext[j] * (1.0 - s * trail)
                    if not has_stop or s * (lvl - stop_lvl) > 0.0:
                        stop_lvl = lvl
                        stop_reason = EXIT_TRAILING_STOP
                        has_stop = True
                if trail_atr > 0.0 and i > 0 and not math.isnan(atr[i - 1, j]):
                    lvl = ext[j] - s * trail_atr * atr[i - 1, j]
                    if not has_stop or s * (lvl - stop_lvl) > 0.0:
                        stop_lvl = lvl
                        stop_reason = EXIT_TRAILING_STOP
                        has_stop = True
                has_tp = take_profit > 0.0
                tp_lvl = e * (1.0 + s * take_profit)
                raw = math.nan
                reason = EXIT_STOP_LOSS
                if entry_idx[j] != i:
                    if has_stop and s * (o - stop_lvl) <= 0.0:
                        raw = o
                        reason = stop_reason
                    elif has_tp and s * (o - tp_lvl) >= 0.0:
                        raw = o
                        reason = EXIT_TAKE_PROFIT
                if math.isnan(raw):
                    if has_stop and s * (adverse - stop_lvl) <= 0.0:
                        raw = stop_lvl
                        reason = stop_reason
                    elif has_tp and s * (favour - tp_lvl) >= 0.0:
                        raw = tp_lvl
                        reason = EXIT_TAKE_PROFIT
                if math.isnan(raw):
                    if s * (favour - ext[j]) > 0.0:
                        ext[j] = favour
                    continue
                if reason == EXIT_TAKE_PROFIT:
                    px = raw
                    fee_rate = maker
                else:
                    px = raw * (1.0 - s * slip)
                    fee_rate = taker
                _close_position(
                    j, i, px, fee_rate, reason,
                    pos, entry_px, entry_fee, entry_idx, acc, ntr, record, tr_i, tr_f,
                    last_exit, prot, cfg, pstate, ring_t, profit_r,
                )  # fmt: skip

        # The close: breakers first, then exit rules, then entry rules.
        if breakers:
            eq_pre = _mark(close, i, pos, acc[0])
            if eq_pre > peak_eq:
                peak_eq = eq_pre
            if not halted and rules.drawdown_tripped(eq_pre, peak_eq, dd_halt):
                halted = True
                halted_at = i
            if rules.period_loss_tripped(eq_pre, day_start_eq, daily_limit):
                daily_blocked = True
            if rules.period_loss_tripped(eq_pre, week_start_eq, weekly_limit):
                weekly_blocked = True
            if rules.period_loss_tripped(eq_pre, month_start_eq, monthly_limit):
                monthly_blocked = True
            gates_open = not halted and not (daily_blocked or weekly_blocked or monthly_blocked)

        any_want = False
        for j in range(k):
            el = entry_long[i, j]
            xl = exit_long[i, j]
            es = entry_short[i, j]
            xs = exit_short[i, j]
            if not (el or xl or es or xs):
                wants[j] = 0
                continue
            # An entry whose own exit rule is also true does not act; two entries cancel out.
            go_long = el and not xl
            go_short = short_ok and es and not xs
            want = 0
            if go_long and not go_short:
                want = 1
                any_want = True
            elif go_short and not go_long:
                want = -1
                any_want = True
            wants[j] = want
            if pos[j] != 0.0:
                s = 1.0 if pos[j] > 0.0 else -1.0
                reason = -1
                if (s > 0.0 and xl) or (s < 0.0 and xs):
                    reason = EXIT_SIGNAL
                elif reverse and want == -int(s):
                    reason = EXIT_OPPOSITE_SIGNAL
                if reason >= 0:
                    if fill_close:
                        _close_position(
                            j, i, close[i, j] * (1.0 - s * slip), taker, reason,
                            pos, entry_px, entry_fee, entry_idx, acc, ntr, record, tr_i, tr_f,
                            last_exit, prot, cfg, pstate, ring_t, profit_r,
                        )  # fmt: skip
                    else:
                        pend_exit[j] = reason + 1
                        pending = True
            elif (pend_side[j] > 0 and xl) or (pend_side[j] < 0 and xs):
                # The exit rule of a resting order's side withdraws the order.
                pend_side[j] = 0

        if gates_open and any_want:
            for j in range(k):
                if pend_side[j] != 0 or (pos[j] != 0.0 and pend_exit[j] == 0):
                    continue
                want = wants[j]
                if want == 0:
                    continue
                s = float(want)
                c = close[i, j]
                if entry_kind == _ORDER_MARKET:
                    if fill_close:
                        px = c * (1.0 + s * slip)
                        eq = _mark(close, i, pos, acc[0])
                        v = vol[i, j] if use_vol else 0.0
                        scale = 1.0
                        heat_room = math.inf
                        qty_cap = math.inf
                        if limits:
                            scale, heat_room, qty_cap = _entry_gate(
                                j, i, i, s, px, close, pos, entry_px, last_exit, lock_until,
                                close, eq, cfg,
                            )  # fmt: skip
                        qty = 0.0
                        if scale > 0.0:
                            qty = _order_qty(
                                s, px, taker, eq, acc[0], weights[j], v, cfg, scale, heat_room,
                                qty_cap,
                            )  # fmt: skip
                        if qty > 0.0:
                            _open_position(
                                j, i, s, c, px, taker, qty,
                                pos, entry_px, entry_fee, entry_idx, ext, acc,
                            )  # fmt: skip
                        continue
                    pend_price[j] = c
                    pend_until[j] = i + 1
                elif entry_kind == _ORDER_LIMIT:
                    pend_price[j] = c * (1.0 - s * entry_offset)
                    pend_until[j] = i + entry_valid
                else:
                    pend_price[j] = c * (1.0 + s * entry_offset)
                    pend_until[j] = i + entry_valid
                pend_side[j] = want
                pending = True
                pend_kind[j] = entry_kind
                pend_from[j] = i + 1
                pend_sig[j] = i

        eq = _mark(close, i, pos, acc[0])
        if record:
            eq_out[i] = eq
            cash_out[i] = acc[0]
            for j in range(k):
                pos_out[i, j] = pos[j]
        else:
            # The grid's statistics (GridStats). A recorded run has the whole curve for
            # compute_metrics and skips them: two divisions and a hard-to-predict branch
            # are an eighth of the loop's time.
            # Plain sums, not Welford: a division in the loop-carried chain costs a third of
            # the whole loop, and bar returns are small enough that the sums lose nothing
            # that matters.
            r = eq / prev_eq - 1.0 if prev_eq != 0.0 else 0.0
            ret_sum += r
            ret_sumsq += r * r
            if eq > run_peak:
                run_peak = eq
            elif eq < run_peak * (1.0 - max_dd):
                # Divide only on a new deepest drawdown, not on every bar.
                max_dd = 1.0 - eq / run_peak
        prev_eq = eq

    for j in range(k):
        open_i[j] = entry_idx[j] if pos[j] != 0.0 else -1
        open_f[j, 0] = pos[j]
        open_f[j, 1] = entry_px[j]
        open_f[j, 2] = entry_fee[j]
    stats[_S_FINAL_EQUITY] = prev_eq
    stats[_S_MAX_DD] = max_dd
    stats[_S_RET_SUM] = ret_sum
    stats[_S_RET_SUMSQ] = ret_sumsq
    stats[_S_N_RET] = n
    stats[_S_FEES] = acc[1]
    stats[_S_TURNOVER] = acc[2]
    stats[_S_HALTED_AT] = halted_at
    stats[_S_N_TRADES] = ntr[0]


# The body is compiled twice: with one symbol the column count is the constant 1, which lets
# LLVM drop every per-symbol loop (a generic loop over one column costs ~40 % more time). Both
# kernels take the arrays ``_sim_body`` unpacks, in its order.
@_njit
def _sim_kernel_single(*arrays: Any) -> None:
    """The bar loop for one symbol: arrays of shape (bars, 1)."""
    _sim_body(1, arrays)


@_njit
def _sim_kernel(*arrays: Any) -> None:
    """The bar loop for any number of symbols: arrays of shape (bars, symbols)."""
    _sim_body(arrays[3].shape[1], arrays)


# Every compiled function of this module, for tests that run their pure-Python versions.
NJIT_FUNCTIONS: Final = (
    "_mark",
    "_order_qty",
    "_entry_gate",
    "_protect_after_exit",
    "_open_position",
    "_close_position",
    "_sim_body",
    "_sim_kernel_single",
    "_sim_kernel",
)


# --------------------------------------------------------------------------------------------
# Inputs the kernel needs besides prices and signals.


def annualised_volatility(close: FloatArray, lookback: int, periods_per_year: float) -> FloatArray:
    """Rolling sample std (ddof=1) of log returns over ``lookback`` bars, annualised.

    Value at bar t uses closes up to t; NaN before bar ``lookback``.
    """
    out = np.full(close.shape[0], np.nan)
    if close.shape[0] <= lookback:
        return out
    log_ret = np.diff(np.log(close))
    windows = np.lib.stride_tricks.sliding_window_view(log_ret, lookback)
    out[lookback:] = windows.std(axis=1, ddof=1) * math.sqrt(periods_per_year)
    return out


def aux_inputs(
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    config: SimConfig,
    *,
    periods_per_year: float,
) -> tuple[FloatArray | None, FloatArray | None]:
    """(ATR, annualised volatility) as the config needs them, None where it does not.

    A grid computes these once per data set and hands them to ``simulate_arrays``.
    """
    atr = (
        atr_indicator(high, low, close, config.atr_period) if config.trailing_atr_mult > 0 else None
    )
    vol = (
        annualised_volatility(close, config.vol_lookback, periods_per_year)
        if config.sizing == "vol_target"
        else None
    )
    return atr, vol


def candle_periods_per_year(candles: Candles) -> float:
    """Bars per year from the timeframe, else from the median bar spacing (365 if undecidable)."""
    if not candles.timeframe and len(candles) < 2:
        return 365.0
    return float(bars_per_year(candles.timeframe_ms))


# --------------------------------------------------------------------------------------------
# Python entry points.


def _column(a: npt.ArrayLike, dtype: type[np.generic]) -> npt.NDArray[Any]:
    return np.ascontiguousarray(np.asarray(a, dtype=dtype).reshape(-1, 1))


def _empty_2d(k: int) -> FloatArray:
    return np.empty((0, k), dtype=np.float64)


def _trade_capacity(entry_long: BoolArray, entry_short: BoolArray, allow_short: bool) -> int:
    # Every entry consumes a distinct signal bar, so the entry-signal count bounds the trades.
    if allow_short:
        return int(np.count_nonzero(entry_long | entry_short))
    return int(np.count_nonzero(entry_long))


class _KernelOut(NamedTuple):
    equity: FloatArray
    cash: FloatArray
    position: FloatArray
    tr_i: IntArray
    tr_f: FloatArray
    open_i: IntArray
    open_f: FloatArray
    stats: FloatArray


def _run_kernel(
    o: FloatArray,
    h: FloatArray,
    lo: FloatArray,
    c: FloatArray,
    timestamp: IntArray,
    el: BoolArray,
    xl: BoolArray,
    es: BoolArray,
    xs: BoolArray,
    atr: FloatArray | None,
    vol: FloatArray | None,
    weights: FloatArray,
    config: SimConfig,
    record: bool,
) -> _KernelOut:
    n, k = c.shape
    # The UTC day / week / month numbers only matter to the period loss breakers; they cost
    # a few ms a million bars, so other runs skip them.
    if config.daily_loss_limit > 0 or config.weekly_loss_limit > 0 or config.monthly_loss_limit > 0:
        period = np.empty((n, 3), dtype=np.int64)
        rules.utc_period_table(np.ascontiguousarray(timestamp, dtype=np.int64), period)
    else:
        period = np.empty((0, 3), dtype=np.int64)
    # The protections' rings: the guard keeps each symbol's latest stoploss_guard_count stops
    # (row k: every symbol's); the low-profit ring holds every exit of a lookback window (at
    # most two exits a bar, and never more than the symbol's entry signals).
    guard_n = config.stoploss_guard_count if config.guard_on else 0
    profit_n = 0
    if config.low_profit_on:
        entries = (el | es) if config.allow_short else el
        most = int(np.count_nonzero(entries, axis=0).max()) if n > 0 else 0
        profit_n = max(1, min(2 * config.low_profit_lookback_bars + 2, most))
    ring_t = np.zeros((k + 1, guard_n + profit_n), dtype=np.int64)
    profit_r = np.zeros((k + 1, profit_n), dtype=np.float64)
    if record:
        cap = _trade_capacity(el, es, config.allow_short)
        eq = np.empty(n)
        cash = np.empty(n)
        position = np.empty((n, k))
    else:
        cap = 0
        eq = np.empty(0)
        cash = np.empty(0)
        position = np.empty((0, k))
    tr_i = np.zeros((cap, _N_TI), dtype=np.int64)
    tr_f = np.zeros((cap, _N_TF), dtype=np.float64)
    open_i = np.zeros(k, dtype=np.int64)
    open_f = np.zeros((k, 3), dtype=np.float64)
    stats = np.zeros(_N_STATS, dtype=np.float64)
    kernel = _sim_kernel_single if k == 1 else _sim_kernel
    kernel(
        o, h, lo, c, period, el, xl, es, xs,
        _empty_2d(k) if atr is None else atr,
        _empty_2d(k) if vol is None else vol,
        weights, config.as_vector(), record,
        eq, cash, position, tr_i, tr_f, open_i, open_f, stats,
        np.empty((_N_FSTATE, k)), np.empty((_N_ISTATE, k), dtype=np.int64),
        np.empty(3), np.empty(1, dtype=np.int64),
        np.empty((_N_PSTATE, k + 1), dtype=np.int64), ring_t, profit_r,
    )  # fmt: skip
    return _KernelOut(eq, cash, position, tr_i, tr_f, open_i, open_f, stats)


def _trades_array(out: _KernelOut, timestamp: IntArray) -> npt.NDArray[np.void]:
    count = int(out.stats[_S_N_TRADES])
    tr_i = out.tr_i[:count]
    tr_f = out.tr_f[:count]
    trades = np.zeros(count, dtype=TRADE_DTYPE)
    trades["symbol"] = tr_i[:, _T_SYMBOL]
    trades["side"] = tr_i[:, _T_SIDE]
    trades["entry_index"] = tr_i[:, _T_ENTRY_IDX]
    trades["exit_index"] = tr_i[:, _T_EXIT_IDX]
    trades["entry_time"] = timestamp[tr_i[:, _T_ENTRY_IDX]]
    trades["exit_time"] = timestamp[tr_i[:, _T_EXIT_IDX]]
    trades["qty"] = tr_f[:, _T_QTY]
    trades["entry_price"] = tr_f[:, _T_ENTRY_PX]
    trades["exit_price"] = tr_f[:, _T_EXIT_PX]
    trades["entry_fee"] = tr_f[:, _T_ENTRY_FEE]
    trades["exit_fee"] = tr_f[:, _T_EXIT_FEE]
    trades["pnl"] = tr_f[:, _T_PNL]
    trades["return"] = tr_f[:, _T_RET]
    trades["bars_held"] = tr_i[:, _T_EXIT_IDX] - tr_i[:, _T_ENTRY_IDX]
    trades["exit_reason"] = tr_i[:, _T_REASON]
    return trades


def _open_positions(
    out: _KernelOut, close: FloatArray, timestamp: IntArray
) -> tuple[OpenPosition, ...]:
    found: list[OpenPosition] = []
    for j in range(out.open_i.shape[0]):
        q = float(out.open_f[j, 0])
        if q == 0.0:
            continue
        side = 1 if q > 0 else -1
        idx = int(out.open_i[j])
        entry_price = float(out.open_f[j, 1])
        entry_fee = float(out.open_f[j, 2])
        mark = float(close[-1, j])
        found.append(
            OpenPosition(
                symbol=j,
                side=side,
                qty=abs(q),
                entry_index=idx,
                entry_time=int(timestamp[idx]),
                entry_price=entry_price,
                entry_fee=entry_fee,
                mark_price=mark,
                unrealized_pnl=side * abs(q) * (mark - entry_price) - entry_fee,
            )
        )
    return tuple(found)


def _check_signals(signals: Signals, n: int, label: str) -> None:
    if len(signals) != n:
        raise ConfigError(f"{label}signals have {len(signals)} bars but the candles have {n}")
    for name in ("entry_long", "exit_long", "entry_short", "exit_short"):
        arr = getattr(signals, name)
        if arr.shape != (n,):
            raise ConfigError(f"{label}{name} must have shape ({n},), got {arr.shape}")


def _checked_trade_count(out: _KernelOut) -> None:
    if int(out.stats[_S_N_TRADES]) > out.tr_i.shape[0]:  # pragma: no cover - bound is proven
        raise RuntimeError("trade buffer overflow: the entry-signal bound did not hold")


def simulate(candles: Candles, signals: Signals, config: SimConfig | None = None) -> SimResult:
    """Simulate one symbol's signals on its candles under ``config`` (default ``SimConfig()``)."""
    cfg = SimConfig() if config is None else config
    n = candles.close.shape[0]
    _check_signals(signals, n, "")
    ppy = candle_periods_per_year(candles) if cfg.sizing == "vol_target" else 365.0
    atr, vol = aux_inputs(candles.high, candles.low, candles.close, cfg, periods_per_year=ppy)
    close2 = _column(candles.close, np.float64)
    out = _run_kernel(
        _column(candles.open, np.float64),
        _column(candles.high, np.float64),
        _column(candles.low, np.float64),
        close2,
        np.asarray(candles.timestamp, dtype=np.int64),
        _column(signals.entry_long, np.bool_),
        _column(signals.exit_long, np.bool_),
        _column(signals.entry_short, np.bool_),
        _column(signals.exit_short, np.bool_),
        None if atr is None else _column(atr, np.float64),
        None if vol is None else _column(vol, np.float64),
        np.ones(1),
        cfg,
        True,
    )
    _checked_trade_count(out)
    timestamp = np.asarray(candles.timestamp, dtype=np.int64)
    opened = _open_positions(out, close2, timestamp) if n > 0 else ()
    return SimResult(
        timestamp=timestamp,
        equity=out.equity,
        cash=out.cash,
        position=out.position.reshape(n),  # a view of the (n, 1) column: no copy
        trades=_trades_array(out, timestamp),
        open_position=opened[0] if opened else None,
        fees_paid=float(out.stats[_S_FEES]),
        turnover=float(out.stats[_S_TURNOVER]),
        halted_at=int(out.stats[_S_HALTED_AT]),
        initial_cash=cfg.initial_cash,
        config=cfg,
    )


def _stack(columns: Sequence[npt.ArrayLike], dtype: type[np.generic]) -> npt.NDArray[Any]:
    return np.ascontiguousarray(np.column_stack([np.asarray(c, dtype=dtype) for c in columns]))


def simulate_portfolio(
    candles_list: Sequence[Candles],
    signals_list: Sequence[Signals],
    config: SimConfig | None = None,
    weights: Sequence[float] | None = None,
) -> PortfolioResult:
    """Simulate several symbols on identical timestamps sharing one cash balance.

    Each symbol sizes against ``weight * equity`` (weights default to 1/number of symbols and
    may sum to at most 1); equity is cash plus every position marked at its close.
    """
    cfg = SimConfig() if config is None else config
    k = len(candles_list)
    if k == 0:
        raise ConfigError("a portfolio needs at least one symbol")
    if len(signals_list) != k:
        raise ConfigError(f"{k} candle series but {len(signals_list)} signal sets")
    base = np.asarray(candles_list[0].timestamp, dtype=np.int64)
    for j, c in enumerate(candles_list):
        if c.timestamp.shape != base.shape or not np.array_equal(c.timestamp, base):
            name = c.symbol or f"#{j}"
            raise ConfigError(
                f"symbol {name} is not aligned with the first symbol: every series must have "
                "exactly the same timestamps"
            )
        _check_signals(signals_list[j], base.shape[0], f"symbol {c.symbol or j}: ")
    if weights is None:
        w = np.full(k, 1.0 / k)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (k,):
            raise ConfigError(f"weights must have one value per symbol ({k}), got {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ConfigError("weights must be finite and greater than 0")
        if float(w.sum()) > 1.0 + 1e-9:
            raise ConfigError(f"weights must sum to at most 1, got {float(w.sum()):g}")
    atrs: list[FloatArray] = []
    vols: list[FloatArray] = []
    for c in candles_list:
        ppy = candle_periods_per_year(c) if cfg.sizing == "vol_target" else 365.0
        atr, vol = aux_inputs(c.high, c.low, c.close, cfg, periods_per_year=ppy)
        if atr is not None:
            atrs.append(atr)
        if vol is not None:
            vols.append(vol)
    close2 = _stack([c.close for c in candles_list], np.float64)
    out = _run_kernel(
        _stack([c.open for c in candles_list], np.float64),
        _stack([c.high for c in candles_list], np.float64),
        _stack([c.low for c in candles_list], np.float64),
        close2,
        base,
        _stack([s.entry_long for s in signals_list], np.bool_),
        _stack([s.exit_long for s in signals_list], np.bool_),
        _stack([s.entry_short for s in signals_list], np.bool_),
        _stack([s.exit_short for s in signals_list], np.bool_),
        _stack(atrs, np.float64) if atrs else None,
        _stack(vols, np.float64) if vols else None,
        np.ascontiguousarray(w),
        cfg,
        True,
    )
    _checked_trade_count(out)
    return PortfolioResult(
        timestamp=base,
        equity=out.equity,
        cash=out.cash,
        position=out.position,
        trades=_trades_array(out, base),
        open_positions=_open_positions(out, close2, base) if base.shape[0] > 0 else (),
        fees_paid=float(out.stats[_S_FEES]),
        turnover=float(out.stats[_S_TURNOVER]),
        halted_at=int(out.stats[_S_HALTED_AT]),
        initial_cash=cfg.initial_cash,
        symbols=tuple(c.symbol for c in candles_list),
        weights=w,
        config=cfg,
    )


def simulate_arrays(
    open_: FloatArray,
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    timestamp: IntArray,
    entry_long: BoolArray,
    exit_long: BoolArray,
    entry_short: BoolArray,
    exit_short: BoolArray,
    config: SimConfig,
    *,
    atr: FloatArray | None = None,
    vol: FloatArray | None = None,
    periods_per_year: float = 365.0,
) -> GridStats:
    """The grid's fast path: one symbol from raw 1-D arrays to ``GridStats``, no per-bar output.

    Pass ``atr``/``vol`` from ``aux_inputs`` to reuse them across runs; when the config needs
    one that is missing it is computed here (``periods_per_year`` annualises the volatility).
    """
    if (config.trailing_atr_mult > 0 and atr is None) or (
        config.sizing == "vol_target" and vol is None
    ):
        got_atr, got_vol = aux_inputs(high, low, close, config, periods_per_year=periods_per_year)
        atr = got_atr if atr is None else atr
        vol = got_vol if vol is None else vol
    out = _run_kernel(
        _column(open_, np.float64),
        _column(high, np.float64),
        _column(low, np.float64),
        _column(close, np.float64),
        np.asarray(timestamp, dtype=np.int64),
        _column(entry_long, np.bool_),
        _column(exit_long, np.bool_),
        _column(entry_short, np.bool_),
        _column(exit_short, np.bool_),
        None if atr is None or config.trailing_atr_mult == 0 else _column(atr, np.float64),
        None if vol is None or config.sizing != "vol_target" else _column(vol, np.float64),
        np.ones(1),
        config,
        False,
    )
    st = out.stats
    n_ret = int(st[_S_N_RET])
    final = float(st[_S_FINAL_EQUITY])
    mean = float(st[_S_RET_SUM]) / n_ret if n_ret > 0 else 0.0
    var = (float(st[_S_RET_SUMSQ]) - n_ret * mean * mean) / (n_ret - 1) if n_ret > 1 else 0.0
    return GridStats(
        final_equity=final,
        total_return=final / config.initial_cash - 1.0,
        n_trades=int(st[_S_N_TRADES]),
        max_drawdown=float(st[_S_MAX_DD]),
        mean_return=mean,
        std_return=math.sqrt(var) if var > 0.0 else 0.0,
        n_returns=n_ret,
        fees_paid=float(st[_S_FEES]),
        turnover=float(st[_S_TURNOVER]),
        halted_at=int(st[_S_HALTED_AT]),
    )
