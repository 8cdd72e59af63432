"""Live bots per worker: how many paper bots on 1-minute candles one worker process steps a minute.

Target (issue 14): one worker process carries at least 200 paper bots on 1-minute candles
without falling behind, i.e. a round of 200 bot steps (each bot handling one newly closed
1-minute candle) finishes within the minute.

    .venv/bin/python bench/bots_bench.py                 # 200 bots, 10 rounds
    .venv/bin/python bench/bots_bench.py --bots 400 --rounds 3

It runs against a database of its own (``test_<name>_botsbench``, created, migrated, dropped
at the end unless --keep-db) and starts ONE real ``celery worker`` process with the solo pool
(one task at a time: one process, no threads) on a queue of its own. Setup: a day of demo
1-minute BTC/USDT candles in the store, N Pro users' paper accounts, each with a running
SMA-cross bot (fast 5..9, slow 20..29, so they do not all trade on the same bar) deployed
two hours back, whose indicators start a day back. The untimed first round catches up those
two hours (121 candles a bot, with their orders). Each round appends one
new 1-minute candle to the store, queues ``backtester.live_bot_step`` for every bot (what beat
does) and waits until every bot's cursor reached the new candle. Paper prices come from the
store (no network: PAPER_MARKET_EXCHANGE is empty).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import benchlib

ROOT = benchlib.ROOT
benchlib.django_env()
os.environ["PAPER_MARKET_EXCHANGE"] = ""
# Paper fills price from the stored demo candles (2024): stale by design here.
os.environ["PAPER_ALLOW_STALE_PRICES"] = "1"
TAG = benchlib.own_queue("botsbench")
os.environ["CELERY_LIVE_QUEUE"] = TAG

TARGET_BOTS = 200
MINUTE_MS = 60_000


def _start_worker(db_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, DATABASE_URL=db_url, PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", TAG,
        "--pool", "solo", "--loglevel", "WARNING",
        "--without-gossip", "--without-mingle", "-n", f"{TAG}@%h",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    from config.celery import app

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited:\n{log.read_text()[-3000:]}")
        if app.control.ping(destination=[f"{TAG}@{os.uname().nodename}"], timeout=1.0):
            return proc
    raise RuntimeError("worker did not answer")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _params(k: int) -> dict[str, int]:
    return {"fast": 5 + k % 5, "slow": 20 + k % 10}


def _busy_minute(minutes, rounds: int) -> int:
    """The first bar (a day in or later) from which the timed rounds' candles fire a signal
    for the most parameter pairs, so the timed rounds send orders, not only evaluate."""
    from backtester.engine.language import PRESETS, compile_strategy

    spec = PRESETS["sma_cross"]
    signals = [
        compile_strategy(spec, minutes, spec.resolve_params(_params(k)), {}) for k in range(50)
    ]
    best, best_hits = 1440, -1
    for day in range(1440, len(minutes) - rounds - 1, 5):
        hits = sum(
            bool((s.entry_long[day : day + rounds + 1] | s.exit_long[day : day + rounds + 1]).any())
            for s in signals
        )
        if hits > best_hits:
            best, best_hits = day, hits
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bots", type=int, default=TARGET_BOTS)
    parser.add_argument("--rounds", type=int, default=10)
    args = benchlib.parse_and_setup(parser)

    from accounts.models import Plan, User
    from accounts.services import plans_ensure, subscription_grant
    from backtester.engine.candles import Candles
    from backtester.marketdata import store
    from backtester.marketdata.demo import DEMO_ASSETS, generate_minutes
    from backtester.models import BotOrder, LiveBot
    from backtester.services.live_bots import bot_create
    from backtester.services.strategies import strategy_from_preset
    from backtester.tasks.live_bots import live_bot_step_task
    from exchanges.services_paper import paper_account_create

    old_name, _, db_url = benchlib.bench_database("bots", fresh=True)
    log = benchlib.log_dir() / f"{TAG}-worker.log"
    worker = None
    try:
        plans_ensure()
        minutes = generate_minutes(DEMO_ASSETS[0], days=2)
        day = _busy_minute(minutes, args.rounds)
        series = benchlib.bench_series("1m", minutes.slice(day - 1440, day))
        ts = minutes.timestamp
        t0 = time.perf_counter()
        for k in range(args.bots):
            user = User.objects.create_user(email=f"bot{k}@bench.example", password=None)
            subscription_grant(user=user, plan_code=Plan.PRO)
            account = paper_account_create(
                owner=user, label="Paper", quote="USDT", starting_balance="10000"
            )
            bot_create(
                user=user,
                account=account,
                series=series,
                strategy=strategy_from_preset(user=user, preset="sma_cross"),
                settings={"taker_fee": 0.001, "slippage_bps": 5.0, "size_value": 0.5},
                param_values=_params(k),
                # Deployed two hours back: the untimed first round catches up 121 candles
                # (bots open and close positions), then each timed round is one candle.
                start_ts=int(ts[day - 120]),
                data_start_ts=int(ts[day - 1440]),
            )
        print(
            f"bots bench: {args.bots} paper bots (SMA cross) on BTC/USDT 1m, a day of "
            f"history each; setup {time.perf_counter() - t0:.1f} s; starting one solo worker"
        )
        worker = _start_worker(db_url, log)
        ids = list(LiveBot.objects.values_list("pk", flat=True))
        rounds = []
        for r in range(args.rounds + 1):
            i = day + r
            bar = minutes.slice(i, i + 1)
            store.write_candles(series=series, candles=Candles(
                bar.timestamp, bar.open, bar.high, bar.low, bar.close, bar.volume,
                symbol="BTC/USDT", timeframe="1m",
            ))  # fmt: skip
            orders_before = BotOrder.objects.count()
            start = time.perf_counter()
            for pk in ids:
                live_bot_step_task.apply_async((pk,), queue=TAG)
            target = int(ts[i])
            while LiveBot.objects.filter(pk__in=ids, cursor_ts=target).count() < len(ids):
                if LiveBot.objects.filter(pk__in=ids, status=LiveBot.Status.ERROR).exists():
                    bad = LiveBot.objects.filter(status=LiveBot.Status.ERROR).first()
                    raise RuntimeError(f"bot failed: {bad.status_reason if bad else ''}")
                time.sleep(0.05)
            elapsed = time.perf_counter() - start
            label = "catch-up round (untimed)" if r == 0 else f"round {r}"
            per_bot = elapsed / len(ids) * 1000
            sent = BotOrder.objects.count() - orders_before
            print(
                f"  {label}: {len(ids)} steps in {elapsed:.2f} s ({per_bot:.1f} ms/bot, "
                f"{sent} orders)"
            )
            if r:
                rounds.append(elapsed)
        median = statistics.median(rounds)
        per_minute = len(ids) / median * 60.0
        print()
        print(
            f"one worker process steps {per_minute:,.0f} paper bots per minute on 1-minute "
            f"candles (median round {median:.2f} s for {len(ids)} bots; target >= {TARGET_BOTS})"
        )
        return 0 if per_minute >= TARGET_BOTS and median < 60.0 else 1
    finally:
        if worker is not None:
            _stop(worker)
        benchlib.drop_database(old_name, keep=args.keep_db)


if __name__ == "__main__":
    raise SystemExit(main())
