"""Risk profiles, latched trading states, the pre-trade check of live orders and the kill
switch, against PostgreSQL and Redis. Exchanges are the TEST DOUBLE in tests/risk/doubles.py
(the fake-exchange version is added after the merge, see that module)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis

from exchanges.models import ExchangeAccount
from exchanges.trading import OrderTooSmall
from risk import rules, selectors, services
from risk.models import DeniedOrder, KillSwitchRun, RiskProfile, StateTransition, TradingState
from risk.rules import OpenPosition, Proposal
from risk.signals import trading_halted
from tests.backtester.backtest_factories import make_user
from tests.risk.doubles import AdapterDouble

pytestmark = pytest.mark.django_db
NOON = datetime(2024, 3, 6, 12, 0, tzinfo=UTC)


def account(user, label="main") -> ExchangeAccount:
    return ExchangeAccount.objects.create(
        owner=user, kind=ExchangeAccount.Kind.API_KEY, exchange="binance", label=label,
        can_trade=True,
    )  # fmt: skip


# --- profiles ----------------------------------------------------------------------------------


def test_a_new_user_gets_the_product_defaults():
    user = make_user()
    p = selectors.profile_for(user)
    assert p.pk is None
    assert (p.risk_per_trade, p.drawdown_limit, p.daily_loss_limit, p.max_heat) == (
        0.02,
        0.20,
        0.05,
        0.06,
    )


def test_invalid_limits_are_field_errors_and_nothing_is_saved():
    user = make_user()
    services.risk_profile_update(user=user, values={"max_heat": 0.05})
    with pytest.raises(services.LimitsInvalid) as err:
        services.risk_profile_update(
            user=user,
            values={
                "risk_per_trade": -0.01,
                "min_order_notional": 100.0,
                "max_order_notional": 50.0,
                "max_heat": 0.04,
            },
        )
    assert set(err.value.extra) == {"risk_per_trade", "max_order_notional"}
    assert RiskProfile.objects.get(owner=user).max_heat == 0.05  # unchanged


def test_an_account_override_starts_from_the_default_and_applies_only_there():
    user = make_user()
    a, b = account(user, "a"), account(user, "b")
    services.risk_profile_update(user=user, values={"max_heat": 0.05})
    services.risk_profile_update(user=user, account=a, values={"daily_loss_limit": 0.02})
    pa, pb = selectors.profile_for(user, a), selectors.profile_for(user, b)
    assert (pa.account_id, pa.max_heat, pa.daily_loss_limit) == (a.pk, 0.05, 0.02)
    assert (pb.account_id, pb.daily_loss_limit) == (None, 0.05)


def test_another_users_account_cannot_get_an_override():
    user, other = make_user(), make_user()
    with pytest.raises(services.ApplicationError):
        services.risk_profile_update(user=user, account=account(other), values={})


# --- states ------------------------------------------------------------------------------------


def test_every_transition_is_stored_with_reason_figures_and_actor():
    user = make_user()
    services.trading_state_set(
        user=user, to_state="reducing", code="manual", reason="winding down",
        figures={"equity": 9_000.0}, actor=f"user:{user.pk}",
    )  # fmt: skip
    services.trading_state_set(
        user=user, to_state="halted", code="drawdown", reason="20 % below peak",
        figures={"equity": 8_000.0, "peak": 10_000.0}, actor="breaker:drawdown",
    )  # fmt: skip
    # A laxer state does not replace a stricter latch.
    services.trading_state_set(user=user, to_state="reducing", code="x", reason="x", actor="system")
    state = TradingState.objects.get(owner=user, account=None)
    assert (state.state, state.code) == ("halted", "drawdown")
    rows = list(StateTransition.objects.filter(owner=user).order_by("pk"))
    assert [(r.from_state, r.to_state, r.actor) for r in rows] == [
        ("active", "reducing", f"user:{user.pk}"),
        ("reducing", "halted", "breaker:drawdown"),
    ]
    assert rows[1].figures == {"equity": 8_000.0, "peak": 10_000.0}
    services.trading_state_reset(user=user, state=state)
    state.refresh_from_db()
    assert state.state == "active"
    last = StateTransition.objects.filter(owner=user).order_by("-pk").first()
    assert (last.from_state, last.to_state, last.code) == ("halted", "active", "reset")


def test_resetting_another_users_state_is_not_found():
    user, other = make_user(), make_user()
    row = services.trading_state_set(
        user=other, to_state="halted", code="m", reason="m", actor="system"
    )
    with pytest.raises(services.ApplicationError) as err:
        selectors.trading_state_get(user, row.pk)
    assert err.value.status == 404


def test_halting_sends_trading_halted_after_commit(django_capture_on_commit_callbacks):
    user = make_user()
    got = []

    def receiver(**kw):
        got.append(kw)

    trading_halted.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            services.trading_state_set(
                user=user, to_state="halted", code="kill_switch", reason="stop", actor="t"
            )
    finally:
        trading_halted.disconnect(receiver)
    assert len(got) == 1
    assert (got[0]["user_id"], got[0]["account_id"], got[0]["code"]) == (
        user.pk,
        None,
        "kill_switch",
    )


# --- order_check -------------------------------------------------------------------------------


def double(**kw) -> AdapterDouble:
    d = AdapterDouble(prices={"BTC/USDT": Decimal("100"), "ETH/USDT": Decimal("10")}, **kw)
    return d


def test_daily_loss_latches_until_the_next_utc_day():
    user = make_user()
    acct = account(user)
    services.equity_snapshot_record(
        user=user, account=acct, equity=Decimal("10000"), at=NOON - timedelta(hours=13)
    )
    # Equity 9,400 today: 6 % below the day's opening 10,000 (limit 5 %).
    ex = double(cash=Decimal("9400"))
    buy = Proposal("BTC/USDT", 1, 100.0, qty=1.0)
    d = services.order_check(
        user=user, account=acct, proposal=buy, now=NOON, adapter_for=lambda a: ex
    )
    assert d.code == "daily_loss"
    state = TradingState.objects.get(owner=user, account=None)
    assert state.state == "halted"
    assert state.latched_until == datetime(2024, 3, 7, tzinfo=UTC)
    assert state.figures == {"equity": 9400.0, "start": 10000.0, "limit": 0.05}
    # Still latched later the same day even if equity recovered.
    ex.cash = Decimal("10000")
    later = services.order_check(
        user=user, account=acct, proposal=buy, now=NOON + timedelta(hours=11),
        adapter_for=lambda a: ex,
    )  # fmt: skip
    assert later.code == "trading_halted"
    # The next UTC day the latch opens by itself and the order passes.
    services.equity_snapshot_record(
        user=user, account=acct, equity=Decimal("10000"), at=NOON + timedelta(hours=12)
    )
    nxt = services.order_check(
        user=user, account=acct, proposal=buy, now=NOON + timedelta(hours=13),
        adapter_for=lambda a: ex,
    )  # fmt: skip
    assert nxt.status == "approved"
    assert StateTransition.objects.filter(owner=user, code="latch_expired").count() == 1
    denials = list(DeniedOrder.objects.filter(owner=user).order_by("pk"))
    assert [x.code for x in denials] == ["daily_loss", "trading_halted"]
    assert denials[0].figures["start"] == 10_000.0


def test_a_position_without_a_price_denies_with_no_price():
    user = make_user()
    acct = account(user)
    ex = double(held={"DOGE/USDT": Decimal("100")})  # no ticker for DOGE
    d = services.order_check(
        user=user, account=acct, proposal=Proposal("BTC/USDT", 1, 100.0, qty=1.0),
        now=NOON, adapter_for=lambda a: ex,
    )  # fmt: skip
    assert (d.status, d.code) == ("denied", "no_price")
    assert DeniedOrder.objects.get(owner=user).code == "no_price"


def test_an_unreadable_account_denies_with_no_price():
    user = make_user()
    d = services.order_check(
        user=user, account=account(user), proposal=Proposal("BTC/USDT", 1, 100.0, qty=1.0),
        now=NOON, adapter_for=lambda a: double(fail=True),
    )  # fmt: skip
    assert d.code == "no_price"


def test_positions_and_equity_passed_in_skip_the_adapter_and_heat_applies():
    user = make_user()
    acct = account(user)

    def no_adapter(a):
        raise AssertionError("the adapter must not be used")

    held = [OpenPosition("BTC/USDT", 10.0, 100.0, stop=50.0)]  # heat 500 = 5 % of 10,000
    d = services.order_check(
        user=user, account=acct, equity=10_000.0, positions=held,
        proposal=Proposal("ETH/USDT", 1, 10.0, qty=100.0, stop=9.0), now=NOON,
        adapter_for=no_adapter,
    )  # fmt: skip
    # room 6 % - 5 % = 100 money at 1 per unit -> 100 units: approved as asked.
    assert (d.status, d.qty) == ("approved", pytest.approx(100.0))
    d = services.order_check(
        user=user, account=acct, equity=10_000.0, positions=held,
        proposal=Proposal("ETH/USDT", 1, 10.0, qty=300.0, stop=9.0), now=NOON,
        adapter_for=no_adapter,
    )  # fmt: skip
    assert (d.status, d.qty) == ("reduced", pytest.approx(100.0))


def test_rate_limit_counts_approved_orders_of_the_last_minute():
    user = make_user()
    acct = account(user)
    services.risk_profile_update(user=user, values={"max_orders_per_minute": 2})
    codes = [
        services.order_check(
            user=user,
            account=acct,
            equity=10_000.0,
            positions=[],
            proposal=Proposal("BTC/USDT", 1, 100.0, qty=0.1),
            now=NOON + timedelta(seconds=s),
        ).code
        for s in (0, 10, 20, 61)
    ]
    assert codes == ["", "", "rate_limited", ""]


def test_approved_amount_is_a_decimal_rounded_to_the_lot():
    market = double().market("BTC/USDT")
    d = rules.Decision("approved", 0.123456789)
    assert services.approved_amount(decision=d, market=market, price=Decimal("100")) == Decimal(
        "0.123"
    )
    with pytest.raises(OrderTooSmall):
        services.approved_amount(
            decision=rules.Decision("approved", 0.0409), market=market, price=Decimal("100")
        )


# --- kill switch -------------------------------------------------------------------------------


def test_kill_switch_halts_cancels_closes_and_retries_the_failing_account(
    django_capture_on_commit_callbacks, settings
):
    settings.CELERY_LIVE_QUEUE = f"risk-live-test-{id(settings)}"
    user = make_user()
    a, b, c = account(user, "a"), account(user, "b"), account(user, "c")
    ex_a = double(held={"BTC/USDT": Decimal("0.5")})
    ex_a.place_resting("BTC/USDT", "buy", "0.1", "90", "open-a1")
    ex_a.place_resting("ETH/USDT", "sell", "2", "12", "open-a2")
    ex_b = double(held={"ETH/USDT": Decimal("-3.0004")})
    ex_b.place_resting("ETH/USDT", "buy", "1", "9", "open-b1")
    ex_c = double(fail=True, held={"BTC/USDT": Decimal("1")})
    ex_c_book = ex_c
    books = {a.pk: ex_a, b.pk: ex_b, c.pk: ex_c}
    halted = []
    trading_halted.connect(lambda **kw: halted.append(kw), weak=False, dispatch_uid="t-ks")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            run = services.kill_switch_engage(
                user=user, close_positions=True, adapter_for=lambda acct: books[acct.pk]
            )
    finally:
        trading_halted.disconnect(dispatch_uid="t-ks")

    assert run.status == KillSwitchRun.Status.PARTIAL
    ra, rb, rc = run.report[str(a.pk)], run.report[str(b.pk)], run.report[str(c.pk)]
    assert ra["ok"]
    assert rb["ok"]
    assert not rc["ok"]
    assert sorted(ra["cancelled"]) == ["open-a1", "open-a2"]
    assert rb["cancelled"] == ["open-b1"]
    assert "unreachable" in rc["errors"][0]
    # Positions closed at market, reduce-only, Decimal amounts rounded to the 0.001 lot.
    (sa,) = ex_a.sent
    (sb,) = ex_b.sent
    assert (sa.side, sa.type, sa.amount, sa.reduce_only) == ("sell", "market", Decimal("0.5"), True)
    assert (sb.side, sb.amount) == ("buy", Decimal("3"))
    assert sa.client_order_id == ra["closed"][0]["client_order_id"]
    assert ex_a.held["BTC/USDT"] == 0
    assert not ex_a.open_orders()
    assert not ex_b.open_orders()
    # HALTED everywhere, the signal went out for the user and each account.
    states = {s.account_id: s.state for s in TradingState.objects.filter(owner=user)}
    assert states == {None: "halted", a.pk: "halted", b.pk: "halted", c.pk: "halted"}
    assert {h["account_id"] for h in halted} == {None, a.pk, b.pk, c.pk}
    # The retry of the failed account waits on the live queue.
    r = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queued = r.lrange(settings.CELERY_LIVE_QUEUE, 0, -1)
    r.delete(settings.CELERY_LIVE_QUEUE)
    assert len(queued) == 1
    assert b"risk.kill_switch_retry" in queued[0]

    # The third exchange comes back: the retry closes its position and the run is done.
    ex_c_book.fail = False
    with django_capture_on_commit_callbacks(execute=False):
        run = services.kill_switch_retry(run_id=run.pk, adapter_for=lambda acct: books[acct.pk])
    assert run.status == KillSwitchRun.Status.DONE
    assert run.attempts == 2
    assert run.report[str(c.pk)]["ok"]
    assert ex_c.held["BTC/USDT"] == 0
    assert len(ex_a.sent) == 1  # the accounts that were done are left alone
    # Still HALTED until the user resets.
    assert TradingState.objects.get(owner=user, account=None).state == "halted"


def test_kill_switch_resolves_a_timed_out_close_by_its_client_order_id():
    user = make_user()
    acct = account(user)
    ex = double(held={"BTC/USDT": Decimal("1")}, timeout_orders=True)
    run = services.kill_switch_engage(user=user, close_positions=True, adapter_for=lambda a: ex)
    entry = run.report[str(acct.pk)]
    assert entry["ok"]
    assert entry["closed"][0]["status"] == "closed"
    assert len(ex.sent) == 1  # looked up, never resubmitted


def test_a_drawdown_trip_turns_a_daily_latch_into_one_that_waits_for_the_user():
    user = make_user()
    tomorrow = NOON + timedelta(hours=12)
    services.trading_state_set(
        user=user, to_state="halted", code="daily_loss", reason="daily", actor="breaker:daily_loss",
        latched_until=tomorrow,
    )  # fmt: skip
    services.trading_state_set(
        user=user, to_state="halted", code="drawdown", reason="dd", actor="breaker:drawdown"
    )
    state = TradingState.objects.get(owner=user, account=None)
    assert (state.code, state.latched_until) == ("drawdown", None)
    # Expiry time passes: the drawdown latch does not open by itself.
    assert services.trading_state_expire_latches(user=user, now=tomorrow + timedelta(days=1)) == 0
    codes = list(
        StateTransition.objects.filter(owner=user).order_by("pk").values_list("code", flat=True)
    )
    assert codes == ["daily_loss", "drawdown"]
