"""The signal scanner: polynomial-regression bands fitted to the last closes of many symbols.

For every symbol a polynomial of ``degree`` is least-squares fitted to its last ``lookback``
closes (x = 0..lookback-1, the same fit as ``indicators.polyreg_bands`` at its last bar). The
fit at the last bar is the mid line, ``std`` the population standard deviation (ddof=0) of the
window's residuals, and the bands are ``mid ± k * std``. Then, on the last close:

* BUY  when close < lower band (stretched below the curve);
* SELL when close > upper band (stretched above it);
* HOLD otherwise (a close exactly on a band is inside), and also, with the reason, when the
  symbol has fewer closes than the lookback, a missing value in its window, no spread at all
  (the closes lie on the curve) or a last close that is not a positive price.

Potential return is the move to the opposite band as a fraction of the current price, in the
trade's direction: for a BUY ``upper / close - 1`` (long from the close, out at the upper band);
for a SELL ``(close - max(lower, 0)) / close`` (short from the close, covered at the lower band;
a price cannot fall below zero, so a short never gains more than 100 %). HOLD has none (NaN).
The z-score is ``(close - mid) / std``.

All symbols' windows are fitted at once: the windows are stacked into one matrix and projected
on an orthonormal polynomial basis with two matrix products, so a scan of hundreds of symbols
costs about as much as one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from backtester.engine.errors import ConfigError
from backtester.engine.indicators import _orthonormal_basis

FloatArray = npt.NDArray[np.float64]

BUY = "BUY"
SELL = "SELL"
HOLD = "HOLD"
SIGNALS: tuple[str, ...] = (BUY, SELL, HOLD)
_CODE_TO_SIGNAL = {1: BUY, -1: SELL, 0: HOLD}
MAX_DEGREE = 10
# A residual spread this small relative to the prices is rounding, not spread: such a window
# lies on its curve and crossing a band would be decided by the last bits of the arithmetic.
NO_SPREAD_RELATIVE = 1e-12

REASON_BELOW = "Close is below the lower band"
REASON_ABOVE = "Close is above the upper band"
REASON_INSIDE = "Close is inside the bands"
REASON_NO_SPREAD = "The closes lie on the fitted curve (no spread), so there are no bands to cross"
REASON_NOT_POSITIVE = "The last close is not a positive price"


def reason_too_little_data(bars: int, lookback: int) -> str:
    """The HOLD reason of a symbol with fewer closes than the lookback."""
    noun = "candle" if bars == 1 else "candles"
    return f"Too little data: {bars} {noun}, the lookback needs {lookback}"


def reason_missing_value(lookback: int) -> str:
    """The HOLD reason of a window holding a NaN or an infinity."""
    return f"The last {lookback} closes include a missing value"


@dataclass(frozen=True, slots=True)
class BandSettings:
    """How the bands are fitted: ``lookback`` closes, polynomial ``degree``, ``k`` deviations.

    Validated on construction (ConfigError naming the setting): lookback a whole number of at
    least 2 and above the degree, degree a whole number 0..10, k a finite number above 0.
    """

    lookback: int = 100
    degree: int = 2
    k: float = 2.0

    def __post_init__(self) -> None:
        for name in ("lookback", "degree"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ConfigError(f"{name} must be a whole number, got {value!r}")
        if not 0 <= self.degree <= MAX_DEGREE:
            raise ConfigError(f"degree must be between 0 and {MAX_DEGREE}, got {self.degree}")
        if self.lookback < 2:
            raise ConfigError(f"lookback must be at least 2 closes, got {self.lookback}")
        if self.lookback <= self.degree:
            raise ConfigError(
                f"lookback ({self.lookback}) must be larger than the degree ({self.degree})"
            )
        k = self.k
        if isinstance(k, bool) or not isinstance(k, int | float | np.integer | np.floating):
            raise ConfigError(f"k must be a number, got {k!r}")
        if not math.isfinite(float(k)) or float(k) <= 0:
            raise ConfigError(f"k must be a finite number above 0, got {k!r}")


@dataclass(frozen=True, slots=True)
class ScanOutcome:
    """One symbol's result. Numbers are NaN where they do not exist (no fit, HOLD's return)."""

    symbol: str
    signal: str
    price: float
    lower: float
    mid: float
    upper: float
    std: float
    zscore: float
    potential_return: float
    bars: int
    reason: str

    @property
    def is_alert(self) -> bool:
        return self.signal != HOLD


@dataclass(frozen=True, slots=True)
class ScanResult:
    """A whole scan as parallel arrays (one entry per symbol, in input order).

    ``signal_code`` is +1 BUY, -1 SELL, 0 HOLD; ``fitted`` says whether bands exist for the
    symbol. ``outcomes()`` gives the same as ``ScanOutcome`` rows.
    """

    symbols: tuple[str, ...]
    signal_code: npt.NDArray[np.int8]
    fitted: npt.NDArray[np.bool_]
    price: FloatArray
    lower: FloatArray
    mid: FloatArray
    upper: FloatArray
    std: FloatArray
    zscore: FloatArray
    potential_return: FloatArray
    bars: npt.NDArray[np.int64]
    reasons: tuple[str, ...]
    settings: BandSettings

    def __len__(self) -> int:
        return len(self.symbols)

    def signal(self, i: int) -> str:
        return _CODE_TO_SIGNAL[int(self.signal_code[i])]

    def outcome(self, i: int) -> ScanOutcome:
        return ScanOutcome(
            symbol=self.symbols[i],
            signal=self.signal(i),
            price=float(self.price[i]),
            lower=float(self.lower[i]),
            mid=float(self.mid[i]),
            upper=float(self.upper[i]),
            std=float(self.std[i]),
            zscore=float(self.zscore[i]),
            potential_return=float(self.potential_return[i]),
            bars=int(self.bars[i]),
            reason=self.reasons[i],
        )

    def outcomes(self) -> list[ScanOutcome]:
        return [self.outcome(i) for i in range(len(self.symbols))]

    def counts(self) -> dict[str, int]:
        """How many symbols got each signal (every signal present)."""
        codes = self.signal_code
        return {
            BUY: int(np.count_nonzero(codes == 1)),
            SELL: int(np.count_nonzero(codes == -1)),
            HOLD: int(np.count_nonzero(codes == 0)),
        }

    def top(self, signal: str, n: int = 5) -> list[ScanOutcome]:
        """The ``n`` BUY (or SELL) outcomes with the largest potential return, best first
        (ties by symbol, so the order is stable)."""
        code = {BUY: 1, SELL: -1}.get(signal)
        if code is None:
            raise ValueError(f"top() ranks BUY or SELL, not {signal!r}")
        picked = np.flatnonzero(self.signal_code == code)
        order = sorted(picked, key=lambda i: (-self.potential_return[i], self.symbols[i]))
        return [self.outcome(int(i)) for i in order[: max(0, n)]]


def fit_windows(
    windows: npt.ArrayLike, degree: int, k: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Fit each row of ``windows`` (symbols x lookback, finite) and return (mid, std, lower,
    upper) at each row's last point: the same numbers as ``polyreg_bands`` on that window.

    Each row is centred on its own mean first (a constant is in every fit, so the residuals
    do not change, and the arithmetic keeps its digits for prices far from zero); the fit is
    ``Q @ (Q.T @ y)`` with Q an orthonormal basis of the polynomials on the window.
    """
    y = np.ascontiguousarray(windows, dtype=np.float64)
    if y.ndim != 2:
        raise ConfigError(f"windows must be a 2-D array (symbols x lookback), got {y.shape}")
    m, w = y.shape
    if m == 0:
        empty = np.empty(0, dtype=np.float64)
        return empty, empty.copy(), empty.copy(), empty.copy()
    if w <= degree:
        raise ConfigError(f"lookback ({w}) must be larger than the degree ({degree})")
    basis = _orthonormal_basis(w, degree)  # (w, degree + 1)
    centre = y.mean(axis=1)
    z = y - centre[:, None]
    coords = z @ basis  # (m, degree + 1)
    residuals = z - coords @ basis.T
    std = np.sqrt(np.mean(residuals * residuals, axis=1))
    mid = coords @ basis[-1] + centre
    spread = float(k) * std
    return mid, std, mid - spread, mid + spread


