"""Saving an engine run as a BacktestResult with trade rows, and reading its curves back."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from backtester.engine.simulate import EXIT_REASONS
from backtester.models import BacktestResult, BacktestTrade
from backtester.results.store import decode_arrays, encode_arrays, result_curves, result_save
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
    assert pos is not None  # the reversal strategy is always in the market after its first cross
    (stored,) = result.open_positions
    assert stored["symbol"] == "BTC/USDT"
    assert stored["side"] == ("long" if pos.side > 0 else "short")
    assert stored["qty"] == pos.qty
    assert stored["entry_price"] == pos.entry_price
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


def test_without_candles_result_save_reads_them_from_the_market_data_store():
    from backtester.marketdata.store import write_candles
    from backtester.models import MarketSeries

    user = make_user()
    backtest, run, candles = make_backtest(user, save=False)
    series = MarketSeries.objects.get(pk=backtest.series_order[0])
    write_candles(series=series, candles=candles[0])
    result_save(backtest=backtest, run=run)
    curves = result_curves(BacktestResult.objects.get(backtest=backtest))
    expected = run.sim.initial_cash * candles[0].close / candles[0].close[0]
    assert np.array_equal(curves["benchmark"], expected)


def test_candles_that_do_not_cover_the_run_are_refused_and_nothing_is_stored():
    user = make_user()
    backtest, run, candles = make_backtest(user, save=False)
    with pytest.raises(ValueError, match="do not cover"):
        result_save(backtest=backtest, run=run, candles=candles[0].slice(10, 100))
    assert not BacktestResult.objects.filter(backtest=backtest).exists()
    assert not BacktestTrade.objects.filter(backtest=backtest).exists()


# --- the results section, the trade list and the compare page --------------------------------


def test_the_bulk_create_path_for_sqlite_stores_the_same_trade_rows_as_copy():
    from backtester.results.store import _insert_trades

    user = make_user()
    backtest, run, _ = make_backtest(user)
    copied = list(
        BacktestTrade.objects.filter(backtest=backtest).order_by("seq").values_list(
            "seq", "symbol", "side", "qty", "entry_time", "exit_time", "entry_price",
            "exit_price", "fees", "pnl", "ret", "bars_held", "exit_reason",
        )
    )  # fmt: skip
    other, _, _ = make_backtest(user, save=False)
    _insert_trades(other, run.sim.trades, ["BTC/USDT"], use_copy=False)
    created = list(
        BacktestTrade.objects.filter(backtest=other).order_by("seq").values_list(
            "seq", "symbol", "side", "qty", "entry_time", "exit_time", "entry_price",
            "exit_price", "fees", "pnl", "ret", "bars_held", "exit_reason",
        )
    )  # fmt: skip
    assert created == copied
    assert len(created) == run.sim.trades.shape[0]


def test_every_engine_metric_has_a_page_label_and_no_label_is_left_over():
    from backtester.engine.metrics import METRICS
    from backtester.results.metric_table import METRIC_LABELS

    assert list(METRIC_LABELS) == [m.key for m in METRICS]
    assert all(label.strip() for label in METRIC_LABELS.values())


def test_format_metric_follows_each_format():
    from backtester.results.metric_table import format_duration, format_metric

    assert format_metric(0.1234, "pct", "total_return") == "+12.34 %"
    assert format_metric(-0.05, "pct", "max_drawdown") == "-5.00 %"
    assert format_metric(0.55, "pct", "win_rate") == "55.00 %"
    assert format_metric(1.23456, "ratio") == "1.23"
    assert format_metric(12345.678, "money") == "12,345.68"
    assert format_metric(1500.0, "bars") == "1,500 bars"
    assert format_metric(42.0, "number") == "42"
    assert format_metric(None, "pct") == "—"
    assert format_metric(float("inf"), "ratio") == "—"
    assert format_duration((3 * 86400 + 4 * 3600 + 5 * 60) * 1000) == "3 d 4 h"
    assert format_duration((5 * 3600 + 12 * 60) * 1000) == "5 h 12 min"
    assert format_duration(42_000) == "42 s"
    assert format_duration((400 * 86400) * 1000) == "1 y 35 d"
    assert format_duration(3 * 86400 * 1000) == "3 d"


def test_results_context_groups_the_metrics_and_bounds_every_chart():
    from django.template.loader import render_to_string

    from backtester.results.views import results_context

    user = make_user()
    backtest, run, _ = make_backtest(user, n=20_000, tf_ms=60_000)
    ctx = results_context(backtest)["results"]
    assert ctx["available"] is True
    assert [g["label"] for g in ctx["metric_groups"]] == [
        "Returns", "Risk", "Risk-adjusted", "Drawdown", "Trades", "Benchmark (buy & hold)",
        "Costs",
    ]  # fmt: skip
    rows = {r["key"]: r for g in ctx["metric_groups"] for r in g["rows"]}
    assert rows["total_return"]["value"] == f"{run.metrics['total_return'] * 100:+,.2f} %"
    assert rows["trades"]["value"] == f"{run.sim.trades.shape[0]:,}"
    assert "525,600 bars per year" in ctx["annualization"]
    for fig in ctx["figures"]:
        for trace in fig["figure"]["data"]:
            for key in ("x", "y", "open", "close"):
                assert len(trace.get(key) or []) <= 2002
    assert ctx["trades"]["count"] == run.sim.trades.shape[0]
    assert len(ctx["trades"]["rows"]) == 50
    html = render_to_string("backtester/results/_results.html", {"results": ctx})
    assert 'id="chart-equity-data"' in html
    assert 'data-qf-figure="chart-candles-0-data"' in html
    assert "Open at the end" in html
    assert f"/backtests/{backtest.pk}/export/html/" in html
    assert len(html) < 600_000


def test_results_context_of_an_unfinished_backtest_says_so():
    from backtester.results.views import results_context

    user = make_user()
    backtest, _, _ = make_backtest(user, status="running", save=False)
    ctx = results_context(backtest)["results"]
    assert ctx["available"] is False
    assert "not completed" in ctx["message"]


def test_a_backtest_answered_from_the_cache_shows_the_earlier_result():
    from backtester.results.views import results_context

    user = make_user()
    original, run, _ = make_backtest(user)
    cached, _, _ = make_backtest(user, save=False)
    cached.cached_from = original
    cached.save()
    ctx = results_context(cached)["results"]
    assert ctx["available"] is True
    assert ctx["trades"]["count"] == run.sim.trades.shape[0]


def _trades_url(backtest, **params):
    from urllib.parse import urlencode

    from django.urls import reverse

    url = reverse("backtester:backtest_trades", kwargs={"pk": backtest.pk})
    return f"{url}?{urlencode(params)}" if params else url


def _seqs(response):
    import re

    body = response.content.decode()
    return [int(s) for s in re.findall(r'<tr data-seq="(\d+)">', body)]


def test_trade_list_sorts_by_any_column_and_paginates_in_sql(client):
    user = make_user()
    backtest, _, _ = make_backtest(user, n=3000)
    client.force_login(user)
    total = BacktestTrade.objects.filter(backtest=backtest).count()
    assert total > 50
    by_pnl = list(
        BacktestTrade.objects.filter(backtest=backtest)
        .order_by("-pnl", "seq")
        .values_list("seq", flat=True)
    )
    first = client.get(_trades_url(backtest, sort="-pnl"))
    assert first.status_code == 200
    assert "<html" in first.content.decode()
    assert _seqs(first) == by_pnl[:50]
    second = client.get(_trades_url(backtest, sort="-pnl", page=2, fragment=1))
    assert "<html" not in second.content.decode()
    assert _seqs(second) == by_pnl[50:100]
    by_entry = list(
        BacktestTrade.objects.filter(backtest=backtest)
        .order_by("entry_time", "seq")
        .values_list("seq", flat=True)
    )
    assert _seqs(client.get(_trades_url(backtest, sort="entry_time", fragment=1))) == by_entry[:50]
    # Unknown sort keys fall back to trade order; out-of-range pages to the last page.
    assert _seqs(client.get(_trades_url(backtest, sort="password", fragment=1))) == list(
        range(1, 51)
    )
    last = client.get(_trades_url(backtest, page=999, fragment=1))
    assert _seqs(last)[-1] == total


def test_trade_list_answers_only_its_owner(client):
    owner = make_user()
    backtest, _, _ = make_backtest(owner)
    url = _trades_url(backtest)
    response = client.get(url)
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]
    client.force_login(make_user(pro=False))
    assert client.get(url).status_code == 403
    client.force_login(make_user())
    assert client.get(url).status_code == 404
    client.force_login(owner)
    assert client.get(url).status_code == 200


def _compare_url(*ids):
    from urllib.parse import urlencode

    from django.urls import reverse

    return reverse("backtester:backtest_compare") + "?" + urlencode([("ids", i) for i in ids])


def test_compare_overlays_normalized_equity_and_lists_metrics_side_by_side(client):
    import json
    import re

    user = make_user()
    a, run_a, _ = make_backtest(user, name="Alpha run")
    b, run_b, _ = make_backtest(user, name="Beta run", n=800)
    client.force_login(user)
    response = client.get(_compare_url(a.pk, b.pk))
    assert response.status_code == 200
    html = response.content.decode()
    figure = json.loads(
        re.search(r'<script id="chart-compare-data" type="application/json">(.*?)</script>', html,
                  re.S).group(1)
    )  # fmt: skip
    assert [t["name"] for t in figure["data"]] == [f"#{a.pk} Alpha run", f"#{b.pk} Beta run"]
    first_a = figure["data"][0]["y"][0]
    assert first_a == pytest.approx(100 * run_a.sim.equity[0] / run_a.sim.initial_cash)
    last_b = figure["data"][1]["y"][-1]
    assert last_b == pytest.approx(100 * run_b.sim.equity[-1] / run_b.sim.initial_cash)
    table = html[html.index('id="compare-metrics"') :]
    assert f"{run_a.metrics['total_return'] * 100:+,.2f} %" in table
    assert f"{run_b.metrics['total_return'] * 100:+,.2f} %" in table


def test_compare_refuses_other_users_unfinished_and_malformed_ids(client):
    user = make_user()
    mine, _, _ = make_backtest(user)
    running, _, _ = make_backtest(user, status="running", save=False)
    theirs, _, _ = make_backtest(make_user())
    client.force_login(user)
    assert client.get(_compare_url(mine.pk, theirs.pk)).status_code == 404
    assert client.get(_compare_url(mine.pk, running.pk)).status_code == 404
    assert client.get(_compare_url(mine.pk, 999_999)).status_code == 404
    assert client.get(_compare_url("abc")).status_code == 400
    assert client.get(_compare_url(*range(1, 11))).status_code == 400
    chooser = client.get(_compare_url())
    assert chooser.status_code == 200
    page = chooser.content.decode()
    assert f'value="{mine.pk}"' in page
    assert f'value="{running.pk}"' not in page
    assert f'value="{theirs.pk}"' not in page


def test_compare_needs_a_signed_in_pro_user(client):
    user = make_user()
    mine, _, _ = make_backtest(user)
    url = _compare_url(mine.pk)
    response = client.get(url)
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]
    client.force_login(make_user(pro=False))
    assert client.get(url).status_code == 403
    client.force_login(user)
    assert client.get(url).status_code == 200
