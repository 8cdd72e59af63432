"""The plaintext of an exchange key, secret and passphrase appears nowhere a user or operator
can see it: not in any page or API answer (including refused forms and errors), not in the
admin, not in the "My data" export, not in the logs of this process (DEBUG and up) or of the
Celery worker that tests the account, and not in the database rows of the account."""

from __future__ import annotations

import json
import logging

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from accounts.models import User
from accounts.mydata import user_data_export
from exchanges.models import AccountEvent, AccountSecret, ExchangeAccount
from exchanges.tasks import check_account
from tests.backtester.backtest_factories import make_user
from tests.worker_log import wait_for_log

pytestmark = pytest.mark.django_db(transaction=True)

# Values no code path could produce by accident: found anywhere means leaked.
KEY = "PLAINKEYx7Qm2Zr9Lw4Ts8Vn1"
SECRET = "PLAINSECRETk3Jd8Hf2Gs6Pq0Xc5"
PASSPHRASE = "PLAINPASSa9Rt4Ye7Uo"
NEW_KEY = "PLAINNEWKEYb5Nm8Kl2Jh6"
NEW_SECRET = "PLAINNEWSECRETc1Vb4Xz7Lk9"
WITHDRAW_KEY, WITHDRAW_SECRET = "PLAINWDKEYq2We5Rt8", "PLAINWDSECRETy3Ui6Op9"
ALL = (KEY, SECRET, PASSPHRASE, NEW_KEY, NEW_SECRET, WITHDRAW_KEY, WITHDRAW_SECRET)


def assert_clean(where: str, text: str | bytes) -> None:
    body = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    for value in ALL:
        assert value not in body, f"{value[:9]}… found in {where}"
        # Nor the part a page might show "for recognition" beyond the last 4 characters.
        assert value[:-4] not in body, f"most of {value[:9]}… found in {where}"


def test_plaintext_secrets_are_nowhere_to_be_seen(
    private_exchange, worker_sees_the_fake, celery_worker_process, caplog
):
    caplog.set_level(logging.DEBUG)
    private_exchange.add_account(api_key=KEY, secret=SECRET, balances={"USDT": "100"})
    private_exchange.add_account(api_key=NEW_KEY, secret=NEW_SECRET, balances={"USDT": "7"})
    private_exchange.add_account(api_key=WITHDRAW_KEY, secret=WITHDRAW_SECRET, withdrawals=True)
    user = make_user()
    web = Client()
    web.force_login(user)
    answers: list[tuple[str, bytes]] = []

    def keep(where: str, response) -> None:
        assert response.status_code < 500, (where, response.status_code)
        content = b"".join(response.streaming_content) if response.streaming else response.content
        answers.append((where, content))

    # Refused links first: the answer re-shows the form, never what was typed.
    refused = {"exchange": "binance", "label": "WD", "api_key": WITHDRAW_KEY,
               "secret": WITHDRAW_SECRET, "passphrase": PASSPHRASE}  # fmt: skip
    response = web.post(reverse("exchanges:add"), refused)
    assert response.status_code == 400
    assert b"can withdraw funds" in response.content
    keep("refused link page", response)
    wrong = {**refused, "api_key": KEY, "secret": NEW_SECRET}
    response = web.post(reverse("exchanges:add"), wrong)
    assert b"Signature for this request is not valid" in response.content
    keep("wrong-secret link page", response)

    response = web.post(reverse("exchanges:add"), {**refused, "label": "Main", "api_key": KEY,
                                                   "secret": SECRET})  # fmt: skip
    assert response.status_code == 302
    account = ExchangeAccount.objects.get(owner=user, label="Main")
    assert account.key_last4 == KEY[-4:]
    assert AccountSecret.objects.filter(account=account).count() == 3  # with the passphrase

    api = Client()
    api.force_login(user)
    keep("API link refused", api.post(reverse("api_exchange_account_list"),
         {"exchange": "binance", "label": "X", "api_key": WITHDRAW_KEY, "secret": WITHDRAW_SECRET},
         content_type="application/json"))  # fmt: skip
    keep("API link invalid", api.post(reverse("api_exchange_account_list"),
         {"exchange": "nope", "label": "X", "api_key": KEY, "secret": SECRET,
          "passphrase": PASSPHRASE}, content_type="application/json"))  # fmt: skip
    pk = account.pk
    keep("API rotate", api.post(reverse("api_exchange_account_rotate", args=[pk]),
         {"api_key": NEW_KEY, "secret": NEW_SECRET, "passphrase": PASSPHRASE},
         content_type="application/json"))  # fmt: skip
    account.refresh_from_db()
    assert account.key_last4 == NEW_KEY[-4:]
    keep("API test", api.post(reverse("api_exchange_account_test", args=[pk])))
    for name in ("api_exchange_account_list",):
        keep(name, api.get(reverse(name)))
    keep("API detail", api.get(reverse("api_exchange_account_detail", args=[pk])))
    keep("API schema", api.get(reverse("api_schema")))

    for name, args in (("exchanges:list", []), ("exchanges:add", []), ("exchanges:detail", [pk]),
                       ("exchanges:rename", [pk]), ("exchanges:rotate", [pk]),
                       ("exchanges:delete", [pk])):  # fmt: skip
        keep(name, web.get(reverse(name, args=args)))
    keep("test now", web.post(reverse("exchanges:test", args=[pk]), follow=True))
    withdraw_pair = {"api_key": WITHDRAW_KEY, "secret": WITHDRAW_SECRET, "passphrase": PASSPHRASE}
    keep("rotate refused", web.post(reverse("exchanges:rotate", args=[pk]), withdraw_pair))

    # The worker tests the account with the decrypted key, against the fake.
    requests_before = len(private_exchange.requests)
    result = check_account.delay(pk, "worker")
    assert result.get(timeout=60) == "ok"
    assert len(private_exchange.requests) > requests_before  # it really signed requests
    assert AccountEvent.objects.filter(account_id=pk, trigger="worker", ok=True).exists()

    operator = User.objects.create_superuser(email="ops-secrets@example.com", password="x-9-y-8")
    admin = Client()
    admin.force_login(operator)
    base = "/admin/exchanges/"
    for url in (f"{base}exchangeaccount/", f"{base}exchangeaccount/{pk}/change/",
                f"{base}accountevent/", "/admin/"):  # fmt: skip
        keep(f"admin {url}", admin.get(url))
    assert admin.get("/admin/exchanges/accountsecret/").status_code == 404  # not registered

    export = "".join(user_data_export(user=user))
    assert json.loads(export)["more"]["exchange_accounts"][0]["key_last4"] == NEW_KEY[-4:]
    answers.append(("my data export", export.encode()))
    keep("my data download", web.get(reverse("accounts:mydata_export")))

    for where, content in answers:
        assert_clean(where, content)
    assert_clean("this process's logs", "\n".join(r.getMessage() for r in caplog.records))
    assert_clean("this process's logs (args)", "\n".join(repr(r.args) for r in caplog.records))
    done_line = f"exchanges.check_account[{result.id}] succeeded"
    worker_log = wait_for_log(celery_worker_process, done_line)
    assert_clean("the worker's log", worker_log)

    # At rest: only ciphertext, nothing readable in any row of the account's tables.
    with connection.cursor() as cursor:
        for table in ("exchanges_exchangeaccount", "exchanges_accountsecret",
                      "exchanges_accountevent"):  # fmt: skip
            cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 - fixed table names
            assert_clean(f"table {table}", repr(cursor.fetchall()))
