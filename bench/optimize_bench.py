"""Optimization fan-out benchmark: a 1,000-combination grid on a year of hourly candles through
the real chord, with one worker process and then with two.

Target (issue 6): 10 s or less with two workers on this machine, and the report shows how the
time falls as workers are added.

    .venv/bin/python bench/optimize_bench.py                 # 3 timed runs each, 1 and 2 workers
    .venv/bin/python bench/optimize_bench.py --runs 5 --workers 1,2,3

It runs against a database of its own (``test_<name>_optimizebench`` on the server DATABASE_URL
names, default postgres://postgres@127.0.0.1:5432/quantfold, created and migrated here, dropped
at the end unless --keep-db), stores 8,760 hourly BTC/USDT candles (the demo generator's last
year) through the candle store, and for each worker count starts that many real ``celery
worker`` processes (solo pool: one task at a time per process) on a queue of its own. Each run
submits through ``optimization_create`` (the service the form calls: checks, the combinations
drawn once, the chord sent after commit) and polls PostgreSQL until the job is completed; the
wall time is submit to completed. One untimed run per worker count lets each process pay its
first-task costs (imports, connections) first; the engine's numba kernels are loaded when a
worker starts (config/celery.py).

The grid is SMA crossover fast 5..24 x slow 25..74 (20 x 50 = 1,000 combinations, all with
fast < slow), fee 0.1 %, slippage 1 bp. Chunks are chosen by the service (24 of ~42).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

import benchlib

benchlib.django_env(benchlib.STRIPE_PLACEHOLDERS)
TAG = benchlib.own_queue("optimizebench")

TARGET_S = 10.0
TARGET_WORKERS = 2
HOURS_IN_YEAR = 8760
RANGES = {"fast": {"low": 5, "high": 24, "step": 1}, "slow": {"low": 25, "high": 74, "step": 1}}
SETTINGS = {"taker_fee": 0.001, "slippage_bps": 1.0}


def _start_workers(count: int, db_url: str, log_dir: Path) -> list[subprocess.Popen[bytes]]:
    """``count`` solo-pool workers (one task at a time per process)."""
    nodes = [(f"{TAG}-{count}-{i}", log_dir / f"{TAG}-worker{count}-{i}.log") for i in range(count)]
    return benchlib.start_workers(TAG, db_url, nodes, ["solo"], timeout=180)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per worker count")
    parser.add_argument("--workers", default="1,2", help="worker counts to try, e.g. 1,2,3")
    args = benchlib.parse_and_setup(parser)
    counts = [int(v) for v in args.workers.split(",") if v.strip()]

    from accounts.services import demo_user_ensure
    from backtester.marketdata.demo import DEMO_ASSETS, generate_series
    from backtester.models import OptimizationJob
    from backtester.services.optimization import optimization_create
    from backtester.services.strategies import strategy_from_preset

    old_name, _, db_url = benchlib.bench_database("optimize")
    log_dir = benchlib.log_dir()
    workers: list[subprocess.Popen[bytes]] = []
    medians: dict[int, float] = {}
    try:
        user, _ = demo_user_ensure(email="bench@example.com", password=None)
        OptimizationJob.objects.filter(owner=user).delete()
        hourly = generate_series(DEMO_ASSETS[0])["1h"]
        series = benchlib.bench_series("1h", hourly.slice(len(hourly) - HOURS_IN_YEAR))
        strategy = strategy_from_preset(user=user, preset="sma_cross")
        print(
            f"optimize bench: {series.count:,} hourly candles, SMA crossover grid fast 5..24 x "
            f"slow 25..74, {args.runs} timed runs per worker count {counts}; load average "
            f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs"
        )

        def run() -> tuple[float, OptimizationJob]:
            start = time.perf_counter()
            first, last = benchlib.series_span(series)
            job = optimization_create(
                user=user,
                strategy=strategy,
                series=series,
                start=first,
                end=last,
                settings=SETTINGS,
                ranges=RANGES,
                objective="sharpe",
                min_trades=1,
            )
            elapsed = benchlib.wait_completed(job, "optimization", start)
            return elapsed, job

        for count in counts:
            t0 = time.perf_counter()
            workers = _start_workers(count, db_url, log_dir)
            print(f"\n{count} worker(s): ready in {time.perf_counter() - t0:.1f} s")
            warm, warm_job = run()
            print(
                f"  first run (untimed): {warm:.3f} s, {warm_job.combinations} combinations in "
                f"{warm_job.chunk_count} chunks"
            )
            times = []
            for i in range(args.runs):
                elapsed, job = run()
                times.append(elapsed)
                used = job.timings.get("workers", [])
                busy = job.timings.get("chunk_seconds", 0.0)
                print(
                    f"  run {i + 1}: {elapsed:6.3f} s  ({job.combinations} combinations, "
                    f"{job.chunk_count} chunks on {len(used)} worker(s), {busy:.2f} s of chunk "
                    f"work, best {job.best_params} sharpe {job.best_objective:.3f})"
                )
            medians[count] = statistics.median(times)
            print(f"  median of {len(times)}: {medians[count]:.3f} s")
            benchlib.stop_workers(workers)
            workers = []

        print("\n1,000-combination grid, submit -> completed (median):")
        base = medians.get(counts[0])
        for count in counts:
            speedup = f"  x{base / medians[count]:.2f} vs {counts[0]}" if base else ""
            print(f"  {count} worker(s): {medians[count]:7.3f} s{speedup}")
        verdict = ""
        if TARGET_WORKERS in medians:
            ok = medians[TARGET_WORKERS] <= TARGET_S
            verdict = "PASS" if ok else "MISS"
            print(
                f"{verdict}: {medians[TARGET_WORKERS]:.3f} s with {TARGET_WORKERS} workers "
                f"(target <= {TARGET_S:.0f} s)"
            )
        else:
            print(f"NOT RUN: the target is measured with {TARGET_WORKERS} workers")
        return 0 if verdict == "PASS" else 1
    finally:
        benchlib.stop_workers(workers)
        benchlib.drop_database(old_name, keep=args.keep_db)


if __name__ == "__main__":
    raise SystemExit(main())
