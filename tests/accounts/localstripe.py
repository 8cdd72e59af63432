"""pytest plugin (registered in tests/conftest.py): localstripe on a free loopback port.

The ``localstripe`` session fixture starts tests/accounts/localstripe_server.py (localstripe
plus the named stand-ins for Checkout and Customer Portal sessions), waits for it, and points
the billing settings at it: STRIPE_API_BASE, a test secret key, the webhook signing secret it
signs with, and the Pro price id, which it creates there as a localstripe plan. Tests talk to
it over plain HTTP with ``LocalStripe.call`` so they never import stripe themselves.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.test import override_settings

from tests.conftest import ROOT, free_port, wait_for_port

SECRET_KEY = "sk_test_localstripe_only"
WEBHOOK_SECRET = "whsec_test_localstripe_only"
PRICE_ID = "price_test_pro_monthly"
GOOD_CARD = "4242424242424242"


class LocalStripe:
    """A handle on the running localstripe: its URL and a few setup helpers."""

    def __init__(self, base_url: str, log_path: Path) -> None:
        self.base_url = base_url
        self.log_path = log_path
        self._http = requests.Session()
        self._http.trust_env = False  # loopback only, never through a proxy
        self._http.headers["Authorization"] = f"Bearer {SECRET_KEY}"

    def call(self, method: str, path: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """One API call with a JSON body (localstripe reads JSON or form bodies)."""
        response = self._http.request(method, self.base_url + path, json=data, timeout=10)
        if response.status_code >= 400:
            raise AssertionError(
                f"localstripe {method} {path}: {response.status_code} {response.text}"
            )
        return response.json() if response.content else {}

    def post_form(self, url: str) -> requests.Response:
        """What a browser does on a stand-in page: a form POST, redirects not followed."""
        return self._http.post(url, allow_redirects=False, timeout=10)

    def ensure_price(self) -> None:
        response = self._http.get(f"{self.base_url}/v1/plans/{PRICE_ID}", timeout=10)
        if response.status_code == 404:
            self.call(
                "POST",
                "/v1/plans",
                {
                    "id": PRICE_ID,
                    "amount": 3999,
                    "currency": "usd",
                    "interval": "month",
                    "product": {"name": "Quantfold Pro"},
                },
            )

    def customer_with_card(self, *, email: str, user_id: int, card: str = GOOD_CARD) -> str:
        """A customer as our checkout makes them (email, metadata user_id), with a default card."""
        method = self.call(
            "POST",
            "/v1/payment_methods",
            {
                "type": "card",
                "card": {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
            },
        )
        customer = self.call(
            "POST",
            "/v1/customers",
            {
                "email": email,
                "metadata": {"user_id": str(user_id)},
                "payment_method": method["id"],
                "invoice_settings": {"default_payment_method": method["id"]},
            },
        )
        return str(customer["id"])

    def subscribe(self, customer_id: str) -> dict[str, Any]:
        return self.call(
            "POST", "/v1/subscriptions", {"customer": customer_id, "items": [{"plan": PRICE_ID}]}
        )

    def subscription(self, subscription_id: str) -> dict[str, Any]:
        return self.call("GET", f"/v1/subscriptions/{subscription_id}")

    def webhooks_to(self, url: str) -> None:
        """Have localstripe sign (with WEBHOOK_SECRET) and send every event to ``url``."""
        self.call("POST", "/_config/webhooks/tests", {"url": url, "secret": WEBHOOK_SECRET})

    def webhooks_off(self) -> None:
        """Keep the registration but deliver nothing (an empty event filter)."""
        self.call(
            "POST",
            "/_config/webhooks/tests",
            {"url": "http://127.0.0.1:9/", "secret": WEBHOOK_SECRET, "events": []},
        )


def sign(payload: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A Stripe-Signature header computed from Stripe's documented scheme (HMAC-SHA256 over
    "<timestamp>.<body>"), independently of the stripe library the code under test uses."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def event_payload(
    event_type: str, obj: dict[str, Any], *, event_id: str, created: int | None = None
) -> bytes:
    """The JSON body of a Stripe event about ``obj``."""
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "api_version": "2026-10-28.endive",
            "created": int(time.time()) if created is None else created,
            "livemode": False,
            "type": event_type,
            "data": {"object": obj},
        }
    ).encode()


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    """localstripe (with the stand-ins) on loopback, and the billing settings pointing at it."""
    port = free_port()
    log = tmp_path_factory.mktemp("localstripe") / "localstripe.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.accounts.localstripe_server", "--port", str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port)
        handle = LocalStripe(f"http://127.0.0.1:{port}", log)
        handle.ensure_price()
        handle.webhooks_off()
        with override_settings(
            STRIPE_API_BASE=handle.base_url,
            STRIPE_SECRET_KEY=SECRET_KEY,
            STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            STRIPE_PRICE_ID=PRICE_ID,
        ):
            yield handle
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=15)


def wait_until(condition: Callable[[], bool], *, timeout: float = 30.0, what: str = "") -> None:
    """Poll ``condition`` (a webhook's effect) until it holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what or 'the condition'} after {timeout} s")
