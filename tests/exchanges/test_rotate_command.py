"""`manage.py rotate_exchange_keys`: every secret re-encrypted under the newest key, with
counts; a secret under a key that is no longer configured stops it, naming the account."""

from __future__ import annotations

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.test import override_settings

from exchanges import vault
from exchanges.adapters import credentials_for
from exchanges.models import AccountEvent, AccountSecret, ExchangeAccount
from tests.backtester.backtest_factories import make_user

pytestmark = pytest.mark.django_db
OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()
LOST = Fernet.generate_key().decode()


def _account(owner, label: str, values: dict[str, str]) -> ExchangeAccount:
    account = ExchangeAccount.objects.create(
        owner=owner, kind="api_key", exchange="binance", label=label
    )
    for name, value in values.items():
        sealed = vault.seal(value)
        AccountSecret.objects.create(account=account, name=name, ciphertext=sealed.token,
                                     key_fingerprint=sealed.key_fingerprint)  # fmt: skip
    return account


def test_rotation_reencrypts_every_secret_and_reports_counts():
    owner = make_user()
    with override_settings(EXCHANGE_ENCRYPTION_KEYS=[OLD]):
        a = _account(owner, "A", {"api_key": "key-a-1234", "api_secret": "sec-a"})
        b = _account(owner, "B", {"api_key": "key-b-5678", "api_secret": "sec-b",
                                  "passphrase": "pass-b"})  # fmt: skip
    with override_settings(EXCHANGE_ENCRYPTION_KEYS=[NEW]):
        c = _account(owner, "C", {"api_key": "key-c-9999", "api_secret": "sec-c"})
    out = StringIO()
    with override_settings(EXCHANGE_ENCRYPTION_KEYS=[NEW, OLD]):
        call_command("rotate_exchange_keys", stdout=out)
    expected = (
        f"Key {vault.fingerprint(NEW)}: 5 secret(s) re-encrypted, 2 already current, "
        "7 in total, across 3 account(s)."
    )
    assert expected in out.getvalue()
    fingerprints = set(AccountSecret.objects.values_list("key_fingerprint", flat=True))
    assert fingerprints == {vault.fingerprint(NEW)}
    # The old key can go: everything still reads, under the new key alone.
    with override_settings(EXCHANGE_ENCRYPTION_KEYS=[NEW]):
        assert credentials_for(b).password == "pass-b"
        assert credentials_for(a).secret == "sec-a"
        assert credentials_for(c).api_key == "key-c-9999"
    assert AccountEvent.objects.filter(action="reencrypt").count() == 2  # A and B changed
    # Run again: nothing to do.
    out = StringIO()
    with override_settings(EXCHANGE_ENCRYPTION_KEYS=[NEW]):
        call_command("rotate_exchange_keys", stdout=out)
    assert "0 secret(s) re-encrypted, 7 already current" in out.getvalue()


def test_a_secret_under_a_dropped_key_fails_loudly_naming_the_account():
    owner = make_user()
    with override_settings(EXCHANGE_ENCRYPTION_KEYS=[LOST]):
        lost = _account(owner, "Forgotten key", {"api_key": "key-l-0000", "api_secret": "sec-l"})
    with (
        override_settings(EXCHANGE_ENCRYPTION_KEYS=[NEW, OLD]),
        pytest.raises(CommandError) as err,
    ):
        call_command("rotate_exchange_keys", stdout=StringIO())
    message = str(err.value)
    assert f"exchange account {lost.pk} (Forgotten key" in message
    assert vault.fingerprint(LOST) in message
    assert "no longer configured" in message
    # Nothing was silently rewritten.
    kept = AccountSecret.objects.filter(account=lost).values_list("key_fingerprint", flat=True)
    assert set(kept) == {vault.fingerprint(LOST)}
