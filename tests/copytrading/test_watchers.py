"""The long-running leader watcher: a real ``manage.py watch_leaders`` process streams a
leader's fills from the loopback fake Binance's user-data websocket (ccxt.pro), the fill is
stored once with source "stream", and a real live worker copies it to the follower's account
on the same fake, exactly once. Sharding splits leaders by id."""

from __future__ import annotations

import subprocess
import sys
import time
from decimal import Decimal as D

import pytest
from django.utils import timezone

from copytrading.models import CopyOrder, Leader, LeaderFill
from copytrading.watchers import leaders_for_shard
from exchanges.adapters import adapter_for
from exchanges.models import ExchangeAccount
from exchanges.trading import OrderRequest
from tests.backtester.backtest_factories import make_user
from tests.conftest import ROOT, subprocess_env
from tests.copytrading.conftest import wait_until
from tests.copytrading.test_exactly_once_binance import FAST, REAL_RISK, binance_setup


@pytest.mark.django_db
def test_leaders_are_split_over_shards_by_id_and_paper_or_retired_ones_left_out():
    user = make_user()
    keyed = []
    for i in range(4):
        account = ExchangeAccount.objects.create(
            owner=user, kind="api_key", exchange="binance", label=f"k{i}", can_trade=False
        )
        keyed.append(
            Leader.objects.create(owner=user, account=account, name=f"L{i}",
                                  published_at=timezone.now(), fill_cursor_ms=i)
        )  # fmt: skip
    paper = ExchangeAccount.objects.create(owner=user, kind="paper", exchange="paper", label="p")
    Leader.objects.create(owner=user, account=paper, name="P", published_at=timezone.now())
    Leader.objects.filter(pk=keyed[3].pk).update(status="retired")
    live = {leader.pk: leader.fill_cursor_ms for leader in keyed[:3]}
    halves = [leaders_for_shard(0, 2), leaders_for_shard(1, 2)]
    assert halves[0] | halves[1] == live
    assert not set(halves[0]) & set(halves[1])
    assert all(pk % 2 == 0 for pk in halves[0])
    assert all(pk % 2 == 1 for pk in halves[1])
    with pytest.raises(ValueError, match=r"not one of 0\.\.1"):
        leaders_for_shard(2, 2)


@pytest.mark.django_db(transaction=True)
def test_the_watcher_streams_a_leader_fill_and_the_worker_copies_it_once(
    binance, live_worker, tmp_path
):
    s = binance_setup(binance)
    live_worker(COPYTRADING_ADAPTER_FACTORY=FAST, COPYTRADING_ORDER_CHECK=REAL_RISK)
    env = subprocess_env()
    log = open(tmp_path / f"watcher-{s.leader.pk}.log", "wb")  # noqa: SIM115
    watcher = subprocess.Popen(
        [sys.executable, "manage.py", "watch_leaders", "--rescan", "1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(lambda: binance._ws_clients, timeout=90, what="the watcher's subscription")
        # The fake stamps trades with its clock: after the publication (earlier fills are
        # the leader's starting positions, not copied).
        binance.now_ms = int(time.time() * 1000) + 1000
        leader_adapter = adapter_for(s.leader.account)
        leader_adapter.create_order(
            OrderRequest("BTC/USDT", "buy", "market", D("0.5"), "leader-own-1")
        )
        order = wait_until(
            lambda: CopyOrder.objects.filter(subscription=s.subscription, state="filled").first(),
            timeout=90,
            what="the copy of the streamed fill",
        )
        time.sleep(2)  # the beat-less REST safety net and a second report change nothing
    finally:
        watcher.terminate()
        watcher.wait(timeout=30)
        log.close()
    fill = LeaderFill.objects.get(leader=s.leader)
    assert fill.source == LeaderFill.Source.STREAM
    assert (fill.side, fill.amount) == ("buy", D("0.5"))
    assert order.amount == D("0.05")
    assert [(o.client_id, o.side, o.qty) for o in s.orders()] == [
        (order.client_order_id, "BUY", D("0.05"))
    ]
    assert watcher.returncode == 0  # stopped cleanly on SIGTERM
