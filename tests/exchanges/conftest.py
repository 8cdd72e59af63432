"""The stateful fake Binance on loopback, with ccxt pointed at it through
EXCHANGE_URL_OVERRIDES (REST and the websocket API)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchanges.clients import Credentials, make_trading_adapter
from tests.fakes.binance_private import FakeAccount, FakeBinancePrivate

# The overrides file the Makefile's test environment names (read before any test changes it).
OVERRIDES_SPEC = os.environ.get("EXCHANGE_URL_OVERRIDES", "")


@pytest.fixture
def private_exchange(monkeypatch) -> Iterator[FakeBinancePrivate]:
    fake = FakeBinancePrivate()
    fake.serve()
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", json.dumps({"binance": fake.url_overrides()}))
    try:
        yield fake
    finally:
        fake.release.set()
        fake.stop()


def adapter_of(account: FakeAccount, **options):
    """A ccxt adapter signed with ``account``'s key (no waiting between retries)."""
    options.setdefault("sleep", lambda _s: None)
    return make_trading_adapter(
        "binance", credentials=Credentials(account.api_key, account.secret), **options
    )


@pytest.fixture
def worker_sees_the_fake(private_exchange) -> Iterator[Path]:
    """Point the session's Celery worker and daphne at the fake: they were started with
    ``EXCHANGE_URL_OVERRIDES=@<file>`` and read that file at each use."""
    if not OVERRIDES_SPEC.startswith("@"):
        pytest.fail("run through `make test`: EXCHANGE_URL_OVERRIDES must name an overrides file")
    target = Path(OVERRIDES_SPEC[1:])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"binance": private_exchange.url_overrides()}))
    try:
        yield target
    finally:
        target.unlink(missing_ok=True)
