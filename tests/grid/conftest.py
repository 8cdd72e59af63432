"""Fixtures of the grid bot tests: the stateful fake Binance on loopback (ccxt pointed at it)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.binance_private import FakeBinancePrivate


@pytest.fixture
def binance(monkeypatch: Any) -> Iterator[FakeBinancePrivate]:
    fake = FakeBinancePrivate()
    fake.serve()
    fake.now_ms = int(time.time() * 1000)
    fake.set_price("SOLUSDT", "100")
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", json.dumps({"binance": fake.url_overrides()}))
    try:
        yield fake
    finally:
        fake.release.set()
        fake.stop()
