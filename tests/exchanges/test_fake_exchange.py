"""The fake exchange's own contract, where no ccxt call reaches it: the legacy user-data
stream (listen key over REST, then the bare-event websocket) and its refusals."""

from __future__ import annotations

import json
from decimal import Decimal

import requests
from websockets.sync.client import connect

from exchanges.trading import OrderRequest
from tests.exchanges.conftest import adapter_of


def test_listen_key_stream_sends_execution_reports(private_exchange):
    key = private_exchange.add_account(balances={"USDT": "1000"})
    url = private_exchange.base_url + "/api/v3/userDataStream"
    assert requests.post(url, timeout=5).status_code == 401  # no key header
    listen_key = requests.post(url, headers={"X-MBX-APIKEY": key.api_key}, timeout=5).json()[
        "listenKey"
    ]
    private_exchange.set_price("BTCUSDT", "40000")
    with connect(f"{private_exchange.ws_url}/ws/{listen_key}", open_timeout=5) as ws:
        adapter_of(key).create_order(
            OrderRequest("BTC/USDT", "buy", "market", Decimal("0.01"), "legacy-1")
        )
        events = [json.loads(ws.recv(timeout=5)) for _ in range(2)]
    assert [(e["e"], e["x"], e["X"], e["c"]) for e in events] == [
        ("executionReport", "NEW", "NEW", "legacy-1"),
        ("executionReport", "TRADE", "FILLED", "legacy-1"),
    ]
    assert Decimal(events[1]["l"]) == Decimal("0.01")
    keepalive = requests.put(url, data={"listenKey": listen_key},
                             headers={"X-MBX-APIKEY": key.api_key}, timeout=5)  # fmt: skip
    assert keepalive.status_code == 200
    unknown = requests.put(url, data={"listenKey": "nope"},
                           headers={"X-MBX-APIKEY": key.api_key}, timeout=5)  # fmt: skip
    assert unknown.json()["code"] == -1125


def test_unsigned_or_badly_signed_private_calls_are_refused(private_exchange):
    key = private_exchange.add_account()
    url = private_exchange.base_url + "/api/v3/account"
    unsigned = requests.get(url, params={"timestamp": 1}, headers={"X-MBX-APIKEY": key.api_key},
                            timeout=5)  # fmt: skip
    assert (unsigned.status_code, unsigned.json()["code"]) == (400, -1022)
    forged = requests.get(url + "?timestamp=1&signature=" + "0" * 64,
                          headers={"X-MBX-APIKEY": key.api_key}, timeout=5)  # fmt: skip
    assert forged.json()["code"] == -1022
    assert requests.get(url, timeout=5).json()["code"] == -2015
