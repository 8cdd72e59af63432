"""The risk rules, pure: sizing, limits, breakers, protections, correlation and ``check_order``.

One implementation for the backtest kernel and for every live order. No Django, no I/O: plain
floats, numpy arrays and frozen dataclasses. The sizing core and the breaker tests are numba
functions that ``backtester/engine/simulate.py`` inlines into its bar loop, and that Python
code (``check_order``, services) calls as ordinary functions, so a backtest and a live account
size and halt by the very same arithmetic.

Conventions:

* Fractions are plain fractions (0.02 = 2 %); a limit of 0 is switched off.
* Quantities here are floats; the live path converts the final size to ``Decimal`` and rounds
  it with the market's ``MarketRules`` before anything is sent.
* Times are epoch milliseconds, UTC. The daily breaker's day is the UTC day; weeks start on
  Monday 00:00 UTC; months on the 1st 00:00 UTC.
* Heat of a position = the money lost if its stop is hit = ``|qty| * |mark - stop|``; a
  position without a stop risks its whole value (``|qty| * mark``).
* Backtests apply every rule here through ``engine_settings`` (minutes become whole bars,
  rounded up) except the order-rate limit, which stays live-only: bars carry no minute-level
  clock of the orders sent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
_F = TypeVar("_F", bound=Callable[..., Any])

MS_PER_MINUTE: Final = 60_000
MS_PER_DAY: Final = 86_400_000


def _njit_inline(fn: _F) -> _F:
    # Inlined at numba-IR level into the engine's kernel (a real call per bar costs more than
    # the bar); still callable from Python like any function.
    return cast(_F, numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")(fn))


# --- sizing ------------------------------------------------------------------------------------

# Sizing modes as numbers, so the numba kernel can carry them in its float settings vector.
SIZE_FRACTION: Final = 0
SIZE_NOTIONAL: Final = 1
SIZE_RISK: Final = 2
SIZE_VOL_TARGET: Final = 3
SIZE_KELLY: Final = 4
SIZING_MODES: Final[dict[str, int]] = {
    "fraction": SIZE_FRACTION,
    "notional": SIZE_NOTIONAL,
    "risk": SIZE_RISK,
    "vol_target": SIZE_VOL_TARGET,
    "kelly": SIZE_KELLY,
}
SizingMode = Literal["fraction", "notional", "risk", "vol_target", "kelly"]


@_njit_inline
def size_fraction(equity: float, fraction: float, price: float, fee_rate: float) -> float:
    """Quantity worth ``fraction`` of ``equity`` with the fee fitted inside the money."""
    return equity * fraction / (price * (1.0 + fee_rate))


@_njit_inline
def size_notional(notional: float, price: float) -> float:
    """Quantity worth a fixed ``notional`` in the quote currency."""
    return notional / price


@_njit_inline
def size_fixed_risk(equity: float, risk: float, price: float, stop_distance: float) -> float:
    """Quantity that loses ``risk`` of ``equity`` if the stop ``stop_distance`` (a fraction of
    the price) away is hit; 0 without a stop distance."""
    if not stop_distance > 0.0:
        return 0.0
    return equity * risk / (price * stop_distance)


@_njit_inline
def size_vol_target(
    equity: float, target: float, vol: float, price: float, fee_rate: float
) -> float:
    """Quantity whose value is ``equity * target / vol`` (annualised volatilities), fee fitted;
    0 when the volatility is unknown or zero."""
    if not vol > 0.0:
        return 0.0
    return equity * (target / vol) / (price * (1.0 + fee_rate))


@_njit_inline
def kelly_fraction(win_rate: float, payoff: float, multiplier: float, cap: float) -> float:
    """Kelly's f* = p - (1-p)/b, scaled by ``multiplier`` (0.5 = half Kelly), clipped to
    [0, cap]; 0 when the payoff ratio b is not positive."""
    if not payoff > 0.0:
        return 0.0
    f = (win_rate - (1.0 - win_rate) / payoff) * multiplier
    if f < 0.0:
        return 0.0
    if f > cap:
        return cap
    return f


@_njit_inline
def round_to_lot(qty: float, lot: float) -> float:
    """``qty`` rounded down to a whole number of ``lot`` (no rounding when lot is 0)."""
    if lot > 0.0:
        # The epsilon keeps 0.3/0.1 = 2.9999999999999996 from losing a whole lot.
        return math.floor(qty / lot + 1e-9) * lot
    return qty


@_njit_inline
def sized_qty_capped(
    side: float,
    px: float,
    fee_rate: float,
    equity: float,
    cash: float,
    weight: float,
    vol_now: float,
    sizing: int,
    size_value: float,
    stop_distance: float,
    max_fraction: float,
    lot: float,
    min_notional: float,
    scale: float,
    heat_room: float,
    qty_cap: float,
) -> float:
    """The sizing core shared by the backtest kernel and ``check_order``.

    Size by ``sizing`` against ``equity * weight`` (the sleeve), multiply by ``scale`` (a
    correlation shrink, 1 otherwise), cap at ``max_fraction`` of the sleeve (fee fitted), a
    long at the ``cash`` available, the loss to the stop at ``heat_room`` (money; inf = off),
    then at ``qty_cap`` units (the order-value and leverage limits; inf = off), round down to
    ``lot`` and return 0 under ``min_notional``. For ``SIZE_KELLY`` ``size_value`` is the Kelly
    fraction already computed by ``kelly_fraction``.
    """
    sleeve = equity * weight
    unit_cost = px * (1.0 + fee_rate)
    if sizing == SIZE_FRACTION or sizing == SIZE_KELLY:  # noqa: SIM109 (numba)
        qty = sleeve * size_value / unit_cost
    elif sizing == SIZE_NOTIONAL:
        qty = size_value / px
    elif sizing == SIZE_RISK:
        qty = sleeve * size_value / (px * stop_distance)
    else:
        if not vol_now > 0.0:
            return 0.0
        qty = sleeve * (size_value / vol_now) / unit_cost
    if scale != 1.0:
        qty = qty * scale
    cap = sleeve * max_fraction / unit_cost
    if qty > cap:
        qty = cap
    if side > 0.0:
        # A long is paid from cash; in a portfolio other positions may have spent it.
        afford = cash / unit_cost
        if qty > afford:
            qty = afford
    if heat_room < math.inf:
        per_unit = px * stop_distance if stop_distance > 0.0 else px
        room = heat_room / per_unit if heat_room > 0.0 else 0.0
        if qty > room:
            qty = room
    if qty > qty_cap:
        qty = qty_cap
    qty = round_to_lot(qty, lot)
    if qty <= 0.0 or qty * px < min_notional:
        return 0.0
    return float(qty)


@_njit_inline
def sized_qty(
    side: float,
    px: float,
    fee_rate: float,
    equity: float,
    cash: float,
    weight: float,
    vol_now: float,
    sizing: int,
    size_value: float,
    stop_distance: float,
    max_fraction: float,
    lot: float,
    min_notional: float,
    scale: float,
    heat_room: float,
) -> float:
    """``sized_qty_capped`` without a cap in units (the form live bots call)."""
    return sized_qty_capped(
        side, px, fee_rate, equity, cash, weight, vol_now, sizing, size_value, stop_distance,
        max_fraction, lot, min_notional, scale, heat_room, math.inf,
    )  # fmt: skip


# --- limits ------------------------------------------------------------------------------------


@_njit_inline
def position_heat(qty: float, mark: float, stop: float) -> float:
    """Money lost if the stop is hit: |qty| * |mark - stop|; the whole value without a stop
    (``stop`` NaN or 0)."""
    if math.isnan(stop) or stop <= 0.0:
        return abs(qty) * mark
    return abs(qty) * abs(mark - stop)


@_njit_inline
def max_notional_qty(max_notional: float, px: float) -> float:
    """Max order value: the most units an entry at ``px`` may buy (inf when the limit is 0)."""
    if not max_notional > 0.0:
        return math.inf
    return max_notional / px


@_njit_inline
def leverage_room_qty(max_leverage: float, equity: float, gross: float, px: float) -> float:
    """Max leverage: the units at ``px`` that keep gross exposure (Σ |position value|, ``gross``
    before the order) within ``max_leverage * equity`` (inf when the limit is 0)."""
    if not max_leverage > 0.0:
        return math.inf
    return (max_leverage * equity - gross) / px


def portfolio_heat(qty: FloatArray, mark: FloatArray, stop: FloatArray, equity: float) -> float:
    """Σ over open positions of the loss to their stops, as a fraction of ``equity``."""
    if qty.shape[0] == 0:
        return 0.0
    no_stop = np.isnan(stop) | (stop <= 0.0)
    loss = np.abs(qty) * np.where(no_stop, mark, np.abs(mark - np.where(no_stop, 0.0, stop)))
    return float(loss.sum()) / equity if equity > 0.0 else math.inf


def gross_leverage(qty: FloatArray, mark: FloatArray, equity: float) -> float:
    """Σ |position value| / equity (inf when equity is not positive)."""
    gross = float(np.abs(qty * mark).sum()) if qty.shape[0] else 0.0
    if equity <= 0.0:
        return math.inf if gross > 0.0 else 0.0
    return gross / equity


def position_fraction(qty: float, price: float, equity: float) -> float:
    """One symbol's |value| as a fraction of equity."""
    return abs(qty) * price / equity if equity > 0.0 else math.inf


