"""Coinbase OAuth2 linking end to end against the loopback stand-in (tests/fakes/coinbase_oauth.py):
PKCE and state, encrypted tokens, refresh before expiry with rotation, re-linking after a
refused refresh, revocation on unlink, and no token anywhere it should not be."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from exchanges import vault
from exchanges.models import AccountSecret, ExchangeAccount
from exchanges.oauth import (
    SESSION_KEY,
    OAuthRelinkNeeded,
    oauth_access_token,
    oauth_account_check,
    pkce_challenge,
)
from tests.backtester.backtest_factories import make_user
from tests.fakes.coinbase_oauth import CoinbaseOAuthStandIn

pytestmark = pytest.mark.django_db


@pytest.fixture
def standin(settings):
    server = CoinbaseOAuthStandIn()
    server.serve()
    for name, value in server.settings().items():
        setattr(settings, name, value)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def user():
    return make_user()


@pytest.fixture
def client(user):
    c = Client()
    c.force_login(user)
    return c


def _authorize(client: Client, **data) -> tuple[str, dict[str, str]]:
    response = client.post(reverse("exchanges:coinbase_start"), data)
    assert response.status_code == 302
    location = response["Location"]
    return location, {k: v[-1] for k, v in parse_qs(urlsplit(location).query).items()}


def _consent(authorize_url: str) -> str:
    """The browser's visit to Coinbase: the stand-in redirects back with code and state."""
    answer = requests.get(authorize_url, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


def _callback(client: Client, url: str):
    parts = urlsplit(url)
    return client.get(parts.path + "?" + parts.query)


def _link(client: Client, label: str = "My Coinbase") -> ExchangeAccount:
    url, _ = _authorize(client, label=label)
    response = _callback(client, _consent(url))
    assert response.status_code == 302
    return ExchangeAccount.objects.get(label=label)


def _secret(account, name) -> AccountSecret:
    return AccountSecret.objects.get(account=account, name=name)


def _plain(account, name) -> str:
    return vault.unseal(_secret(account, name).sealed, owner_label="test")


def test_link_sends_pkce_state_and_scopes_and_stores_encrypted_tokens(standin, client, user):
    url, query = _authorize(client, label="My Coinbase")
    assert url.startswith(standin.base_url + "/oauth2/auth?")
    assert query["response_type"] == "code"
    assert query["client_id"] == standin.client_id
    assert query["code_challenge_method"] == "S256"
    scopes = query["scope"].split(",")
    assert {"wallet:accounts:read", "wallet:orders:create", "offline_access"} <= set(scopes)
    assert not any("withdraw" in s or "send" in s for s in scopes)
    pending = client.session[SESSION_KEY][query["state"]]
    assert len(query["state"]) >= 32
    assert query["code_challenge"] == pkce_challenge(pending["verifier"])
    assert query["redirect_uri"] == "http://testserver/exchanges/coinbase/callback/"

    back = _consent(url)
    response = _callback(client, back)
    assert response["Location"] == reverse("exchanges:coinbase")

    account = ExchangeAccount.objects.get(owner=user)
    assert account.kind == ExchangeAccount.Kind.OAUTH
    assert account.exchange == "coinbase"
    assert account.status == ExchangeAccount.Status.OK
    assert account.can_trade is True
    assert account.can_withdraw is False
    assert account.balances == {
        "BTC": {"free": "0.5", "used": "0.1"},
        "USDC": {"free": "1250.75", "used": "0"},
    }
    (token,) = standin.live_tokens()
    access = _secret(account, AccountSecret.Name.OAUTH_ACCESS)
    refresh = _secret(account, AccountSecret.Name.OAUTH_REFRESH)
    assert token.access not in access.ciphertext
    assert token.refresh not in refresh.ciphertext
    assert _plain(account, AccountSecret.Name.OAUTH_ACCESS) == token.access
    assert _plain(account, AccountSecret.Name.OAUTH_REFRESH) == token.refresh
    expected = timezone.now() + timedelta(seconds=standin.expires_in)
    assert abs((access.expires_at - expected).total_seconds()) < 30
    # The token exchange sent the secret, the verifier and the same redirect URI.
    token_call = next(f for m, p, f in standin.log if p == "/oauth2/token")
    assert {"client_secret", "code_verifier", "redirect_uri", "code"} <= set(token_call)

    page = client.get(reverse("exchanges:coinbase")).content.decode()
    assert "My Coinbase" in page
    assert "1250.75 USDC" in page
    assert "is linked" in page
    assert token.access not in page
    assert token.refresh not in page


def test_the_state_is_single_use_and_bound_to_the_session(standin, client, user):
    url, _ = _authorize(client, label="Mine")
    back = _consent(url)
    # The same callback in another user's browser is refused and exchanges nothing.
    intruder = Client()
    intruder.force_login(make_user())
    answer = _callback(intruder, back)
    assert answer.status_code == 302
    assert not ExchangeAccount.objects.exists()
    assert "/oauth2/token" not in [p for _, p, _ in standin.log]
    assert "unknown, expired or already used" in intruder.get(reverse("exchanges:coinbase")).text
    # The rightful session completes; a replay of the same callback is refused.
    _callback(client, back)
    assert ExchangeAccount.objects.filter(owner=user).count() == 1
    _callback(client, back)
    assert ExchangeAccount.objects.count() == 1
    assert "already used" in client.get(reverse("exchanges:coinbase")).text


def test_a_wrong_pkce_verifier_is_refused_by_the_token_endpoint(standin, client):
    url, query = _authorize(client, label="Tampered")
    session = client.session
    session[SESSION_KEY][query["state"]]["verifier"] = "x" * 64
    session.save()
    _callback(client, _consent(url))
    assert not ExchangeAccount.objects.exists()
    assert "PKCE failed" in client.get(reverse("exchanges:coinbase")).text


def test_declining_at_coinbase_links_nothing(standin, client):
    standin.deny = True
    url, _ = _authorize(client, label="Declined")
    _callback(client, _consent(url))
    assert not ExchangeAccount.objects.exists()
    assert "you declined" in client.get(reverse("exchanges:coinbase")).text


def test_access_token_is_refreshed_before_expiry_and_the_refresh_token_rotates(standin, client):
    account = _link(client)
    first = standin.tokens[0]
    assert oauth_access_token(account) == first.access  # far from expiry: no refresh
    assert [p for _, p, _ in standin.log].count("/oauth2/token") == 1

    # 250 s before expiry is inside the 300 s margin: refresh now.
    soon = timezone.now() + timedelta(seconds=standin.expires_in - 250)
    fresh = oauth_access_token(account, now=soon)
    assert fresh != first.access
    second = standin.tokens[1]
    assert fresh == second.access
    assert _plain(account, AccountSecret.Name.OAUTH_REFRESH) == second.refresh
    assert first.refresh_used
    # Coinbase's refresh tokens are single use: the old one is now worthless.
    reuse = requests.post(
        standin.base_url + "/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": first.refresh,
            "client_id": standin.client_id,
            "client_secret": standin.client_secret,
        },
        timeout=10,
    )
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    # ... and the account keeps working with the new pair.
    checked = oauth_account_check(account=account)
    assert checked.status == ExchangeAccount.Status.OK


