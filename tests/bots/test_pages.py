"""Bot pages through the real URLconf: Deploy from a backtest, the bot page, pause/start/stop;
and the same journey in the real browser against daphne."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.services import demo_user_ensure
from backtester.models import Backtest, LiveBot
from backtester.services.backtests import backtest_create, backtest_execute
from backtester.services.live_bots import bot_step
from exchanges.models import ExchangeAccount
from tests.backtester.backtest_factories import make_series, make_strategy, make_user, span
from tests.bots.helpers import paper_account

pytestmark = pytest.mark.django_db(transaction=True)


def _completed_backtest(user, series) -> Backtest:
    start, end = span(series)
    backtest = backtest_create(
        user=user, strategy=make_strategy(user), series=[series], start=start, end=end, settings={}
    )
    backtest_execute(backtest_id=backtest.pk)
    backtest.refresh_from_db()
    assert backtest.status == Backtest.Status.COMPLETED, backtest.error
    return backtest


def test_deploy_refuses_a_read_only_account_then_runs_on_paper() -> None:
    user = make_user(pro=True)
    series = make_series(n=300)
    backtest = _completed_backtest(user, series)
    read_only = ExchangeAccount.objects.create(
        owner=user, kind="api_key", exchange="binance", label="Read only", can_trade=False
    )
    paper = paper_account(user)
    client = Client()
    client.force_login(user)

    page = client.get(f"/backtests/{backtest.pk}/")
    assert f"/backtests/{backtest.pk}/deploy/" in page.content.decode()

    refused = client.post(f"/backtests/{backtest.pk}/deploy/", {"account": read_only.pk})
    assert refused.status_code == 400
    assert "cannot trade" in refused.content.decode()
    bad = client.post(f"/backtests/{backtest.pk}/deploy/", {"account": "nope"})
    assert bad.status_code == 400
    assert LiveBot.objects.count() == 0

    done = client.post(f"/backtests/{backtest.pk}/deploy/", {"account": paper.pk})
    bot = LiveBot.objects.get()
    assert done.status_code == 302
    assert done["Location"] == f"/bots/{bot.pk}/"
    # The backtest's settings, tightened where the account's (default) risk profile is
    # stricter: 25 % per symbol, 6 % heat, 10 positions, 20 % drawdown and 5 % daily breakers,
    # 1x leverage.
    bt = backtest.settings
    tighter = {
        "max_position_fraction": min(bt["max_position_fraction"], 0.25),
        "max_heat": 0.06 if bt["max_heat"] <= 0 else min(bt["max_heat"], 0.06),
        "max_open_positions": 10,
        "max_drawdown_halt": 0.2,
        "daily_loss_limit": 0.05,
        "cooldown_bars": bt["cooldown_bars"],
        "max_leverage": 1.0,  # the profile's 1x (the backtest had none)
    }
    assert bot.settings == {**bt, "allow_short": False, **tighter}
    assert bot.param_values == backtest.param_values
    assert bot.source_backtest_id == backtest.pk

    detail = client.get(f"/bots/{bot.pk}/")
    assert detail.status_code == 200
    assert "Running" in detail.content.decode()
    listing = client.get("/bots/")
    assert bot.name in listing.content.decode()

    assert client.post(f"/bots/{bot.pk}/pause/").status_code == 302
    bot.refresh_from_db()
    assert bot.status == LiveBot.Status.PAUSED
    assert series.last_ts is not None
    assert bot_step(bot_id=bot.pk, now_ms=int(series.last_ts) + 10**9) == 0
    assert client.post(f"/bots/{bot.pk}/start/").status_code == 302
    bot.refresh_from_db()
    assert bot.status == LiveBot.Status.RUNNING
    assert client.post(f"/bots/{bot.pk}/stop/").status_code == 302
    bot.refresh_from_db()
    assert bot.status == LiveBot.Status.STOPPED

    stranger = Client()
    stranger.force_login(make_user(pro=True))
    assert stranger.get(f"/bots/{bot.pk}/").status_code == 404
    assert stranger.post(f"/bots/{bot.pk}/start/").status_code == 404
    bot.refresh_from_db()
    assert bot.status == LiveBot.Status.STOPPED


@pytest.mark.browser
def test_deploy_pause_and_stop_in_the_browser(browser, daphne_server) -> None:
    email, password = "botowner@example.com", "bot-browser-pass-7"
    user, _ = demo_user_ensure(email=email, password=password)
    series = make_series(n=300)
    backtest = _completed_backtest(user, series)
    paper_account(user)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    external: list[str] = []
    page.on("request", lambda r: external.append(r.url) if "127.0.0.1" not in r.url else None)
    page.goto(daphne_server + "/accounts/login/")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", password)
    page.click("form button[type=submit]")
    page.wait_for_url(daphne_server + "/dashboard/")

    page.goto(f"{daphne_server}/backtests/{backtest.pk}/")
    page.click("#deploy-link")
    page.wait_for_selector("#deploy-form")
    page.select_option("select[name=account]", label="Paper (paper)")
    page.click("#deploy-button")
    page.wait_for_selector("#bot-status")
    assert page.inner_text("#bot-status") == "Running"
    page.click("#pause-button")
    page.wait_for_selector("#start-button")
    assert page.inner_text("#bot-status") == "Paused"
    page.once("dialog", lambda d: d.accept())
    page.click("#stop-button")
    page.wait_for_function("document.querySelector('#bot-status').innerText === 'Stopped'")
    page.goto(daphne_server + "/bots/")
    assert page.locator("#bots-table tbody tr").count() == 1
    assert LiveBot.objects.get().status == LiveBot.Status.STOPPED
    assert errors == []
    assert external == []
