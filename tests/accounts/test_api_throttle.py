"""Throttling per user at the rate of the user's plan, anonymous callers per IP, 429 with
Retry-After in the error format; the counters live in the shared cache (Redis here)."""

from __future__ import annotations

import itertools

import pytest
import requests
from django.conf import settings
from django.test import Client, override_settings

from accounts.models import Plan
from accounts.services import subscription_grant
from tests.accounts.api_support import bearer, error_of, key_for, make_user

pytestmark = pytest.mark.django_db

ME = "/api/v1/me/"
STRATEGIES = "/api/v1/strategies/"
SCHEMA = "/api/v1/schema/"
RATES = {"anon": "4/min", "free": "3/min", "pro": "5/min"}
_ips = itertools.count(1)


def fresh_ip() -> str:
    """An address no other test of this run has spent requests from (each run of the suite has
    its own cache key prefix)."""
    n = next(_ips)
    return f"10.77.{n // 250}.{n % 250}"


@pytest.fixture
def own_redis(spare_redis):
    """The counters in a Redis of this test's own, so another test's cache.clear() (the suite's
    shared Redis is flushed by some) cannot reset them halfway."""
    cache = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": spare_redis["url"],
        }
    }
    with override_settings(CACHES=cache):
        yield spare_redis


def spend(client: Client, url: str, times: int) -> list[int]:
    return [client.get(url).status_code for _ in range(times)]


def assert_throttled(response) -> None:
    assert response.status_code == 429
    assert error_of(response)["code"] == "throttled"
    wait = int(response["Retry-After"])
    assert 1 <= wait <= 60


@override_settings(API_THROTTLE_RATES=RATES)
def test_a_free_user_is_throttled_at_the_free_rate(own_redis):
    client = bearer(key_for(make_user(pro=False)))
    assert spend(client, ME, 3) == [200, 200, 200]
    assert_throttled(client.get(ME))
    assert client.get(ME).status_code == 429  # still closed


@override_settings(API_THROTTLE_RATES=RATES)
def test_a_pro_user_gets_the_pro_rate_on_pro_endpoints(own_redis):
    client = bearer(key_for(make_user(pro=True)))
    assert spend(client, STRATEGIES, 5) == [200] * 5
    assert_throttled(client.get(STRATEGIES))


@override_settings(API_THROTTLE_RATES=RATES)
def test_the_rate_follows_the_plan_as_soon_as_it_changes(own_redis):
    user = make_user(pro=False)
    client = bearer(key_for(user))
    assert spend(client, ME, 3) == [200, 200, 200]
    assert client.get(ME).status_code == 429
    subscription_grant(user=user, plan_code=Plan.PRO)
    assert spend(client, ME, 2) == [200, 200]  # Pro allows 5 in the same window
    assert client.get(ME).status_code == 429


@override_settings(API_THROTTLE_RATES=RATES)
def test_each_user_has_their_own_count_shared_by_their_keys_and_session(own_redis):
    user, other = make_user(pro=False), make_user(pro=False)
    assert spend(bearer(key_for(user, "a")), ME, 2) == [200, 200]
    session = Client()
    session.force_login(user)
    assert session.get(ME).status_code == 200  # the third, through the browser session
    assert bearer(key_for(user, "b")).get(ME).status_code == 429
    assert bearer(key_for(other)).get(ME).status_code == 200


@override_settings(API_THROTTLE_RATES=RATES)
def test_anonymous_callers_are_throttled_per_ip_and_cannot_pick_their_ip(own_redis):
    ip = fresh_ip()
    client = Client(REMOTE_ADDR=ip)
    assert spend(client, SCHEMA, 4) == [200] * 4
    assert_throttled(client.get(SCHEMA))
    spoofed = Client(REMOTE_ADDR=ip, HTTP_X_FORWARDED_FOR=fresh_ip())
    assert spoofed.get(SCHEMA).status_code == 429  # X-Forwarded-For is not trusted by default
    assert Client(REMOTE_ADDR=fresh_ip()).get(SCHEMA).status_code == 200


@override_settings(API_THROTTLE_RATES={**RATES, "free": None})
def test_a_plan_without_a_rate_is_not_throttled(own_redis):
    client = bearer(key_for(make_user(pro=False)))
    assert spend(client, ME, 8) == [200] * 8


@pytest.mark.django_db(transaction=True)
def test_the_count_is_shared_between_processes_through_the_cache(daphne_server):
    """Requests spent here (this process) count against the same user served by daphne (another
    process): the counter lives in Redis, not in a process's memory. The daphne process runs
    with the default rates, so the user spends the whole Free allowance here first."""
    assert settings.CACHES["default"]["BACKEND"].endswith("RedisCache")
    user = make_user(pro=False)
    key = key_for(user)
    free_limit = int(settings.API_THROTTLE_RATES["free"].split("/")[0])
    client = bearer(key)
    statuses = spend(client, ME, free_limit)
    assert set(statuses) == {200}
    response = requests.get(
        daphne_server + ME, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "throttled"
    assert int(response.headers["Retry-After"]) >= 1


def test_when_the_counter_store_is_down_requests_are_served_not_refused(spare_redis):
    cache_on_spare = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": spare_redis["url"],
            "KEY_PREFIX": "throttle-test",
        }
    }
    client = bearer(key_for(make_user(pro=False)))
    with override_settings(CACHES=cache_on_spare, API_THROTTLE_RATES={**RATES, "free": "1/min"}):
        assert client.get(ME).status_code == 200
        assert client.get(ME).status_code == 429  # counted in the spare Redis
        spare_redis["proc"].terminate()
        spare_redis["proc"].wait(timeout=15)
        assert spend(client, ME, 3) == [200, 200, 200]