def orders_in_last_minute(order_times_ms: Sequence[int], now_ms: int) -> int:
    """How many orders were sent in the minute up to ``now_ms`` (now - 60 s, now]."""
    start = now_ms - MS_PER_MINUTE
    return sum(1 for t in order_times_ms if start < t <= now_ms)


# --- breakers ----------------------------------------------------------------------------------


@_njit_inline
def drawdown_tripped(equity: float, peak: float, limit: float) -> bool:
    """True when ``equity`` is at least ``limit`` below the ``peak`` (limit 0 = off)."""
    return limit > 0.0 and equity <= peak * (1.0 - limit)


@_njit_inline
def period_loss_tripped(equity: float, period_start_equity: float, limit: float) -> bool:
    """True when ``equity`` lost at least ``limit`` of the period's opening equity (0 = off).
    Serves the daily, weekly and monthly breakers."""
    return limit > 0.0 and equity <= period_start_equity * (1.0 - limit)


@_njit_inline
def utc_week_index(now_ms: int) -> int:
    """Number of the UTC week (Monday to Sunday) holding ``now_ms``; weeks since 1969-12-29."""
    return (now_ms // MS_PER_DAY + 3) // 7


@_njit_inline
def utc_month_index(now_ms: int) -> int:
    """``year * 12 + month - 1`` of the UTC month holding ``now_ms`` (civil calendar from the
    day number, Gregorian rules; no datetime, so the kernel can use it)."""
    z = now_ms // MS_PER_DAY + 719_468  # days since 0000-03-01
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153  # months since March
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return year * 12 + month - 1


@numba.njit(cache=True, nogil=True)
def utc_period_table(timestamp: npt.NDArray[np.int64], out: npt.NDArray[np.int64]) -> None:
    """Fill ``out`` (bars x 3) with each bar's UTC day, week and month numbers: the periods of
    the daily, weekly and monthly loss breakers in the backtest kernel."""
    for i in range(timestamp.shape[0]):
        ms = timestamp[i]
        out[i, 0] = ms // MS_PER_DAY
        out[i, 1] = utc_week_index(ms)
        out[i, 2] = utc_month_index(ms)


def day_start_ms(now_ms: int) -> int:
    """00:00 UTC of the day holding ``now_ms``."""
    return now_ms - now_ms % MS_PER_DAY


def week_start_ms(now_ms: int) -> int:
    """Monday 00:00 UTC of the week holding ``now_ms`` (1970-01-01 was a Thursday)."""
    return int(utc_week_index(now_ms)) * 7 * MS_PER_DAY - 3 * MS_PER_DAY


def month_start_ms(now_ms: int) -> int:
    """The 1st 00:00 UTC of the month holding ``now_ms``."""
    d = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    return int(datetime(d.year, d.month, 1, tzinfo=UTC).timestamp() * 1000)


def _next_month_ms(now_ms: int) -> int:
    d = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)


