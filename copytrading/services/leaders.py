"""Publishing a leader and changing its status."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.gating import require_pro
from config.exceptions import ApplicationError, NotFound
from copytrading import live
from copytrading.models import Leader, Subscription
from copytrading.services.wiring import AdapterFor, default_adapter_for
from exchanges.models import ExchangeAccount
from exchanges.trading import Balance, TradingAdapter, holdings_value

logger = logging.getLogger(__name__)

NAME_MAX = 80
DESCRIPTION_MAX = 2000


def account_equity(
    adapter: TradingAdapter, *, quote: str, balances: dict[str, Balance] | None = None
) -> Decimal:
    """The account's value in ``quote``: the quote balance plus every other asset at its last
    ``<asset>/<quote>`` price (assets without such a market count as nothing)."""

    def left_out(asset: str, _exc: Exception) -> None:
        # An unpriced dust asset must not stop the valuation.
        logger.info("no %s/%s price; %s left out of equity", asset, quote, asset)

    balances = adapter.balances() if balances is None else balances
    return holdings_value(adapter, balances, quote=quote, unpriced=left_out)


def _own_account(user: Any, account_id: int) -> ExchangeAccount:
    account = ExchangeAccount.objects.filter(pk=account_id, owner=user).first()
    if account is None:
        raise NotFound("Exchange account not found.", field="account")
    return account


def _own_leader(user: Any, leader_id: int, *, lock: bool = False) -> Leader:
    qs = Leader.objects.filter(pk=leader_id, owner=user)
    leader = (qs.select_for_update() if lock else qs).first()
    if leader is None:
        raise NotFound("Leader not found.")
    return leader


def leader_publish(
    *,
    user: Any,
    account_id: int,
    name: str,
    description: str = "",
    hide_positions: bool = False,
    quote: str = "USDT",
    adapter_for: AdapterFor | None = None,
) -> Leader:
    """Publish one of the user's accounts as a leader others can copy. Reads the account's
    equity and current positions first (closes of those positions are copied later)."""
    require_pro(user)
    account = _own_account(user, account_id)
    name = (name or "").strip()
    if not name:
        raise ApplicationError("Give the leader a name.", field="name")
    if len(name) > NAME_MAX:
        raise ApplicationError(f"The name is longer than {NAME_MAX} characters.", field="name")
    if len(description or "") > DESCRIPTION_MAX:
        raise ApplicationError(
            f"The description is longer than {DESCRIPTION_MAX} characters.", field="description"
        )
    if account.status == ExchangeAccount.Status.DISABLED:
        raise ApplicationError("That account is disabled.", field="account")
    if Leader.objects.filter(account=account).exclude(status=Leader.Status.RETIRED).exists():
        raise ApplicationError("This account already leads.", field="account")
    adapter = (adapter_for or default_adapter_for)(account)
    try:
        balances = adapter.balances()
        equity = account_equity(adapter, quote=quote, balances=balances)
        positions = {
            p.symbol: str(p.amount)
            for p in adapter.positions()
            if p.amount != 0 and p.symbol.endswith(f"/{quote}")
        }
    except ApplicationError as exc:
        raise ApplicationError(f"The account could not be read: {exc.message}") from None
    now = timezone.now()
    with transaction.atomic():
        leader = Leader.objects.create(
            owner=user,
            account=account,
            name=name,
            description=description or "",
            hide_positions=hide_positions,
            published_at=now,
            quote=quote,
            equity=equity,
            equity_at=now,
            initial_positions=positions,
            fill_cursor_ms=int(now.timestamp() * 1000),
        )
    return leader


def leader_pause(*, user: Any, leader_id: int) -> Leader:
    """Stop followers' copies from opening (closes are still copied)."""
    with transaction.atomic():
        leader = _own_leader(user, leader_id, lock=True)
        if leader.status == Leader.Status.RETIRED:
            raise ApplicationError("A retired leader cannot be paused.", field="status")
        if leader.status != Leader.Status.PAUSED:
            leader.status = Leader.Status.PAUSED
            leader.paused_at = timezone.now()
            leader.save(update_fields=["status", "paused_at"])
    return leader


def leader_resume(*, user: Any, leader_id: int) -> Leader:
    require_pro(user)
    with transaction.atomic():
        leader = _own_leader(user, leader_id, lock=True)
        if leader.status == Leader.Status.RETIRED:
            raise ApplicationError("A retired leader cannot be resumed.", field="status")
        leader.status = Leader.Status.ACTIVE
        leader.paused_at = None
        leader.save(update_fields=["status", "paused_at"])
    return leader


def leader_retire(*, user: Any, leader_id: int) -> Leader:
    """Retire for good: nobody can subscribe, live subscriptions are paused with a message
    (their open copies can still be closed as the leader closes)."""
    with transaction.atomic():
        leader = _own_leader(user, leader_id, lock=True)
        leader_retire_locked(leader)
    return leader


def leader_retire_locked(leader: Leader, *, why: str = "retired") -> None:
    """Retire a leader whose row the caller holds locked (see ``leader_retire``)."""
    if leader.status == Leader.Status.RETIRED:
        return
    leader.status = Leader.Status.RETIRED
    leader.retired_at = timezone.now()
    leader.save(update_fields=["status", "retired_at"])
    active = leader.subscriptions.filter(status=Subscription.Status.ACTIVE)
    ids = list(active.values_list("pk", flat=True))
    Subscription.objects.filter(pk__in=ids).update(
        status=Subscription.Status.PAUSED,
        paused_at=leader.retired_at,
        status_message=f"The leader {leader.name} {why}: no new trades are copied."[:300],
    )
    live.publish_subscriptions([(pk, leader.pk) for pk in ids], change="paused", status="paused")


def leader_stop_set(*, user: Any, leader_id: int, symbol: str, stop_price: Any) -> Leader:
    """Declare (or, with an empty ``stop_price``, clear) the leader's stop in ``symbol``. Its
    next opening fills there carry it: fixed-risk followers size from it, and subscriptions
    that copy the leader's stop close there."""
    from copytrading.services.subscriptions import SYMBOL_RE

    clean = str(symbol or "").strip().upper()
    if not SYMBOL_RE.match(clean):
        raise ApplicationError("Name the market as BASE/QUOTE, e.g. BTC/USDT.", field="symbol")
    value: Decimal | None = None
    if stop_price not in (None, ""):
        try:
            value = Decimal(str(stop_price))
        except (ArithmeticError, ValueError):
            raise ApplicationError("The stop must be a price.", field="stop_price") from None
        if not value.is_finite() or value <= 0 or value > Decimal(10) ** 12:
            raise ApplicationError("The stop must be a price above 0.", field="stop_price")
    with transaction.atomic():
        leader = _own_leader(user, leader_id, lock=True)
        if leader.status == Leader.Status.RETIRED:
            raise ApplicationError("A retired leader has no trades to stop.", field="leader")
        stops = dict(leader.stops or {})
        if value is None:
            stops.pop(clean, None)
        else:
            stops[clean] = format(value.normalize(), "f")
        leader.stops = stops
        leader.save(update_fields=["stops"])
    return leader
