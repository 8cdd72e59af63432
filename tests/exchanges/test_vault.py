"""Secrets at rest: MultiFernet with key fingerprints, rotation, and loud named failures."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.test import override_settings

from exchanges import vault

OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()


@override_settings(EXCHANGE_ENCRYPTION_KEYS=[OLD])
def test_sealed_secret_is_not_the_plaintext_and_round_trips():
    sealed = vault.seal("my-api-secret-123")
    assert "my-api-secret-123" not in sealed.token
    assert sealed.key_fingerprint == vault.fingerprint(OLD)
    assert OLD not in sealed.key_fingerprint
    assert vault.unseal(sealed, owner_label="acct") == "my-api-secret-123"


def test_rotation_reencrypts_under_the_newest_key_and_old_key_can_then_go():
    with override_settings(EXCHANGE_ENCRYPTION_KEYS=[OLD]):
        sealed = vault.seal("s3cret")
    with override_settings(EXCHANGE_ENCRYPTION_KEYS=[NEW, OLD]):
        assert vault.unseal(sealed, owner_label="acct") == "s3cret"
        rotated = vault.reseal(sealed, owner_label="acct")
    assert rotated.key_fingerprint == vault.fingerprint(NEW)
    with override_settings(EXCHANGE_ENCRYPTION_KEYS=[NEW]):
        assert vault.unseal(rotated, owner_label="acct") == "s3cret"


def test_secret_under_a_key_no_longer_configured_fails_loudly_naming_the_account():
    with override_settings(EXCHANGE_ENCRYPTION_KEYS=[OLD]):
        sealed = vault.seal("s3cret")
    with (
        override_settings(EXCHANGE_ENCRYPTION_KEYS=[NEW]),
        pytest.raises(vault.SecretUnreadable, match="Binance main") as err,
    ):
        vault.unseal(sealed, owner_label="Binance main")
    assert "s3cret" not in str(err.value)
    assert vault.fingerprint(OLD) in str(err.value)