def test_a_refused_refresh_asks_the_user_to_link_again_and_relinking_restores_it(
    standin, client, user
):
    account = _link(client)
    standin.fail_refresh = True
    later = timezone.now() + timedelta(seconds=standin.expires_in + 60)
    with pytest.raises(OAuthRelinkNeeded, match="Link the account again"):
        oauth_access_token(account, now=later)
    account.refresh_from_db()
    assert account.status == ExchangeAccount.Status.NEEDS_RELINK
    assert "invalid_grant" in account.status_message
    assert account.can_trade is False
    page = client.get(reverse("exchanges:coinbase")).text
    assert "Needs re-linking" in page
    assert "Link again" in page

    standin.fail_refresh = False
    url, _ = _authorize(client, account=str(account.pk))
    _callback(client, _consent(url))
    account.refresh_from_db()
    assert ExchangeAccount.objects.filter(owner=user).count() == 1  # the same account
    assert account.status == ExchangeAccount.Status.OK
    assert _plain(account, AccountSecret.Name.OAUTH_ACCESS) == standin.tokens[-1].access


def test_an_access_token_refused_early_is_refreshed_once_and_the_check_succeeds(standin, client):
    account = _link(client)
    standin.now += standin.expires_in + 1  # Coinbase's clock says the token has expired
    response = client.post(reverse("exchanges:coinbase_check", kwargs={"pk": account.pk}))
    assert response.status_code == 302
    account.refresh_from_db()
    assert account.status == ExchangeAccount.Status.OK
    assert len(standin.tokens) == 2  # one forced refresh
    assert _plain(account, AccountSecret.Name.OAUTH_ACCESS) == standin.tokens[1].access


def test_a_revoked_access_token_on_check_marks_needs_relink(standin, client):
    account = _link(client)
    for t in standin.tokens:
        t.revoked = True  # the user removed the app at Coinbase
    response = client.post(reverse("exchanges:coinbase_check", kwargs={"pk": account.pk}))
    assert response.status_code == 302
    account.refresh_from_db()
    assert account.status == ExchangeAccount.Status.NEEDS_RELINK
    assert account.status_message.count("Link the account again") == 1
    assert "refresh refused: invalid_grant" in account.status_message


