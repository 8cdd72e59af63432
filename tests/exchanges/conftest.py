"""The stateful fake Binance on loopback, with ccxt pointed at it through
EXCHANGE_URL_OVERRIDES (REST and the websocket API)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from exchanges.clients import Credentials, make_trading_adapter
from tests.fakes.binance_private import FakeAccount, FakeBinancePrivate


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
