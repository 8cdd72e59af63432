"""Linking a Coinbase account with OAuth2 (authorization code + PKCE), and keeping it linked.

The flow:

1. ``oauth_authorize_url`` makes a ``state`` (CSRF, 256 random bits) and a PKCE verifier,
   keeps both in the user's session (bound to it, single use, ten minutes) and returns
   Coinbase's authorize URL with the S256 challenge and the scopes (``COINBASE_OAUTH_SCOPES``:
   read accounts, read and create orders, read trades, ``offline_access`` for a refresh token).
2. Coinbase sends the browser back to the callback with ``code`` and ``state``;
   ``oauth_account_link`` pops the pending state (a replayed, foreign or expired state is
   refused), trades the code for tokens (client secret + verifier + the same redirect URI),
   reads the accounts with the new access token, and stores the account with both tokens
   sealed (``AccountSecret`` OAUTH_ACCESS with its expiry, OAUTH_REFRESH).
3. ``oauth_access_token`` hands out the access token, refreshing it first when it expires
   within ``COINBASE_OAUTH_REFRESH_MARGIN_SECONDS``. Coinbase's refresh tokens are single use,
   so the refresh runs under the account row's lock and stores the new pair before anyone else
   can read the old one. A refresh Coinbase refuses marks the account NEEDS_RELINK with a
   message telling the user to link it again; a refresh that merely failed to get an answer
   leaves the account alone (try again later).
4. ``oauth_account_unlink`` revokes the token at Coinbase, then deletes the account.

Tokens never appear in logs, messages, exceptions or responses: errors carry Coinbase's
``error`` code and description only.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.exceptions import ApplicationError
from exchanges import vault
from exchanges.models import AccountSecret, ExchangeAccount

SESSION_KEY = "coinbase_oauth_pending"
PENDING_TTL_S = 600
MAX_PENDING = 5
HTTP_TIMEOUT_S = 15
RELINK_MESSAGE = (
    "Coinbase no longer accepts this link ({reason}). Link the account again from the "
    "Coinbase page to keep using it."
)


class OAuthError(ApplicationError):
    """The link could not be made or used; the message is safe to show (no tokens in it)."""

    code = "oauth_error"


class OAuthNotConfigured(OAuthError):
    status = 503
    code = "oauth_not_configured"


class OAuthRelinkNeeded(OAuthError):
    status = 409
    code = "needs_relink"


class OAuthUnavailable(OAuthError):
    status = 503
    code = "exchange_unavailable"


def oauth_missing_settings() -> list[str]:
    """Names of the settings Coinbase linking needs and lacks (empty: it is configured)."""
    return [
        name
        for name in ("COINBASE_OAUTH_CLIENT_ID", "COINBASE_OAUTH_CLIENT_SECRET")
        if not getattr(settings, name, "")
    ]


def oauth_configured() -> bool:
    return not oauth_missing_settings()


def _require_configured() -> None:
    missing = oauth_missing_settings()
    if missing:
        raise OAuthNotConfigured(
            "Linking Coinbase is not set up on this server: the operator has to set "
            + " and ".join(missing)
            + "."
        )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def pkce_challenge(verifier: str) -> str:
    """S256: base64url(SHA-256(verifier)) without padding (RFC 7636)."""
    return _b64(hashlib.sha256(verifier.encode()).digest())


# --- step 1: the authorize URL ------------------------------------------------------------------


def oauth_authorize_url(
    *, session: Any, redirect_uri: str, label: str = "", relink_account_id: int | None = None
) -> str:
    """Coinbase's authorize URL for this session; remembers state and verifier in it."""
    _require_configured()
    state = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)  # 86 characters, inside RFC 7636's 43-128
    now = time.time()
    pending = {
        k: v
        for k, v in (session.get(SESSION_KEY) or {}).items()
        if now - float(v.get("at", 0)) < PENDING_TTL_S
    }
    while len(pending) >= MAX_PENDING:  # the oldest attempt goes first
        pending.pop(min(pending, key=lambda k: pending[k]["at"]))
    pending[state] = {
        "verifier": verifier,
        "redirect_uri": redirect_uri,
        "label": label,
        "relink": relink_account_id,
        "at": now,
    }
    session[SESSION_KEY] = pending
    query = {
        "response_type": "code",
        "client_id": settings.COINBASE_OAUTH_CLIENT_ID,
        "redirect_uri": redirect_uri,
        "state": state,
        "scope": settings.COINBASE_OAUTH_SCOPES,
        "code_challenge": pkce_challenge(verifier),
        "code_challenge_method": "S256",
    }
    return settings.COINBASE_OAUTH_AUTHORIZE_URL + "?" + urlencode(query)