BreakerCode = Literal["drawdown", "daily_loss", "weekly_loss", "monthly_loss"]


def breaker_resets_at(code: str, tripped_ms: int) -> int | None:
    """When a tripped breaker's latch opens by itself: the next UTC day / week / month; None
    (only the user resets it) for the drawdown breaker and anything else."""
    if code == "daily_loss":
        return day_start_ms(tripped_ms) + MS_PER_DAY
    if code == "weekly_loss":
        return week_start_ms(tripped_ms) + 7 * MS_PER_DAY
    if code == "monthly_loss":
        return _next_month_ms(tripped_ms)
    return None


@dataclass(frozen=True, slots=True)
class Trip:
    """A breaker that tripped: its code, the state it latches and the figures behind it."""

    code: str
    state: Literal["reducing", "halted"]
    message: str
    figures: Mapping[str, float]
    resets_at_ms: int | None


# --- protections (freqtrade-style; also in backtests) ------------------------------------------


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """A finished trade as the protections see it. ``profit`` is a fraction of its entry value."""

    symbol: str
    exit_ms: int
    profit: float
    stop_loss: bool = False


def cooldown_until(trades: Sequence[ClosedTrade], symbol: str, cooldown_ms: int) -> int | None:
    """End of the cooldown after the symbol's last exit (None when off or no exit)."""
    if cooldown_ms <= 0:
        return None
    exits = [t.exit_ms for t in trades if t.symbol == symbol]
    return max(exits) + cooldown_ms if exits else None


# The protections' core works on plain arrays of times in any unit (epoch ms live, bar
# numbers in the backtest kernel) and is evaluated at each exit, as freqtrade does: the lock a
# rule sets at an exit lasts from that exit. NO_LOCK: the rule set no lock.
NO_LOCK: Final = -1


@_njit_inline
def stoploss_guard_lock_end(
    stop_times: npt.NDArray[np.int64], n: int, now: int, count: int, lookback: int, lock: int
) -> int:
    """Stop-loss guard at the stop exit ``now``: when ``count`` of the first ``n`` stop times
    fall within [now - lookback, now], the lock ends at now + lock; else NO_LOCK."""
    if count <= 0:
        return NO_LOCK
    seen = 0
    for t in range(n):
        x = stop_times[t]
        if now - lookback <= x <= now:
            seen += 1
    return now + lock if seen >= count else NO_LOCK


@_njit_inline
def low_profit_lock_end(
    exit_times: npt.NDArray[np.int64],
    profits: FloatArray,
    n: int,
    now: int,
    lookback: int,
    min_profit: float,
    lock: int,
    min_trades: int,
) -> int:
    """Low-profit lock at the exit ``now``: when at least ``min_trades`` (>= 1) of the first
    ``n`` trades exited within [now - lookback, now] and their profit fractions sum below
    ``min_profit``, the lock ends at now + lock; else (or lookback/lock 0) NO_LOCK."""
    if lookback <= 0 or lock <= 0:
        return NO_LOCK
    seen = 0
    total = 0.0
    for t in range(n):
        x = exit_times[t]
        if now - lookback <= x <= now:
            seen += 1
            total += profits[t]
    if seen < min_trades or seen == 0 or total >= min_profit:
        return NO_LOCK
    return now + lock


def stoploss_guard_until(
    trades: Sequence[ClosedTrade],
    symbol: str,
    now_ms: int,
    *,
    count: int,
    lookback_ms: int,
    lock_ms: int,
    all_symbols: bool,
) -> int | None:
    """End of the lock when ``count`` stop-loss exits fell within ``lookback_ms`` up to one
    of them (on this symbol, or on any when ``all_symbols``); the lock lasts ``lock_ms`` from
    that stop (the latest such). None when off or not triggered."""
    if count <= 0:
        return None
    times = np.array(
        sorted(
            t.exit_ms
            for t in trades
            if t.stop_loss and t.exit_ms <= now_ms and (all_symbols or t.symbol == symbol)
        ),
        dtype=np.int64,
    )
    # Lock ends grow with the exit, so the latest exit that locks gives the lock.
    for e in times[::-1]:
        end = int(stoploss_guard_lock_end(times, times.shape[0], e, count, lookback_ms, lock_ms))
        if end != NO_LOCK:
            return end
    return None


