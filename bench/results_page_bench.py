"""Results page benchmark: a year of 1-minute candles, its backtest result rendered.

Targets (issue 4): the results page of that backtest in 300 ms or less of server time, and 2 MB
or less of HTML and data.

    .venv/bin/python bench/results_page_bench.py               # 15 GETs, PostgreSQL from the env
    .venv/bin/python bench/results_page_bench.py --repeat 31

It runs against a database of its own (``test_<name>_resultsbench`` on the server DATABASE_URL
names, default postgres://postgres@127.0.0.1:5432/quantfold, created and migrated here, dropped
at the end unless --keep-db). It creates a Pro user, runs the engine's sma_cross preset on the
synthetic BTC/USDT year (525,600 one-minute candles from the demo generator), stores the run
with ``result_save`` (timed too: it is part of a backtest's submit-to-completed time), then
times ``--repeat`` GETs through Django's test Client:

* the backtest detail page (``backtester:backtest_detail``), when the runs module provides it;
* the results section alone: ``results_context`` + ``_results.html`` inside base.html (what the
  detail page adds for a completed backtest), always;
* the trade list fragment (page 2 sorted by P&L), the other request the page makes.

Medians and sizes are printed; the exit status is 1 when a target is missed.
"""

from __future__ import annotations

import statistics
import sys
import time

import benchlib

benchlib.django_env({"DJANGO_DEBUG": "0", "STATIC_MANIFEST": "0"})

TARGET_MS = 300.0
TARGET_BYTES = 2_000_000


def _timed_gets(client, url: str, repeat: int) -> tuple[list[float], int]:
    response = client.get(url)  # warm: imports, template loading, connection
    if response.status_code != 200:
        raise SystemExit(f"GET {url} answered {response.status_code}")
    times = []
    size = len(response.content)
    for _ in range(repeat):
        t0 = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - t0) * 1000)
        size = len(response.content)
    return times, size


def _line(label: str, times: list[float], size: int | None = None) -> str:
    med = statistics.median(times)
    text = f"{label:<34} median {med:7.1f} ms  (min {min(times):.1f}, max {max(times):.1f})"
    if size is not None:
        text += f"  {size / 1e6:.2f} MB"
    return text


def main() -> int:
    args = benchlib.parse_repeat(__doc__, default=15, help_text="GETs to time (median shown)")

    from django.http import HttpResponse
    from django.template import engines
    from django.test import Client, override_settings
    from django.urls import NoReverseMatch, include, path, reverse

    old_name, _, _ = benchlib.bench_database("results")
    try:
        from accounts.models import User
        from accounts.services import subscription_grant
        from backtester.engine.language import PRESETS
        from backtester.engine.run import run_backtest
        from backtester.engine.simulate import SimConfig
        from backtester.models import Backtest, BacktestResult, MarketSeries
        from backtester.results.store import result_save
        from backtester.results.views import results_context

        candles = benchlib.year_of_minutes()
        spec = PRESETS["sma_cross"]
        config = SimConfig(taker_fee=0.001)
        run_backtest(candles.slice(0, 5000), spec, {}, config)  # numba compile / cache load
        run = run_backtest(candles, spec, {}, config)

        User.objects.filter(email="results-bench@example.com").delete()
        user = User.objects.create_user(email="results-bench@example.com", password=None)
        subscription_grant(user=user)
        series, _ = MarketSeries.objects.get_or_create(
            owner=None,
            exchange="bench",
            symbol="BTC/USDT",
            timeframe="1m",
            defaults={"source": MarketSeries.Source.DEMO, "synthetic": True},
        )
        backtest = Backtest.objects.create(
            owner=user,
            name="Results bench: SMA cross, a year of 1m",
            series_order=[series.pk],
            timeframe="1m",
            start_ts=int(candles.timestamp[0]),
            end_ts=int(candles.timestamp[-1]),
            spec={"name": spec.name, "entry_long": spec.entry_long, "exit_long": spec.exit_long},
            param_values=dict(run.params),
            settings={"taker_fee": 0.001},
            status=Backtest.Status.COMPLETED,
            progress=1.0,
            candle_count=len(candles),
            engine_seconds=run.engine_seconds,
        )
        backtest.series.set([series])
        save_times = []
        for _ in range(3):
            t0 = time.perf_counter()
            result_save(backtest=backtest, run=run, candles=candles)
            save_times.append((time.perf_counter() - t0) * 1000)
        result = BacktestResult.objects.get(backtest=backtest)

        print(
            f"results bench: {len(candles):,} bars, {run.sim.trades.shape[0]:,} trades, "
            f"curves blob {len(bytes(result.curves)) / 1e6:.2f} MB ({result.curves_codec})"
        )
        print(_line("result_save (3 saves)", save_times))

        client = Client()
        client.force_login(user)
        ok = True

        page = engines["django"].from_string(
            '{% extends "base.html" %}{% block content %}'
            '{% include "backtester/results/_results.html" %}{% endblock %}'
        )

        def results_section(request, pk):
            b = Backtest.objects.get(pk=pk, owner=request.user)
            return HttpResponse(page.render(results_context(b), request))

        bench_urls = type(sys)("results_bench_urls")
        bench_urls.urlpatterns = [  # type: ignore[attr-defined]  # a module made here
            path("bench/results/<int:pk>/", results_section),
            path("", include("config.urls")),
        ]
        sys.modules["results_bench_urls"] = bench_urls

        try:
            detail = reverse("backtester:backtest_detail", kwargs={"pk": backtest.pk})
        except NoReverseMatch:
            detail = ""
        if detail:
            times, size = _timed_gets(client, detail, args.repeat)
            print(_line("GET detail page", times, size))
            ok &= statistics.median(times) <= TARGET_MS and size <= TARGET_BYTES
        else:
            print("GET detail page                    (backtester:backtest_detail not there yet)")

        with override_settings(ROOT_URLCONF="results_bench_urls"):
            times, size = _timed_gets(client, f"/bench/results/{backtest.pk}/", args.repeat)
            print(_line("GET results section in base.html", times, size))
            ok &= statistics.median(times) <= TARGET_MS and size <= TARGET_BYTES
            trades_url = reverse("backtester:backtest_trades", kwargs={"pk": backtest.pk})
            times, size = _timed_gets(
                client, f"{trades_url}?sort=-pnl&page=2&fragment=1", args.repeat
            )
            print(_line("GET trades fragment (sorted)", times, size))

        print(
            f"targets: {TARGET_MS:.0f} ms server time, {TARGET_BYTES / 1e6:.0f} MB of HTML and "
            f"data: {'met' if ok else 'MISSED'}"
        )
        return 0 if ok else 1
    finally:
        benchlib.drop_database(old_name, keep=args.keep_db)


if __name__ == "__main__":
    sys.exit(main())
