"""Personal API keys: made and revoked on the profile page, shown once, stored as a hash, and
accepted as `Authorization: Bearer <key>` by the API (401 in the error format otherwise)."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.gating import UPGRADE_MESSAGE
from accounts.models import ApiKey
from accounts.services.apikeys import api_key_revoke
from tests.accounts.api_support import bearer, error_of, key_for, make_user

pytestmark = pytest.mark.django_db

KEY_RE = re.compile(r"qf_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")
ME = "/api/v1/me/"
STRATEGIES = "/api/v1/strategies/"


def signed_in(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


# --- made on the profile page ----------------------------------------------------------------


def test_creating_a_key_shows_the_secret_once_and_stores_only_its_hash():
    user = make_user(pro=False)
    browser = signed_in(user)
    response = browser.post(reverse("accounts:apikey_create"), {"name": "research notebook"})
    assert response.status_code == 201
    assert "no-store" in response["Cache-Control"]
    shown = KEY_RE.findall(response.content.decode())
    assert len(set(shown)) == 1
    key = shown[0]

    row = ApiKey.objects.get(user=user)
    assert row.name == "research notebook"
    assert key.startswith(f"qf_{row.prefix}_")
    assert row.secret_hash == hashlib.sha256(key.encode()).hexdigest()
    secret = key[len(f"qf_{row.prefix}_") :]  # the secret may itself hold "_"
    assert len(secret) >= 12
    stored = [str(v) for v in ApiKey.objects.filter(pk=row.pk).values().get().values()]
    assert not any(secret[:12] in value for value in stored)

    profile = browser.get(reverse("accounts:profile")).content.decode()
    assert "research notebook" in profile
    assert f"qf_{row.prefix}_" in profile
    assert key not in profile
    assert secret[:12] not in profile
    assert KEY_RE.search(profile) is None


def test_the_profile_lists_name_prefix_created_last_used_and_a_revoke_button():
    user = make_user()
    key = key_for(user, "nightly job")
    bearer(key).get(ME)
    row = ApiKey.objects.get(user=user)
    html = signed_in(user).get(reverse("accounts:profile")).content.decode()
    listing = html[html.index('id="api-key-list"') :]
    assert "nightly job" in listing
    assert row.masked in listing
    assert row.created_at.strftime("%Y-%m-%d") in listing  # <time datetime="...">
    assert "Never" not in listing.split("</tbody>")[0]  # used once: shows how long ago
    assert reverse("accounts:apikey_revoke", kwargs={"pk": row.pk}) in listing


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_a_blank_or_overlong_name_is_a_field_error_and_creates_nothing(name):
    user = make_user()
    response = signed_in(user).post(reverse("accounts:apikey_create"), {"name": name})
    assert response.status_code == 400
    assert 'class="field has-error"' in response.content.decode()
    assert KEY_RE.search(response.content.decode()) is None
    assert not ApiKey.objects.exists()


@override_settings(API_KEYS_MAX_PER_USER=2)
def test_the_number_of_active_keys_is_limited_and_revoked_ones_do_not_count():
    user = make_user()
    browser = signed_in(user)
    url = reverse("accounts:apikey_create")
    assert browser.post(url, {"name": "one"}).status_code == 201
    assert browser.post(url, {"name": "two"}).status_code == 201
    refused = browser.post(url, {"name": "three"})
    assert refused.status_code == 400
    assert "already have 2 active keys" in refused.content.decode()
    assert ApiKey.objects.filter(user=user).count() == 2
    api_key_revoke(user=user, key_id=ApiKey.objects.filter(user=user).first().pk)
    assert browser.post(url, {"name": "three"}).status_code == 201


def test_creating_keys_needs_a_signed_in_user_and_a_post_for_the_secret():
    url = reverse("accounts:apikey_create")
    assert Client().post(url, {"name": "x"}).status_code == 302  # to the login page
    form = signed_in(make_user()).get(url)
    assert form.status_code == 200
    assert KEY_RE.search(form.content.decode()) is None
    assert not ApiKey.objects.exists()


# --- used by the API -------------------------------------------------------------------------


def test_a_key_authenticates_as_its_owner_and_sees_only_their_objects():
    owner, other = make_user(), make_user()
    key = key_for(owner)
    signed_in(other).post(
        STRATEGIES, {"preset": "sma_cross"}, content_type="application/json"
    )  # someone else's strategy

    me = bearer(key).get(ME)
    assert me.status_code == 200
    assert me.json()["email"] == owner.email
    assert me.json()["auth"] == "api_key"
    assert me.json()["api_key_prefix"] == ApiKey.objects.get(user=owner).prefix

    created = bearer(key).post(STRATEGIES, {"preset": "sma_cross"}, content_type="application/json")
    assert created.status_code == 201  # no CSRF token needed with a key
    listed = bearer(key).get(STRATEGIES).json()
    assert [s["id"] for s in listed["results"]] == [created.json()["id"]]


def test_a_free_users_key_on_a_pro_endpoint_is_403_with_the_upgrade_message():
    key = key_for(make_user(pro=False))
    assert bearer(key).get(ME).status_code == 200  # the key itself is good
    for url in (STRATEGIES, "/api/v1/backtests/", "/api/v1/market-data/series/"):
        response = bearer(key).get(url)
        assert response.status_code == 403
        error = error_of(response)
        assert error["code"] == "plan_required"
        assert error["message"] == UPGRADE_MESSAGE


def _revoked(user) -> str:
    key = key_for(user)
    api_key_revoke(user=user, key_id=ApiKey.objects.get(user=user, revoked_at=None).pk)
    return key


def _wrong_secret(user) -> str:
    key = key_for(user)
    last = key[-1]
    return key[:-1] + ("A" if last != "A" else "B")


@pytest.mark.parametrize(
    ("header", "make"),
    [
        ("revoked", _revoked),
        ("wrong secret", _wrong_secret),
        ("unknown", lambda user: "qf_0badc0de_" + "x" * 43),
        ("malformed", lambda user: "qf_short"),
        ("not ours", lambda user: "sk_live_abcdef"),
        ("two words", lambda user: key_for(user) + " extra"),
        ("no key", lambda user: ""),
    ],
)
def test_revoked_malformed_and_unknown_keys_are_401_in_the_error_format(header, make):
    user = make_user()
    response = Client(HTTP_AUTHORIZATION=f"Bearer {make(user)}".rstrip()).get(STRATEGIES)
    assert response.status_code == 401, header
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert error_of(response)["code"] == "authentication_failed"


def test_a_bad_key_is_refused_even_next_to_a_valid_session():
    user = make_user()
    client = signed_in(user, HTTP_AUTHORIZATION="Bearer qf_0badc0de_" + "x" * 43)
    assert client.get(STRATEGIES).status_code == 401


def test_no_credentials_is_401_naming_the_bearer_scheme():
    response = Client().get(STRATEGIES)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert error_of(response)["code"] == "not_authenticated"


def test_a_disabled_users_key_is_401():
    user = make_user()
    key = key_for(user)
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert bearer(key).get(ME).status_code == 401


def test_the_session_still_works_for_the_browser_with_its_csrf_check():
    user = make_user()
    browser = signed_in(user, enforce_csrf_checks=True)
    assert browser.get(ME).json()["auth"] == "session"
    refused = browser.post(STRATEGIES, {"preset": "sma_cross"}, content_type="application/json")
    assert refused.status_code == 403
    assert "CSRF" in error_of(refused)["message"]


def test_last_used_is_written_at_most_once_a_minute():
    user = make_user()
    key = key_for(user)
    row = ApiKey.objects.get(user=user)
    assert row.last_used_at is None

    bearer(key).get(ME)
    row.refresh_from_db()
    first = row.last_used_at
    assert first is not None

    with CaptureQueriesContext(connection) as queries:
        assert bearer(key).get(ME).status_code == 200
    writes = [q["sql"] for q in queries if q["sql"].startswith("UPDATE") and "apikey" in q["sql"]]
    assert writes == []
    row.refresh_from_db()
    assert row.last_used_at == first

    ApiKey.objects.filter(pk=row.pk).update(last_used_at=first - timedelta(seconds=61))
    bearer(key).get(ME)
    row.refresh_from_db()
    assert row.last_used_at > first - timedelta(seconds=1)
    assert timezone.now() - row.last_used_at < timedelta(minutes=1)


# --- revoked on the profile page -------------------------------------------------------------


def test_revoking_on_the_profile_page_stops_the_key_at_once():
    user = make_user()
    key = key_for(user)
    row = ApiKey.objects.get(user=user)
    assert bearer(key).get(ME).status_code == 200
    response = signed_in(user).post(reverse("accounts:apikey_revoke", kwargs={"pk": row.pk}))
    assert response.status_code == 302
    assert response["Location"].endswith("#api-keys")
    row.refresh_from_db()
    assert row.revoked_at is not None
    assert bearer(key).get(ME).status_code == 401
    html = signed_in(user).get(reverse("accounts:profile")).content.decode()
    assert "Revoked" in html


def test_nobody_else_can_revoke_my_key_and_revoking_needs_a_post():
    owner, other = make_user(), make_user()
    key = key_for(owner)
    url = reverse("accounts:apikey_revoke", kwargs={"pk": ApiKey.objects.get(user=owner).pk})
    assert signed_in(other).post(url).status_code == 404
    assert signed_in(owner).get(url).status_code == 405
    assert Client().post(url).status_code == 302  # anonymous: to the login page
    assert bearer(key).get(ME).status_code == 200