def low_profit_until(
    trades: Sequence[ClosedTrade],
    symbol: str,
    now_ms: int,
    *,
    lookback_ms: int,
    min_profit: float,
    lock_ms: int,
    min_trades: int = 1,
) -> int | None:
    """End of the lock when, at one of the symbol's exits, its trades closed within
    ``lookback_ms`` up to that exit summed to a profit below ``min_profit``; the lock lasts
    ``lock_ms`` from that exit (the latest such). None when off or not triggered."""
    if lookback_ms <= 0 or lock_ms <= 0:
        return None
    mine = sorted(
        (t.exit_ms, t.profit) for t in trades if t.symbol == symbol and t.exit_ms <= now_ms
    )
    times = np.array([m[0] for m in mine], dtype=np.int64)
    profits = np.array([m[1] for m in mine], dtype=np.float64)
    for e in times[::-1]:
        end = int(
            low_profit_lock_end(
                times, profits, times.shape[0], e, lookback_ms, min_profit, lock_ms, min_trades
            )
        )
        if end != NO_LOCK:
            return end
    return None


# --- correlation -------------------------------------------------------------------------------


def correlations(candidate: FloatArray, others: FloatArray, lookback: int) -> FloatArray:
    """Pearson correlation of the last ``lookback`` returns of ``candidate`` with each row of
    ``others`` (same alignment, latest last). NaN where a series is flat or too short."""
    n = min(lookback, candidate.shape[0], others.shape[1] if others.ndim == 2 else 0)
    if others.ndim != 2 or others.shape[0] == 0 or n < 2:
        return np.full(others.shape[0] if others.ndim == 2 else 0, np.nan)
    a = candidate[-n:] - candidate[-n:].mean()
    b = others[:, -n:]
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum() * (b * b).sum(axis=1))
    num = b @ a
    with np.errstate(invalid="ignore", divide="ignore"):
        out: FloatArray = np.where(den > 0.0, num / np.where(den > 0.0, den, 1.0), np.nan)
    return out


@_njit_inline
def correlation_scale(corr: float, threshold: float) -> float:
    """Size multiplier of the shrinking correlation filter: 1 up to ``threshold``, then falling
    linearly to 0 at a correlation of 1 (``(1 - corr) / (1 - threshold)``)."""
    if not corr > threshold:
        return 1.0
    if threshold >= 1.0:
        return 0.0
    return max(0.0, (1.0 - corr) / (1.0 - threshold))


@_njit_inline
def window_correlation(close: FloatArray, i: int, a: int, b: int, lookback: int) -> float:
    """Pearson correlation of columns ``a`` and ``b`` of ``close``'s simple returns over the
    ``lookback`` returns ending at bar ``i``; NaN with too little history or a flat series.
    The backtest kernel's form of ``correlations`` (no allocation)."""
    if lookback < 2 or i < lookback:
        return math.nan
    sa = 0.0
    sb = 0.0
    for t in range(i - lookback + 1, i + 1):
        sa += close[t, a] / close[t - 1, a] - 1.0
        sb += close[t, b] / close[t - 1, b] - 1.0
    ma = sa / lookback
    mb = sb / lookback
    saa = 0.0
    sbb = 0.0
    sab = 0.0
    for t in range(i - lookback + 1, i + 1):
        ra = close[t, a] / close[t - 1, a] - 1.0 - ma
        rb = close[t, b] / close[t - 1, b] - 1.0 - mb
        saa += ra * ra
        sbb += rb * rb
        sab += ra * rb
    if saa <= 0.0 or sbb <= 0.0:
        return math.nan
    return sab / math.sqrt(saa * sbb)


# --- validation of a set of limits ------------------------------------------------------------

# (field, low, high, low_open): the allowed range of each numeric limit.
RANGES: Final[dict[str, tuple[float, float, bool]]] = {
    "risk_per_trade": (0.0, 1.0, True),
    "fixed_notional": (0.0, 1e12, False),
    "vol_target": (0.0, 10.0, False),
    "kelly_win_rate": (0.0, 1.0, False),
    "kelly_payoff": (0.0, 1000.0, False),
    "kelly_multiplier": (0.0, 1.0, False),
    "kelly_cap": (0.0, 1.0, False),
    "max_position_fraction": (0.0, 1.0, True),
    "max_heat": (0.0, 1.0, False),
    "max_open_positions": (0, 1000, False),
    "max_leverage": (0.0, 100.0, False),
    "min_order_notional": (0.0, 1e12, False),
    "max_order_notional": (0.0, 1e12, False),
    "max_orders_per_minute": (0, 10_000, False),
    "drawdown_limit": (0.0, 1.0, False),
    "daily_loss_limit": (0.0, 1.0, False),
    "weekly_loss_limit": (0.0, 1.0, False),
    "monthly_loss_limit": (0.0, 1.0, False),
    "cooldown_minutes": (0, 100_000, False),
    "stoploss_guard_count": (0, 1000, False),
    "stoploss_guard_lookback_minutes": (0, 100_000, False),
    "stoploss_guard_lock_minutes": (0, 100_000, False),
    "low_profit_lookback_minutes": (0, 1_000_000, False),
    "low_profit_min": (-1.0, 1.0, False),
    "low_profit_lock_minutes": (0, 1_000_000, False),
    "correlation_threshold": (0.0, 1.0, False),
    "correlation_lookback": (0, 10_000, False),
}