def _pop_pending(session: Any, state: str) -> dict[str, Any]:
    pending = dict(session.get(SESSION_KEY) or {})
    entry = pending.pop(state, None) if state else None
    session[SESSION_KEY] = pending
    if entry is None or time.time() - float(entry.get("at", 0)) >= PENDING_TTL_S:
        raise OAuthError(
            "This Coinbase link request is unknown, expired or already used. Start again from "
            "the Coinbase page."
        )
    return entry


# --- HTTP ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tokens:
    access: str
    refresh: str
    expires_at: datetime
    scope: str


def _post_form(url: str, data: dict[str, str]) -> requests.Response:
    try:
        return requests.post(
            url, data=data, timeout=HTTP_TIMEOUT_S, headers={"Accept": "application/json"}
        )
    except requests.RequestException as exc:
        # The exception text can hold the request; say only what kind of failure it was.
        raise OAuthUnavailable(
            f"Coinbase did not answer ({type(exc).__name__}); try again in a minute."
        ) from None


def _provider_error(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = {}
    error = str(body.get("error") or f"HTTP {response.status_code}")[:60]
    described = str(body.get("error_description") or "")[:200]
    return f"{error}: {described}" if described else error


def _tokens(response: requests.Response, now: datetime) -> Tokens:
    try:
        body = response.json()
        access, refresh = str(body["access_token"]), str(body.get("refresh_token") or "")
        expires_in = int(body.get("expires_in") or 3600)
    except (ValueError, KeyError, TypeError):
        raise OAuthError("Coinbase answered the token request in an unexpected form") from None
    if not refresh:
        raise OAuthError(
            "Coinbase gave no refresh token (the offline_access scope was not granted), so "
            "the link would stop working within hours. Link again and allow offline access."
        )
    return Tokens(access, refresh, now + timedelta(seconds=expires_in), str(body.get("scope", "")))


def _exchange_code(code: str, verifier: str, redirect_uri: str) -> Tokens:
    now = timezone.now()
    response = _post_form(
        settings.COINBASE_OAUTH_TOKEN_URL,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": settings.COINBASE_OAUTH_CLIENT_ID,
            "client_secret": settings.COINBASE_OAUTH_CLIENT_SECRET,
            "code_verifier": verifier,
        },
    )
    if response.status_code >= 500:
        raise OAuthUnavailable(f"Coinbase failed to answer (HTTP {response.status_code})")
    if response.status_code != 200:
        raise OAuthError(f"Coinbase refused the link ({_provider_error(response)})")
    return _tokens(response, now)


def _get_accounts(access_token: str) -> dict[str, dict[str, str]]:
    """Balances from Advanced Trade ``GET /api/v3/brokerage/accounts`` (all pages)."""
    balances: dict[str, dict[str, str]] = {}
    cursor = ""
    for _ in range(50):  # 50 pages x 250 accounts is more than any user has
        params = {"limit": "250", **({"cursor": cursor} if cursor else {})}
        try:
            response = requests.get(
                settings.COINBASE_API_BASE.rstrip("/") + "/api/v3/brokerage/accounts",
                params=params,
                headers={"Authorization": f"Bearer {access_token}"},
                timeout=HTTP_TIMEOUT_S,
            )
        except requests.RequestException as exc:
            raise OAuthUnavailable(
                f"Coinbase did not answer ({type(exc).__name__}); try again in a minute."
            ) from None
        if response.status_code == 401:
            raise OAuthRelinkNeeded("Coinbase refused the access token (HTTP 401)")
        if response.status_code != 200:
            raise OAuthUnavailable(f"Coinbase failed to list the accounts ({response.status_code})")
        body = response.json()
        for row in body.get("accounts") or []:
            currency = str(row.get("currency") or "")
            try:
                free = Decimal(str((row.get("available_balance") or {}).get("value") or "0"))
                used = Decimal(str((row.get("hold") or {}).get("value") or "0"))
            except InvalidOperation:
                continue
            if currency and (free or used):
                balances[currency] = {"free": f"{free:f}", "used": f"{used:f}"}
        cursor = str(body.get("cursor") or "")
        if not body.get("has_next") or not cursor:
            break
    return balances


