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
# A queue, cache prefix and channel prefix of our own: other workers on the same Redis must
# not take these tasks, and ours must not take theirs.
TAG = f"backtestbench-{os.getpid()}"
os.environ["CELERY_TASK_DEFAULT_QUEUE"] = TAG
os.environ["CACHE_KEY_PREFIX"] = TAG
os.environ["CHANNELS_PREFIX"] = TAG

TARGET_S = 2.0
YEAR_OF_MINUTES = 525_600
STAGES = ("queue", "load", "signals", "simulate", "metrics", "save")


def _start_worker(db_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, DATABASE_URL=db_url, PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", TAG,
        "--pool", "threads", "--concurrency", "2", "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "-n", f"{TAG}@%h",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while b"ready." not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs (median shown)")
    parser.add_argument("--preset", default="sma_cross", help="strategy preset to run")
    parser.add_argument("--keep-db", action="store_true", help="keep the bench database")
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection

    from accounts.services import demo_user_ensure
    from backtester.engine.language import PRESETS
    from backtester.marketdata import store
    from backtester.marketdata.demo import DEMO_ASSETS, generate_minutes
    from backtester.models import Backtest, MarketSeries
    from backtester.services.backtests import backtest_create
    from backtester.services.strategies import strategy_from_preset

    if connection.vendor != "postgresql":
        print("backtest bench: DATABASE_URL must name a PostgreSQL server", file=sys.stderr)
        return 2
    spec = PRESETS.get(args.preset)
    if spec is None or not spec.params:
        print(f"backtest bench: unknown preset {args.preset!r}", file=sys.stderr)
        return 2
    test_settings = connection.settings_dict.setdefault("TEST", {})
    test_settings["NAME"] = f"test_{connection.settings_dict['NAME']}_backtestbench"
    old_name = connection.settings_dict["NAME"]
    db_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=True)
    db = connection.settings_dict
    db_url = (
        f"postgres://{db.get('USER') or 'postgres'}"
        f"{':' + db['PASSWORD'] if db.get('PASSWORD') else ''}"
        f"@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db_name}"
    )
    log = Path(os.environ.get("VAR_DIR", "/tmp")) / f"{TAG}-worker.log"  # noqa: S108
    log.parent.mkdir(parents=True, exist_ok=True)
    worker = None
    try:
        user, _ = demo_user_ensure(email="bench@example.com", password=None)
        Backtest.objects.filter(owner=user).delete()
        MarketSeries.objects.filter(exchange="bench").delete()
        series = MarketSeries.objects.create(
            exchange="bench", symbol="BTC/USDT", timeframe="1m", source="demo", synthetic=True
        )
        candles = generate_minutes(DEMO_ASSETS[0]).slice(0, YEAR_OF_MINUTES)
        store.write_candles(series=series, candles=candles)
        series.refresh_from_db()
        strategy = strategy_from_preset(user=user, preset=args.preset)
        varied = spec.params[0]
        print(
            f"backtest bench: {series.count:,} one-minute candles, preset {args.preset}, "
            f"{args.runs} runs varying {varied.name}; starting a worker ({log})"
        )
        t0 = time.perf_counter()
        worker = _start_worker(db_url, log)
        print(f"  worker ready in {time.perf_counter() - t0:.1f} s (kernels warmed at start)")

        def run(value: int) -> tuple[float, float, Backtest]:
            start = time.perf_counter()
            assert series.first_ts is not None
            assert series.last_ts is not None
            backtest = backtest_create(
                user=user,
                strategy=strategy,
                series=[series],
                start=int(series.first_ts),
                end=int(series.last_ts),
                settings={"taker_fee": 0.001, "slippage_bps": 1.0},
                param_values={varied.name: value},
            )
            submitted = time.perf_counter() - start
            while True:
                backtest.refresh_from_db(fields=["status", "error"])
                if not backtest.is_active:
                    break
                time.sleep(0.005)
            elapsed = time.perf_counter() - start
            backtest.refresh_from_db()
            if backtest.status != Backtest.Status.COMPLETED:
                raise RuntimeError(f"backtest {backtest.pk} {backtest.status}: {backtest.error}")
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
            _stop(worker)
        connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=args.keep_db)


if __name__ == "__main__":
    raise SystemExit(main())
