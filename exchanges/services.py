"""Writes for linked exchange accounts: keyword-only, typed, atomic.

Linking and key rotation talk to the exchange *before* anything is stored (no database
transaction is held open across a network call): the key must work, and must not be able to
withdraw. Secrets go through ``exchanges.vault`` only. Every link (refused ones too), test,
rotation, rename and deletion writes an ``AccountEvent``; none holds a secret.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from accounts.gating import require_pro, user_has_pro
from accounts.models import User
from config.exceptions import ApplicationError, Conflict, NotFound
from exchanges import vault
from exchanges.adapters import adapter_for, credentials_for
from exchanges.clients import (
    SUPPORTED_EXCHANGES,
    Credentials,
    ExchangeRefused,
    ExchangeUnavailable,
    exchange_label,
    has_sandbox,
    make_trading_adapter,
    required_credentials,
    supports_trading,
)
from exchanges.events import account_removing, account_usage
from exchanges.models import AccountEvent, AccountSecret, ExchangeAccount

logger = logging.getLogger(__name__)

# Offered in the forms (the supported exchanges but Bitfinex, with their labels and order); any
# other ccxt id that trades works from the API.
LINKABLE_EXCHANGES: tuple[tuple[str, str], ...] = tuple(
    (ex, name) for ex, name in SUPPORTED_EXCHANGES if ex != "bitfinex"
)
WITHDRAW_REFUSAL = (
    "This API key can withdraw funds, so it was refused and nothing was stored. Create a new "
    "key on {exchange} with trading allowed and withdrawals disabled, and link that one."
)
READ_ONLY_NOTE = (
    "Read-only key: the account can be watched (for example as a copy-trading leader) but "
    "cannot place orders."
)
RETRY_HINT = (
    "{exchange} could not be reached ({reason}). Nothing was stored. Try again in a few "
    "minutes, or tick “save as not verified yet” to store the account now and test it later."
)
_KEY_RE = re.compile(r"^[\x21-\x7e]{4,1024}$")  # printable ASCII, no spaces
_LABEL_MAX = 80


class AccountLimitReached(ApplicationError):
    status = 403
    code = "plan_limit"


@dataclass
class Probe:
    """What one connection test found."""

    ok: bool
    reachable: bool = True
    message: str = ""
    can_trade: bool = False
    can_withdraw: bool = False
    permissions: dict[str, Any] = field(default_factory=dict)
    balances: dict[str, dict[str, str]] = field(default_factory=dict)


def _probe(*, exchange: str, credentials: Credentials, sandbox: bool, adapter: Any = None) -> Probe:
    """Fetch balances and read the key's permissions. Never raises for the exchange's answers:
    a refusal (wrong key) is ``ok=False`` with the exchange's message, an outage is
    ``reachable=False``."""
    label = exchange_label(exchange)
    try:
        adapter = adapter or make_trading_adapter(
            exchange, credentials=credentials, sandbox=sandbox, max_attempts=2
        )
        balances = adapter.balances()
        perms = adapter.key_permissions()
    except ExchangeUnavailable as exc:
        return Probe(ok=False, reachable=False, message=exc.message)
    except ExchangeRefused as exc:
        return Probe(ok=False, message=exc.message)
    details = dict(perms.details)
    details["verified"] = perms.verified
    snapshot = _snapshot(balances)
    message = "" if perms.can_trade else READ_ONLY_NOTE
    if perms.can_withdraw:
        message = WITHDRAW_REFUSAL.format(exchange=label)
    return Probe(
        ok=True,
        message=message,
        can_trade=perms.can_trade and not perms.can_withdraw,
        can_withdraw=perms.can_withdraw,
        permissions=details,
        balances=snapshot,
    )


def _plain(value: Decimal) -> str:
    """A Decimal as plain digits without trailing zeros ("15.0" -> "15", 1E+1 -> "10")."""
    return format(value.normalize(), "f") if value else "0"


def _snapshot(balances: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {
        asset: {"free": _plain(b.free), "used": _plain(b.used)}
        for asset, b in sorted(balances.items())[:100]
    }


def _event(
    *,
    owner: User,
    action: str,
    account: ExchangeAccount | None = None,
    label: str = "",
    exchange: str = "",
    ok: bool = True,
    trigger: str = "",
    message: str = "",
    detail: dict[str, Any] | None = None,
) -> AccountEvent:
    return AccountEvent.objects.create(
        owner=owner,
        account=account,
        account_label=(account.label if account else label)[:_LABEL_MAX],
        exchange=account.exchange if account else exchange,
        action=action,
        ok=ok,
        trigger=trigger[:16],
        message=message[:500],
        detail=detail or {},
    )


def _status_event(owner: User, account: ExchangeAccount, action: str, trigger: str) -> None:
    """Record a link or key rotation with the status its connection test left."""
    _event(
        owner=owner,
        account=account,
        action=action,
        trigger=trigger,
        message=account.status_message,
        detail={"status": account.status, "can_trade": account.can_trade},
    )


def _clean_label(label: str) -> str:
    label = (label or "").strip()
    if not label:
        raise ApplicationError("Give the account a name.", field="label")
    if len(label) > _LABEL_MAX:
        raise ApplicationError(f"Names are at most {_LABEL_MAX} characters.", field="label")
    return label


def _clean_credentials(exchange: str, *, api_key: str, secret: str, passphrase: str) -> Credentials:
    api_key, secret, passphrase = (api_key or "").strip(), (secret or "").strip(), passphrase or ""
    for name, value in (("api_key", api_key), ("secret", secret)):
        if not value:
            raise ApplicationError("This field is required.", field=name)
        if not _KEY_RE.match(value):
            raise ApplicationError(
                "Paste the value exactly as the exchange shows it (no spaces).", field=name
            )
    needs = required_credentials(exchange)
    if needs.get("password") and not passphrase.strip():
        raise ApplicationError(
            f"{exchange_label(exchange)} keys come with a passphrase: enter it too.",
            field="passphrase",
        )
    if len(passphrase) > 256:
        raise ApplicationError("The passphrase is too long.", field="passphrase")
    return Credentials(api_key=api_key, secret=secret, password=passphrase.strip())


def _check_exchange(exchange: str, sandbox: bool) -> str:
    exchange = (exchange or "").strip().lower()
    if not exchange or not re.fullmatch(r"[a-z0-9_]{2,40}", exchange):
        raise ApplicationError("Choose an exchange.", field="exchange")
    if not supports_trading(exchange):
        raise ApplicationError(
            f"{exchange_label(exchange)} is not an exchange this service can trade on.",
            field="exchange",
        )
    if sandbox and not has_sandbox(exchange):
        raise ApplicationError(
            f"{exchange_label(exchange)} has no sandbox/testnet.", field="sandbox"
        )
    return exchange


def _store_secrets(account: ExchangeAccount, credentials: Credentials) -> None:
    values = {
        AccountSecret.Name.API_KEY: credentials.api_key,
        AccountSecret.Name.API_SECRET: credentials.secret,
        AccountSecret.Name.PASSPHRASE: credentials.password,
    }
    for name, value in values.items():
        if not value:
            AccountSecret.objects.filter(account=account, name=name).delete()
            continue
        sealed = vault.seal(value)
        AccountSecret.objects.update_or_create(
            account=account,
            name=name,
            defaults={"ciphertext": sealed.token, "key_fingerprint": sealed.key_fingerprint},
        )


def _apply_probe(account: ExchangeAccount, probe: Probe) -> None:
    now = timezone.now()
    if probe.ok:
        # A key that can withdraw is disabled: it never trades here.
        withdraws = bool(probe.can_withdraw)
        account.status = ExchangeAccount.Status.DISABLED if withdraws else ExchangeAccount.Status.OK
        account.can_trade = False if withdraws else probe.can_trade
        account.can_withdraw = withdraws
        account.permissions = probe.permissions
        account.balances = probe.balances
        account.checked_at = now
    elif probe.reachable:
        account.status = ExchangeAccount.Status.FAILING
        account.can_trade = False
        account.checked_at = now
    else:
        # An outage says nothing about the key: keep what we knew, note that it failed.
        if account.status != ExchangeAccount.Status.UNVERIFIED:
            account.status = ExchangeAccount.Status.FAILING
        account.checked_at = now
    account.status_message = probe.message[:500]


def _limit_check(user: User) -> None:
    limit = user.plan.max_exchange_accounts
    if ExchangeAccount.objects.filter(owner=user).count() >= limit:
        raise AccountLimitReached(
            f"Your plan allows {limit} linked exchange accounts; delete one to link another."
        )


def account_link(
    *,
    user: User,
    exchange: str,
    label: str,
    api_key: str,
    secret: str,
    passphrase: str = "",
    sandbox: bool = False,
    save_unverified: bool = False,
    trigger: str = "web",
) -> ExchangeAccount:
    """Link an API-key account after a connection test.

    Refused, with nothing stored: a wrong key or secret (the exchange's message), a key that
    can withdraw, an exchange that cannot be reached (unless ``save_unverified``: then it is
    stored as "not verified yet"). A read-only key is linked with ``can_trade`` False.
    """
    require_pro(user)
    exchange = _check_exchange(exchange, sandbox)
    label = _clean_label(label)
    credentials = _clean_credentials(
        exchange, api_key=api_key, secret=secret, passphrase=passphrase
    )
    _limit_check(user)
    if ExchangeAccount.objects.filter(owner=user, label=label).exists():
        raise Conflict(f"You already have an account named “{label}”.", field="label")

    probe = _probe(exchange=exchange, credentials=credentials, sandbox=sandbox)
    name = exchange_label(exchange)
    refusal = ""
    if probe.ok and probe.can_withdraw:
        refusal = WITHDRAW_REFUSAL.format(exchange=name)
    elif not probe.ok and probe.reachable:
        refusal = f"{probe.message} Nothing was stored: check the key and secret."
    elif not probe.reachable and not save_unverified:
        refusal = RETRY_HINT.format(exchange=name, reason=probe.message)
    if refusal:
        with transaction.atomic():
            _event(
                owner=user,
                action=AccountEvent.Action.LINK_REFUSED,
                label=label,
                exchange=exchange,
                ok=False,
                trigger=trigger,
                message=refusal,
                detail={"permissions": probe.permissions} if probe.ok else {},
            )
        error_type = ExchangeUnavailable if not probe.reachable else ApplicationError
        raise error_type(refusal, field="api_key" if probe.reachable else None)

    try:
        with transaction.atomic():
            account = ExchangeAccount(
                owner=user,
                kind=ExchangeAccount.Kind.API_KEY,
                exchange=exchange,
                label=label,
                sandbox=sandbox,
                key_last4=credentials.api_key[-4:],
            )
            _apply_probe(account, probe)
            if not probe.reachable:
                account.status = ExchangeAccount.Status.UNVERIFIED
                account.status_message = f"Saved without a connection test: {probe.message}"[:500]
            account.save()
            _store_secrets(account, credentials)
            _status_event(user, account, AccountEvent.Action.LINK, trigger)
    except IntegrityError as exc:
        raise Conflict(f"You already have an account named “{label}”.", field="label") from exc
    logger.info("exchange account %s linked (%s, %s)", account.pk, exchange, account.status)
    return account


def account_test(
    *, account: ExchangeAccount, user: User | None = None, trigger: str = "web"
) -> ExchangeAccount:
    """Test the connection now: balances and key permissions, stored with the time. A key that
    has gained the right to withdraw is disabled for trading."""
    if user is not None:
        require_pro(user)
    if account.kind == ExchangeAccount.Kind.PAPER:
        adapter = adapter_for(account)
        balances = adapter.balances()
        probe = Probe(
            ok=True,
            can_trade=True,
            permissions={"paper": True, "verified": True},
            balances=_snapshot(balances),
        )
    else:
        try:
            credentials = credentials_for(account)
        except vault.SecretUnreadable as exc:
            probe = Probe(ok=False, message=exc.message)
        else:
            probe = _probe(
                exchange=account.exchange, credentials=credentials, sandbox=account.sandbox
            )
    with transaction.atomic():
        locked = ExchangeAccount.objects.select_for_update().get(pk=account.pk)
        _apply_probe(locked, probe)
        locked.save()
        _event(
            owner=locked.owner,
            account=locked,
            action=AccountEvent.Action.TEST,
            ok=probe.ok and not probe.can_withdraw,
            trigger=trigger,
            message=locked.status_message,
            detail={"status": locked.status, "reachable": probe.reachable},
        )
    return locked


def account_rename(*, user: User, account: ExchangeAccount, label: str) -> ExchangeAccount:
    """Give the account another name (unique among the user's accounts)."""
    require_pro(user)
    label = _clean_label(label)
    if label == account.label:
        return account
    if ExchangeAccount.objects.filter(owner=user, label=label).exclude(pk=account.pk).exists():
        raise Conflict(f"You already have an account named “{label}”.", field="label")
    old = account.label
    with transaction.atomic():
        account.label = label
        account.save(update_fields=["label", "updated_at"])
        _event(
            owner=user,
            account=account,
            action=AccountEvent.Action.RENAME,
            trigger="web",
            message=f"Renamed from “{old}”.",
        )
    return account


def account_rotate_key(
    *,
    user: User,
    account: ExchangeAccount,
    api_key: str,
    secret: str,
    passphrase: str = "",
    trigger: str = "web",
) -> ExchangeAccount:
    """Replace the account's key with a new one after the same checks as linking; the old
    key stays stored when the new one is refused."""
    require_pro(user)
    if account.kind != ExchangeAccount.Kind.API_KEY:
        raise ApplicationError("Only API-key accounts have a key to rotate.")
    credentials = _clean_credentials(
        account.exchange, api_key=api_key, secret=secret, passphrase=passphrase
    )
    probe = _probe(exchange=account.exchange, credentials=credentials, sandbox=account.sandbox)
    name = exchange_label(account.exchange)
    refusal = ""
    if probe.ok and probe.can_withdraw:
        refusal = WITHDRAW_REFUSAL.format(exchange=name)
    elif not probe.ok and probe.reachable:
        refusal = f"{probe.message} The old key was kept."
    elif not probe.reachable:
        refusal = RETRY_HINT.format(exchange=name, reason=probe.message).replace(
            " or tick “save as not verified yet” to store the account now and test it later", ""
        )
    if refusal:
        with transaction.atomic():
            _event(
                owner=user,
                account=account,
                action=AccountEvent.Action.ROTATE_REFUSED,
                ok=False,
                trigger=trigger,
                message=refusal,
            )
        raise (ExchangeUnavailable if not probe.reachable else ApplicationError)(
            refusal, field="api_key" if probe.reachable else None
        )
    with transaction.atomic():
        locked = ExchangeAccount.objects.select_for_update().get(pk=account.pk)
        _store_secrets(locked, credentials)
        locked.key_last4 = credentials.api_key[-4:]
        _apply_probe(locked, probe)
        locked.save()
        _status_event(user, locked, AccountEvent.Action.ROTATE, trigger)
    return locked


def account_uses(account: ExchangeAccount) -> list[str]:
    """What runs on this account now, in words ("Copying leader X", "Grid bot Y"), from every
    app that registered a receiver of ``exchanges.events.account_usage``."""
    uses: list[str] = []
    for _, answer in account_usage.send(sender=ExchangeAccount, account=account):
        uses.extend(str(a) for a in answer or [])
    return uses


def account_delete(*, user: User, account: ExchangeAccount, trigger: str = "web") -> None:
    """Delete the account and its stored secrets. Receivers of
    ``exchanges.events.account_removing`` stop what runs on it in the same transaction."""
    if not user.is_authenticated or account.owner_id != user.pk:
        raise NotFound("Exchange account not found.")
    uses = account_uses(account)
    with transaction.atomic():
        account_removing.send(sender=ExchangeAccount, account=account)
        _event(
            owner=user,
            account=account,
            action=AccountEvent.Action.DELETE,
            trigger=trigger,
            message="Deleted; stored keys erased."
            + (f" Stopped: {'; '.join(uses)}." if uses else ""),
        )
        try:
            with transaction.atomic():
                account.delete()
        except ProtectedError as exc:
            # A leader, a copy subscription or a bot keeps its history on this account: refuse,
            # change nothing, and say what holds it (stop or remove those first).
            holders = sorted({_holder_words(obj) for obj in exc.protected_objects})
            raise Conflict(
                f"“{account.label}” is still used by {', '.join(holders)}. Stop or delete "
                "those first, then delete the account."
            ) from None


def _holder_words(obj: object) -> str:
    meta = getattr(obj, "_meta", None)
    kind = str(meta.verbose_name) if meta is not None else type(obj).__name__
    return f"{kind} “{obj}”"


def account_check_scheduled(*, account_id: int, trigger: str) -> str:
    """A connection test from a task: a deleted account is "gone"; an account whose owner no
    longer has Pro is skipped ("plan_required") without contacting the exchange."""
    account = ExchangeAccount.objects.select_related("owner").filter(pk=account_id).first()
    if account is None:
        return "gone"
    if not user_has_pro(account.owner):
        return "plan_required"
    return account_test(account=account, trigger=trigger).status


def accounts_test_all(*, trigger: str = "daily") -> dict[str, int]:
    """Test every non-paper account of a Pro owner (the daily beat task); counts by the
    resulting status ("plan_required" for owners without Pro, who are not contacted)."""
    counts: dict[str, int] = {}
    ids = list(
        ExchangeAccount.objects.exclude(kind=ExchangeAccount.Kind.PAPER)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for pk in ids:
        try:
            result = account_check_scheduled(account_id=pk, trigger=trigger)
        except ApplicationError as exc:
            logger.warning("daily test of exchange account %s failed: %s", pk, exc.message)
            result = "error"
        if result != "gone":
            counts[result] = counts.get(result, 0) + 1
    return counts


@dataclass
class RotationReport:
    secrets_total: int = 0
    reencrypted: int = 0
    already_current: int = 0
    accounts: int = 0


def secrets_reencrypt() -> RotationReport:
    """Re-encrypt every stored secret under the newest key (``rotate_exchange_keys``). Stops
    at the first secret no configured key can read, naming its account (``SecretUnreadable``);
    each account is rewritten in its own transaction."""
    report = RotationReport()
    current = vault.current_fingerprint()
    for account in ExchangeAccount.objects.filter(secrets__isnull=False).distinct().order_by("pk"):
        owner_label = f"exchange account {account.pk} ({account.label}, owner {account.owner_id})"
        with transaction.atomic():
            changed = 0
            for secret in AccountSecret.objects.select_for_update().filter(account=account):
                report.secrets_total += 1
                if secret.key_fingerprint == current:
                    report.already_current += 1
                    continue
                sealed = vault.reseal(secret.sealed, owner_label=owner_label)
                secret.ciphertext = sealed.token
                secret.key_fingerprint = sealed.key_fingerprint
                secret.save(update_fields=["ciphertext", "key_fingerprint", "updated_at"])
                changed += 1
            if changed:
                report.reencrypted += changed
                _event(
                    owner=account.owner,
                    account=account,
                    action=AccountEvent.Action.REENCRYPT,
                    trigger="command",
                    message=f"{changed} secret(s) re-encrypted under key {current}.",
                )
        report.accounts += 1
    return report


def balances_total(account: ExchangeAccount) -> dict[str, Decimal]:
    """The stored balance snapshot as Decimals (free + used)."""
    out: dict[str, Decimal] = {}
    for asset, row in (account.balances or {}).items():
        out[asset] = Decimal(row.get("free", "0")) + Decimal(row.get("used", "0"))
    return out