# --- storing tokens ------------------------------------------------------------------------------


def _store_tokens(account: ExchangeAccount, tokens: Tokens) -> None:
    for name, value, expires in (
        (AccountSecret.Name.OAUTH_ACCESS, tokens.access, tokens.expires_at),
        (AccountSecret.Name.OAUTH_REFRESH, tokens.refresh, None),
    ):
        sealed = vault.seal(value)
        AccountSecret.objects.update_or_create(
            account=account,
            name=name,
            defaults={
                "ciphertext": sealed.token,
                "key_fingerprint": sealed.key_fingerprint,
                "expires_at": expires,
            },
        )


def _read(account: ExchangeAccount, name: str) -> tuple[str, datetime | None] | None:
    row = AccountSecret.objects.filter(account=account, name=name).first()
    if row is None:
        return None
    return vault.unseal(row.sealed, owner_label=f"account “{account.label}”"), row.expires_at


def _free_label(owner: Any, wanted: str) -> str:
    base = (wanted or "Coinbase").strip()[:70] or "Coinbase"
    label, n = base, 1
    while ExchangeAccount.objects.filter(owner=owner, label=label).exists():
        n += 1
        label = f"{base} {n}"
    return label


def _scopes(tokens: Tokens) -> list[str]:
    granted = tokens.scope or settings.COINBASE_OAUTH_SCOPES
    return sorted({s for s in granted.replace(" ", ",").split(",") if s})


# --- step 2: the callback ------------------------------------------------------------------------


def oauth_account_link(
    *, owner: Any, session: Any, state: str, code: str = "", error: str = ""
) -> ExchangeAccount:
    """Finish the flow the session started: a new (or re-linked) Coinbase account."""
    _require_configured()
    pending = _pop_pending(session, state)
    if error:
        raise OAuthError(
            "Coinbase did not grant access"
            + (" (you declined)" if error == "access_denied" else f" ({error[:60]})")
            + ". Nothing was linked."
        )
    if not code:
        raise OAuthError("Coinbase sent no authorization code. Nothing was linked.")
    tokens = _exchange_code(code, pending["verifier"], pending["redirect_uri"])
    balances = _get_accounts(tokens.access)
    scopes = _scopes(tokens)
    with transaction.atomic():
        account = None
        if pending.get("relink"):
            account = (
                ExchangeAccount.objects.select_for_update()
                .filter(pk=pending["relink"], owner=owner, kind=ExchangeAccount.Kind.OAUTH)
                .first()
            )
        if account is None:
            account = ExchangeAccount(
                owner=owner,
                kind=ExchangeAccount.Kind.OAUTH,
                exchange="coinbase",
                label=_free_label(owner, pending.get("label") or "Coinbase"),
            )
        account.status = ExchangeAccount.Status.OK
        account.status_message = ""
        account.can_trade = "wallet:orders:create" in scopes
        account.can_withdraw = any(
            s.startswith(("wallet:transactions:send", "wallet:withdrawals")) for s in scopes
        )
        account.permissions = {"oauth_scopes": scopes}
        account.balances = balances
        account.checked_at = timezone.now()
        account.save()
        _store_tokens(account, tokens)
    return account


# --- step 3: using and refreshing ----------------------------------------------------------------


def _needs_relink(account: ExchangeAccount, reason: str) -> OAuthRelinkNeeded:
    message = RELINK_MESSAGE.format(reason=reason)
    ExchangeAccount.objects.filter(pk=account.pk).update(
        status=ExchangeAccount.Status.NEEDS_RELINK,
        status_message=message[:500],
        can_trade=False,
        updated_at=timezone.now(),
    )
    account.status = ExchangeAccount.Status.NEEDS_RELINK
    account.status_message = message[:500]
    return OAuthRelinkNeeded(message)


