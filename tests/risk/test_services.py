"""Risk profiles, latched trading states, the pre-trade check of live orders and the kill
switch, against PostgreSQL and Redis. Accounts are real: the stateful fake Binance on loopback
(ccxt) and paper accounts; the TEST DOUBLE in tests/risk/doubles.py only stands in for a
derivatives venue (a short position), which neither real part here has. The full kill-switch
scenario is in test_kill_switch_exchange.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from exchanges.adapters import adapter_for
from exchanges.models import ExchangeAccount
from exchanges.paper_models import PaperBalance
from exchanges.services import account_link
from exchanges.services_paper import paper_account_create
from exchanges.trading import MarketRules, OrderTooSmall
from risk import rules, selectors, services
from risk.models import DeniedOrder, RiskProfile, StateTransition, TradingState
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


def linked(user, fake, balances: dict[str, str], label: str = "main"):
    key = fake.add_account(balances=balances)
    acct = account_link(
        user=user, exchange="binance", label=label, api_key=key.api_key, secret=key.secret
    )
    return acct, key


def test_daily_loss_latches_until_the_next_utc_day(live_binance):
    user = make_user()
    # Equity 9,400 today on the exchange: 6 % below the day's opening 10,000 (limit 5 %).
    acct, key = linked(user, live_binance, {"USDT": "9400"})
    services.equity_snapshot_record(
        user=user, account=acct, equity=Decimal("10000"), at=NOON - timedelta(hours=13)
    )
    buy = Proposal("BTC/USDT", 1, 100.0, qty=1.0)
    d = services.order_check(user=user, account=acct, proposal=buy, now=NOON)
    assert d.code == "daily_loss"
    state = TradingState.objects.get(owner=user, account=None)
    assert state.state == "halted"
    assert state.latched_until == datetime(2024, 3, 7, tzinfo=UTC)
    assert state.figures == {"equity": 9400.0, "start": 10000.0, "limit": 0.05}
    # Still latched later the same day even if equity recovered.
    key.balances["USDT"][0] = Decimal("10000")
    later = services.order_check(
        user=user, account=acct, proposal=buy, now=NOON + timedelta(hours=11)
    )
    assert later.code == "trading_halted"
    # The next UTC day the latch opens by itself and the order passes.
    services.equity_snapshot_record(
        user=user, account=acct, equity=Decimal("10000"), at=NOON + timedelta(hours=12)
    )
    nxt = services.order_check(
        user=user, account=acct, proposal=buy, now=NOON + timedelta(hours=13)
    )
    assert nxt.status == "approved"
    assert StateTransition.objects.filter(owner=user, code="latch_expired").count() == 1
    denials = list(DeniedOrder.objects.filter(owner=user).order_by("pk"))
    assert [x.code for x in denials] == ["daily_loss", "trading_halted"]
    assert denials[0].figures["start"] == 10_000.0


def test_a_position_without_a_price_denies_with_no_price(live_binance):
    user = make_user()
    paper = paper_account_create(owner=user, label="p", quote="USDT", starting_balance="1000")
    PaperBalance.objects.create(account=paper, asset="DOGE", free=Decimal("100"))  # no market
    d = services.order_check(
        user=user, account=paper, proposal=Proposal("BTC/USDT", 1, 100.0, qty=1.0), now=NOON
    )
    assert (d.status, d.code) == ("denied", "no_price")
    assert DeniedOrder.objects.get(owner=user).code == "no_price"


def test_an_unreadable_account_denies_with_no_price(live_binance):
    user = make_user()
    acct, key = linked(user, live_binance, {"USDT": "100"})
    live_binance.accounts.pop(key.api_key)  # the exchange no longer knows the key
    d = services.order_check(
        user=user, account=acct, proposal=Proposal("BTC/USDT", 1, 100.0, qty=1.0), now=NOON
    )
    assert d.code == "no_price"
    assert "Invalid API-key" in DeniedOrder.objects.get(owner=user).reason


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
    market = MarketRules(
        symbol="BTC/USDT", base="BTC", quote="USDT", amount_step=Decimal("0.001"),
        price_tick=Decimal("0.01"), min_notional=Decimal("5"),
    )  # fmt: skip
    d = rules.Decision("approved", 0.123456789)
    assert services.approved_amount(decision=d, market=market, price=Decimal("100")) == Decimal(
        "0.123"
    )
    with pytest.raises(OrderTooSmall):
        services.approved_amount(
            decision=rules.Decision("approved", 0.0409), market=market, price=Decimal("100")
        )


# --- kill switch -------------------------------------------------------------------------------


def test_a_short_derivatives_position_closes_with_a_reduce_only_buy():
    """TEST DOUBLE: a short exists only on a derivatives venue; the fake Binance and the paper
    exchange are spot. The close is a reduce-only buy rounded down to the lot."""
    user = make_user()
    acct = account(user)
    ex = AdapterDouble(
        prices={"ETH/USDT": Decimal("10")}, held={"ETH/USDT": Decimal("-3.0004")}, cash=Decimal(0)
    )
    ex.place_resting("ETH/USDT", "buy", "1", "9", "open-b1")
    run = services.kill_switch_engage(user=user, close_positions=True, adapter_for=lambda a: ex)
    entry = run.report[str(acct.pk)]
    assert entry["ok"]
    assert entry["cancelled"] == ["open-b1"]
    (sent,) = ex.sent
    assert (sent.side, sent.type, sent.amount, sent.reduce_only) == (
        "buy",
        "market",
        Decimal("3"),
        True,
    )
    assert sent.client_order_id == entry["closed"][0]["client_order_id"] == entry["planned"][0]


def test_kill_switch_resolves_a_timed_out_close_by_its_client_order_id(live_binance):
    user = make_user()
    acct, key = linked(user, live_binance, {"USDT": "0", "BTC": "1"})
    live_binance.hang_seconds = 2.0
    live_binance.fault("/api/v3/order", "timeout")  # accepted and filled, the answer held
    run = services.kill_switch_engage(
        user=user, close_positions=True,
        adapter_for=lambda a: adapter_for(a, timeout_ms=500, sleep=lambda _s: None),
    )  # fmt: skip
    entry = run.report[str(acct.pk)]
    assert entry["ok"], entry["errors"]
    assert entry["closed"][0]["status"] == "closed"
    assert len(live_binance.order_requests()) == 1  # looked up, never resubmitted
    assert key.free("BTC") == 0


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
