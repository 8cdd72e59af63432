"""A real Celery worker killed (SIGKILL) while a grid bot's order is on its way, then a new one.

The fake Binance books the first order placement and holds its answer (accept-then-timeout);
while the worker waits for it, the worker is killed: the level row says "planned", the exchange
has the order. The next worker's step must look it up by its client order id and not place it
again, then carry on: exactly one order per client order id on the exchange, every level's order
known, none lost.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from backtester.models import GridLevel
from backtester.tasks.grid_bots import grid_bot_step_task
from tests.bots.test_worker_kill import _wait, _worker
from tests.grid.test_restart_binance import World

pytestmark = pytest.mark.django_db(transaction=True)


def test_worker_killed_waiting_for_an_accepted_order_resumes_without_duplicate(
    binance, tmp_path
) -> None:
    w = World(binance)
    first_id = f"qfg{w.bot.pk}-0-1"
    binance.hang_seconds = 20  # longer than the worker's wait before we kill it
    binance.fault("/api/v3/order", "timeout")
    queue = f"gridkill-{os.getpid()}"
    log = tmp_path / "worker.log"
    log.write_bytes(b"")

    first = _worker(queue, log)
    try:
        grid_bot_step_task.apply_async((w.bot.pk,), queue=queue)
        _wait(lambda: binance.orders_with_client_id(first_id), 60, "the order on the exchange")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    level = GridLevel.objects.get(bot=w.bot, index=0)
    assert (level.order_status, level.client_order_id) == ("planned", first_id)
    assert w.placements()[first_id] == 1

    second = _worker(queue, log)
    try:
        grid_bot_step_task.apply_async((w.bot.pk,), queue=queue)
        _wait(
            lambda: (
                not GridLevel.objects.filter(bot=w.bot, order_status="planned").exists()
                and GridLevel.objects.filter(bot=w.bot, order_status="open").count() == 4
            ),
            90,
            "the second worker to settle and place the grid",
        )
        time.sleep(1)  # let the step finish its bookkeeping
    finally:
        second.terminate()
        second.wait(timeout=30)
    assert w.placements()[first_id] == 1
    assert len(binance.orders_with_client_id(first_id)) == 1
    assert [lv.state for lv in w.levels()] == [
        "buy_resting", "buy_resting", "sell_resting", "sell_resting"
    ]  # fmt: skip
    w.assert_consistent()
    w.bot.refresh_from_db()
    assert w.bot.status == "running", w.bot.status_reason
