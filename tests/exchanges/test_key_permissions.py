"""What each exchange's permission check reads. Binance against the stateful fake (see
test_account_services.py); Bybit and OKX against loopback stand-ins of their endpoints, through
ccxt's real classes (signing included); the others say the key cannot be verified."""

from __future__ import annotations

import pytest

from exchanges.clients import Credentials, ExchangeRefused, make_trading_adapter
from tests.exchanges.conftest import adapter_of
from tests.fakes.key_permissions import FakeKeyPermissions


@pytest.fixture
def stand_in():
    fake = FakeKeyPermissions()
    url = fake.serve()
    fake.url = url
    yield fake
    fake.stop()


def _adapter(exchange: str, fake: FakeKeyPermissions, **creds: str):
    credentials = Credentials(
        api_key=creds.get("api_key", fake.api_key),
        secret=creds.get("secret", fake.secret),
        password=creds.get("password", fake.passphrase),
    )
    return make_trading_adapter(exchange, credentials=credentials, url_overrides={"*": fake.url},
                                sleep=lambda _s: None)  # fmt: skip


def test_binance_reads_api_restrictions(private_exchange):
    trade_only = adapter_of(private_exchange.add_account()).key_permissions()
    assert (trade_only.verified, trade_only.can_trade, trade_only.can_withdraw) == (
        True,
        True,
        False,
    )
    assert trade_only.details["ipRestrict"] is False
    assert adapter_of(private_exchange.add_account(withdrawals=True)).key_permissions().can_withdraw
    read_only = adapter_of(private_exchange.add_account(trading=False)).key_permissions()
    assert read_only.can_trade is False
    futures = adapter_of(private_exchange.add_account(trading=False, futures=True))
    assert futures.key_permissions().can_trade is True


@pytest.mark.parametrize(
    ("result", "trade", "withdraw"),
    [
        ({"readOnly": 0, "permissions": {"Spot": ["SpotTrade"], "Wallet": ["AccountTransfer"]}},
         True, False),
        ({"readOnly": 0, "permissions": {"Spot": ["SpotTrade"], "Wallet": ["Withdraw"]}},
         True, True),
        ({"readOnly": 1, "permissions": {"Spot": ["SpotTrade"], "Wallet": []}}, False, False),
        ({"readOnly": 0, "permissions": {"Spot": [], "ContractTrade": []}}, False, False),
    ],
)  # fmt: skip
def test_bybit_reads_query_api(stand_in, result, trade, withdraw):
    stand_in.bybit = {**result, "apiKey": stand_in.api_key, "secret": "", "ips": ["*"]}
    perms = _adapter("bybit", stand_in).key_permissions()
    assert stand_in.seen == ["/v5/user/query-api"]
    assert (perms.verified, perms.can_trade, perms.can_withdraw) == (True, trade, withdraw)
    assert "apiKey" not in perms.details  # the answer echoes the key: it is not kept


@pytest.mark.parametrize(
    ("perm", "trade", "withdraw"),
    [("read_only,trade", True, False), ("read_only,trade,withdraw", True, True),
     ("read_only", False, False)],
)  # fmt: skip
def test_okx_reads_account_config(stand_in, perm, trade, withdraw):
    stand_in.okx_perm = perm
    perms = _adapter("okx", stand_in).key_permissions()
    assert (perms.verified, perms.can_trade, perms.can_withdraw) == (True, trade, withdraw)
    assert perms.details == {"perm": perm.split(",")}


def test_a_wrong_okx_passphrase_is_the_exchanges_refusal(stand_in):
    with pytest.raises(ExchangeRefused, match="Invalid Sign"):
        _adapter("okx", stand_in, password="not-it").key_permissions()


@pytest.mark.parametrize("exchange", ["kraken", "coinbase", "kucoin"])
def test_other_exchanges_say_they_cannot_be_verified(exchange):
    adapter = make_trading_adapter(
        exchange,
        credentials=Credentials("k" * 8, "c2VjcmV0c2VjcmV0", "p"),
        url_overrides={"*": "http://127.0.0.1:9"},
    )
    perms = adapter.key_permissions()  # no request is made
    assert perms.verified is False
    assert f"cannot be verified for {adapter.client.label}" in perms.details["unverifiable"]
