"""``order_checks_batch`` decides exactly as ``order_check`` called once per order, in order:
the same scenario (several users in every trading state, limits hit, rate limits, heat,
minimum order value, breakers that trip mid-batch, expired latches, account overrides, books
read through the fake Binance, an unreadable account) is checked one by one, rolled back, and
checked as a batch; decisions, stored denials, latched states and the rate-limit bookkeeping
must match field by field. Real PostgreSQL and Redis."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import transaction

from exchanges.adapters import adapter_for
from risk import services
from risk.models import DeniedOrder, EquitySnapshot, StateTransition, TradingState
from risk.rules import OpenPosition, Proposal
from risk.services import CheckItem
from tests.backtester.backtest_factories import make_user
from tests.risk.test_services import NOON, account, linked

pytestmark = pytest.mark.django_db

BTC = Proposal("BTC/USDT", 1, 100.0, qty=1.0)
FLAT: list[OpenPosition] = []


def _state(user, acct, state, *, until=None, code="test"):
    TradingState.objects.create(
        owner=user, account=acct, state=state, code=code, reason=f"{state} for the test",
        latched_until=until,
    )  # fmt: skip


def _snap(user, acct, equity, at):
    EquitySnapshot.objects.create(owner=user, account=acct, equity=Decimal(equity), at=at)


def scenario(fake) -> list[CheckItem]:
    items: list[CheckItem] = []

    def add(user, acct, proposal, equity=10_000.0, positions=FLAT, **kw):
        items.append(CheckItem(user, acct, proposal, positions, equity, "copy", **kw))

    # An active user: approved, sized down by heat, under the minimum, then rate-limited
    # (three orders a minute, one already counted in Redis): the batch counts its own approvals.
    active = make_user()
    a = account(active)
    services.risk_profile_update(
        user=active, values={"max_orders_per_minute": 3, "min_order_notional": 20.0}
    )
    cache.set(services._order_times_key(active.pk, a.pk), [services._ms(NOON) - 5_000], 120)
    held = [OpenPosition("BTC/USDT", 10.0, 100.0, stop=50.0)]
    add(active, a, Proposal("ETH/USDT", 1, 10.0, qty=1.0))  # 10 < the 20 minimum
    add(active, a, Proposal("ETH/USDT", 1, 10.0, qty=100.0, stop=9.0), positions=held)
    add(active, a, Proposal("ETH/USDT", 1, 10.0, qty=300.0, stop=9.0), positions=held)
    add(active, a, BTC)
    add(active, a, BTC)  # the fourth approval in a minute: rate_limited
    # A second account of the same user with its own override (max order value).
    a2 = account(active, "second")
    services.risk_profile_update(user=active, account=a2, values={"max_order_notional": 50.0})
    add(active, a2, BTC)

    # Halted by the user: new exposure denied, a reducing order passes (clipped).
    halted = make_user()
    h = account(halted)
    _state(halted, None, "halted")
    add(halted, h, BTC)
    add(halted, h, Proposal("BTC/USDT", -1, 100.0, qty=5.0, reduce_only=True),
        positions=[OpenPosition("BTC/USDT", 2.0, 100.0)])  # fmt: skip

    # Reducing on one account only: that account refuses new exposure, the other trades.
    reducing = make_user()
    r1, r2 = account(reducing), account(reducing, "other")
    _state(reducing, r1, "reducing")
    add(reducing, r1, BTC)
    add(reducing, r2, BTC)

    # A daily loss that trips mid-batch (10,000 at the day's opening, 9,000 now): the trip
    # latches the user; their next order reads the new latch.
    losing = make_user()
    lo = account(losing)
    _snap(losing, lo, "10000", NOON - timedelta(hours=13))
    _snap(losing, lo, "11000", NOON - timedelta(days=40))  # the peak
    add(losing, lo, BTC, equity=9_000.0)
    add(losing, lo, BTC, equity=9_000.0)

    # A drawdown from the peak (halts until reset), snapshots inside the period only.
    falling = make_user()
    fa = account(falling)
    _snap(falling, fa, "20000", NOON - timedelta(hours=2))
    add(falling, fa, BTC, equity=15_000.0)

    # A latch that ended an hour ago: opened by the check, then the order passes.
    expired = make_user()
    ex = account(expired)
    _state(expired, None, "halted", until=NOON - timedelta(hours=1), code="daily_loss")
    add(expired, ex, BTC)

    # Books read through the adapters: the fake Binance, and an unreadable account.
    reader = make_user()
    acct, _key = linked(reader, fake, {"USDT": "5000", "BTC": "0.01"})
    add(reader, acct, BTC, equity=None, positions=None, adapter_for=adapter_for)
    gone, gone_key = linked(reader, fake, {"USDT": "100"}, label="gone")
    fake.accounts.pop(gone_key.api_key)  # the exchange no longer knows the key
    add(reader, gone, BTC, equity=None, positions=None, adapter_for=adapter_for)
    return items


def _written(items):
    owners = sorted({i.user.pk for i in items})
    denials = [
        (d.owner_id, d.account_id, d.source, d.symbol, d.side, d.amount, d.price, d.code,
         d.reason, d.figures)
        for d in DeniedOrder.objects.filter(owner_id__in=owners).order_by("pk")
    ]  # fmt: skip
    states = sorted(
        (s.owner_id, s.account_id, s.state, s.code, s.reason, s.figures, s.latched_until)
        for s in TradingState.objects.filter(owner_id__in=owners)
    )
    moves = sorted(
        (t.owner_id, t.from_state, t.to_state, t.code, t.actor)
        for t in StateTransition.objects.filter(owner_id__in=owners)
    )
    keys = [services._order_times_key(i.user.pk, i.account.pk) for i in items]
    return denials, states, moves, cache.get_many(keys)


def test_a_batch_decides_and_writes_as_one_order_after_another(live_binance):
    items = scenario(live_binance)
    keys = {services._order_times_key(i.user.pk, i.account.pk) for i in items}
    times = cache.get_many(list(keys))

    point = transaction.savepoint()
    one_by_one = [
        services.order_check(
            user=i.user,
            account=i.account,
            proposal=i.proposal,
            positions=i.positions,
            equity=i.equity,
            source=i.source,
            now=NOON,
            adapter_for=i.adapter_for,
        )
        for i in items
    ]
    written_one = _written(items)
    transaction.savepoint_rollback(point)
    cache.delete_many(list(keys))
    cache.set_many(times, 120)

    batch = services.order_checks_batch(items, now=NOON)

    assert len(batch) == len(one_by_one)
    for n, (b, o) in enumerate(zip(batch, one_by_one, strict=True)):
        assert (b.status, b.qty, b.code, b.reasons, dict(b.figures), b.trips) == (
            o.status, o.qty, o.code, o.reasons, dict(o.figures), o.trips,
        ), f"item {n}"  # fmt: skip
    # The scenario covers what it says it does.
    codes = [d.code for d in batch]
    for code in ("", "min_notional", "rate_limited", "trading_halted", "reducing_only",
                 "daily_loss", "drawdown", "no_price"):  # fmt: skip
        assert code in codes, code
    assert {d.status for d in batch} == {"approved", "reduced", "denied"}
    assert _written(items) == written_one


def test_a_batch_with_another_users_account_changes_nothing():
    owner, other = make_user(), make_user()
    mine, theirs = account(owner), account(other)
    items = [CheckItem(owner, mine, BTC, FLAT, 10_000.0), CheckItem(owner, theirs, BTC, FLAT, 1.0)]
    with pytest.raises(services.ApplicationError):
        services.order_checks_batch(items, now=NOON)
    assert not DeniedOrder.objects.exists()
    assert cache.get(services._order_times_key(owner.pk, mine.pk)) is None