def validate_limits(values: Mapping[str, Any]) -> dict[str, str]:
    """Field errors of a set of limits (empty when valid): ranges, then maxima below minima.

    The one validation that the profile form, the API and the model share.
    """
    errors: dict[str, str] = {}
    for name, (low, high, low_open) in RANGES.items():
        if name not in values or values[name] is None:
            continue
        v = float(values[name])
        if not math.isfinite(v):
            errors[name] = "Enter a finite number."
        elif v < low or (low_open and v == low):
            errors[name] = (
                f"Must be greater than {low:g}." if low_open else f"Must be at least {low:g}."
            )
        elif v > high:
            errors[name] = f"Must be at most {high:g}."

    def num(name: str) -> float:
        v = values.get(name)
        return float(v) if v is not None else 0.0

    lo, hi = num("min_order_notional"), num("max_order_notional")
    if "max_order_notional" not in errors and hi > 0.0 and hi < lo:
        errors["max_order_notional"] = (
            f"The maximum order value ({hi:g}) is below the minimum ({lo:g})."
        )
    d, w, m = num("daily_loss_limit"), num("weekly_loss_limit"), num("monthly_loss_limit")
    if "weekly_loss_limit" not in errors and w > 0.0 and d > 0.0 and w < d:
        errors["weekly_loss_limit"] = "The weekly loss limit is below the daily loss limit."
    if "monthly_loss_limit" not in errors and m > 0.0 and max(d, w) > 0.0 and m < max(d, w):
        errors["monthly_loss_limit"] = "The monthly loss limit is below a shorter period's limit."
    if values.get("sizing") == "risk" and "risk_per_trade" not in errors:
        heat = num("max_heat")
        if heat > 0.0 and num("risk_per_trade") > heat:
            errors["risk_per_trade"] = "Risk per trade is above the maximum portfolio heat."
    if values.get("sizing") == "kelly" and "kelly_cap" not in errors and num("kelly_cap") <= 0.0:
        errors["kelly_cap"] = "Kelly sizing needs a cap above 0."
    if values.get("sizing") == "notional" and num("fixed_notional") <= 0.0:
        errors.setdefault("fixed_notional", "Fixed-notional sizing needs a value above 0.")
    if values.get("sizing") == "vol_target" and num("vol_target") <= 0.0:
        errors.setdefault("vol_target", "Volatility-target sizing needs a target above 0.")
    if "sizing" in values and values["sizing"] not in SIZING_MODES:
        errors["sizing"] = "Unknown sizing mode."
    mode = values.get("correlation_mode")
    if mode is not None and mode not in ("refuse", "shrink"):
        errors["correlation_mode"] = "Choose refuse or shrink."
    return errors


