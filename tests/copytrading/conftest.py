"""Copy-trading fixtures: the exchange test double wired in, leaders and followers, and a real
Celery worker process on the live queue that a test may kill."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from copytrading.models import Leader, Subscription
from copytrading.services import leader_publish, subscription_create
from exchanges.models import ExchangeAccount
from tests.backtester.backtest_factories import make_user
from tests.conftest import ROOT, subprocess_env
from tests.copytrading.exchange_double import ExchangeDouble, namespace_for
from tests.fakes.binance_private import FakeBinancePrivate

ADAPTER = "tests.copytrading.exchange_double.adapter_for"
RISK = "tests.copytrading.exchange_double.approve_all"
# One order book namespace per test session, so sessions sharing a Redis never meet.
os.environ.setdefault("EXCHANGE_DOUBLE_PREFIX", f"xd-{os.getpid()}-{secrets.token_hex(3)}")


@pytest.fixture(autouse=True)
def _wired_to_the_double(settings: Any) -> None:
    settings.COPYTRADING_ADAPTER_FACTORY = ADAPTER
    settings.COPYTRADING_ORDER_CHECK = RISK


def make_account(owner: Any, *, label: str | None = None, can_trade: bool = True, **kw: Any):
    return ExchangeAccount.objects.create(
        owner=owner,
        kind=kw.pop("kind", ExchangeAccount.Kind.API_KEY),
        exchange=kw.pop("exchange", "binance"),
        label=label or f"acct-{secrets.token_hex(4)}",
        can_trade=can_trade,
        status=kw.pop("status", ExchangeAccount.Status.OK),
        **kw,
    )


def double(account: ExchangeAccount) -> ExchangeDouble:
    return ExchangeDouble(namespace_for(account.pk))


@dataclass
class CopySetup:
    leader_user: Any
    leader_account: ExchangeAccount
    leader: Leader
    follower: Any
    follower_account: ExchangeAccount
    subscription: Subscription

    @property
    def leader_x(self) -> ExchangeDouble:
        return double(self.leader_account)

    @property
    def follower_x(self) -> ExchangeDouble:
        return double(self.follower_account)


def build_copy_setup(*, sub_settings: dict[str, Any] | None = None) -> CopySetup:
    """A leader with 100 000 USDT on its account and a follower with 10 000 USDT, BTC at
    60 000 and ETH at 3 000 on both; the follower copies proportionally unless told."""
    leader_user = make_user()
    leader_account = make_account(leader_user)
    lx = double(leader_account)
    lx.clear()
    lx.fund(USDT="100000")
    for x in (lx,):
        x.set_price("BTC/USDT", "60000")
        x.set_price("ETH/USDT", "3000")
    leader = leader_publish(user=leader_user, account_id=leader_account.pk, name="Steady BTC")
    follower = make_user()
    follower_account = make_account(follower)
    fx = double(follower_account)
    fx.clear()
    fx.fund(USDT="10000")
    fx.set_price("BTC/USDT", "60000")
    fx.set_price("ETH/USDT", "3000")
    sub = subscription_create(
        user=follower,
        leader_id=leader.pk,
        account_id=follower_account.pk,
        settings=sub_settings or {},
    )
    return CopySetup(leader_user, leader_account, leader, follower, follower_account, sub)


@pytest.fixture
def binance(monkeypatch: Any, settings: Any) -> Iterator[FakeBinancePrivate]:
    """The stateful fake Binance on loopback, ccxt pointed at it (``EXCHANGE_URL_OVERRIDES``,
    inherited by live workers started afterwards), copies through the real ccxt adapter (with
    a short timeout in-process) and the real risk check."""
    fake = FakeBinancePrivate()
    fake.serve()
    fake.now_ms = int(time.time() * 1000)  # its trades carry today's time
    fake.set_price("BTCUSDT", "60000")
    fake.set_price("ETHUSDT", "3000")
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", json.dumps({"binance": fake.url_overrides()}))
    settings.COPYTRADING_ADAPTER_FACTORY = (
        "tests.copytrading.test_exactly_once_binance.fast_adapter_for"
    )
    settings.COPYTRADING_ORDER_CHECK = "risk.services.order_request_check"
    try:
        yield fake
    finally:
        fake.release.set()
        fake.stop()


@pytest.fixture
def copy_setup(db: None) -> CopySetup:
    return build_copy_setup()


@pytest.fixture
def live_worker(
    django_db_blocker: Any, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start real `celery worker` processes on the live queue (wired to the exchange double
    through the environment); the test may kill them. All are stopped at the end."""
    from config.celery import app

    queue = django_settings.CELERY_LIVE_QUEUE
    with app.connection_for_write() as conn:  # tasks queued by earlier tests are stale
        conn.default_channel.queue_purge(queue)
    with django_db_blocker.unblock():
        env = subprocess_env()
    env.update(COPYTRADING_ADAPTER_FACTORY=ADAPTER, COPYTRADING_ORDER_CHECK=RISK)
    env.update(
        COPYTRADING_SUBMIT_GRACE_SECONDS=str(django_settings.COPYTRADING_SUBMIT_GRACE_SECONDS)
    )
    procs: list[subprocess.Popen[bytes]] = []

    def start(**extra_env: str) -> subprocess.Popen[bytes]:
        """``extra_env`` overrides the worker's environment (e.g. the real adapter factory)."""
        n = len(procs)
        log = tmp_path / f"live-worker-{n}.log"
        cmd = [
            sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queue,
            "--pool", "threads", "--concurrency", "4", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-n", f"live-{os.getpid()}-{n}@%h",
        ]  # fmt: skip
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env={**env, **extra_env}, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 180  # a loaded 2-core machine starts slowly
        while b"ready." not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"live worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        # (type: ignore below) where the worker logs, for the fixture's users
        proc.log_path = log  # type: ignore[attr-defined]
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def wait_until(predicate: Callable[[], Any], *, timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
