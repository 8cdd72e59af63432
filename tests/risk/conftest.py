"""Risk tests against the real exchange parts: the stateful fake Binance on loopback, seen by
this process (environment), by the session's Celery worker and by daphne (the overrides file
the Makefile names, read at each use), with paper accounts priced from the same fake."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchanges.paper import clear_rules_cache
from tests.fakes.binance_private import FakeBinancePrivate

# Read at import, before any fixture changes the environment.
OVERRIDES_SPEC = os.environ.get("EXCHANGE_URL_OVERRIDES", "")


@pytest.fixture
def live_binance(monkeypatch, settings) -> Iterator[FakeBinancePrivate]:
    if not OVERRIDES_SPEC.startswith("@"):
        pytest.fail("run through `make test`: EXCHANGE_URL_OVERRIDES must name an overrides file")
    fake = FakeBinancePrivate()
    fake.serve()
    fake.set_price("BTCUSDT", "40000")
    fake.set_price("ETHUSDT", "2000")
    overrides = json.dumps({"binance": fake.url_overrides()})
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", overrides)
    target = Path(OVERRIDES_SPEC[1:])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(overrides)
    settings.PAPER_MARKET_EXCHANGE = "binance"  # paper prices and rules from the fake (here)
    clear_rules_cache()
    try:
        yield fake
    finally:
        target.unlink(missing_ok=True)
        clear_rules_cache()
        fake.release.set()
        fake.stop()