def oauth_access_token(
    account: ExchangeAccount, *, now: datetime | None = None, force_refresh: bool = False
) -> str:
    """A usable access token for the account, refreshed (and the refresh token rotated) when
    it expires within the margin, or when ``force_refresh`` (Coinbase refused it early).
    ``OAuthRelinkNeeded`` when Coinbase refuses the refresh."""
    if account.kind != ExchangeAccount.Kind.OAUTH:
        raise OAuthError(f"{account.label} is not linked with OAuth")
    if account.status == ExchangeAccount.Status.NEEDS_RELINK:
        raise OAuthRelinkNeeded(account.status_message or RELINK_MESSAGE.format(reason="expired"))
    margin = timedelta(seconds=settings.COINBASE_OAUTH_REFRESH_MARGIN_SECONDS)
    now = now or timezone.now()
    current = _read(account, AccountSecret.Name.OAUTH_ACCESS)
    if current and current[1] and current[1] - margin > now and not force_refresh:
        return current[0]
    _require_configured()
    seen = current[0] if current else None
    with transaction.atomic():
        ExchangeAccount.objects.select_for_update().get(pk=account.pk)
        # Someone refreshed while we waited for the lock: theirs is the new, good token (and
        # our refresh token is already spent).
        current = _read(account, AccountSecret.Name.OAUTH_ACCESS)
        if current and current[0] != seen:
            return current[0]
        if current and current[1] and current[1] - margin > now and not force_refresh:
            return current[0]
        refresh = _read(account, AccountSecret.Name.OAUTH_REFRESH)
        if refresh is None:
            reason = "no refresh token is stored"
        else:
            response = _post_form(
                settings.COINBASE_OAUTH_TOKEN_URL,
                {
                    "grant_type": "refresh_token",
                    "refresh_token": refresh[0],
                    "client_id": settings.COINBASE_OAUTH_CLIENT_ID,
                    "client_secret": settings.COINBASE_OAUTH_CLIENT_SECRET,
                },
            )
            if response.status_code >= 500:
                raise OAuthUnavailable(f"Coinbase failed to answer (HTTP {response.status_code})")
            if response.status_code == 200:
                tokens = _tokens(response, timezone.now())
                _store_tokens(account, tokens)
                return tokens.access
            reason = f"refresh refused: {_provider_error(response)}"
    # After the block, so the NEEDS_RELINK mark is not rolled back with it.
    raise _needs_relink(account, reason)


def oauth_account_check(*, account: ExchangeAccount) -> ExchangeAccount:
    """Read the balances now (refreshing the token when due); status OK, or NEEDS_RELINK with
    the message, or unchanged when Coinbase did not answer (raises OAuthUnavailable)."""
    token = oauth_access_token(account)  # a refused refresh raises (and marks) here
    try:
        balances = _get_accounts(token)
    except OAuthRelinkNeeded:
        # Refused before its time (clocks disagree, or revoked): one forced refresh, one retry.
        token = oauth_access_token(account, force_refresh=True)
        try:
            balances = _get_accounts(token)
        except OAuthRelinkNeeded as exc:
            raise _needs_relink(account, exc.message) from None
    ExchangeAccount.objects.filter(pk=account.pk).update(
        balances=balances,
        checked_at=timezone.now(),
        status=ExchangeAccount.Status.OK,
        status_message="",
        updated_at=timezone.now(),
    )
    account.refresh_from_db()
    return account


# --- step 4: unlinking ---------------------------------------------------------------------------


def oauth_account_unlink(*, account: ExchangeAccount) -> bool:
    """Revoke the account's tokens at Coinbase, then delete the account and its secrets.
    Returns whether Coinbase confirmed the revocation (the account is deleted either way; a
    token Coinbase could not be told about expires on its own within hours)."""
    if account.kind != ExchangeAccount.Kind.OAUTH:
        raise OAuthError(f"{account.label} is not linked with OAuth")
    confirmed = False
    refresh = _read(account, AccountSecret.Name.OAUTH_REFRESH)
    access = _read(account, AccountSecret.Name.OAUTH_ACCESS)
    if oauth_configured() and (refresh or access):
        confirmed = True
        for token in (t for t in (refresh, access) if t):
            try:
                response = _post_form(
                    settings.COINBASE_OAUTH_REVOKE_URL,
                    {
                        "token": token[0],
                        "client_id": settings.COINBASE_OAUTH_CLIENT_ID,
                        "client_secret": settings.COINBASE_OAUTH_CLIENT_SECRET,
                    },
                )
            except OAuthUnavailable:
                confirmed = False
                continue
            confirmed = confirmed and response.status_code == 200
    account.delete()
    return confirmed
