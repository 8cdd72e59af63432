"""Saving an engine run as a BacktestResult with trade rows, and reading its curves back."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from backtester.engine.simulate import EXIT_REASONS
from backtester.models import BacktestResult, BacktestTrade
from backtester.results import decode_arrays, encode_arrays, result_curves, result_save
from tests.backtester.test_results_support import make_backtest, make_user

pytestmark = pytest.mark.django_db


def test_codec_round_trips_ints_floats_and_2d_arrays_exactly():
    rng = np.random.default_rng(1)
    arrays = {
        "ts": 1_700_000_000_000 + 60_000 * np.arange(1000, dtype=np.int64),
        "f": rng.normal(size=1000),
        "m": rng.normal(size=(50, 3)),
        "empty": np.zeros(0),
        "neg": np.array([5, -3, 7, -(2**40)], np.int64),
    }
    back = decode_arrays(encode_arrays(arrays, meta={"k": 1}))
    for name, arr in arrays.items():
        assert back[name].dtype == arr.dtype
        assert back[name].shape == arr.shape
        assert np.array_equal(back[name], arr)
    only = decode_arrays(encode_arrays(arrays), ["f"])
    assert list(only) == ["f"]


def test_result_save_then_result_curves_gives_back_the_engine_curves_exactly():
    user = make_user()
    backtest, run, candles = make_backtest(user)
    result = BacktestResult.objects.get(backtest=backtest)
    curves = result_curves(result)
    assert np.array_equal(curves["timestamp"], run.sim.timestamp)
    assert np.array_equal(curves["equity"], run.sim.equity)
    assert np.array_equal(curves["cash"], run.sim.cash)
    assert np.array_equal(curves["position"], run.sim.position)
    expected_bench = run.sim.initial_cash * candles[0].close / candles[0].close[0]
    assert np.array_equal(curves["benchmark"], expected_bench)
    assert curves["benchmark"][0] == run.sim.initial_cash


def test_result_save_stores_metrics_with_non_finite_values_as_null():
    user = make_user()
    backtest, run, _ = make_backtest(user)
    result = BacktestResult.objects.get(backtest=backtest)
    assert set(result.metrics) == set(run.metrics)  # jsonb keeps its own key order
    for key, value in run.metrics.items():
        if math.isfinite(value):
            assert result.metrics[key] == value
        else:
            assert result.metrics[key] is None
    assert result.trade_count == run.sim.trades.shape[0]


def test_trade_rows_equal_the_engine_trades_in_order():
    user = make_user()
    backtest, run, _ = make_backtest(user)
    trades = run.sim.trades
    rows = list(BacktestTrade.objects.filter(backtest=backtest).order_by("seq"))
    assert len(rows) == trades.shape[0] > 5
    assert {r.side for r in rows} == {1, -1}
    for i, (row, t) in enumerate(zip(rows, trades, strict=True)):
        assert row.seq == i + 1
        assert row.symbol == "BTC/USDT"
        assert row.side == int(t["side"])
        assert row.qty == float(t["qty"])
        assert row.entry_time == datetime.fromtimestamp(int(t["entry_time"]) / 1000, tz=UTC)
        assert row.exit_time == datetime.fromtimestamp(int(t["exit_time"]) / 1000, tz=UTC)
        assert row.entry_time.utcoffset().total_seconds() == 0
        assert row.entry_price == float(t["entry_price"])
        assert row.exit_price == float(t["exit_price"])
        assert row.fees == float(t["entry_fee"] + t["exit_fee"])
        assert row.pnl == float(t["pnl"])
        assert row.ret == float(t["return"])
        assert row.bars_held == int(t["bars_held"])
        assert row.exit_reason == EXIT_REASONS[int(t["exit_reason"])]


def test_saving_twice_replaces_the_result_and_never_duplicates_trades():
    user = make_user()
    backtest, run, candles = make_backtest(user)
    first = BacktestResult.objects.get(backtest=backtest)
    count = BacktestTrade.objects.filter(backtest=backtest).count()
    again = result_save(backtest=backtest, run=run, candles=candles[0])
    assert again.pk == first.pk
    assert BacktestResult.objects.filter(backtest=backtest).count() == 1
    assert BacktestTrade.objects.filter(backtest=backtest).count() == count


def test_open_position_at_the_end_is_stored_with_its_symbol_and_side():
    user = make_user()
    backtest, run, _ = make_backtest(user)
    result = BacktestResult.objects.get(backtest=backtest)
    pos = run.sim.open_position
    if pos is None:
        assert result.open_positions == []
    else:
        (stored,) = result.open_positions
        assert stored["symbol"] == "BTC/USDT"
        assert stored["side"] == ("long" if pos.side > 0 else "short")
        assert stored["qty"] == pos.qty
        assert stored["unrealized_pnl"] == pos.unrealized_pnl


def test_a_portfolio_run_stores_a_position_column_per_symbol_and_trade_symbols_by_order():
    user = make_user()
    backtest, run, candles = make_backtest(user, symbols=("BTC/USDT", "ETH/USDT"))
    result = BacktestResult.objects.get(backtest=backtest)
    curves = result_curves(result)
    assert curves["position"].shape == (len(candles[0]), 2)
    assert np.array_equal(curves["position"], run.sim.position)
    expected_bench = run.sim.initial_cash * candles[0].close / candles[0].close[0]
    assert np.array_equal(curves["benchmark"], expected_bench)
    symbols = list(
        BacktestTrade.objects.filter(backtest=backtest)
        .order_by("seq")
        .values_list("symbol", flat=True)
    )
    names = ("BTC/USDT", "ETH/USDT")
    assert symbols == [names[int(s)] for s in run.sim.trades["symbol"]]
    assert set(symbols) == set(names)
    assert len(result.open_positions) == len(run.sim.open_positions)


def test_candles_that_do_not_cover_the_run_are_refused_and_nothing_is_stored():
    user = make_user()
    backtest, run, candles = make_backtest(user, save=False)
    with pytest.raises(ValueError, match="do not cover"):
        result_save(backtest=backtest, run=run, candles=candles[0].slice(10, 100))
    assert not BacktestResult.objects.filter(backtest=backtest).exists()
    assert not BacktestTrade.objects.filter(backtest=backtest).exists()