def test_unlink_revokes_at_coinbase_and_deletes_the_account(standin, client):
    account = _link(client)
    token = standin.tokens[0]
    response = client.post(reverse("exchanges:coinbase_unlink", kwargs={"pk": account.pk}))
    assert response.status_code == 302
    assert not ExchangeAccount.objects.filter(pk=account.pk).exists()
    assert not AccountSecret.objects.filter(account_id=account.pk).exists()
    assert "POST /oauth2/revoke" in standin.paths()
    assert standin.live_tokens() == []
    api = requests.get(
        standin.base_url + "/api/v3/brokerage/accounts",
        headers={"Authorization": f"Bearer {token.access}"},
        timeout=10,
    )
    assert api.status_code == 401
    assert "revoked at Coinbase" in client.get(reverse("exchanges:coinbase")).text


def test_another_users_account_is_a_404(standin, client):
    account = _link(client)
    other = Client()
    other.force_login(make_user())
    for name in ("exchanges:coinbase_check", "exchanges:coinbase_unlink"):
        assert other.post(reverse(name, kwargs={"pk": account.pk})).status_code == 404
    relink = other.post(reverse("exchanges:coinbase_start"), {"account": str(account.pk)})
    assert relink.status_code == 404
    assert ExchangeAccount.objects.filter(pk=account.pk).exists()


def test_without_client_credentials_the_button_is_hidden_and_the_page_says_why(settings, client):
    settings.COINBASE_OAUTH_CLIENT_ID = ""
    settings.COINBASE_OAUTH_CLIENT_SECRET = ""
    page = client.get(reverse("exchanges:coinbase")).text
    assert 'id="coinbase-link"' not in page
    assert "COINBASE_OAUTH_CLIENT_ID and COINBASE_OAUTH_CLIENT_SECRET are not set" in page
    response = client.post(reverse("exchanges:coinbase_start"), {"label": "x"})
    assert response.status_code == 302
    assert response["Location"] == reverse("exchanges:coinbase")
    assert "not set up on this server" in client.get(reverse("exchanges:coinbase")).text


def test_no_token_reaches_the_logs_or_any_page(standin, client, caplog):
    caplog.set_level(logging.DEBUG)
    account = _link(client)
    oauth_access_token(account, now=timezone.now() + timedelta(seconds=standin.expires_in))
    check = reverse("exchanges:coinbase_check", kwargs={"pk": account.pk})
    pages = [
        client.get(reverse("exchanges:coinbase")).text,
        client.post(check, follow=True).text,
    ]
    standin.fail_refresh = True
    with pytest.raises(OAuthRelinkNeeded) as caught:
        oauth_access_token(account, now=timezone.now() + timedelta(days=1))
    pages.append(client.get(reverse("exchanges:coinbase")).text)
    secrets = [v for t in standin.tokens for v in (t.access, t.refresh)]
    assert len(secrets) == 4
    for value in secrets:
        assert value not in caplog.text
        assert value not in str(caught.value)
        for page in pages:
            assert value not in page
    assert str(account) == f"{account.label} (coinbase)"


@pytest.mark.django_db(transaction=True)
def test_two_workers_refreshing_at_once_spend_the_refresh_token_once(standin, user):
    client = Client()
    client.force_login(user)
    account = _link(client)
    soon = timezone.now() + timedelta(seconds=standin.expires_in - 10)
    barrier = threading.Barrier(2)
    got: list[str] = []
    errors: list[Exception] = []

    def worker() -> None:
        try:
            fresh = ExchangeAccount.objects.get(pk=account.pk)
            barrier.wait(5)
            got.append(oauth_access_token(fresh, now=soon))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert [p for _, p, _ in standin.log].count("/oauth2/token") == 2  # the link + ONE refresh
    assert got == [standin.tokens[1].access] * 2
    account.refresh_from_db()
    assert account.status == ExchangeAccount.Status.OK


def test_bad_input_gets_a_message_never_a_500(standin, client):
    start = reverse("exchanges:coinbase_start")
    callback = reverse("exchanges:coinbase_callback")
    assert client.post(start, {"account": "9" * 30}).status_code == 404
    assert client.post(start, {"account": "abc", "label": "x" * 500}).status_code == 302
    for query in ({}, {"state": "s" * 5000, "code": "c" * 5000}, {"error": "x" * 5000}):
        assert client.get(callback, query).status_code == 302
    assert client.get(start).status_code == 405
    assert client.post(callback).status_code == 405
    huge = reverse("exchanges:coinbase_check", kwargs={"pk": 10**15})
    assert client.post(huge).status_code == 404
    assert not ExchangeAccount.objects.exists()