# --- check_order ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """A risk profile's numbers; the defaults are the product's (2 % risk per trade, 20 %
    drawdown breaker, 5 % daily loss, 6 % heat). 0 switches a limit off."""

    sizing: SizingMode = "risk"
    risk_per_trade: float = 0.02
    fixed_notional: float = 0.0
    vol_target: float = 0.0
    kelly_win_rate: float = 0.0
    kelly_payoff: float = 0.0
    kelly_multiplier: float = 0.5
    kelly_cap: float = 0.1
    max_position_fraction: float = 0.25
    max_heat: float = 0.06
    max_open_positions: int = 10
    max_leverage: float = 1.0
    min_order_notional: float = 0.0
    max_order_notional: float = 0.0
    max_orders_per_minute: int = 30
    drawdown_limit: float = 0.20
    daily_loss_limit: float = 0.05
    weekly_loss_limit: float = 0.0
    monthly_loss_limit: float = 0.0
    cooldown_minutes: int = 0
    stoploss_guard_count: int = 0
    stoploss_guard_lookback_minutes: int = 0
    stoploss_guard_lock_minutes: int = 0
    stoploss_guard_all: bool = False
    low_profit_lookback_minutes: int = 0
    low_profit_min: float = 0.0
    low_profit_lock_minutes: int = 0
    correlation_threshold: float = 0.0
    correlation_lookback: int = 0
    correlation_mode: Literal["refuse", "shrink"] = "refuse"

    def __post_init__(self) -> None:
        errors = validate_limits({f: getattr(self, f) for f in self.__slots__})
        if errors:
            name, message = next(iter(errors.items()))
            raise ValueError(f"{name}: {message}")


@dataclass(frozen=True, slots=True)
class OpenPosition:
    """An open position: signed quantity, its mark price (None = cannot be priced) and its
    stop price (None = no stop)."""

    symbol: str
    qty: float
    mark: float | None
    stop: float | None = None


@dataclass(frozen=True, slots=True)
class RiskState:
    """Everything ``check_order`` reads: the trading state, equity and its reference points,
    open positions, recent orders and trades, and return series for the correlation filter."""

    now_ms: int
    equity: float
    limits: Limits = field(default_factory=Limits)
    mode: Literal["active", "reducing", "halted"] = "active"
    mode_reason: str = ""
    peak_equity: float = 0.0
    day_start_equity: float = 0.0
    week_start_equity: float = 0.0
    month_start_equity: float = 0.0
    positions: tuple[OpenPosition, ...] = ()
    order_times_ms: tuple[int, ...] = ()
    trades: tuple[ClosedTrade, ...] = ()
    returns: Mapping[str, FloatArray] = field(default_factory=dict)
    cash: float = math.inf


@dataclass(frozen=True, slots=True)
class Proposal:
    """An order someone wants to send. ``side`` is +1 buy / -1 sell; ``qty`` None asks the
    rules to size it; ``price`` None means no market price is known."""

    symbol: str
    side: int
    price: float | None
    qty: float | None = None
    stop: float | None = None
    reduce_only: bool = False
    lot_step: float = 0.0
    min_notional: float = 0.0
    fee_rate: float = 0.001
    vol: float = 0.0


APPROVED: Final = "approved"
REDUCED: Final = "reduced"
DENIED: Final = "denied"

DENIAL_CODES: Final[dict[str, str]] = {
    "trading_halted": "Trading is halted",
    "reducing_only": "Only orders that reduce exposure are allowed",
    "no_price": "A price needed for the check is missing",
    "drawdown": "Drawdown breaker",
    "daily_loss": "Daily loss limit",
    "weekly_loss": "Weekly loss limit",
    "monthly_loss": "Monthly loss limit",
    "rate_limited": "Too many orders per minute",
    "cooldown": "Cooling down after an exit",
    "stoploss_guard": "Locked after repeated stop-losses",
    "low_profit": "Locked for low profit",
    "max_positions": "Too many open positions",
    "max_notional": "Order value above the maximum",
    "max_position": "Position above its maximum share of equity",
    "max_leverage": "Leverage limit",
    "heat_limit": "Portfolio heat limit",
    "correlated": "Too correlated with an open position",
    "min_notional": "Order value below the minimum",
    "no_equity": "No equity to trade with",
    "invalid": "Invalid order",
}


@dataclass(frozen=True, slots=True)
class Decision:
    """What ``check_order`` decided: ``approved`` (``qty`` as asked or sized), ``reduced``
    (``qty`` smaller, ``reasons`` say why) or ``denied`` (``code`` from ``DENIAL_CODES``).
    ``trips`` lists breakers that tripped, for the caller to latch."""

    status: str
    qty: float
    code: str = ""
    reasons: tuple[str, ...] = ()
    figures: Mapping[str, float] = field(default_factory=dict)
    trips: tuple[Trip, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.status != DENIED


def _deny(
    code: str, reason: str, figures: Mapping[str, float], trips: tuple[Trip, ...] = ()
) -> Decision:
    return Decision(DENIED, 0.0, code, (reason,), dict(figures), trips)


def evaluate_breakers(state: RiskState) -> tuple[Trip, ...]:
    """The breakers that trip at ``state``'s equity: drawdown from the peak halts (until the
    user resets), the daily/weekly/monthly loss halts new exposure until the period ends."""
    lim = state.limits
    eq = state.equity
    trips: list[Trip] = []
    peak = max(state.peak_equity, eq)
    if drawdown_tripped(eq, peak, lim.drawdown_limit):
        trips.append(
            Trip(
                "drawdown",
                "halted",
                f"Equity {eq:,.2f} is {1 - eq / peak:.2%} below its peak {peak:,.2f} "
                f"(limit {lim.drawdown_limit:.2%}).",
                {"equity": eq, "peak": peak, "limit": lim.drawdown_limit},
                None,
            )
        )
    for code, start, limit in (
        ("daily_loss", state.day_start_equity, lim.daily_loss_limit),
        ("weekly_loss", state.week_start_equity, lim.weekly_loss_limit),
        ("monthly_loss", state.month_start_equity, lim.monthly_loss_limit),
    ):
        if start > 0.0 and period_loss_tripped(eq, start, limit):
            period = code.split("_")[0]
            trips.append(
                Trip(
                    code,
                    "halted",
                    f"Equity {eq:,.2f} is {1 - eq / start:.2%} below the {period} opening "
                    f"{start:,.2f} (limit {limit:.2%}).",
                    {"equity": eq, "start": start, "limit": limit},
                    breaker_resets_at(code, state.now_ms),
                )
            )
    return tuple(trips)


def check_order(state: RiskState, proposal: Proposal) -> Decision:
    """The pre-trade check every order passes: approve (sized), reduce with reasons, or deny
    with a code. Checks in order: price, reducing orders (always pass, clipped to the
    position), trading state, breakers, rate, protections, open positions, then the size
    limits (position share, order value, correlation, heat, leverage, lot, minimum)."""
    lim = state.limits
    px = proposal.price
    if px is None or not math.isfinite(px) or px <= 0.0:
        return _deny("no_price", f"No market price for {proposal.symbol}.", {})
    if proposal.side not in (1, -1):
        return _deny("invalid", "Side must be +1 (buy) or -1 (sell).", {})
    unpriced = [p.symbol for p in state.positions if p.mark is None or not p.mark > 0.0]
    if unpriced:
        return _deny("no_price", f"No market price for open position {unpriced[0]}.", {})

    held = 0.0
    for p in state.positions:
        if p.symbol == proposal.symbol:
            held += p.qty
    reduces = held != 0.0 and (held > 0.0) != (proposal.side > 0)
    if reduces:
        qty = abs(held) if proposal.qty is None else min(proposal.qty, abs(held))
        if qty <= 0.0:
            return _deny("invalid", "Nothing to reduce.", {})
        return Decision(APPROVED, qty, figures={"position": held})
    if proposal.reduce_only:
        return _deny(
            "invalid", f"Reduce-only order but no {proposal.symbol} position to reduce.", {}
        )

    if state.mode == "halted":
        return _deny("trading_halted", state.mode_reason or "Trading is halted.", {})
    if state.mode == "reducing":
        return _deny("reducing_only", state.mode_reason or "Only reducing orders pass.", {})
    eq = state.equity
    if not eq > 0.0:
        return _deny("no_equity", f"Equity is {eq:,.2f}.", {"equity": eq})

    trips = evaluate_breakers(state)
    if trips:
        t = trips[0]
        return _deny(t.code, t.message, t.figures, trips)

    now = state.now_ms
    if lim.max_orders_per_minute > 0:
        n = orders_in_last_minute(state.order_times_ms, now)
        if n >= lim.max_orders_per_minute:
            return _deny(
                "rate_limited",
                f"{n} orders in the last minute (limit {lim.max_orders_per_minute}).",
                {"orders": n, "limit": lim.max_orders_per_minute},
            )

    sym = proposal.symbol
    until = cooldown_until(state.trades, sym, lim.cooldown_minutes * MS_PER_MINUTE)
    if until is not None and now < until:
        return _deny("cooldown", f"{sym} cools down until {until} ms.", {"until_ms": until})
    until = stoploss_guard_until(
        state.trades,
        sym,
        now,
        count=lim.stoploss_guard_count,
        lookback_ms=lim.stoploss_guard_lookback_minutes * MS_PER_MINUTE,
        lock_ms=lim.stoploss_guard_lock_minutes * MS_PER_MINUTE,
        all_symbols=lim.stoploss_guard_all,
    )
    if until is not None and now < until:
        scope = "every symbol" if lim.stoploss_guard_all else sym
        return _deny(
            "stoploss_guard",
            f"{lim.stoploss_guard_count} stop-losses in the lookback lock {scope}.",
            {"until_ms": until},
        )
    until = low_profit_until(
        state.trades,
        sym,
        now,
        lookback_ms=lim.low_profit_lookback_minutes * MS_PER_MINUTE,
        min_profit=lim.low_profit_min,
        lock_ms=lim.low_profit_lock_minutes * MS_PER_MINUTE,
    )
    if until is not None and now < until:
        return _deny("low_profit", f"{sym} made too little recently.", {"until_ms": until})

    open_syms = {p.symbol for p in state.positions if p.qty != 0.0}
    full = 0 < lim.max_open_positions <= len(open_syms)
    if full and sym not in open_syms:
        return _deny(
            "max_positions",
            f"{len(open_syms)} positions open (limit {lim.max_open_positions}).",
            {"open": len(open_syms), "limit": lim.max_open_positions},
        )

    # --- the size -------------------------------------------------------------------------
    stop_distance = 0.0
    if proposal.stop is not None and proposal.stop > 0.0:
        stop_distance = abs(px - proposal.stop) / px
    sizing = SIZING_MODES[lim.sizing]
    size_value = {
        SIZE_FRACTION: lim.risk_per_trade,
        SIZE_NOTIONAL: lim.fixed_notional,
        SIZE_RISK: lim.risk_per_trade,
        SIZE_VOL_TARGET: lim.vol_target,
        SIZE_KELLY: kelly_fraction(
            lim.kelly_win_rate, lim.kelly_payoff, lim.kelly_multiplier, lim.kelly_cap
        ),
    }[sizing]
    figures: dict[str, float] = {"equity": eq, "price": px}
    reasons: list[str] = []
    if proposal.qty is not None:
        asked = float(proposal.qty)
        if not asked > 0.0:
            return _deny("invalid", "Quantity must be above 0.", {})
    else:
        if sizing == SIZE_RISK and stop_distance <= 0.0:
            return _deny("invalid", "Fixed-risk sizing needs a stop price.", figures)
        asked = sized_qty(
            float(proposal.side), px, proposal.fee_rate, eq, math.inf, 1.0, proposal.vol,
            sizing, size_value, stop_distance, 1.0, 0.0, 0.0, 1.0, math.inf,
        )  # fmt: skip
        if asked <= 0.0:
            return _deny("invalid", "The sizing rule gave no quantity.", figures)
    figures["asked_qty"] = asked
    qty = asked
    binding = ""

    def cap(limit_qty: float, code: str, why: str) -> None:
        nonlocal qty, binding
        if qty > limit_qty:
            qty = max(0.0, limit_qty)
            binding = code
            reasons.append(why)

    if lim.max_position_fraction > 0.0:
        room = lim.max_position_fraction * eq / px - abs(held)
        cap(room, "max_position", f"{sym} capped at {lim.max_position_fraction:.0%} of equity.")
    if lim.max_order_notional > 0.0:
        cap(
            max_notional_qty(lim.max_order_notional, px),
            "max_notional",
            f"Order value capped at {lim.max_order_notional:,.2f}.",
        )
    if proposal.side > 0 and math.isfinite(state.cash):
        cap(state.cash / (px * (1.0 + proposal.fee_rate)), "max_notional", "Capped at the cash.")

    pos_qty = np.fromiter((p.qty for p in state.positions), np.float64, len(state.positions))
    pos_mark = np.fromiter(
        (cast(float, p.mark) for p in state.positions), np.float64, len(state.positions)
    )
    if lim.correlation_threshold > 0.0 and lim.correlation_lookback >= 2 and state.positions:
        mine = state.returns.get(sym)
        others = [
            p.symbol for p in state.positions if p.symbol != sym and p.symbol in state.returns
        ]
        if mine is not None and others:
            n = min(
                lim.correlation_lookback,
                mine.shape[0],
                *(state.returns[s].shape[0] for s in others),
            )
            mat = np.stack([state.returns[s][-n:] for s in others]) if n >= 2 else np.empty((0, 0))
            corr = correlations(mine[-n:], mat, n) if n >= 2 else np.empty(0)
            if corr.size and np.any(np.isfinite(corr)):
                # A short against a long (or the reverse) hedges: signed by the two sides.
                sides = np.array(
                    [
                        1.0 if next(p.qty for p in state.positions if p.symbol == s) > 0 else -1.0
                        for s in others
                    ]
                )
                eff = np.where(np.isfinite(corr), corr * sides * proposal.side, -np.inf)
                worst = int(np.argmax(eff))
                c = float(eff[worst])
                figures["correlation"] = c
                if c > lim.correlation_threshold:
                    if lim.correlation_mode == "refuse":
                        return _deny(
                            "correlated",
                            f"{sym} correlates {c:.2f} with open {others[worst]} "
                            f"(threshold {lim.correlation_threshold:.2f}).",
                            figures,
                        )
                    scale = correlation_scale(c, lim.correlation_threshold)
                    cap(
                        qty * scale,
                        "correlated",
                        f"Shrunk to {scale:.0%}: correlates {c:.2f} with {others[worst]}.",
                    )

    if lim.max_heat > 0.0:
        stops = np.fromiter(
            (math.nan if p.stop is None else p.stop for p in state.positions),
            np.float64,
            len(state.positions),
        )
        heat = portfolio_heat(pos_qty, pos_mark, stops, eq)
        figures["heat"] = heat
        per_unit = px * stop_distance if stop_distance > 0.0 else px
        room_money = (lim.max_heat - heat) * eq
        cap(room_money / per_unit, "heat_limit", f"Portfolio heat capped at {lim.max_heat:.1%}.")
    if lim.max_leverage > 0.0:
        gross = float(np.abs(pos_qty * pos_mark).sum()) if pos_qty.shape[0] else 0.0
        figures["leverage"] = gross / eq
        cap(
            leverage_room_qty(lim.max_leverage, eq, gross, px),
            "max_leverage",
            f"Gross exposure capped at {lim.max_leverage:g}x equity.",
        )

    qty = round_to_lot(qty, proposal.lot_step)
    min_value = max(proposal.min_notional, lim.min_order_notional)
    figures["qty"] = qty
    if qty <= 0.0 or qty * px < min_value:
        code = binding or "min_notional"
        why = (
            reasons[-1]
            if binding
            else (f"Order value {qty * px:,.2f} is below the minimum {min_value:,.2f}.")
        )
        return _deny(code, why, figures)
    if qty < asked * (1.0 - 1e-12) and reasons:
        return Decision(REDUCED, qty, "", tuple(reasons), figures)
    return Decision(APPROVED, qty, "", tuple(reasons), figures)


def utc_day(now_ms: int) -> datetime:
    """The UTC midnight of ``now_ms`` as an aware datetime (for reports)."""
    return datetime.fromtimestamp(day_start_ms(now_ms) / 1000, tz=UTC)


def next_utc_day(now_ms: int) -> datetime:
    """The next UTC midnight after ``now_ms``."""
    return utc_day(now_ms) + timedelta(days=1)


def engine_settings(limits: Limits, *, bar_ms: int) -> dict[str, Any]:
    """The backtest settings (``SimConfig`` fields) that apply ``limits`` in the engine's
    kernel: sizing, position cap, drawdown and daily/weekly/monthly breakers, heat, open
    positions, max order value, max leverage, the cooldown and the stop-loss guard and
    low-profit lock (minutes rounded up to whole bars), and the correlation filter. The
    stop-loss itself belongs to the strategy's settings; fixed-risk sizing needs one there.
    The order-rate limit stays live-only: bars have no minute-level clock of orders."""
    sizing: str = limits.sizing
    size_value = limits.risk_per_trade
    if limits.sizing == "notional":
        size_value = limits.fixed_notional
    elif limits.sizing == "vol_target":
        size_value = limits.vol_target
    elif limits.sizing == "kelly":
        sizing = "fraction"
        size_value = kelly_fraction(
            limits.kelly_win_rate, limits.kelly_payoff, limits.kelly_multiplier, limits.kelly_cap
        )

    def bars(minutes: int) -> int:
        # Minutes to whole bars, rounded up (a lock never ends earlier than the profile says).
        ms = minutes * MS_PER_MINUTE
        return -(-ms // bar_ms) if ms > 0 else 0

    return {
        "sizing": sizing,
        "size_value": size_value,
        "max_position_fraction": limits.max_position_fraction,
        "max_drawdown_halt": limits.drawdown_limit,
        "daily_loss_limit": limits.daily_loss_limit,
        "max_heat": limits.max_heat,
        "max_open_positions": limits.max_open_positions,
        "cooldown_bars": bars(limits.cooldown_minutes),
        "correlation_threshold": limits.correlation_threshold,
        "correlation_lookback": max(2, limits.correlation_lookback),
        "correlation_shrink": limits.correlation_mode == "shrink",
        "weekly_loss_limit": limits.weekly_loss_limit,
        "monthly_loss_limit": limits.monthly_loss_limit,
        "max_order_notional": limits.max_order_notional,
        "max_leverage": limits.max_leverage,
        "stoploss_guard_count": limits.stoploss_guard_count,
        "stoploss_guard_lookback_bars": bars(limits.stoploss_guard_lookback_minutes),
        "stoploss_guard_lock_bars": bars(limits.stoploss_guard_lock_minutes),
        "stoploss_guard_all": limits.stoploss_guard_all,
        "low_profit_lookback_bars": bars(limits.low_profit_lookback_minutes),
        "low_profit_min": limits.low_profit_min,
        "low_profit_lock_bars": bars(limits.low_profit_lock_minutes),
    }