def _as_pairs(
    closes: Mapping[str, npt.ArrayLike] | Iterable[tuple[str, npt.ArrayLike]],
) -> list[tuple[str, FloatArray]]:
    items: Iterable[tuple[str, Any]] = closes.items() if isinstance(closes, Mapping) else closes
    out: list[tuple[str, FloatArray]] = []
    for symbol, values in items:
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 1:
            raise ConfigError(f"{symbol}: closes must be one-dimensional, got shape {arr.shape}")
        out.append((str(symbol), arr))
    return out


def scan(
    closes: Mapping[str, npt.ArrayLike] | Sequence[tuple[str, npt.ArrayLike]],
    settings: BandSettings | None = None,
) -> ScanResult:
    """Signal every symbol of ``closes`` (symbol -> closes, oldest first) on its last close.

    Symbols keep their input order. Only the last ``settings.lookback`` closes of each symbol
    are used. Rules and definitions are in the module docstring.
    """
    settings = settings or BandSettings()
    pairs = _as_pairs(closes)
    n = len(pairs)
    lookback = int(settings.lookback)
    nan = np.full(n, np.nan)
    price, lower, mid, upper = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    std, zscore, potential = nan.copy(), nan.copy(), nan.copy()
    code = np.zeros(n, dtype=np.int8)
    fitted = np.zeros(n, dtype=np.bool_)
    bars = np.array([arr.shape[0] for _, arr in pairs], dtype=np.int64)
    reasons: list[str] = [""] * n

    ready: list[int] = []
    for i, (_, arr) in enumerate(pairs):
        if arr.shape[0]:
            price[i] = arr[-1]
        if arr.shape[0] < lookback:
            reasons[i] = reason_too_little_data(int(arr.shape[0]), lookback)
        elif not np.all(np.isfinite(arr[-lookback:])):
            reasons[i] = reason_missing_value(lookback)
        else:
            ready.append(i)

    if ready:
        idx = np.asarray(ready, dtype=np.int64)
        windows = np.stack([pairs[i][1][-lookback:] for i in ready])
        f_mid, f_std, f_lower, f_upper = fit_windows(windows, settings.degree, settings.k)
        mid[idx], std[idx], lower[idx], upper[idx] = f_mid, f_std, f_lower, f_upper
        fitted[idx] = True
        last = windows[:, -1]
        scale = np.max(np.abs(windows), axis=1)
        flat = f_std <= NO_SPREAD_RELATIVE * scale
        positive = last > 0
        live = ~flat & positive
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(flat, np.nan, (last - f_mid) / np.where(flat, 1.0, f_std))
        zscore[idx] = z
        buy = live & (last < f_lower)
        sell = live & (last > f_upper)
        code[idx[buy]] = 1
        code[idx[sell]] = -1
        with np.errstate(divide="ignore", invalid="ignore"):
            potential[idx[buy]] = f_upper[buy] / last[buy] - 1.0
            potential[idx[sell]] = (last[sell] - np.maximum(f_lower[sell], 0.0)) / last[sell]
        for j, i in enumerate(ready):
            if not positive[j]:
                reasons[i] = REASON_NOT_POSITIVE
            elif flat[j]:
                reasons[i] = REASON_NO_SPREAD
            elif buy[j]:
                reasons[i] = REASON_BELOW
            elif sell[j]:
                reasons[i] = REASON_ABOVE
            else:
                reasons[i] = REASON_INSIDE

    return ScanResult(
        symbols=tuple(symbol for symbol, _ in pairs),
        signal_code=code,
        fitted=fitted,
        price=price,
        lower=lower,
        mid=mid,
        upper=upper,
        std=std,
        zscore=zscore,
        potential_return=potential,
        bars=bars,
        reasons=tuple(reasons),
        settings=settings,
    )
