"""Linking, testing, rotating and deleting exchange accounts against the fake Binance: the
withdraw refusal, read-only keys, wrong keys, an exchange that is down, the audit trail, and
the daily connection test."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.conf import settings

from config.exceptions import ApplicationError, Conflict, PlanRequired
from exchanges.clients import ExchangeUnavailable
from exchanges.models import AccountEvent, AccountSecret, ExchangeAccount
from exchanges.services import (
    account_delete,
    account_link,
    account_rename,
    account_rotate_key,
    account_test,
    accounts_test_all,
)
from exchanges.tasks import check_account, check_all_accounts
from tests.backtester.backtest_factories import make_user

pytestmark = pytest.mark.django_db


def link(user, fake_account, **kw):
    kw.setdefault("label", "Main")
    return account_link(
        user=user,
        exchange="binance",
        api_key=fake_account.api_key,
        secret=fake_account.secret,
        **kw,
    )


def test_linking_a_trade_only_key_stores_status_permissions_balances(private_exchange):
    user = make_user()
    key = private_exchange.add_account(balances={"USDT": "2500.5", "BTC": "0.1"})
    account = link(user, key)
    assert account.status == ExchangeAccount.Status.OK
    assert account.can_trade is True
    assert account.can_withdraw is False
    assert account.permissions["enableWithdrawals"] is False
    assert account.permissions["enableSpotAndMarginTrading"] is True
    assert account.permissions["verified"] is True
    assert account.balances["USDT"] == {"free": "2500.5", "used": "0"}
    assert account.checked_at is not None
    assert account.key_last4 == key.api_key[-4:]
    secrets = {s.name: s for s in AccountSecret.objects.filter(account=account)}
    assert set(secrets) == {"api_key", "api_secret"}
    assert all(key.secret not in s.ciphertext and key.api_key not in s.ciphertext
               for s in secrets.values())  # fmt: skip
    event = AccountEvent.objects.get(account=account)
    assert (event.action, event.ok, event.owner) == ("link", True, user)


def test_a_key_that_can_withdraw_is_refused_and_nothing_is_stored(private_exchange):
    user = make_user()
    key = private_exchange.add_account(withdrawals=True)
    with pytest.raises(
        ApplicationError, match=r"can withdraw funds.*trading allowed and withdrawals disabled"
    ):
        link(user, key)
    assert not ExchangeAccount.objects.filter(owner=user).exists()
    assert not AccountSecret.objects.exists()
    refused = AccountEvent.objects.get(owner=user)
    assert (refused.action, refused.ok, refused.account) == ("link_refused", False, None)


def test_a_read_only_key_is_linked_for_watching_but_cannot_trade(private_exchange):
    user = make_user()
    account = link(user, private_exchange.add_account(trading=False))
    assert account.status == ExchangeAccount.Status.OK
    assert account.can_trade is False
    assert "cannot place orders" in account.status_message


def test_a_wrong_key_gets_the_exchanges_message_in_plain_words(private_exchange):
    user = make_user()
    key = private_exchange.add_account()
    with pytest.raises(ApplicationError) as err:
        account_link(user=user, exchange="binance", label="x", api_key="wrongkey123",
                     secret=key.secret)  # fmt: skip
    assert err.value.message.startswith(
        "Binance refused the request: Invalid API-key, IP, or permissions for action."
    )
    assert "{" not in err.value.message  # no raw JSON
    with pytest.raises(ApplicationError, match="Signature for this request is not valid"):
        account_link(user=user, exchange="binance", label="x", api_key=key.api_key,
                     secret="wrong-secret")  # fmt: skip
    assert not ExchangeAccount.objects.exists()


def test_exchange_down_is_refused_with_a_retry_hint_unless_saved_unverified(
    private_exchange, monkeypatch
):
    user = make_user()
    key = private_exchange.add_account()
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", json.dumps({"binance": "http://127.0.0.1:9"}))
    with pytest.raises(ExchangeUnavailable, match=r"could not be reached.*Try again"):
        link(user, key)
    assert not ExchangeAccount.objects.exists()
    account = link(user, key, save_unverified=True)
    assert account.status == ExchangeAccount.Status.UNVERIFIED
    assert account.status_message.startswith("Saved without a connection test")
    assert account.can_trade is False
    # The exchange is back: the test verifies it.
    monkeypatch.setenv(
        "EXCHANGE_URL_OVERRIDES", json.dumps({"binance": private_exchange.url_overrides()})
    )
    assert account_test(account=account).status == ExchangeAccount.Status.OK


def test_bad_input_changes_nothing():
    user = make_user()
    cases = [
        ({"exchange": "nosuchexchange"}, "exchange"),
        ({"label": "  "}, "label"),
        ({"api_key": ""}, "api_key"),
        ({"api_key": "has space in it"}, "api_key"),
        ({"exchange": "okx"}, "passphrase"),  # OKX keys come with a passphrase
        ({"exchange": "kraken", "sandbox": True}, "sandbox"),
    ]
    for override, field in cases:
        args = {"exchange": "binance", "label": "L", "api_key": "abcd1234", "secret": "s3cr3tvalue",
                **override}  # fmt: skip
        with pytest.raises(ApplicationError) as err:
            account_link(user=user, **args)
        assert err.value.field == field, override
    assert not ExchangeAccount.objects.exists()


def test_free_plan_cannot_link():
    with pytest.raises(PlanRequired):
        account_link(user=make_user(pro=False), exchange="binance", label="x", api_key="abcd1234",
                     secret="abcdefgh")  # fmt: skip


def test_label_is_unique_per_user(private_exchange):
    user = make_user()
    first = link(user, private_exchange.add_account())
    with pytest.raises(Conflict):
        link(user, private_exchange.add_account())
    second = link(user, private_exchange.add_account(), label="Second")
    with pytest.raises(Conflict):
        account_rename(user=user, account=second, label=first.label)
    assert account_rename(user=user, account=second, label="Renamed").label == "Renamed"
    assert AccountEvent.objects.filter(account=second, action="rename").count() == 1


def test_connection_test_notices_a_key_that_gained_withdrawals(private_exchange):
    user = make_user()
    key = private_exchange.add_account(balances={"USDT": "5"})
    account = link(user, key)
    key.permissions["enableWithdrawals"] = True
    key.add("USDT", Decimal("10"))
    tested = account_test(account=account, user=user)
    assert tested.status == ExchangeAccount.Status.DISABLED
    assert tested.can_trade is False
    assert tested.can_withdraw is True
    assert "can withdraw" in tested.status_message
    assert tested.balances["USDT"]["free"] == "15"
    assert AccountEvent.objects.filter(account=account, action="test", ok=False).exists()


def test_connection_test_of_a_revoked_key_is_failing_with_the_message(private_exchange):
    user = make_user()
    key = private_exchange.add_account()
    account = link(user, key)
    del private_exchange.accounts[key.api_key]
    tested = account_test(account=account)
    assert tested.status == ExchangeAccount.Status.FAILING
    assert "Invalid API-key" in tested.status_message


def test_rotating_the_key_replaces_it_after_the_same_checks(private_exchange):
    user = make_user()
    old, new = private_exchange.add_account(), private_exchange.add_account()
    account = link(user, old)
    with pytest.raises(ApplicationError, match="can withdraw"):
        account_rotate_key(user=user, account=account,
                           **_pair(private_exchange.add_account(withdrawals=True)))  # fmt: skip
    account.refresh_from_db()
    assert account.key_last4 == old.api_key[-4:]
    rotated = account_rotate_key(user=user, account=account, **_pair(new))
    assert rotated.key_last4 == new.api_key[-4:]
    assert [e.action for e in AccountEvent.objects.filter(account=account).order_by("pk")] == [
        "link", "rotate_refused", "rotate"]  # fmt: skip
    # The stored key is the new one: a connection test signs with it.
    del private_exchange.accounts[old.api_key]
    assert account_test(account=rotated).status == ExchangeAccount.Status.OK


def _pair(key):
    return {"api_key": key.api_key, "secret": key.secret}


def test_delete_erases_secrets_keeps_the_audit_row_and_asks_receivers_to_stop(private_exchange):
    from exchanges.events import account_removing, account_usage

    user = make_user()
    account = link(user, private_exchange.add_account())
    stopped = []

    def uses(sender, account, **kw):
        return [f"Grid bot on {account.label}"]

    def stop(sender, account, **kw):
        stopped.append(account.pk)

    account_usage.connect(uses, weak=False)
    account_removing.connect(stop, weak=False)
    try:
        pk = account.pk
        account_delete(user=user, account=account)
    finally:
        account_usage.disconnect(uses)
        account_removing.disconnect(stop)
    assert stopped == [pk]
    assert not ExchangeAccount.objects.filter(pk=pk).exists()
    assert not AccountSecret.objects.filter(account_id=pk).exists()
    event = AccountEvent.objects.get(action="delete")
    assert event.account is None
    assert event.account_label == "Main"
    assert "Stopped: Grid bot on Main" in event.message


def test_another_users_account_cannot_be_deleted(private_exchange):
    account = link(make_user(), private_exchange.add_account())
    with pytest.raises(ApplicationError) as err:
        account_delete(user=make_user(), account=account)
    assert err.value.status == 404
    assert ExchangeAccount.objects.filter(pk=account.pk).exists()


def test_paper_accounts_wait_for_the_paper_exchange():
    from exchanges.adapters import adapter_for

    account = ExchangeAccount.objects.create(
        owner=make_user(), kind="paper", exchange="paper", label="Paper",
        paper_quote="USDT", paper_starting_balance=Decimal("10000"),
    )  # fmt: skip
    try:
        import exchanges.paper  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(ApplicationError, match="Paper trading is not available"):
            adapter_for(account)
    else:  # the paper exchange has landed: it must be what paper accounts get
        assert type(adapter_for(account)).__name__ == "PaperExchange"


def test_daily_task_tests_every_api_key_account_on_the_live_queue(private_exchange):
    user = make_user()
    ok = link(user, private_exchange.add_account())
    gone_key = private_exchange.add_account()
    failing = link(user, gone_key, label="Second")
    del private_exchange.accounts[gone_key.api_key]
    assert check_all_accounts.apply().get() == {"ok": 1, "failing": 1}
    assert AccountEvent.objects.filter(action="test", trigger="daily").count() == 2
    failing.refresh_from_db()
    assert failing.status == "failing"
    assert check_account.apply(args=(ok.pk, "api")).get() == "ok"
    assert check_account.apply(args=(999_999_999, "api")).get() == "gone"
    entry = settings.CELERY_BEAT_SCHEDULE["exchanges-daily-connection-test"]
    assert entry["task"] == check_all_accounts.name
    assert entry["schedule"] == 86_400.0
    assert settings.CELERY_TASK_ROUTES["exchanges.*"]["queue"] == settings.CELERY_LIVE_QUEUE


def test_scheduled_tests_skip_owners_who_lost_pro(private_exchange):
    from accounts.models import Subscription

    user = make_user()
    account = link(user, private_exchange.add_account())
    Subscription.objects.filter(user=user).update(status=Subscription.Status.CANCELED)
    requests_before = len(private_exchange.requests)
    assert check_account.apply(args=(account.pk, "daily")).get() == "plan_required"
    assert accounts_test_all() == {"plan_required": 1}
    assert len(private_exchange.requests) == requests_before  # the exchange was not contacted
    assert not AccountEvent.objects.filter(action="test").exists()
