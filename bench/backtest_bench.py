"""Backtest round-trip benchmark: submit a year of 1-minute candles, see it completed.

Target (issue 4): submitting a backtest of a year of 1-minute candles to seeing it completed
takes 2 s (median) or less through the real worker.

    .venv/bin/python bench/backtest_bench.py               # 5 timed runs, PostgreSQL + Redis
    .venv/bin/python bench/backtest_bench.py --runs 9 --preset ema_cross

It runs against a database of its own (``test_<name>_backtestbench`` on the server
DATABASE_URL names, default postgres://postgres@127.0.0.1:5432/quantfold, created and migrated
here, dropped at the end unless --keep-db), stores the synthetic BTC/USDT year (525,600
one-minute candles) through the candle store, and starts a real ``celery worker`` process on a
queue of its own. Each run submits through ``backtest_create`` (the service the form and the
API call: checks, snapshot, cache key, enqueue after commit) and polls PostgreSQL until the
backtest is completed. Runs differ in one parameter so none is answered from the result cache.

The breakdown comes from what the worker records per backtest (``Backtest.timings``): time in
the queue, loading candles, signals, simulation (growing prefixes for the live curve), metrics,
saving the result (curves, chart arrays, trade rows). One untimed run first shows what a worker
pays on its first task (imports, connections); the numba kernels are warmed when the worker
starts (config/celery.py), so no run pays JIT compilation.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import benchlib

benchlib.django_env()
TAG = benchlib.own_queue("backtestbench")

TARGET_S = 2.0
STAGES = ("queue", "load", "signals", "simulate", "metrics", "save")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs (median shown)")
    parser.add_argument("--preset", default="sma_cross", help="strategy preset to run")
    args = benchlib.parse_and_setup(parser)

    from accounts.services import demo_user_ensure
    from backtester.engine.language import PRESETS
    from backtester.models import Backtest
    from backtester.services.backtests import backtest_create
    from backtester.services.strategies import strategy_from_preset

    spec = PRESETS.get(args.preset)
    if spec is None or not spec.params:
        print(f"backtest bench: unknown preset {args.preset!r}", file=sys.stderr)
        return 2
    old_name, _, db_url = benchlib.bench_database("backtest")
    log = benchlib.log_dir() / f"{TAG}-worker.log"
    worker = None
    try:
        user, _ = demo_user_ensure(email="bench@example.com", password=None)
        Backtest.objects.filter(owner=user).delete()
        series = benchlib.bench_series("1m", benchlib.year_of_minutes())
        strategy = strategy_from_preset(user=user, preset=args.preset)
        varied = spec.params[0]
        print(
            f"backtest bench: {series.count:,} one-minute candles, preset {args.preset}, "
            f"{args.runs} runs varying {varied.name}; starting a worker ({log})"
        )
        t0 = time.perf_counter()
        worker = benchlib.start_workers(
            TAG,
            db_url,
            [(TAG, log)],
            ["threads", "--concurrency", "2"],
            timeout=120,
            who="the worker",
        )
        print(f"  worker ready in {time.perf_counter() - t0:.1f} s (kernels warmed at start)")

        def run(value: int) -> tuple[float, float, Backtest]:
            start = time.perf_counter()
            first, last = benchlib.series_span(series)
            backtest = backtest_create(
                user=user,
                strategy=strategy,
                series=[series],
                start=first,
                end=last,
                settings={"taker_fee": 0.001, "slippage_bps": 1.0},
                param_values={varied.name: value},
            )
            submitted = time.perf_counter() - start
            elapsed = benchlib.wait_completed(backtest, "backtest", start)
            return elapsed, submitted, backtest

        low = int(varied.low if varied.low is not None else varied.default)
        cold, _, cold_bt = run(low)
        print(f"  first task of the worker (untimed): {cold:.3f} s, {cold_bt.timings}")
        rows = []
        for i in range(args.runs):
            elapsed, submitted, bt = run(low + 1 + i)
            rows.append((elapsed, submitted, bt))
            stages = "  ".join(f"{k} {bt.timings.get(k, 0) * 1000:6.1f}" for k in STAGES)
            print(
                f"  run {i + 1}: {elapsed:.3f} s  submit {submitted * 1000:5.1f} ms  {stages} ms"
                f"  ({bt.result.trade_count} trades)"
            )
        median = statistics.median(r[0] for r in rows)
        print()
        print(
            f"submit -> completed, median of {len(rows)}: {median:.3f} s (target <= {TARGET_S} s)"
        )
        print("median breakdown (ms):")
        submit_ms = statistics.median(r[1] for r in rows) * 1000
        print(f"  {'submit (service, commit, enqueue)':<33} {submit_ms:7.1f}")
        for key in STAGES:
            value = statistics.median(r[2].timings.get(key, 0.0) for r in rows)
            print(f"  {key:<33} {value * 1000:7.1f}")
        worker_total = statistics.median(r[2].timings.get("total", 0.0) for r in rows)
        print(f"  {'worker total (load..save)':<33} {worker_total * 1000:7.1f}")
        print(
            f"  {'engine (signals+simulate+metrics)':<33} "
            f"{statistics.median(r[2].engine_seconds or 0.0 for r in rows) * 1000:7.1f}"
        )
        return 0 if median <= TARGET_S else 1
    finally:
        if worker is not None:
            benchlib.stop_workers(worker)
        benchlib.drop_database(old_name, keep=args.keep_db)


if __name__ == "__main__":
    raise SystemExit(main())
