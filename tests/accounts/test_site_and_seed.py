"""First use: the verification mail names the site, and the demo user has something to open."""

from __future__ import annotations

from io import StringIO

import pytest
from django.conf import settings
from django.contrib.sites.models import Site
from django.core import mail
from django.core.management import call_command
from django.urls import reverse

from accounts.models import User
from backtester.marketdata import demo
from backtester.models import Backtest, BacktestResult, Strategy
from tests.conftest import clear_run_cache

pytestmark = pytest.mark.django_db
PASSWORD = "c0rrect-Horse-9"


def test_the_verification_mail_says_hello_from_the_site_name_not_example_com(client):
    clear_run_cache()  # allauth's sign-up rate limit counts in the cache
    response = client.post(
        reverse("account_signup"),
        {
            "email": "first@example.org",
            "password1": "c0rrect-Horse-9",
            "password2": "c0rrect-Horse-9",
        },
    )
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    body = mail.outbox[0].body
    assert f"Hello from {settings.SITE_NAME}!" in body
    assert "Quantfold" in body
    assert "example.com" not in body
    site = Site.objects.get_current()
    assert (site.name, site.domain) == (settings.SITE_NAME, settings.SITE_DOMAIN)


def test_seed_demo_gives_the_demo_user_one_strategy_and_one_completed_backtest(monkeypatch):
    monkeypatch.setattr(demo, "DEMO_DAYS", 40)  # 960 hourly bars: enough for the SMA preset
    out = StringIO()
    call_command("seed_demo", "--password", "demo-pass-for-seed-1", stdout=out)
    user = User.objects.get(email=settings.DEMO_USER_EMAIL)
    assert user.is_pro
    strategy = Strategy.objects.get(owner=user)
    assert strategy.preset == "sma_cross"
    backtest = Backtest.objects.get(owner=user)
    assert backtest.status == Backtest.Status.COMPLETED, backtest.error
    assert backtest.strategy == strategy
    assert [s.symbol for s in backtest.series.all()] == ["BTC/USDT"]
    result = BacktestResult.objects.get(backtest=backtest)
    assert result.trade_count > 0
    assert result.metrics["total_return"] is not None
    assert f"demo backtest #{backtest.pk} (completed)" in out.getvalue()

    # Seeding again adds nothing: still one of each.
    call_command("seed_demo", stdout=StringIO())
    assert Strategy.objects.filter(owner=user).count() == 1
    assert Backtest.objects.filter(owner=user).count() == 1
