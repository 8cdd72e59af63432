"""The paper-account page (create, validation, owner-only list) and the demo seed."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from exchanges.models import ExchangeAccount
from exchanges.paper_models import PaperBalance
from exchanges.services_paper import paper_account_create
from tests.backtester.backtest_factories import make_user

pytestmark = pytest.mark.django_db
URL = "/exchanges/paper/new/"


@pytest.fixture
def user():
    return make_user()


@pytest.fixture
def client(user):
    c = Client()
    c.force_login(user)
    return c


def test_the_url_name_is_the_one_other_pages_link_to():
    assert reverse("exchanges:paper_new") == URL


def test_creating_a_paper_account_from_the_page(client, user):
    page = client.get(URL)
    assert page.status_code == 200
    assert 'value="10000"' in page.text
    response = client.post(
        URL, {"label": "Swing tests", "quote": "usdc", "starting_balance": "2,500.50"}
    )
    assert response.status_code == 302
    account = ExchangeAccount.objects.get(owner=user, label="Swing tests")
    assert account.kind == ExchangeAccount.Kind.PAPER
    assert account.exchange == "paper"
    assert account.paper_quote == "USDC"
    assert account.paper_starting_balance == Decimal("2500.5")
    assert PaperBalance.objects.get(account=account, asset="USDC").free == Decimal("2500.5")
    shown = client.get(URL).text
    assert "Paper account “Swing tests” is ready with 2,500.5 USDC." in shown
    assert shown.count("2500.5 USDC") == 2  # started with, and the balance now
    paper_account_create(owner=user, label="Round", quote="USDT", starting_balance="10000")
    assert "1E+4" not in client.get(URL).text
    assert client.get(URL).text.count("10000 USDT") == 2


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "The starting balance must be more than 0"),
        ("-100", "The starting balance must be more than 0"),
        ("ten", "Enter the starting balance as a number"),
        ("", "This field is required"),
        ("1e400", "at most 1,000,000,000"),
    ],
)
def test_a_bad_starting_balance_is_a_field_error_and_changes_nothing(client, value, message):
    response = client.post(URL, {"label": "P", "quote": "USDT", "starting_balance": value})
    assert response.status_code == 400
    assert 'id="starting_balance-errors"' in response.text
    assert message in response.text
    assert not ExchangeAccount.objects.exists()


def test_a_taken_name_is_a_field_error(client, user):
    paper_account_create(owner=user, label="Main", quote="USDT", starting_balance="1")
    response = client.post(URL, {"label": "Main", "quote": "USDT", "starting_balance": "5"})
    assert response.status_code == 400
    assert 'id="label-errors"' in response.text
    assert ExchangeAccount.objects.filter(owner=user).count() == 1


def test_the_list_shows_only_my_paper_accounts(client, user):
    paper_account_create(owner=user, label="Mine", quote="USDT", starting_balance="1")
    paper_account_create(owner=make_user(), label="Not mine", quote="USDT", starting_balance="1")
    page = client.get(URL).text
    assert "Mine" in page
    assert "Not mine" not in page


def test_seed_demo_links_one_paper_account_and_is_idempotent(settings):
    settings.DEMO_USER_EMAIL = "demo@example.com"
    out = StringIO()
    call_command("seed_demo", "--password", "demo-pass-for-seed-1", stdout=out)
    assert "Demo paper account “Paper USDT” (10000 USDT): created." in out.getvalue()
    out = StringIO()
    call_command("seed_demo", stdout=out)
    assert "already linked" in out.getvalue()
    (account,) = ExchangeAccount.objects.filter(owner__email="demo@example.com")
    assert account.label == "Paper USDT"
    assert account.kind == ExchangeAccount.Kind.PAPER
    assert PaperBalance.objects.get(account=account, asset="USDT").free == Decimal("10000")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"label": "x" * 200, "quote": "USDT", "starting_balance": "1"}, "label"),
        ({"label": "   ", "quote": "USDT", "starting_balance": "1"}, "label"),
        ({"label": "P", "quote": "💥", "starting_balance": "1"}, "quote"),
        ({"label": "P", "quote": "USDT", "starting_balance": "NaN"}, "starting_balance"),
        ({"label": "P", "quote": "USDT", "starting_balance": "0.000000001"}, "starting_balance"),
    ],
)
def test_other_bad_input_is_a_400_on_the_right_field(client, data, field):
    response = client.post(URL, data)
    assert response.status_code == 400
    assert f'id="{field}-errors"' in response.text
    assert not ExchangeAccount.objects.exists()
