"""A real Celery worker killed (SIGKILL) in the middle of a bot's step, then a new worker.

The bot catches up on two days of 1-minute candles in one step (SMA cross 5/20 trades every
few dozen bars), so the step runs long enough to be killed after several orders. The second
worker's step must reconcile and finish: every stored order reached the paper exchange exactly
once, nothing is left planned or unknown, and the account holds exactly the bot's position.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal

import pytest

from backtester.models import BotOrder, LiveBot
from backtester.services.live_bots import bot_create
from backtester.tasks.live_bots import live_bot_step_task
from exchanges.paper_models import PaperBalance, PaperOrder
from tests.backtester.backtest_factories import make_strategy, make_user
from tests.bots.helpers import demo_candles, paper_account, store_series
from tests.conftest import ROOT, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)


def _worker(queue: str, log) -> subprocess.Popen[bytes]:
    env = subprocess_env()
    # The paper exchange prices from the stored (2024) candles: stale, so allow them.
    env["PAPER_ALLOW_STALE_PRICES"] = "1"
    cmd = [
        sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queue,
        "--pool", "solo", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
        "-n", f"{queue}@%h",
    ]  # fmt: skip
    out = open(log, "ab")  # noqa: SIM115 - the worker writes it until it dies
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while b"ready." not in log.read_bytes():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "worker did not start"
        time.sleep(0.2)
    return proc


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_worker_killed_mid_step_no_duplicate_no_lost_position(tmp_path) -> None:
    user = make_user(pro=True)
    candles = demo_candles(days=2, timeframe="1m")
    series = store_series(candles)
    account = paper_account(user)
    ts = candles.timestamp
    bot = bot_create(
        user=user,
        account=account,
        series=series,
        strategy=make_strategy(user, "sma_cross"),
        settings={"size_value": 0.5, "taker_fee": 0.001},
        param_values={"fast": 5, "slow": 20},
        start_ts=int(ts[0]),
        data_start_ts=int(ts[0]),
    )
    queue = f"botkill-{os.getpid()}"
    log = tmp_path / "worker.log"
    log.write_bytes(b"")

    first = _worker(queue, log)
    try:
        live_bot_step_task.apply_async((bot.pk,), queue=queue)
        _wait(lambda: BotOrder.objects.filter(bot=bot).count() >= 6, 180, "six orders")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    bot.refresh_from_db()
    assert bot.cursor_ts is None or bot.cursor_ts < int(ts[-2]), "killed too late: step finished"
    orders_at_kill = BotOrder.objects.filter(bot=bot).count()

    second = _worker(queue, log)
    try:
        live_bot_step_task.apply_async((bot.pk,), queue=queue)
        # Every candle closed long ago (2024): the step runs to the last one.
        _wait(
            lambda: (
                LiveBot.objects.get(pk=bot.pk).cursor_ts == int(ts[-1])
                or LiveBot.objects.get(pk=bot.pk).status != LiveBot.Status.RUNNING
            ),
            300,
            "the second worker to finish the catch-up",
        )
    finally:
        second.terminate()
        second.wait(timeout=30)

    bot.refresh_from_db()
    assert bot.status == LiveBot.Status.RUNNING, bot.status_reason
    orders = list(BotOrder.objects.filter(bot=bot))
    assert len(orders) > orders_at_kill
    assert not [o for o in orders if o.state in BotOrder.OPEN_STATES]
    sent = [o for o in orders if o.state == BotOrder.State.FILLED]
    paper = list(PaperOrder.objects.filter(account=account))
    # Exactly once: one paper order per filled bot order, no paper order without a row.
    assert sorted(p.client_order_id for p in paper) == sorted(o.client_order_id for o in sent)
    held = PaperBalance.objects.filter(account=account, asset="SOL").first()
    assert (held.free if held else Decimal(0)) == bot.position
    bought = sum((o.filled for o in sent if o.side == "buy"), Decimal(0))
    sold = sum((o.filled for o in sent if o.side == "sell"), Decimal(0))
    assert bought - sold == bot.position
