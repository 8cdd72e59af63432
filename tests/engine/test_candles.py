"""The Candles container: validation rules, gaps, resampling and timeframes."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

from backtester.engine.candles import (
    MAX_PRICE,
    MAX_VOLUME,
    MIN_PRICE,
    Candles,
    Gap,
    bars_per_year,
    timeframe_ms,
)
from backtester.engine.errors import CandleError

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
MINUTE = 60_000
HOUR = 3_600_000


def make(n: int = 10, *, step: int = MINUTE, start: int = T0, **overrides: Any) -> Candles:
    """n valid one-minute bars: open 100+i, close 100.5+i, high close+1, low open-1, volume 1."""
    i = np.arange(n, dtype=np.float64)
    fields: dict[str, Any] = {
        "timestamp": start + np.arange(n, dtype=np.int64) * step,
        "open": 100.0 + i,
        "high": 101.5 + i,
        "low": 99.0 + i,
        "close": 100.5 + i,
        "volume": np.ones(n),
    }
    fields.update(overrides)
    return Candles(**fields)


def with_value(column: str, row: int, value: float, n: int = 10) -> dict[str, Any]:
    base = make(n)
    arr = np.array(getattr(base, column), copy=True)
    arr[row] = value
    return {column: arr}


# ------------------------------------------------------------------------- construction


def test_inputs_become_contiguous_float64_and_int64_arrays() -> None:
    every_other = np.arange(20.0)[::2] + 100  # a strided view
    c = Candles(
        # Lists and other dtypes on purpose: Candles converts them.
        timestamp=[T0 + k * MINUTE for k in range(10)],  # type: ignore[arg-type]
        open=every_other,
        high=every_other + 1,
        low=(every_other - 1).astype(np.float32),
        close=list(every_other),  # type: ignore[arg-type]  # a list on purpose
        volume=np.arange(10, dtype=np.int32),
        extra={"funding": [0.1] * 10},  # type: ignore[dict-item]  # a list on purpose
    )
    assert c.timestamp.dtype == np.int64
    for arr in (c.open, c.high, c.low, c.close, c.volume, c.extra["funding"]):
        assert arr.dtype == np.float64
        assert arr.flags["C_CONTIGUOUS"]
    assert len(c) == 10


def test_empty_candles_are_valid() -> None:
    c = make(0)
    assert len(c) == 0
    assert c.gaps() == []


def test_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(CandleError, match="column 'high' has 9 values but timestamp has 10") as e:
        make(10, high=np.full(9, 200.0))
    assert e.value.row is None


def test_extra_column_of_a_different_length_is_refused() -> None:
    with pytest.raises(CandleError, match="extra column 'oi' has 3 values but timestamp has 10"):
        make(10, extra={"oi": np.ones(3)})


def test_equal_timestamps_are_refused_naming_the_row() -> None:
    ts = make(10).timestamp.copy()
    ts[4] = ts[3]
    with pytest.raises(CandleError) as e:
        make(10, timestamp=ts)
    assert e.value.row == 4
    assert e.value.reason == f"timestamp {ts[3]} is not after the previous one {ts[3]}"
    assert str(e.value).startswith("row 4: ")


def test_decreasing_timestamps_are_refused() -> None:
    ts = make(10).timestamp.copy()
    ts[7] = ts[6] - 1
    with pytest.raises(CandleError, match="is not after the previous one") as e:
        make(10, timestamp=ts)
    assert e.value.row == 7


@pytest.mark.parametrize("column", ["open", "high", "low", "close"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_prices_must_be_finite(column: str, value: float) -> None:
    with pytest.raises(CandleError) as e:
        make(10, **with_value(column, 6, value))
    assert e.value.row == 6
    assert e.value.reason == f"{column} is not a finite number"


def test_volume_must_be_finite() -> None:
    with pytest.raises(CandleError, match="volume is not a finite number") as e:
        make(10, **with_value("volume", 2, np.nan))
    assert e.value.row == 2


def test_high_below_close_is_refused_with_both_values() -> None:
    # row 9: open 109, close 109.5; a high of 109.2 is above the open but below the close
    with pytest.raises(CandleError) as e:
        make(10, **with_value("high", 9, 109.2))
    assert e.value.row == 9
    assert e.value.reason == "high 109.2 is below close 109.5"


def test_high_below_open_is_refused() -> None:
    c = make(3)
    opens = c.open.copy()
    opens[1] = 103.0  # high of row 1 is 102.5
    with pytest.raises(CandleError) as e:
        make(3, open=opens)
    assert e.value.reason == "high 102.5 is below open 103.0"
    assert e.value.row == 1


def test_low_above_open_is_refused() -> None:
    with pytest.raises(CandleError) as e:
        make(10, **with_value("low", 3, 103.2))  # open 103, close 103.5
    assert e.value.reason == "low 103.2 is above open 103.0"
    assert e.value.row == 3


def test_low_above_close_is_refused() -> None:
    closes = make(5).close.copy()
    closes[2] = 98.5  # open 102, low 101
    with pytest.raises(CandleError) as e:
        make(5, close=closes, high=np.full(5, 200.0))
    assert e.value.reason == "low 101.0 is above close 98.5"


def test_negative_volume_is_refused() -> None:
    with pytest.raises(CandleError) as e:
        make(10, **with_value("volume", 5, -3.0))
    assert e.value.reason == "volume -3.0 is negative"
    assert e.value.row == 5


@pytest.mark.parametrize("column", ["open", "high", "low", "close"])
@pytest.mark.parametrize("value", [0.0, -0.0, -5.0])
def test_prices_at_or_below_zero_are_refused_naming_the_row(column: str, value: float) -> None:
    # A fill at a price of 0 turned equity into NaN with no error, and negative prices drove an
    # unleveraged account to -361 %: neither is a market price. The sign is reported before
    # the high/low consistency the same value also breaks.
    with pytest.raises(CandleError) as e:
        make(10, **with_value(column, 6, value))
    assert e.value.row == 6
    assert e.value.reason == f"{column} {value!r} is not positive (prices must be above 0)"
    assert str(e.value).startswith("row 6: ")


def test_a_zero_low_is_named_as_the_low() -> None:
    with pytest.raises(CandleError) as e:
        make(10, **with_value("low", 4, 0.0))
    assert e.value.row == 4
    assert e.value.reason == "low 0.0 is not positive (prices must be above 0)"


def test_a_negative_open_and_close_name_the_open() -> None:
    base = make(5)
    opens, closes, lows = base.open.copy(), base.close.copy(), base.low.copy()
    opens[3], closes[3], lows[3] = -2.0, -1.0, -3.0
    with pytest.raises(CandleError) as e:
        make(5, open=opens, close=closes, low=lows)
    assert e.value.row == 3
    assert e.value.reason == "open -2.0 is not positive (prices must be above 0)"


def test_a_subnormal_price_is_refused_with_the_smallest_accepted_price() -> None:
    # 1e-310 is positive, but cash / price overflows to inf: the same NaN equity as a zero.
    with pytest.raises(CandleError) as e:
        make(10, **with_value("low", 2, 1e-310))
    assert e.value.row == 2
    assert e.value.reason == (
        f"low 1e-310 is below the smallest price the engine accepts ({MIN_PRICE:g})"
    )


@pytest.mark.parametrize("column", ["open", "close"])
def test_prices_near_the_float_maximum_are_refused_naming_the_row_and_the_limit(
    column: str,
) -> None:
    # At 1e300 a two-bar sum already overflows: sma gave NaN and vwap a RuntimeWarning, and
    # the strategy silently made no trades. The candles are refused instead.
    with pytest.raises(CandleError) as e:
        make(10, **with_value(column, 7, 1e300))
    assert e.value.row == 7
    assert e.value.reason == (
        f"{column} 1e+300 is above the largest price the engine accepts (1e+15)"
    )
    assert MAX_PRICE == 1e15


def test_volume_near_the_float_maximum_is_refused_naming_the_limit() -> None:
    with pytest.raises(CandleError) as e:
        make(10, **with_value("volume", 8, 1.7e308))
    assert e.value.row == 8
    assert e.value.reason == (
        "volume 1.7e+308 is above the largest volume the engine accepts (1e+24)"
    )
    assert MAX_VOLUME == 1e24


def test_values_exactly_at_the_limits_are_accepted() -> None:
    c = make(
        3,
        open=np.array([MIN_PRICE, 1.0, MAX_PRICE]),
        high=np.array([MIN_PRICE, 2.0, MAX_PRICE]),
        low=np.array([MIN_PRICE, 0.5, MAX_PRICE]),
        close=np.array([MIN_PRICE, 1.5, MAX_PRICE]),
        volume=np.array([0.0, 1.0, MAX_VOLUME]),
    )
    assert len(c) == 3


def test_the_earliest_bad_row_is_reported_whatever_the_rule() -> None:
    volume = np.ones(10)
    volume[2] = -1.0
    opens = make(10).open.copy()
    opens[7] = np.nan
    with pytest.raises(CandleError) as e:
        make(10, volume=volume, open=opens)
    assert e.value.row == 2


def test_extra_columns_may_hold_nan() -> None:
    c = make(4, extra={"funding_rate": [np.nan, 0.01, np.nan, -0.02]})
    assert np.isnan(c.extra["funding_rate"][0])


@pytest.mark.parametrize("name", ["close", "timestamp", ""])
def test_extra_column_names_must_not_clash_or_be_empty(name: str) -> None:
    with pytest.raises(CandleError, match="extra column"):
        make(3, extra={name: np.ones(3)})


def test_two_dimensional_columns_are_refused() -> None:
    with pytest.raises(CandleError, match="one-dimensional"):
        make(3, open=np.ones((3, 1)))
    with pytest.raises(CandleError, match="one-dimensional"):
        make(3, timestamp=np.ones((3, 1), dtype=np.int64))


def test_text_in_a_column_is_refused() -> None:
    with pytest.raises(CandleError, match="column 'open' does not hold numbers"):
        make(2, open=["a", "b"])
    with pytest.raises(CandleError, match="column 'timestamp' does not hold epoch"):
        make(2, timestamp=["a", "b"])


def test_float_timestamps_must_be_whole_milliseconds() -> None:
    c = make(3, timestamp=np.array([1.0, 2.0, 3.0]) * MINUTE)
    assert c.timestamp.tolist() == [MINUTE, 2 * MINUTE, 3 * MINUTE]
    with pytest.raises(CandleError, match=r"timestamp 60000.5 is not a whole number") as e:
        make(3, timestamp=np.array([1.0, 60000.5, 3e5]))
    assert e.value.row == 1
    with pytest.raises(CandleError, match="not a whole number") as e:
        make(3, timestamp=np.array([1.0, np.nan, 3e5]))
    assert e.value.row == 1


def test_datetime64_timestamps_are_converted_to_milliseconds() -> None:
    stamps = np.array(["2024-01-01T00:00", "2024-01-01T00:01"], dtype="datetime64[ns]")
    c = make(2, timestamp=stamps)
    assert c.timestamp.tolist() == [1_704_067_200_000, 1_704_067_260_000]
    with pytest.raises(CandleError, match="timestamp is missing") as e:
        make(2, timestamp=np.array(["2024-01-01", "NaT"], dtype="datetime64[ms]"))
    assert e.value.row == 1


def test_an_unknown_timeframe_is_refused() -> None:
    with pytest.raises(CandleError, match="timeframe '7x'"):
        make(3, timeframe="7x")


def test_candles_are_frozen() -> None:
    c = make(3)
    with pytest.raises(AttributeError):
        c.symbol = "ETH/USDT"  # type: ignore[misc]  # assigning to a frozen dataclass on purpose


def test_equality_is_identity_so_candles_can_key_a_cache() -> None:
    a, b = make(3), make(3)
    assert a == a
    assert a != b
    assert {a: 1}[a] == 1


def test_pickle_round_trip_keeps_everything() -> None:
    c = make(5, extra={"oi": np.arange(5.0)}, symbol="BTC/USDT", timeframe="1m")
    back = pickle.loads(pickle.dumps(c))  # noqa: S301 - our own object
    assert back.symbol == "BTC/USDT"
    assert back.timeframe == "1m"
    np.testing.assert_array_equal(back.close, c.close)
    np.testing.assert_array_equal(back.extra["oi"], np.arange(5.0))


def test_repr_is_short_and_names_the_span() -> None:
    text = repr(make(3, symbol="BTC/USDT", timeframe="1m", extra={"oi": np.ones(3)}))
    assert text == (
        "Candles(symbol='BTC/USDT', timeframe='1m', bars=3, from=2023-11-14T22:13:20.000, "
        "to=2023-11-14T22:15:20.000, extra=['oi'])"
    )
    assert repr(make(0)) == "Candles(symbol='', timeframe='', bars=0)"


# ---------------------------------------------------------------------- column and slice


def test_column_returns_prices_volume_and_extras_by_name() -> None:
    c = make(3, extra={"oi": [7.0, 8.0, 9.0]})
    assert c.column("close").tolist() == [100.5, 101.5, 102.5]
    assert c.column("volume").tolist() == [1.0, 1.0, 1.0]
    assert c.column("oi").tolist() == [7.0, 8.0, 9.0]
    assert c.columns == ("open", "high", "low", "close", "volume", "oi")


def test_unknown_column_raises_keyerror_listing_the_available_ones() -> None:
    c = make(3, extra={"oi": [7.0, 8.0, 9.0]})
    with pytest.raises(KeyError, match="available: open, high, low, close, volume, oi"):
        c.column("funding")


def test_slice_keeps_rows_symbol_and_timeframe() -> None:
    c = make(10, symbol="BTC/USDT", timeframe="1m", extra={"oi": np.arange(10.0)})
    part = c.slice(2, 5)
    assert len(part) == 3
    assert part.timestamp.tolist() == [T0 + 2 * MINUTE, T0 + 3 * MINUTE, T0 + 4 * MINUTE]
    assert part.open.tolist() == [102.0, 103.0, 104.0]
    assert part.extra["oi"].tolist() == [2.0, 3.0, 4.0]
    assert (part.symbol, part.timeframe) == ("BTC/USDT", "1m")
    assert len(c.slice(-4)) == 4
    assert np.shares_memory(part.close, c.close)


# -------------------------------------------------------------------------- timeframes


@pytest.mark.parametrize(
    ("tf", "ms"),
    [
        ("1m", 60_000),
        ("15m", 900_000),
        ("1h", 3_600_000),
        ("4h", 14_400_000),
        ("1d", 86_400_000),
        ("1w", 604_800_000),
    ],
)
def test_timeframe_ms_parses_minutes_hours_days_weeks(tf: str, ms: int) -> None:
    assert timeframe_ms(tf) == ms


@pytest.mark.parametrize("tf", ["", "1x", "0m", "m", "1.5h", "h1", "-1h", "1 h 2"])
def test_timeframe_ms_refuses_garbage(tf: str) -> None:
    with pytest.raises(CandleError, match="is not a positive number followed by m, h, d or w"):
        timeframe_ms(tf)


def test_bars_per_year_counts_365_days() -> None:
    assert bars_per_year(86_400_000) == 365.0
    assert bars_per_year(3_600_000) == 8760.0
    assert bars_per_year(60_000) == 525_600.0
    with pytest.raises(CandleError):
        bars_per_year(0)


def test_timeframe_ms_property_uses_the_label_or_the_median_spacing() -> None:
    assert make(3, timeframe="4h").timeframe_ms == 14_400_000
    ts = T0 + np.array([0, 5, 10, 15, 40, 45]) * MINUTE  # one gap; median spacing 5 minutes
    assert make(6, timestamp=ts).timeframe_ms == 5 * MINUTE
    with pytest.raises(CandleError, match="fewer than two bars"):
        _ = make(1).timeframe_ms


# -------------------------------------------------------------------------------- gaps


def test_gaps_are_reported_not_filled() -> None:
    # bars at minutes 0-4, then 8-9: minutes 5, 6 and 7 are missing after bar 4
    ts = T0 + np.array([0, 1, 2, 3, 4, 8, 9]) * MINUTE
    c = make(7, timestamp=ts, timeframe="1m")
    assert c.gaps() == [
        Gap(after_index=4, start_ms=T0 + 5 * MINUTE, end_ms=T0 + 8 * MINUTE, missing_bars=3)
    ]
    assert len(c) == 7


def test_gaps_infer_the_interval_when_the_timeframe_is_unknown() -> None:
    ts = T0 + np.array([0, 1, 2, 4, 5, 6, 7]) * HOUR
    gaps = make(7, timestamp=ts).gaps()
    assert gaps == [
        Gap(after_index=2, start_ms=T0 + 3 * HOUR, end_ms=T0 + 4 * HOUR, missing_bars=1)
    ]


def test_gaps_with_an_explicit_timeframe_and_uneven_spacing() -> None:
    # spacing of 2.5 minutes on a 1m grid: bars would have opened at +1 and +2
    ts = T0 + np.array([0, 150_000, 210_000])
    assert make(3, timestamp=ts).gaps(timeframe_ms=MINUTE) == [
        Gap(after_index=0, start_ms=T0 + MINUTE, end_ms=T0 + 150_000, missing_bars=2)
    ]
    with pytest.raises(CandleError, match="not positive"):
        make(3).gaps(timeframe_ms=0)


def test_no_gaps_in_a_regular_series() -> None:
    assert make(50).gaps() == []
    assert make(1).gaps() == []


# ---------------------------------------------------------------------------- resample


def test_resample_1m_to_1h_by_hand() -> None:
    # 150 one-minute bars from 00:30 UTC: buckets 00:00 (bars 0-29), 01:00 (30-89), 02:00 (90-149)
    start = 1_704_069_000_000  # 2024-01-01T00:30:00Z
    n = 150
    i = np.arange(n, dtype=np.float64)
    c = make(
        n,
        start=start,
        volume=1.0 + (i % 2),  # 1, 2, 1, 2, ...
        extra={"oi": i * 10},
        symbol="BTC/USDT",
        timeframe="1m",
    )
    h = c.resample("1h")
    hour0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
    assert h.timestamp.tolist() == [hour0, hour0 + HOUR, hour0 + 2 * HOUR]
    # open = first bar's open 100+i; close = last bar's close 100.5+i
    assert h.open.tolist() == [100.0, 130.0, 190.0]
    assert h.close.tolist() == [129.5, 189.5, 249.5]
    # high = max of 101.5+i (the last bar), low = min of 99+i (the first bar)
    assert h.high.tolist() == [130.5, 190.5, 250.5]
    assert h.low.tolist() == [99.0, 129.0, 189.0]
    # volume: 30 bars alternating 1,2 = 45; 60 bars = 90; 60 bars = 90
    assert h.volume.tolist() == [45.0, 90.0, 90.0]
    assert h.extra["oi"].tolist() == [290.0, 890.0, 1490.0]
    assert (h.symbol, h.timeframe) == ("BTC/USDT", "1h")


def test_resample_skips_buckets_with_no_bars() -> None:
    hour0 = 1_704_067_200_000
    minutes = np.r_[np.arange(60), np.arange(120, 180)]
    c = make(120, start=0, timestamp=hour0 + minutes * MINUTE, timeframe="1m")
    h = c.resample("1h")
    assert h.timestamp.tolist() == [hour0, hour0 + 2 * HOUR]
    assert h.gaps() == [
        Gap(after_index=0, start_ms=hour0 + HOUR, end_ms=hour0 + 2 * HOUR, missing_bars=1)
    ]


def test_resample_refuses_a_finer_timeframe() -> None:
    c = make(5, step=HOUR, timeframe="1h")
    with pytest.raises(
        CandleError, match="cannot resample '1h' candles to the finer timeframe '1m'"
    ):
        c.resample("1m")


def test_resample_refuses_a_timeframe_that_is_not_a_whole_multiple() -> None:
    c = make(5, step=HOUR, timeframe="1h")
    with pytest.raises(CandleError, match="'90m' is not a whole multiple of the '1h' timeframe"):
        c.resample("90m")
    unlabelled = make(5, step=HOUR)
    with pytest.raises(CandleError, match="of the 3600000 ms timeframe"):
        unlabelled.resample("90m")


def test_resample_to_weeks_starts_them_on_monday() -> None:
    wednesday = 1_704_240_000_000  # 2024-01-03T00:00:00Z
    c = make(10, start=wednesday, step=86_400_000, timeframe="1d")
    w = c.resample("1w")
    monday = 1_704_067_200_000  # 2024-01-01T00:00:00Z
    assert w.timestamp.tolist() == [monday, monday + 7 * 86_400_000]
    # first week holds Wed-Sun (5 days), the second Mon-Fri (5 days)
    assert w.volume.tolist() == [5.0, 5.0]
    assert w.open.tolist() == [100.0, 105.0]


def test_resample_to_the_same_timeframe_keeps_the_bars() -> None:
    c = make(5, start=1_704_067_200_000, timeframe="1m")
    same = c.resample("1m")
    np.testing.assert_array_equal(same.timestamp, c.timestamp)
    np.testing.assert_array_equal(same.close, c.close)


def test_resample_of_tiny_series() -> None:
    assert len(make(0).resample("1h")) == 0
    one = make(1, start=1_704_067_260_000).resample("1h")
    assert one.timestamp.tolist() == [1_704_067_200_000]
    assert one.timeframe == "1h"
