"""/api/v1/bots/: each endpoint against the published schema, bad input (400, nothing made),
another user's bot (404), a Free user (403), and stop with close through the API."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from backtester.models import Backtest, BotOrder, LiveBot
from backtester.services.backtests import backtest_create, backtest_execute
from exchanges.models import ExchangeAccount
from tests.accounts.api_support import bearer, error_of, key_for
from tests.accounts.test_api_schema import Contract
from tests.backtester.backtest_factories import make_series, make_strategy, make_user, span
from tests.bots.helpers import BotReplay, paper_account

pytestmark = pytest.mark.django_db(transaction=True)
BOTS = "/api/v1/bots/"


@pytest.fixture
def contract() -> Contract:
    return Contract(Client(REMOTE_ADDR="10.251.0.1").get("/api/v1/schema/?format=json").json())


def _post(api: Client, url: str, body: dict[str, Any] | None = None) -> Any:
    return api.post(url, body or {}, content_type="application/json")


def _completed_backtest(user, series) -> Backtest:
    start, end = span(series)
    backtest = backtest_create(
        user=user, strategy=make_strategy(user), series=[series], start=start, end=end, settings={}
    )
    backtest_execute(backtest_id=backtest.pk)
    backtest.refresh_from_db()
    assert backtest.status == Backtest.Status.COMPLETED, backtest.error
    return backtest


def test_create_list_detail_lifecycle_orders_and_events(contract: Contract) -> None:
    user = make_user(pro=True)
    api = bearer(key_for(user))
    series = make_series(n=300)
    strategy = make_strategy(user)
    account = paper_account(user)

    made = _post(api, BOTS, {"strategy": strategy.pk, "series": series.pk, "account": account.pk})
    bot = contract.check(made, "/api/v1/bots/", "post", expect=201)
    assert (bot["status"], bot["symbol"], bot["account"]) == ("running", "BTC/USDT", account.pk)
    assert bot["links"]["websocket"] == f"/ws/bots/{bot['id']}/"
    one = f"{BOTS}{bot['id']}/"

    backtest = _completed_backtest(user, series)
    deployed = _post(api, BOTS, {"backtest": backtest.pk, "account": account.pk, "name": "From bt"})
    body = contract.check(deployed, "/api/v1/bots/", "post", expect=201)
    assert (body["backtest"], body["name"]) == (backtest.pk, "From bt")
    assert body["param_values"] == backtest.param_values

    listing = contract.check(api.get(BOTS), "/api/v1/bots/")
    assert [b["id"] for b in listing["results"]] == [body["id"], bot["id"]]
    assert contract.check(api.get(one), "/api/v1/bots/{id}/")["id"] == bot["id"]

    paused = contract.check(_post(api, one + "pause/"), "/api/v1/bots/{id}/pause/", "post")
    assert paused["status"] == "paused"
    again = _post(api, one + "pause/")
    assert again.status_code == 400
    assert "Only a running bot" in error_of(again)["message"]
    resumed = contract.check(_post(api, one + "resume/"), "/api/v1/bots/{id}/resume/", "post")
    assert resumed["status"] == "running"
    stopped = _post(api, one + "stop/", {"cancel_orders": True})
    assert contract.check(stopped, "/api/v1/bots/{id}/stop/", "post")["status"] == "stopped"

    orders = contract.check(api.get(one + "orders/"), "/api/v1/bots/{id}/orders/")
    assert orders["results"] == []
    events = contract.check(api.get(one + "events/"), "/api/v1/bots/{id}/events/")
    messages = [e["message"] for e in events["results"]]
    assert messages[0].startswith("Stopped by its owner, asked to cancel its orders")
    assert "Paused by its owner" in messages
    assert all(e["level"] in ("info", "warning", "error") for e in events["results"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "account"),
        ({"account": "x"}, "account"),
        ({"series": 1, "account": "{account}"}, "strategy"),  # neither strategy nor backtest
        ({"strategy": "{strategy}", "account": "{account}"}, "series"),
        ({"strategy": "{strategy}", "backtest": 5, "account": "{account}"}, "strategy"),
        ({"strategy": "{strategy}", "series": "{series}", "account": 999999}, "account"),
        ({"strategy": "{strategy}", "series": 999999, "account": "{account}"}, "series"),
        ({"strategy": "{strategy}", "series": "{series}", "account": "{read_only}"}, "account"),
        (
            {
                "strategy": "{strategy}",
                "series": "{series}",
                "account": "{account}",
                "settings": {"fill": "close"},
            },
            "settings",
        ),
        (
            {
                "strategy": "{strategy}",
                "series": "{series}",
                "account": "{account}",
                "settings": "fast",
            },
            "settings",
        ),
        ({"strategy": "{strategy}", "series": "{series}", "account": 2**70}, "account"),
    ],
)
def test_bad_input_is_a_400_on_its_field_and_creates_nothing(body, field) -> None:
    user = make_user(pro=True)
    api = bearer(key_for(user))
    ids = {
        "{strategy}": make_strategy(user).pk,
        "{series}": make_series(n=120).pk,
        "{account}": paper_account(user).pk,
        "{read_only}": ExchangeAccount.objects.create(
            owner=user, kind="api_key", exchange="binance", label="RO", can_trade=False
        ).pk,
    }
    sent = {k: ids.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    response = _post(api, BOTS, sent)
    assert response.status_code == 400, response.content[:300]
    error = error_of(response)
    assert field in error["fields"], error
    assert LiveBot.objects.count() == 0


def test_stop_options_must_be_booleans() -> None:
    w = BotReplay()
    api = bearer(key_for(w.user))
    response = _post(api, f"{BOTS}{w.bot.pk}/stop/", {"close_position": "perhaps"})
    assert response.status_code == 400
    assert "close_position" in error_of(response)["fields"]
    w.bot.refresh_from_db()
    assert w.bot.status == LiveBot.Status.RUNNING


def test_another_users_bot_is_a_404_everywhere_and_a_free_user_gets_403() -> None:
    owner = make_user(pro=True)
    w = BotReplay(owner)
    one = f"{BOTS}{w.bot.pk}/"
    other = bearer(key_for(make_user(pro=True)))
    for url in (one, one + "orders/", one + "events/"):
        response = other.get(url)
        assert response.status_code == 404
        assert error_of(response)["code"] == "not_found"
    for action in ("pause/", "resume/", "stop/"):
        response = _post(other, one + action, {"close_position": True})
        assert response.status_code == 404
    # Creating a bot from another user's strategy or on another user's account.
    stranger = make_user(pro=True)
    api = bearer(key_for(stranger))
    theirs = _post(
        api,
        BOTS,
        {
            "strategy": w.bot.strategy_id,
            "series": w.series.pk,
            "account": paper_account(stranger).pk,
        },
    )
    assert theirs.status_code == 404
    on_their_account = _post(
        api,
        BOTS,
        {"strategy": make_strategy(stranger).pk, "series": w.series.pk, "account": w.account.pk},
    )
    assert on_their_account.status_code == 400
    assert "account" in error_of(on_their_account)["fields"]

    free = bearer(key_for(make_user(pro=False)))
    for response in (free.get(BOTS), free.get(one), _post(free, one + "stop/")):
        assert response.status_code == 403
        assert error_of(response)["code"] == "plan_required"
    w.bot.refresh_from_db()
    assert w.bot.status == LiveBot.Status.RUNNING
    assert LiveBot.objects.count() == 1


def test_stop_with_close_through_the_api_sells_the_position_once(settings) -> None:
    # The paper account prices at the latest stored candle (old here) when allowed to.
    settings.PAPER_ALLOW_STALE_PRICES = True
    w = BotReplay()
    w.run_until_long()
    position = LiveBot.objects.get(pk=w.bot.pk).position
    api = bearer(key_for(w.user))
    url = f"{BOTS}{w.bot.pk}/stop/"
    body = _post(api, url, {"close_position": True, "cancel_orders": True}).json()
    assert (body["status"], body["position"]) == ("stopped", "0")
    close = BotOrder.objects.get(bot=w.bot, action="close")
    assert (close.state, close.filled) == (BotOrder.State.FILLED, position)
    # A second request (a retry) sends nothing more.
    assert _post(api, url, {"close_position": True}).status_code == 200
    assert BotOrder.objects.filter(bot=w.bot, action="close").count() == 1
    orders = api.get(f"{BOTS}{w.bot.pk}/orders/").json()["results"]
    assert orders[0]["action"] == "close"
    assert orders[0]["state"] == "filled"


def test_a_close_that_cannot_be_priced_is_a_400_and_changes_nothing() -> None:
    # No ticker and only old candles (stale prices not allowed): the paper account has no price.
    w = BotReplay()
    w.run_until_long()
    api = bearer(key_for(w.user))
    response = _post(api, f"{BOTS}{w.bot.pk}/stop/", {"close_position": True})
    assert response.status_code == 400
    assert "nothing was changed" in error_of(response)["message"]
    bot = LiveBot.objects.get(pk=w.bot.pk)
    assert bot.status == LiveBot.Status.RUNNING
    assert bot.position > 0
    assert not BotOrder.objects.filter(bot=bot, action="close").exists()
