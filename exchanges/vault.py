"""Secrets at rest: exchange API keys, secrets, passphrases and OAuth tokens.

Encrypted with ``cryptography``'s MultiFernet. The keys come from ``EXCHANGE_ENCRYPTION_KEYS``
(comma-separated Fernet keys): the first encrypts, every one decrypts, so a new key is put first
and ``manage.py rotate_exchange_keys`` re-encrypts everything under it before the old one is
dropped. Each ciphertext is stored with the short fingerprint of the key that made it (a hash
prefix, never the key), so a secret whose key is no longer configured is reported by name
instead of failing as an anonymous "invalid token".

This module never logs and never puts plaintext into an exception message.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from config.exceptions import ApplicationError


class SecretUnreadable(ApplicationError):
    """A stored secret cannot be decrypted with the configured keys. Fail loudly, by name."""

    status = 500
    code = "secret_unreadable"


def fingerprint(key: str | bytes) -> str:
    """A short, stable name for a Fernet key (first 12 hex digits of its SHA-256)."""
    raw = key.encode() if isinstance(key, str) else key
    return hashlib.sha256(raw.strip()).hexdigest()[:12]


@dataclass(frozen=True)
class Sealed:
    token: str
    key_fingerprint: str


@lru_cache(maxsize=8)
def _keyring(keys: tuple[str, ...]) -> tuple[MultiFernet, tuple[str, ...]]:
    if not keys:
        raise ImproperlyConfigured("EXCHANGE_ENCRYPTION_KEYS holds no Fernet key")
    fernets = []
    for i, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.encode()))
        except (ValueError, TypeError) as exc:
            raise ImproperlyConfigured(
                f"EXCHANGE_ENCRYPTION_KEYS entry {i} is not a Fernet key "
                "(32 url-safe base64-encoded bytes; make one with "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`)"
            ) from exc
    return MultiFernet(fernets), tuple(fingerprint(k) for k in keys)


def _configured() -> tuple[MultiFernet, tuple[str, ...]]:
    return _keyring(tuple(settings.EXCHANGE_ENCRYPTION_KEYS))


def current_fingerprint() -> str:
    """The fingerprint of the key new secrets are encrypted with."""
    return _configured()[1][0]


def configured_fingerprints() -> tuple[str, ...]:
    return _configured()[1]


def seal(plaintext: str) -> Sealed:
    """Encrypt under the newest key."""
    multi, fps = _configured()
    return Sealed(token=multi.encrypt(plaintext.encode()).decode(), key_fingerprint=fps[0])


def unseal(sealed: Sealed, *, owner_label: str) -> str:
    """Decrypt; ``SecretUnreadable`` naming ``owner_label`` (e.g. the account) when no
    configured key can, never a silent empty value."""
    multi, fps = _configured()
    if sealed.key_fingerprint not in fps:
        raise SecretUnreadable(
            f"The stored credentials of {owner_label} were encrypted with key "
            f"{sealed.key_fingerprint}, which is no longer configured in "
            "EXCHANGE_ENCRYPTION_KEYS. Add that key back, or re-link the account."
        )
    try:
        return multi.decrypt(sealed.token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable(
            f"The stored credentials of {owner_label} do not decrypt with key "
            f"{sealed.key_fingerprint} (damaged ciphertext or a different key with the same "
            "fingerprint)."
        ) from exc


def reseal(sealed: Sealed, *, owner_label: str) -> Sealed:
    """The same secret re-encrypted under the newest key (a no-op when it already is)."""
    multi, fps = _configured()
    if sealed.key_fingerprint == fps[0]:
        return sealed
    unseal(sealed, owner_label=owner_label)  # loud, named failure if it cannot be read
    return Sealed(token=multi.rotate(sealed.token.encode()).decode(), key_fingerprint=fps[0])
