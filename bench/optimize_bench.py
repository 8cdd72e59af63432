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
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/quantfold")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/1")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-not-secret")
os.environ.setdefault("DJANGO_SECURE", "0")
# Production settings insist on billing credentials; the bench never talks to Stripe.
os.environ.setdefault("STRIPE_SECRET_KEY", "sk_test_not_a_real_key")
os.environ.setdefault("STRIPE_WEBHOOK_SECRET", "whsec_test_not_a_real_secret")
os.environ.setdefault("STRIPE_PRICE_ID", "price_test_pro")
os.environ.setdefault("STRIPE_API_BASE", "http://127.0.0.1:9")
# A queue, cache prefix and channel prefix of our own: other workers on the same Redis must
# not take these tasks, and ours must not take theirs.
TAG = f"optimizebench-{os.getpid()}"
os.environ["CELERY_TASK_DEFAULT_QUEUE"] = TAG
os.environ["CACHE_KEY_PREFIX"] = TAG
os.environ["CHANNELS_PREFIX"] = TAG

TARGET_S = 10.0
TARGET_WORKERS = 2
HOURS_IN_YEAR = 8760
RANGES = {"fast": {"low": 5, "high": 24, "step": 1}, "slow": {"low": 25, "high": 74, "step": 1}}
SETTINGS = {"taker_fee": 0.001, "slippage_bps": 1.0}


def _start_workers(count: int, db_url: str, log_dir: Path) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ, DATABASE_URL=db_url, PYTHONUNBUFFERED="1")
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    for i in range(count):
        log = log_dir / f"{TAG}-worker{count}-{i}.log"
        cmd = [
            sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", TAG,
            "--pool", "solo", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "-n", f"{TAG}-{count}-{i}@%h",
        ]  # fmt: skip
        with open(log, "wb") as out:
            procs.append(
                (
                    subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT),
                    log,
                )
            )
    deadline = time.monotonic() + 180
    for proc, log in procs:
        while b"ready." not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop([p for p, _ in procs])
                raise RuntimeError(f"a worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
    return [p for p, _ in procs]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per worker count")
    parser.add_argument("--workers", default="1,2", help="worker counts to try, e.g. 1,2,3")
    parser.add_argument("--keep-db", action="store_true", help="keep the bench database")
    args = parser.parse_args()
    counts = [int(v) for v in args.workers.split(",") if v.strip()]

    import django

    django.setup()
    from django.db import connection

    from accounts.services import demo_user_ensure
    from backtester.marketdata import store
    from backtester.marketdata.demo import DEMO_ASSETS, generate_series
    from backtester.models import MarketSeries, OptimizationJob
    from backtester.services.optimization import optimization_create
    from backtester.services.strategies import strategy_from_preset

    if connection.vendor != "postgresql":
        print("optimize bench: DATABASE_URL must name a PostgreSQL server", file=sys.stderr)
        return 2
    test_settings = connection.settings_dict.setdefault("TEST", {})
    test_settings["NAME"] = f"test_{connection.settings_dict['NAME']}_optimizebench"
    old_name = connection.settings_dict["NAME"]
    db_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=True)
    db = connection.settings_dict
    db_url = (
        f"postgres://{db.get('USER') or 'postgres'}"
        f"{':' + db['PASSWORD'] if db.get('PASSWORD') else ''}"
        f"@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db_name}"
    )
    log_dir = Path(os.environ.get("VAR_DIR", "/tmp"))  # noqa: S108
    log_dir.mkdir(parents=True, exist_ok=True)
    workers: list[subprocess.Popen[bytes]] = []
    medians: dict[int, float] = {}
    try:
        user, _ = demo_user_ensure(email="bench@example.com", password=None)
        OptimizationJob.objects.filter(owner=user).delete()
        MarketSeries.objects.filter(exchange="bench").delete()
        series = MarketSeries.objects.create(
            exchange="bench", symbol="BTC/USDT", timeframe="1h", source="demo", synthetic=True
        )
        hourly = generate_series(DEMO_ASSETS[0])["1h"]
        store.write_candles(series=series, candles=hourly.slice(len(hourly) - HOURS_IN_YEAR))
        series.refresh_from_db()
        strategy = strategy_from_preset(user=user, preset="sma_cross")
        print(
            f"optimize bench: {series.count:,} hourly candles, SMA crossover grid fast 5..24 x "
            f"slow 25..74, {args.runs} timed runs per worker count {counts}; load average "
            f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs"
        )

        def run() -> tuple[float, OptimizationJob]:
            start = time.perf_counter()
            assert series.first_ts is not None
            assert series.last_ts is not None
            job = optimization_create(
                user=user,
                strategy=strategy,
                series=series,
                start=int(series.first_ts),
                end=int(series.last_ts),
                settings=SETTINGS,
                ranges=RANGES,
                objective="sharpe",
                min_trades=1,
            )
            while True:
                job.refresh_from_db(fields=["status", "error"])
                if not job.is_active:
                    break
                time.sleep(0.005)
            elapsed = time.perf_counter() - start
            job.refresh_from_db()
            if job.status != OptimizationJob.Status.COMPLETED:
                raise RuntimeError(f"optimization {job.pk} {job.status}: {job.error}")
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
            _stop(workers)
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
        _stop(workers)
        connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=args.keep_db)


if __name__ == "__main__":
    raise SystemExit(main())
