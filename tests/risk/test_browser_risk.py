"""A real browser (Debian Chromium through Playwright) on the Risk page and the risk dashboard:
a field error that saves nothing, a profile that saves, the dashboard's state, chart and a
denied order arriving live over the websocket, and the reset button."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.services import demo_user_ensure
from exchanges.models import ExchangeAccount
from risk import services
from risk.models import RiskProfile, TradingState
from risk.rules import Proposal

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PASSWORD = "risk-pass-browser-7"


def _login(page, base: str, email: str) -> None:
    page.goto(base + "/accounts/login/")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(base + "/dashboard/")


def test_risk_page_shows_a_field_error_then_saves(browser, daphne_server):
    user, _ = demo_user_ensure(email="risk-page@example.com", password=PASSWORD)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    external: list[str] = []
    page.on("request", lambda r: external.append(r.url) if "127.0.0.1" not in r.url else None)
    _login(page, daphne_server, user.email)

    page.click("nav >> text=Risk")
    page.wait_for_selector("#risk-profile-form")
    assert page.input_value("input[name=risk_per_trade]") == "2.0"
    assert page.input_value("input[name=drawdown_limit]") == "20.0"
    page.fill("input[name=max_heat]", "250")
    page.click("#save-risk")
    page.wait_for_selector("#max_heat-errors")
    assert "at most 100" in page.inner_text("#max_heat-errors")
    assert page.is_visible("#form-errors")
    assert not RiskProfile.objects.filter(owner=user).exists()

    page.fill("input[name=max_heat]", "5")
    page.fill("input[name=daily_loss_limit]", "3")
    page.click("#save-risk")
    page.wait_for_selector("text=Risk limits saved.")
    profile = RiskProfile.objects.get(owner=user, account=None)
    assert (profile.max_heat, profile.daily_loss_limit) == (0.05, 0.03)
    assert page.input_value("input[name=max_heat]") == "5.0"
    assert not errors
    assert not external


def test_dashboard_shows_state_chart_live_denials_and_resets(browser, daphne_server):
    user, _ = demo_user_ensure(email="risk-dash@example.com", password=PASSWORD)
    acct = ExchangeAccount.objects.create(owner=user, kind="paper", exchange="paper", label="p")
    now = timezone.now()
    for hours, equity in ((30, "10000"), (20, "10400"), (10, "9900"), (1, "9800")):
        services.equity_snapshot_record(
            user=user, account=None, equity=Decimal(equity), at=now - timedelta(hours=hours)
        )
    services.trading_state_set(
        user=user, to_state="halted", code="drawdown", reason="Equity fell 21 % from its peak",
        figures={"equity": 8_200.0, "peak": 10_400.0}, actor="breaker:drawdown",
    )  # fmt: skip
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _login(page, daphne_server, user.email)

    page.goto(daphne_server + "/risk/dashboard/")
    assert page.get_attribute("#risk-state", "data-state") == "halted"
    assert "Equity fell 21 %" in page.inner_text("#risk-state")
    page.wait_for_selector("#chart-equity .scatterlayer path")
    page.wait_for_selector("#risk-dashboard[data-socket-state=open]")

    # A denied order appears while the page is open.
    services.order_check(
        user=user, account=acct, equity=8_200.0, positions=[],
        proposal=Proposal("SOL/USDT", 1, 20.0, qty=1.0), source="manual",
    )  # fmt: skip
    page.wait_for_selector("#denials li[data-code=trading_halted]", timeout=10_000)

    page.click("button[data-reset]")
    page.wait_for_selector("text=Trading state reset to active.")
    assert page.get_attribute("#risk-state", "data-state") == "active"
    assert TradingState.objects.get(owner=user, account=None).state == "active"
    assert "halted → active" in page.inner_text("#transitions")
    assert not errors


def test_dashboard_closes_a_binance_position_and_shows_a_denied_close(
    browser, daphne_server, live_binance
):
    """The real browser on the dashboard: positions read from the fake Binance (through
    daphne, which reads the same overrides file) and from a paper account; one close goes
    through and sells on the exchange, the other is denied (no price) and shown."""
    from exchanges.paper_models import PaperBalance, PaperOrder
    from exchanges.services import account_link
    from exchanges.services_paper import paper_account_create
    from risk.models import ManualClose

    user, _ = demo_user_ensure(email="risk-close@example.com", password=PASSWORD)
    key = live_binance.add_account(balances={"USDT": "100", "BTC": "0.25"})
    acct = account_link(
        user=user, exchange="binance", label="Binance main", api_key=key.api_key,
        secret=key.secret,
    )  # fmt: skip
    paper = paper_account_create(owner=user, label="Odd paper", quote="USDT", starting_balance="50")
    PaperBalance.objects.create(account=paper, asset="XYZ", free=Decimal("7"))  # no XYZ market
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _login(page, daphne_server, user.email)

    page.goto(daphne_server + "/risk/dashboard/")
    row = f"tr[data-position='{acct.pk}-BTC/USDT']"
    page.wait_for_selector(row)
    assert "0.25" in page.inner_text(row)
    assert "40,000.00" in page.inner_text(row) or "40000.00" in page.inner_text(row)
    page.click(f"button[data-close='{acct.pk}-BTC/USDT']")
    page.wait_for_selector("text=Close order for BTC/USDT on Binance main sent.")
    assert key.free("BTC") == 0
    close = ManualClose.objects.get(owner=user, account=acct)
    (order,) = live_binance.orders_with_client_id(close.client_order_id)
    assert (order.side, order.status) == ("SELL", "FILLED")
    assert page.locator(row).count() == 0  # the position is gone from the page

    page.click(f"button[data-close='{paper.pk}-XYZ/USDT']")
    page.wait_for_selector("text=Close of XYZ/USDT denied (no_price)")
    assert page.locator("#denials li[data-code=no_price]").count() == 1
    assert not PaperOrder.objects.filter(account=paper).exists()
    assert not errors
