"""Personal API keys: make one (the key is returned once), revoke one, check one.

Keys read ``qf_<prefix>_<secret>``: 8 hex characters of public prefix (shown in lists, used to
find the row) and 43 characters of URL-safe secret (256 bits). Only SHA-256 of the whole key is
stored; a key this random needs no slow hash, and a fast one keeps every API call cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import ApiKey, User
from config.exceptions import ApplicationError, NotFound

KEY_PATTERN = re.compile(r"^qf_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
NAME_MAX_LENGTH = 100
# last_used_at is written at most this often per key, so busy clients do not write every call.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Compared against when the prefix is unknown, so that path costs the same hash and compare.
_DUMMY_HASH = hashlib.sha256(b"qf_00000000_unused").hexdigest()


@dataclass(frozen=True)
class NewApiKey:
    """A key just made: ``key`` is the only copy of the secret there will ever be."""

    api_key: ApiKey
    key: str


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_key_create(*, user: User, name: str) -> NewApiKey:
    """Make a key for ``user`` named ``name`` and return it with its one-time secret.

    ApplicationError (field "name") for a blank or over-long name, or when the user already has
    API_KEYS_MAX_PER_USER active keys; nothing is created then.
    """
    name = (name or "").strip()
    if not name:
        raise ApplicationError(
            "Give the key a name, e.g. the script that will use it.", field="name"
        )
    if len(name) > NAME_MAX_LENGTH:
        raise ApplicationError(
            f"Keep the name to {NAME_MAX_LENGTH} characters or fewer.", field="name"
        )
    limit = settings.API_KEYS_MAX_PER_USER
    with transaction.atomic():
        # Lock the user row so two simultaneous requests cannot both pass the limit.
        User.objects.select_for_update().only("pk").get(pk=user.pk)
        if ApiKey.objects.filter(user=user, revoked_at__isnull=True).count() >= limit:
            raise ApplicationError(
                f"You already have {limit} active keys. Revoke one you no longer use first.",
                field="name",
            )
        for _ in range(5):
            prefix = secrets.token_hex(4)
            key = f"qf_{prefix}_{secrets.token_urlsafe(32)}"
            try:
                with transaction.atomic():
                    api_key = ApiKey.objects.create(
                        user=user, name=name, prefix=prefix, secret_hash=_hash(key)
                    )
            except IntegrityError:  # prefix already taken: draw again
                continue
            return NewApiKey(api_key=api_key, key=key)
    raise RuntimeError("could not draw an unused API key prefix")  # pragma: no cover


@transaction.atomic
def api_key_revoke(*, user: User, key_id: int) -> ApiKey:
    """Revoke ``user``'s key ``key_id`` (from now on it answers 401). Revoking twice is harmless.

    NotFound for a missing key or someone else's.
    """
    api_key = ApiKey.objects.select_for_update().filter(user=user, pk=key_id).first()
    if api_key is None:
        raise NotFound("No such API key.")
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


def api_key_check(raw: str) -> ApiKey | None:
    """The active key that ``raw`` is, with its user loaded, or None (malformed, unknown,
    revoked, wrong secret). Marks the key used, at most once per LAST_USED_RESOLUTION."""
    match = KEY_PATTERN.match(raw)
    if match is None:
        return None
    api_key = ApiKey.objects.select_related("user").filter(prefix=match.group(1)).first()
    stored = api_key.secret_hash if api_key is not None else _DUMMY_HASH
    if not hmac.compare_digest(stored, _hash(raw)) or api_key is None:
        return None
    if api_key.revoked_at is not None:
        return None
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        # One conditional UPDATE, no read-modify-write: concurrent calls write at most once.
        cutoff = now - LAST_USED_RESOLUTION
        ApiKey.objects.filter(pk=api_key.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=cutoff)
        ).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key
