"""Scheduled equity snapshots of linked accounts (risk.equity_snapshots on the live queue),
valued through the real adapters: the ccxt adapter against the stateful fake Binance and the
paper exchange. The drawdown breaker then trips on the live account from those snapshots."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from exchanges.models import ExchangeAccount
from exchanges.paper import clear_rules_cache
from exchanges.services import account_link
from exchanges.services_paper import paper_account_create
from risk import services
from risk.models import DeniedOrder, EquitySnapshot, StateTransition, TradingState
from risk.rules import Proposal
from risk.tasks import equity_snapshots_task
from tests.backtester.backtest_factories import make_user
from tests.fakes.binance_private import FakeBinancePrivate

# The overrides file the Makefile names for the worker (read before a fixture changes the env).
OVERRIDES_SPEC = os.environ.get("EXCHANGE_URL_OVERRIDES", "")


@pytest.fixture
def fake(monkeypatch, settings) -> Iterator[FakeBinancePrivate]:
    server = FakeBinancePrivate()
    server.serve()
    server.set_price("BTCUSDT", "40000")
    server.set_price("ETHUSDT", "2000")
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", json.dumps({"binance": server.url_overrides()}))
    settings.PAPER_MARKET_EXCHANGE = "binance"  # paper prices from the fake's ticker
    clear_rules_cache()
    try:
        yield server
    finally:
        clear_rules_cache()
        server.release.set()
        server.stop()


def link(user, fake: FakeBinancePrivate, label: str, balances: dict[str, str]) -> ExchangeAccount:
    key = fake.add_account(balances=balances)
    return account_link(
        user=user, exchange="binance", label=label, api_key=key.api_key, secret=key.secret
    )


def snaps(account: ExchangeAccount) -> list[Decimal]:
    return list(
        EquitySnapshot.objects.filter(account=account)
        .order_by("pk")
        .values_list("equity", flat=True)
    )


@pytest.mark.django_db
def test_every_pro_account_is_valued_at_last_prices_and_free_or_unreadable_ones_are_skipped(
    fake, caplog
):
    user = make_user()
    # 0.25 BTC x 40,000 + 1.5 ETH x 2,000 + 1,000 USDT = 14,000
    live = link(user, fake, "live", {"USDT": "1000", "BTC": "0.25", "ETH": "1.5"})
    paper = paper_account_create(owner=user, label="paper", quote="USDT", starting_balance="5000")
    broken = link(user, fake, "broken", {"USDT": "100"})
    # A key the exchange no longer knows: the account cannot be read.
    fake.accounts.pop(next(k for k, a in fake.accounts.items() if a.free("USDT") == 100))
    free_user = make_user(pro=False)
    lapsed = ExchangeAccount.objects.create(
        owner=free_user, kind=ExchangeAccount.Kind.PAPER, exchange="paper", label="x",
        paper_quote="USDT",
    )  # fmt: skip
    caplog.set_level(logging.WARNING, logger="risk.services")

    counts = services.equity_snapshots_record_all()

    assert counts == {"recorded": 2, "skipped": 1, "no_plan": 1}
    assert snaps(live) == [Decimal("14000")]
    assert snaps(paper) == [Decimal("5000")]
    assert snaps(broken) == []  # never a zero snapshot
    assert snaps(lapsed) == []
    (message,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert f"exchange account {broken.pk} skipped" in message
    assert "Invalid API-key" in message


@pytest.mark.django_db
def test_a_holding_without_a_price_skips_the_account_rather_than_undervaluing_it(fake):
    user = make_user()
    acct = link(user, fake, "odd", {"USDT": "1000", "XYZ": "5"})  # no XYZ/USDT market
    counts = services.equity_snapshots_record_all()
    assert counts["skipped"] == 1
    assert snaps(acct) == []


@pytest.mark.django_db
def test_the_drawdown_breaker_trips_on_a_live_account_from_scheduled_snapshots(fake):
    user = make_user()
    # Only the drawdown breaker (20 %) here: the loss-per-period breakers are switched off.
    services.risk_profile_update(user=user, values={"daily_loss_limit": 0.0})
    acct = link(user, fake, "live", {"USDT": "2000", "BTC": "0.2"})  # 2,000 + 8,000 = 10,000
    services.equity_snapshots_record_all()
    fake.set_price("BTCUSDT", "45000")  # peak 11,000
    services.equity_snapshots_record_all()
    fake.set_price("BTCUSDT", "30000")  # 2,000 + 6,000 = 8,000: 27.3 % below the peak
    services.equity_snapshots_record_all()
    assert snaps(acct) == [Decimal("10000"), Decimal("11000"), Decimal("8000")]

    buy = Proposal("BTC/USDT", 1, 30000.0, qty=0.01)
    decision = services.order_check(user=user, account=acct, proposal=buy, source="manual")

    assert (decision.status, decision.code) == ("denied", "drawdown")
    state = TradingState.objects.get(owner=user, account=None)
    assert (state.state, state.code, state.latched_until) == ("halted", "drawdown", None)
    assert state.figures == {"equity": 8000.0, "peak": 11000.0, "limit": 0.2}
    transition = StateTransition.objects.get(owner=user, code="drawdown")
    assert (transition.from_state, transition.to_state) == ("active", "halted")
    assert transition.actor == "breaker:drawdown"
    assert DeniedOrder.objects.get(owner=user).code == "drawdown"
    # Latched: the price recovers, the next order is still refused until the user resets.
    fake.set_price("BTCUSDT", "45000")
    again = services.order_check(user=user, account=acct, proposal=buy)
    assert again.code == "trading_halted"


@pytest.mark.django_db(transaction=True)
def test_the_beat_task_runs_in_the_worker_on_the_live_queue(fake, settings, celery_worker_process):
    if not OVERRIDES_SPEC.startswith("@"):
        pytest.fail("run through `make test`: EXCHANGE_URL_OVERRIDES must name an overrides file")
    target = Path(OVERRIDES_SPEC[1:])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"binance": fake.url_overrides()}))
    try:
        user = make_user()
        acct = link(user, fake, "live", {"USDT": "500", "ETH": "2"})  # 500 + 4,000
        assert settings.CELERY_BEAT_SCHEDULE["risk-equity-snapshots"]["task"] == (
            "risk.equity_snapshots"
        )
        route = settings.CELERY_TASK_ROUTES["risk.equity_snapshots"]["queue"]
        assert route == settings.CELERY_LIVE_QUEUE
        equity_snapshots_task.apply_async(queue=route)
        deadline = time.monotonic() + 60
        while not snaps(acct) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert snaps(acct) == [Decimal("4500")]
    finally:
        target.unlink(missing_ok=True)
