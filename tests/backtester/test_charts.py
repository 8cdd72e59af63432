"""Downsampling and the chart figures: numbers checked against hand-computed cases."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from backtester.models import BacktestResult, BacktestTrade
from backtester.results import charts
from backtester.results.downsample import (
    chart_candles,
    lttb,
    lttb_indices,
    minmax_indices,
    ohlc_buckets,
)
from backtester.results.store import result_chart_arrays
from backtester.results.views import result_figures
from tests.backtester.test_results_support import (
    START_MS,
    make_backtest,
    make_user,
    synthetic_candles,
)

DAY = 86_400_000


def _ms(y: int, m: int, d: int) -> int:
    return int(datetime(y, m, d, tzinfo=UTC).timestamp() * 1000)


# --- LTTB ---------------------------------------------------------------------------------


def test_lttb_picks_the_point_with_the_largest_triangle_in_a_hand_checked_case():
    # 6 points into 4: buckets {1,2} and {3,4}. Bucket 1 against (0,0) and the mean (3.5, 1)
    # of {3,4}: areas |x - 3.5y| are 6 (j=1) and 1.5 (j=2). Bucket 2 against (1,2) and the
    # last point (5,0): areas |-4(y-2) + 2(1-x)| are 8 (j=3) and 6 (j=4).
    y = [0.0, 2.0, 1.0, 3.0, -1.0, 0.0]
    assert lttb_indices(np.arange(6), y, 4).tolist() == [0, 1, 3, 5]
    xs, ys = lttb(np.arange(6), y, 4)
    assert xs.tolist() == [0, 1, 3, 5]
    assert ys.tolist() == [0.0, 2.0, 3.0, 0.0]


def test_lttb_keeps_the_spike_of_a_flat_series():
    assert lttb_indices(np.arange(5), [0, 1, 0, 5, 0], 3).tolist() == [0, 3, 4]


def test_lttb_keeps_first_and_last_and_returns_exactly_threshold_points():
    rng = np.random.default_rng(3)
    x = START_MS + 60_000 * np.arange(525_600, dtype=np.int64)
    y = 10_000 * np.exp(np.cumsum(rng.normal(0, 0.001, x.size)))
    idx = lttb_indices(x, y, 2000)
    assert idx.size == 2000
    assert idx[0] == 0
    assert idx[-1] == x.size - 1
    assert np.all(np.diff(idx) > 0)


def test_lttb_returns_every_point_when_there_are_fewer_than_the_threshold():
    assert lttb_indices(np.arange(10), np.arange(10.0), 50).tolist() == list(range(10))
    with pytest.raises(ValueError, match="at least 3"):
        lttb_indices(np.arange(10), np.arange(10.0), 2)


def test_lttb_keep_forces_the_peak_and_the_trough_into_the_output():
    rng = np.random.default_rng(11)
    y = np.cumsum(rng.normal(0, 1, 100_000))
    x = np.arange(y.size)
    peak, trough = int(np.argmax(y)), int(np.argmin(y))
    idx = lttb_indices(x, y, 100, keep=[peak, trough])
    assert peak in idx
    assert trough in idx
    assert 100 <= idx.size <= 102


def test_minmax_envelope_keeps_each_buckets_extremes_and_the_ends():
    rng = np.random.default_rng(5)
    y = rng.normal(size=10_001)
    idx = minmax_indices(y, 100)
    assert idx.size <= 202
    assert idx[0] == 0
    assert idx[-1] == y.size - 1
    assert y[idx].max() == y.max()
    assert y[idx].min() == y.min()


def test_ohlc_buckets_merge_candles_by_count():
    ts = np.arange(5, dtype=np.int64) * 10
    got = ohlc_buckets(ts, [1, 2, 3, 4, 5], [2, 9, 4, 5, 6], [0, 1, -3, 3, 4], [2, 3, 4, 5, 6], 2)
    assert got["timestamp"].tolist() == [0, 30]
    assert got["open"].tolist() == [1, 4]
    assert got["high"].tolist() == [9, 6]
    assert got["low"].tolist() == [-3, 3]
    assert got["close"].tolist() == [4, 6]


def test_a_year_of_minute_candles_becomes_at_most_1500_utc_aligned_candles_with_true_extremes():
    candles = synthetic_candles(525_600, tf_ms=60_000)
    cols, tf = chart_candles(candles, 1500)
    assert tf == "6h"
    assert len(cols["timestamp"]) <= 1500
    assert np.all(cols["timestamp"] % (6 * 3_600_000) == 0)
    assert cols["high"].max() == candles.high.max()
    assert cols["low"].min() == candles.low.min()
    assert cols["open"][0] == candles.open[0]
    assert cols["close"][-1] == candles.close[-1]


# --- analytics ------------------------------------------------------------------------------


def test_drawdown_is_the_fall_from_the_running_peak_including_the_initial_cash():
    eq = [100.0, 120.0, 90.0, 130.0, 65.0]
    assert charts.drawdown(eq).tolist() == [0.0, 0.0, -0.25, 0.0, -0.5]
    assert charts.drawdown(eq, 150.0)[0] == pytest.approx(100 / 150 - 1)


def test_monthly_returns_compound_within_each_month_from_the_previous_months_close():
    # Daily bars Jan 1 .. Mar 31 2024; equity wanders inside each month and closes January at
    # 11,000 (+10 % on 10,000), February at 9,900 (-10 %), March at 10,395 (+5 %).
    ts = np.arange(_ms(2024, 1, 1), _ms(2024, 4, 1), DAY, dtype=np.int64)
    month = ts.astype("datetime64[ms]").astype("datetime64[M]").astype(int)
    rng = np.random.default_rng(2)
    eq = 10_000 + rng.uniform(-500, 500, ts.size)
    ends = {month[0]: 11_000.0, month[0] + 1: 9_900.0, month[0] + 2: 10_395.0}
    for m, value in ends.items():
        eq[np.flatnonzero(month == m)[-1]] = value
    months, rets = charts.monthly_returns(ts, eq, 10_000.0)
    assert rets == pytest.approx([0.10, -0.10, 0.05])
    # The same number from compounding the per-bar returns of (initial cash, *equity).
    jan = np.flatnonzero(month == month[0])
    bar_rets = np.diff(np.r_[10_000.0, eq]) / np.r_[10_000.0, eq][:-1]
    assert np.prod(1 + bar_rets[jan]) - 1 == pytest.approx(0.10)
    fig = charts.monthly_figure({"chart.monthly.month": months, "chart.monthly.ret": rets})
    (trace,) = fig["data"]
    assert trace["y"] == ["2024"]
    assert trace["z"][0][:3] == pytest.approx([0.10, -0.10, 0.05])
    assert trace["z"][0][3:] == [None] * 9
    assert trace["text"][0][:3] == ["+10.0%", "-10.0%", "+5.0%"]


def test_monthly_matrix_spans_years_with_empty_months_as_none():
    dec_2023 = (2023 - 1970) * 12 + 11
    years, grid = charts.monthly_matrix([dec_2023, dec_2023 + 2], [0.02, -0.01])
    assert years == [2023, 2024]
    assert grid[0][11] == 0.02
    assert grid[1][1] == -0.01
    assert grid[1][0] is None


def test_trade_histogram_counts_every_trade_and_never_mixes_losers_and_winners():
    rets = np.array([-0.05, -0.01, -0.001, 0.002, 0.01, 0.03, 0.031, 0.2])
    edges, counts = charts.trade_histogram(rets)
    assert counts.sum() == rets.size
    assert np.any(np.isclose(edges, 0.0))
    fig = charts.histogram_figure({"chart.hist.edges": edges, "chart.hist.counts": counts})
    bar = fig["data"][0]
    losers = sum(c for c, x in zip(bar["y"], bar["x"], strict=True) if x < 0)
    assert losers == 3


def test_num_list_turns_non_finite_values_into_json_null():
    values = charts.num_list([1.23456789012, float("nan"), float("inf"), -2.0])
    assert values[1] is None
    assert values[2] is None
    assert values[0] == pytest.approx(1.23456789, abs=1e-8)
    json.dumps(values, allow_nan=False)


def test_compare_figure_scales_each_curve_to_100_at_its_initial_capital():
    fig = charts.compare_figure(
        [
            {"name": "a", "x": [1, 2], "y": [10_000.0, 12_000.0], "initial_cash": 10_000.0},
            {"name": "b", "x": [1, 2], "y": [500.0, 450.0], "initial_cash": 500.0},
        ]
    )
    assert [t["y"] for t in fig["data"]] == [[100.0, 120.0], [100.0, 90.0]]
    assert [t["name"] for t in fig["data"]] == ["a", "b"]


def test_candle_markers_sit_at_the_trade_times_and_prices_with_a_triangle_per_side():
    arrays = {
        "chart.candles.0.timestamp": np.array([0, 10, 20]),
        "chart.candles.0.open": np.array([1.0, 2.0, 3.0]),
        "chart.candles.0.high": np.array([2.0, 3.0, 4.0]),
        "chart.candles.0.low": np.array([0.5, 1.5, 2.5]),
        "chart.candles.0.close": np.array([2.0, 3.0, 3.5]),
    }
    trades = [
        {"side": 1, "entry_ms": 3, "exit_ms": 12, "entry_price": 1.5, "exit_price": 2.9,
         "pnl": 14.0, "ret": 0.93},
        {"side": -1, "entry_ms": 12, "exit_ms": 21, "entry_price": 2.9, "exit_price": 3.1,
         "pnl": -2.0, "ret": -0.07},
    ]  # fmt: skip
    fig = charts.candles_figure(arrays, 0, symbol="X/Y", timeframe="1h", trades=trades)
    by_name = {t["name"]: t for t in fig["data"]}
    assert by_name["X/Y"]["type"] == "candlestick"
    assert by_name["Long entry"]["x"] == [3]
    assert by_name["Long entry"]["y"] == [1.5]
    assert by_name["Long exit"]["x"] == [12]
    assert by_name["Long exit"]["y"] == [2.9]
    assert by_name["Short entry"]["x"] == [12]
    assert by_name["Short entry"]["y"] == [2.9]
    assert by_name["Short exit"]["x"] == [21]
    assert by_name["Short exit"]["y"] == [3.1]
    assert by_name["Long entry"]["marker"]["symbol"] == "triangle-up"
    assert by_name["Short entry"]["marker"]["symbol"] == "triangle-down"
    assert by_name["Short exit"]["customdata"] == [[-2.0, -0.07]]


# --- figures of a saved result --------------------------------------------------------------


@pytest.mark.django_db
def test_saved_chart_arrays_are_bounded_and_keep_the_equity_extremes_and_the_deepest_drawdown():
    user = make_user()
    backtest, run, _ = make_backtest(user, n=30_000, tf_ms=60_000)
    result = BacktestResult.objects.get(backtest=backtest)
    arrays, meta = result_chart_arrays(result)
    eq = run.sim.equity
    assert arrays["chart.equity.x"].size <= charts.CURVE_POINTS + 2
    assert arrays["chart.equity.y"].max() == eq.max()
    assert arrays["chart.equity.y"].min() == eq.min()
    assert arrays["chart.equity.x"][0] == run.sim.timestamp[0]
    assert arrays["chart.equity.x"][-1] == run.sim.timestamp[-1]
    assert arrays["chart.drawdown.y"].min() == pytest.approx(run.metrics["max_drawdown"])
    assert arrays["chart.hist.counts"].sum() == run.sim.trades.shape[0]
    assert meta["symbols"] == ["BTC/USDT"]
    assert len(arrays["chart.candles.0.timestamp"]) <= charts.MAX_CANDLES


@pytest.mark.django_db
def test_result_figures_put_the_markers_on_the_stored_trades():
    user = make_user()
    backtest, _, _ = make_backtest(user)
    result = BacktestResult.objects.get(backtest=backtest)
    figures = {f["id"]: f["figure"] for f in result_figures(backtest, result)}
    assert set(figures) == {"equity", "drawdown", "candles-0", "monthly", "histogram"}
    traces = {t["name"]: t for t in figures["candles-0"]["data"]}
    longs = BacktestTrade.objects.filter(backtest=backtest, side=1).order_by("seq")
    assert traces["Long entry"]["y"] == [t.entry_price for t in longs]
    assert traces["Long exit"]["x"] == [int(t.exit_time.timestamp() * 1000) for t in longs]
    shorts = BacktestTrade.objects.filter(backtest=backtest, side=-1).order_by("seq")
    assert traces["Short entry"]["x"] == [int(t.entry_time.timestamp() * 1000) for t in shorts]
    json.dumps(figures, allow_nan=False)


@pytest.mark.django_db
def test_markers_are_capped_at_the_trades_with_the_largest_pnl(monkeypatch):
    user = make_user()
    backtest, _, _ = make_backtest(user)
    monkeypatch.setattr(charts, "MAX_MARKER_TRADES", 4)
    result = BacktestResult.objects.get(backtest=backtest)
    fig = next(f for f in result_figures(backtest, result) if f["id"] == "candles-0")
    markers = [t for t in fig["figure"]["data"] if t["meta"]["role"] == "entry"]
    pnls = sorted(abs(p) for t in markers for p, _ in t["customdata"])
    biggest = sorted(abs(t.pnl) for t in BacktestTrade.objects.filter(backtest=backtest))[-4:]
    assert pnls == biggest
    assert "the 4 trades with the largest P&L of 12" in fig["note"]


# --- charts.js ------------------------------------------------------------------------------


@pytest.mark.browser
def test_append_equity_grows_the_live_chart_and_keeps_it_light(browser):
    from pathlib import Path

    static = Path(__file__).resolve().parents[2] / "static"
    page = browser.new_page()
    try:
        page.set_content('<div id="live" style="width:600px;height:300px"></div>')
        page.add_script_tag(path=str(static / "vendor/plotly/plotly.min.js"))
        page.add_script_tag(path=str(static / "js/charts.js"))
        count = page.evaluate(
            """async () => {
                const xs = [], ys = [];
                for (let i = 0; i < 3000; i++) {
                    xs.push(1704067200000 + i * 60000);
                    ys.push(10000 + i);
                }
                await QFCharts.appendEquity("live", xs.slice(0, 10), ys.slice(0, 10));
                const first = document.getElementById("live").data[0].x.length;
                await QFCharts.appendEquity("live", xs.slice(10), ys.slice(10));
                const more = xs.map((x) => x + 3000 * 60000);
                await QFCharts.appendEquity("live", more, ys);
                const el = document.getElementById("live");
                const t = el.data[0];
                return [first, t.x.length, t.x[0], t.x[t.x.length - 1], t.y[t.y.length - 1],
                        el._fullLayout.xaxis.type];
            }"""
        )
        first, total, x0, x_last, y_last, axis_type = count
        assert axis_type == "date"  # epoch ms must still read as dates after later batches
        assert first == 10
        assert 2000 <= total <= 4000
        assert x0 == 1704067200000
        assert x_last == 1704067200000 + 5999 * 60000
        assert y_last == 10000 + 2999
        assert page.locator("#live .main-svg").count() > 0
    finally:
        page.close()
