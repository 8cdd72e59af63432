"""Writes of the risk app: profiles, latched trading states, the pre-trade check of every live
order (``order_check``), equity snapshots and the kill switch.

Adapters come through an injectable ``adapter_for`` (default: ``exchanges.adapters.adapter_for``,
imported only when used), so this module codes against ``exchanges.trading.TradingAdapter``
and cannot tell a paper account from a real one.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from config.exceptions import ApplicationError
from config.realtime import group_send
from exchanges.clients import submit_order
from exchanges.models import ExchangeAccount
from exchanges.trading import (
    MarketRules,
    OrderRequest,
    OrderStatusUnknown,
    OrderTooSmall,
    Position,
    TradingAdapter,
    holdings_value,
)
from risk import rules, selectors
from risk.models import (
    DeniedOrder,
    EquitySnapshot,
    KillSwitchRun,
    ManualClose,
    RiskProfile,
    StateTransition,
    TradingState,
)
from risk.signals import trading_halted

logger = logging.getLogger(__name__)

AdapterFor = Callable[[ExchangeAccount], TradingAdapter]
KILL_SWITCH_TASK = "risk.kill_switch_retry"
KILL_SWITCH_MAX_ATTEMPTS = 5
KILL_SWITCH_RETRY_SECONDS = (5, 15, 60, 300)
State = TradingState.State


class LimitsInvalid(ApplicationError):
    """Limits outside their ranges; ``extra`` holds every field's message. Nothing saved."""

    code = "invalid_limits"


def _default_adapter_for(account: ExchangeAccount) -> TradingAdapter:
    from exchanges.adapters import adapter_for  # the ccxt/paper adapters, loaded when needed

    adapter: TradingAdapter = adapter_for(account)
    return adapter


def _kill_switch_adapter_for(account: ExchangeAccount) -> TradingAdapter:
    """The adapter the kill switch uses: few transport retries per call (the kill switch has
    its own retries, on the live queue, so one dead exchange does not hold up the others)."""
    from exchanges.adapters import adapter_for

    adapter: TradingAdapter = adapter_for(account, max_attempts=2, backoff_start=0.5)
    return adapter


def group_name(user_id: int) -> str:
    return f"risk-{user_id}"


def _notify(user_id: int, kind: str, payload: Mapping[str, Any]) -> None:
    message = {"type": "risk.update", "kind": kind, **payload}
    transaction.on_commit(lambda: group_send(group_name(user_id), message))


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _clean_figures(figures: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in figures.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
        elif isinstance(v, Decimal):
            out[k] = str(v)
        else:
            out[k] = v
    return out


# --- profiles ----------------------------------------------------------------------------------


def risk_profile_update(
    *, user: Any, values: Mapping[str, Any], account: ExchangeAccount | None = None
) -> RiskProfile:
    """Save the user's default limits (or ``account``'s override, started from the default)
    with ``values`` over the current ones. Invalid → ``LimitsInvalid`` with every field's
    message in ``extra``; nothing is saved."""
    if account is not None and account.owner_id != user.pk:
        raise ApplicationError("No such exchange account.", field="account")
    unknown = sorted(set(values) - set(RiskProfile.LIMIT_FIELDS))
    if unknown:
        raise LimitsInvalid(f"Unknown limit {unknown[0]!r}.", field=unknown[0])
    with transaction.atomic():
        profile = (
            RiskProfile.objects.select_for_update().filter(owner=user, account=account).first()
        )
        if profile is None:
            base = selectors.profile_for(user, None)
            profile = RiskProfile(owner=user, account=account, **base.limit_values())
        for name, value in values.items():
            setattr(profile, name, value)
        errors = rules.validate_limits(profile.limit_values())
        if errors:
            name = next(iter(errors))
            raise LimitsInvalid(errors[name], field=name, extra=errors)
        profile.save()
    _notify(user.pk, "profile", {"account": account.pk if account else None})
    return profile


def risk_profile_delete_override(*, user: Any, account: ExchangeAccount) -> None:
    """Drop an account's override: the user's default applies to it again."""
    RiskProfile.objects.filter(owner=user, account=account).delete()


# --- trading states ----------------------------------------------------------------------------


def _state_row(user: Any, account: ExchangeAccount | None) -> TradingState:
    row = TradingState.objects.select_for_update().filter(owner=user, account=account).first()
    if row is None:
        row = TradingState.objects.create(owner=user, account=account)
        row = TradingState.objects.select_for_update().get(pk=row.pk)
    return row


def trading_state_set(
    *,
    user: Any,
    account: ExchangeAccount | None = None,
    to_state: str,
    code: str,
    reason: str,
    figures: Mapping[str, Any] | None = None,
    actor: str,
    latched_until: datetime | None = None,
) -> TradingState:
    """Move a state (the user's, or ``account``'s) to ``to_state`` and store the transition.

    A state never moves to a laxer one here except to ACTIVE (the reset); a stricter latch
    replaces a laxer one; an equal one keeps the longer latch. Halting sends
    ``risk.signals.trading_halted`` after the commit."""
    if to_state not in State.values:
        raise ApplicationError(f"Unknown trading state {to_state!r}.", field="state")
    clean = _clean_figures(figures or {})
    with transaction.atomic():
        row = _state_row(user, account)
        old = row.state
        rank_old = selectors.STATE_RANK[State(old)]
        rank_new = selectors.STATE_RANK[State(to_state)]
        if to_state != State.ACTIVE and rank_new < rank_old:
            return row
        if to_state == old and to_state != State.ACTIVE:
            # Already latched: keep the latch that lasts longer (None = until reset).
            if row.latched_until is None or (
                latched_until is not None and latched_until <= row.latched_until
            ):
                return row
            # A longer latch takes over: its reason is now why the state holds.
            row.latched_until = latched_until
            row.code, row.reason, row.figures = code, reason[:500], clean
            row.save(update_fields=["latched_until", "code", "reason", "figures", "updated_at"])
            StateTransition.objects.create(
                state=row, owner=user, from_state=old, to_state=to_state, code=code,
                reason=reason[:500], figures=clean, actor=actor[:64],
            )  # fmt: skip
            return row
        if to_state == old == State.ACTIVE:
            return row
        row.state = to_state
        row.code = code
        row.reason = reason[:500]
        row.figures = clean
        row.latched_until = latched_until if to_state != State.ACTIVE else None
        row.changed_at = timezone.now()
        row.save()
        StateTransition.objects.create(
            state=row,
            owner=user,
            from_state=old,
            to_state=to_state,
            code=code,
            reason=reason[:500],
            figures=clean,
            actor=actor[:64],
        )
        _notify(
            user.pk,
            "state",
            {"account": account.pk if account else None, "state": to_state, "reason": reason},
        )
        if to_state == State.HALTED:
            user_id, account_id = user.pk, account.pk if account else None

            def announce() -> None:
                trading_halted.send(
                    sender=TradingState,
                    user_id=user_id,
                    account_id=account_id,
                    code=code,
                    reason=reason,
                )

            transaction.on_commit(announce)
    return row


def trading_state_reset(*, user: Any, state: TradingState, reason: str = "") -> TradingState:
    """The user resets a latched state to ACTIVE (a row they own; selectors give 404s)."""
    if state.owner_id != user.pk:
        raise ApplicationError("No such trading state.")
    return trading_state_set(
        user=user,
        account=state.account,
        to_state=State.ACTIVE,
        code="reset",
        reason=reason or "Reset by the user.",
        actor=f"user:{user.pk}",
    )


def trading_state_expire_latches(*, user: Any, now: datetime | None = None) -> int:
    """Open the latches whose time has come (daily loss: the next UTC day). Returns how many."""
    now = now or timezone.now()
    due = TradingState.objects.filter(
        owner=user, latched_until__isnull=False, latched_until__lte=now
    ).exclude(state=State.ACTIVE)
    count = 0
    for row in due.select_related("account"):
        trading_state_set(
            user=user,
            account=row.account,
            to_state=State.ACTIVE,
            code="latch_expired",
            reason=f"The {row.code or 'breaker'} latch ended at "
            f"{row.latched_until:%Y-%m-%d %H:%M} UTC.",
            actor="latch_expired",
        )
        count += 1
    return count


# --- equity ------------------------------------------------------------------------------------


def equity_snapshot_record(
    *,
    user: Any,
    account: ExchangeAccount | None,
    equity: Decimal,
    at: datetime | None = None,
) -> EquitySnapshot:
    """Store one equity reading (the breakers' peak and period openings come from these)."""
    snap = EquitySnapshot.objects.create(
        owner=user, account=account, equity=Decimal(equity), at=at or timezone.now()
    )
    _notify(
        user.pk,
        "equity",
        {"account": account.pk if account else None, "x": _ms(snap.at), "y": float(equity)},
    )
    return snap


class EquityUnreadable(ApplicationError):
    """An account's equity could not be valued (unreachable, or a holding without a price)."""

    code = "equity_unreadable"


def account_quote(account: ExchangeAccount) -> str:
    """The currency an account's equity is valued in: a paper account's own quote, else
    ``RISK_EQUITY_QUOTE`` (USDT)."""
    return account.paper_quote or str(getattr(settings, "RISK_EQUITY_QUOTE", "USDT"))


def account_equity(*, adapter: TradingAdapter, quote: str) -> Decimal:
    """Every balance (free and held) valued in ``quote`` at the adapter's last prices.

    ``EquityUnreadable`` when the balances cannot be read or any holding cannot be priced:
    a partial sum would read as a loss and could trip a breaker that nothing tripped."""
    try:
        balances = adapter.balances()
    except Exception as exc:
        raise EquityUnreadable(f"balances could not be read: {exc}") from exc

    def unreadable(asset: str, exc: Exception) -> None:
        raise EquityUnreadable(f"no {asset}/{quote} price: {exc}") from exc

    return holdings_value(adapter, dict(sorted(balances.items())), quote=quote, unpriced=unreadable)


def equity_snapshots_record_all(*, adapter_for: AdapterFor | None = None) -> dict[str, int]:
    """The scheduled snapshot: ``equity_snapshot_record`` for every linked account of an owner
    with Pro (the drawdown and loss breakers read these). An account that cannot be valued is
    skipped with its reason logged, never stored as zero. Counts: recorded, skipped, no_plan."""
    from accounts.gating import user_has_pro

    get_adapter = adapter_for or _default_adapter_for
    counts = {"recorded": 0, "skipped": 0, "no_plan": 0}
    pro: dict[int, bool] = {}
    for account in ExchangeAccount.objects.select_related("owner").order_by("pk"):
        owner = account.owner
        if owner.pk not in pro:
            pro[owner.pk] = user_has_pro(owner)
        if not pro[owner.pk]:
            counts["no_plan"] += 1
            continue
        try:
            equity = account_equity(adapter=get_adapter(account), quote=account_quote(account))
        except Exception as exc:
            logger.warning(
                "equity snapshot of exchange account %s skipped: %s",
                account.pk,
                getattr(exc, "message", None) or exc,
            )
            counts["skipped"] += 1
            continue
        with transaction.atomic():
            equity_snapshot_record(user=owner, account=account, equity=equity)
        counts["recorded"] += 1
    return counts


# --- the pre-trade check -----------------------------------------------------------------------


def _order_times_key(user_id: int, account_id: int | None) -> str:
    return f"risk:orders:{user_id}:{account_id or 0}"


def _order_times(user_id: int, account_id: int | None, now_ms: int) -> tuple[int, ...]:
    times = cache.get(_order_times_key(user_id, account_id)) or []
    return tuple(t for t in times if t > now_ms - rules.MS_PER_MINUTE)


def _order_time_add(user_id: int, account_id: int | None, now_ms: int) -> None:
    times = [*_order_times(user_id, account_id, now_ms), now_ms]
    cache.set(_order_times_key(user_id, account_id), times, timeout=120)


def _read_book(
    adapter: TradingAdapter, quote: str
) -> tuple[list[rules.OpenPosition], float | None]:
    """Open positions marked at the last price (mark None when it cannot be read) and the
    account's equity in ``quote`` (None when a position cannot be priced)."""
    positions = adapter.positions()
    marks: list[rules.OpenPosition] = []
    value = 0.0
    priced = True
    for p in positions:
        if p.amount == 0:
            continue
        try:
            mark: float | None = float(adapter.last_price(p.symbol))
        except Exception:
            logger.warning("no price for %s", p.symbol, exc_info=True)
            mark = None
        marks.append(rules.OpenPosition(p.symbol, float(p.amount), mark))
        if mark is None:
            priced = False
        elif p.symbol.endswith("/" + quote):
            value += float(p.amount) * mark
    balances = adapter.balances()
    cash = float(balances[quote].total) if quote in balances else 0.0
    return marks, (cash + value if priced else None)


@dataclass
class _Reads:
    """What the check reads for one (user, account) besides its book: the latched state, the
    equity peak, the period openings (day, week, month) and the approved orders' times."""

    latched: TradingState | None
    peak: Decimal | None
    starts: dict[str, Decimal | None]
    order_times: tuple[int, ...]


def _period_starts(now_ms: int) -> dict[str, datetime]:
    return {
        "day": _dt(rules.day_start_ms(now_ms)),
        "week": _dt(rules.week_start_ms(now_ms)),
        "month": _dt(rules.month_start_ms(now_ms)),
    }


def _reads_one(user: Any, account: ExchangeAccount, now_ms: int) -> _Reads:
    starts = _period_starts(now_ms)
    return _Reads(
        latched=selectors.effective_state(user, account),
        peak=selectors.equity_peak(user, account),
        starts={k: selectors.equity_at_start(user, account, at) for k, at in starts.items()},
        order_times=_order_times(user.pk, account.pk, now_ms),
    )


class _Writes:
    """Where a check's denials and approved order times go: at once (one order), or kept and
    written in bulk (``order_checks_batch``)."""

    def denied(
        self,
        user: Any,
        account: ExchangeAccount,
        proposal: rules.Proposal,
        decision: rules.Decision,
        source: str,
    ) -> None:
        self.keep_denial(_denial_row(user, account, proposal, decision, source))

    def keep_denial(self, row: DeniedOrder) -> None:
        """Store the denial now and announce it."""
        row.save()
        _announce_denial(row)

    def allowed(self, user: Any, account: ExchangeAccount, now_ms: int) -> None:
        _order_time_add(user.pk, account.pk, now_ms)


def order_check(
    *,
    user: Any,
    account: ExchangeAccount,
    proposal: rules.Proposal,
    positions: Sequence[rules.OpenPosition] | None = None,
    equity: float | None = None,
    trades: Iterable[rules.ClosedTrade] = (),
    returns: Mapping[str, Any] | None = None,
    source: str = "",
    now: datetime | None = None,
    adapter_for: AdapterFor | None = None,
) -> rules.Decision:
    """The check every live order passes before it is sent (copy trading, bots, manual).

    Builds the rules' state from the database (profile, latched state, equity peak and
    period openings, recent orders) and from ``positions``/``equity`` when given, else from
    the account's adapter. A breaker that trips latches the state; every denial is stored as
    a ``DeniedOrder`` and pushed to the dashboard. The caller sends nothing unless
    ``decision.allowed``, and sends ``approved_amount(...)``, not the float."""
    if account.owner_id != user.pk:
        raise ApplicationError("No such exchange account.", field="account")
    now = now or timezone.now()
    now_ms = _ms(now)
    trading_state_expire_latches(user=user, now=now)
    return _check(
        user=user,
        account=account,
        proposal=proposal,
        positions=positions,
        equity=equity,
        trades=trades,
        returns=returns,
        source=source,
        now_ms=now_ms,
        adapter_for=adapter_for,
        profile=selectors.profile_for(user, account),
        reads=lambda: _reads_one(user, account, now_ms),
        writes=_Writes(),
    )


def _check(
    *,
    user: Any,
    account: ExchangeAccount,
    proposal: rules.Proposal,
    positions: Sequence[rules.OpenPosition] | None,
    equity: float | None,
    trades: Iterable[rules.ClosedTrade],
    returns: Mapping[str, Any] | None,
    source: str,
    now_ms: int,
    adapter_for: AdapterFor | None,
    profile: RiskProfile,
    reads: Callable[[], _Reads],
    writes: _Writes,
) -> rules.Decision:
    """The body of ``order_check`` (one order) and ``order_checks_batch`` (many): the state
    built from ``profile``, the book and ``reads()``, the pure rules, then the writes."""
    limits = profile.limits()
    if positions is None or equity is None:
        adapter = (adapter_for or _default_adapter_for)(account)
        quote = proposal.symbol.split("/")[-1] if "/" in proposal.symbol else "USDT"
        try:
            book, book_equity = _read_book(adapter, quote)
        except Exception as exc:
            logger.warning("could not read account %s", account.pk, exc_info=True)
            decision = rules.Decision(
                rules.DENIED, 0.0, "no_price", (f"The account could not be read: {exc}",)
            )
            writes.denied(user, account, proposal, decision, source)
            return decision
        positions = book if positions is None else positions
        equity = book_equity if equity is None else equity
    if equity is None:
        unpriced = next((p.symbol for p in positions if p.mark is None), proposal.symbol)
        decision = rules.Decision(
            rules.DENIED, 0.0, "no_price", (f"No market price for {unpriced}.",)
        )
        writes.denied(user, account, proposal, decision, source)
        return decision

    if returns is None and limits.correlation_threshold > 0 and limits.correlation_lookback >= 2:
        symbols = [proposal.symbol, *(p.symbol for p in positions)]
        returns = selectors.symbol_returns(user, symbols, lookback=limits.correlation_lookback)
    found = reads()
    latched, peak = found.latched, found.peak
    starts = {
        name: float(value) if value is not None else float(equity)
        for name, value in found.starts.items()
    }
    state = rules.RiskState(
        now_ms=now_ms,
        equity=float(equity),
        limits=limits,
        # (type: ignore below) a choices column/value: only the Literal's strings
        mode=latched.state if latched is not None else "active",  # type: ignore[arg-type]
        mode_reason=latched.reason if latched is not None else "",
        peak_equity=max(float(peak) if peak is not None else 0.0, float(equity)),
        day_start_equity=starts["day"],
        week_start_equity=starts["week"],
        month_start_equity=starts["month"],
        positions=tuple(positions),
        order_times_ms=found.order_times,
        trades=tuple(trades),
        returns=dict(returns or {}),
    )
    decision = rules.check_order(state, proposal)
    for trip in decision.trips:
        # Breakers latch the user's trading as a whole: a loss is a loss on any account.
        trading_state_set(
            user=user,
            to_state=trip.state,
            code=trip.code,
            reason=trip.message,
            figures=trip.figures,
            actor=f"breaker:{trip.code}",
            latched_until=None if trip.resets_at_ms is None else _dt(trip.resets_at_ms),
        )
    if decision.allowed:
        writes.allowed(user, account, now_ms)
    else:
        writes.denied(user, account, proposal, decision, source)
    return decision


def _denial_row(
    user: Any,
    account: ExchangeAccount | None,
    proposal: rules.Proposal,
    decision: rules.Decision,
    source: str,
) -> DeniedOrder:
    """The ``DeniedOrder`` of a denial (not saved yet)."""

    def dec(v: float | None) -> Decimal | None:
        if v is None or not math.isfinite(v):
            return None
        return Decimal(repr(v))

    return DeniedOrder(
        owner=user,
        account=account,
        source=source[:32],
        symbol=proposal.symbol[:40],
        side="buy" if proposal.side > 0 else "sell",
        amount=dec(proposal.qty),
        price=dec(proposal.price),
        code=decision.code,
        reason=(decision.reasons[0] if decision.reasons else decision.code)[:500],
        figures=_clean_figures(decision.figures),
    )


def _announce_denial(row: DeniedOrder) -> None:
    _notify(
        row.owner_id,
        "denied",
        {
            "id": row.pk,
            "symbol": row.symbol,
            "side": row.side,
            "code": row.code,
            "reason": row.reason,
        },
    )


def approved_amount(*, decision: rules.Decision, market: MarketRules, price: Decimal) -> Decimal:
    """The approved float size as the Decimal to send: rounded down to the market's lot and
    checked against its minimums (``OrderTooSmall`` when it falls under them)."""
    if not decision.allowed:
        raise ApplicationError(f"The order was denied ({decision.code}).")
    amount = market.round_amount(Decimal(repr(decision.qty)))
    market.check_size(amount, price)
    return amount


# --- manual close from the dashboard -----------------------------------------------------------


def position_close(
    *, user: Any, account: ExchangeAccount, symbol: str, adapter_for: AdapterFor | None = None
) -> ManualClose:
    """Close the account's whole ``symbol`` position at market, as the user asked on the
    dashboard. It passes ``order_check`` first (a reducing order passes in REDUCING and HALTED;
    a denial is stored, shown, and nothing is sent); the client order id is stored before the
    order goes out, and an ambiguous answer is looked up by it (``submit_order``), never resent.
    No open position → ``ApplicationError`` (field ``symbol``), nothing stored."""
    if account.owner_id != user.pk:
        raise ApplicationError("No such exchange account.", field="account")
    adapter = (adapter_for or _default_adapter_for)(account)
    try:
        held_positions = adapter.positions()
    except Exception as exc:
        raise ApplicationError(f"{account.label} could not be read: {exc}") from exc
    pos = next((p for p in held_positions if p.symbol == symbol and p.amount != 0), None)
    if pos is None:
        raise ApplicationError(f"{account.label} has no open {symbol} position.", field="symbol")
    side: Literal["buy", "sell"] = "sell" if pos.amount > 0 else "buy"
    try:
        price: Decimal | None = Decimal(adapter.last_price(symbol))
    except Exception:
        logger.warning("no price for %s on account %s", symbol, account.pk, exc_info=True)
        price = None
    proposal = rules.Proposal(
        symbol,
        -1 if pos.amount > 0 else 1,
        float(price) if price is not None else None,
        qty=float(abs(pos.amount)),
        reduce_only=True,
    )
    decision = order_check(
        user=user, account=account, proposal=proposal, source="manual_close",
        adapter_for=lambda _a: adapter,
    )  # fmt: skip
    row = ManualClose(owner=user, account=account, symbol=symbol, side=side)
    if not decision.allowed or price is None:
        row.status, row.code = ManualClose.Status.DENIED, decision.code
        row.message = (decision.reasons[0] if decision.reasons else decision.code)[:500]
        row.save()
        return row
    try:
        market = adapter.market(symbol)
        wanted = min(abs(pos.amount), Decimal(repr(decision.qty)))
        amount = market.round_amount(wanted)
        market.check_size(amount, price)
    except ApplicationError as exc:
        row.status, row.code, row.message = ManualClose.Status.FAILED, exc.code, exc.message[:500]
        row.save()
        return row
    held = {a: b.total for a, b in adapter.balances().items()}
    row.amount = amount
    row.client_order_id = f"qfmc{secrets.token_hex(10)}"
    row.save()  # stored (committed) before the order is sent
    request = OrderRequest(
        symbol=symbol, side=side, type="market", amount=amount,
        client_order_id=row.client_order_id, reduce_only=not _spot_holding(pos, held),
    )  # fmt: skip
    try:
        state = submit_order(adapter, request)
    except OrderStatusUnknown as exc:
        row.status, row.code, row.message = ManualClose.Status.UNKNOWN, exc.code, exc.message
    except ApplicationError as exc:
        row.status, row.code, row.message = ManualClose.Status.FAILED, exc.code, exc.message
    else:
        row.status = ManualClose.Status.SENT
        row.order_status, row.exchange_order_id = state.status, state.exchange_order_id[:64]
    row.message = row.message[:500]
    row.save()
    _notify(user.pk, "close", {"symbol": symbol, "status": row.status, "message": row.message})
    return row


def proposal_for_order(
    *,
    request: OrderRequest,
    market: MarketRules,
    price: Decimal,
    stop: Decimal | None = None,
) -> rules.Proposal:
    """The rules' view of an order built elsewhere (copy trading, bots): side ±1, the asked
    quantity, the price it is checked at (the order's limit, else ``price``, the reference
    price now), reduce-only, and the market's lot step and minimum order value."""
    checked_at = request.price if request.price is not None else price
    return rules.Proposal(
        symbol=request.symbol,
        side=1 if request.side == "buy" else -1,
        price=float(checked_at) if checked_at is not None and checked_at > 0 else None,
        qty=float(request.amount),
        stop=float(stop) if stop is not None and stop > 0 else None,
        reduce_only=request.reduce_only,
        lot_step=float(market.amount_step),
        min_notional=float(market.min_notional),
        fee_rate=float(market.taker_fee),
    )


def order_request_check(
    *,
    user: Any,
    account: ExchangeAccount,
    request: OrderRequest,
    market: MarketRules,
    price: Decimal,
    stop: Decimal | None = None,
    source: str = "",
    now: datetime | None = None,
    adapter_for: AdapterFor | None = None,
) -> rules.Decision:
    """``order_check`` for an ``OrderRequest`` already rounded to ``market``: builds the
    ``Proposal`` (``proposal_for_order``) and runs the check against the account's book. The
    caller sends nothing unless ``decision.allowed``, and at most ``approved_amount(...)``."""
    return order_check(
        user=user,
        account=account,
        proposal=proposal_for_order(request=request, market=market, price=price, stop=stop),
        source=source,
        now=now,
        adapter_for=adapter_for,
    )


# --- many orders at once -----------------------------------------------------------------------


@dataclass(frozen=True)
class CheckItem:
    """One order of ``order_checks_batch``: ``order_check``'s arguments for it."""

    user: Any
    account: ExchangeAccount
    proposal: rules.Proposal
    positions: Sequence[rules.OpenPosition] | None = None
    equity: float | None = None
    source: str = ""
    adapter_for: AdapterFor | None = None


class _KeptWrites(_Writes):
    """The batch's writes, kept: denials and order times go out in bulk at ``flush``; the
    order times written so far are what later checks of the same account read."""

    def __init__(self, times: dict[str, tuple[int, ...]]) -> None:
        self.times = times
        self.denials: list[DeniedOrder] = []
        self.changed: set[str] = set()

    def order_times(self, user_id: int, account_id: int, now_ms: int) -> tuple[int, ...]:
        times = self.times.get(_order_times_key(user_id, account_id)) or ()
        return tuple(t for t in times if t > now_ms - rules.MS_PER_MINUTE)

    def keep_denial(self, row: DeniedOrder) -> None:
        """Keep the denial for ``flush``."""
        self.denials.append(row)

    def allowed(self, user: Any, account: ExchangeAccount, now_ms: int) -> None:
        key = _order_times_key(user.pk, account.pk)
        self.times[key] = (*self.order_times(user.pk, account.pk, now_ms), now_ms)
        self.changed.add(key)

    def flush(self) -> None:
        if self.denials:
            for row in DeniedOrder.objects.bulk_create(self.denials):
                _announce_denial(row)
            self.denials = []
        if self.changed:
            cache.set_many({k: list(self.times[k]) for k in self.changed}, timeout=120)
            self.changed = set()


def order_checks_batch(
    items: Sequence[CheckItem], *, now: datetime | None = None
) -> list[rules.Decision]:
    """``order_check`` of many orders, decided as if checked one after another in this order
    (at one ``now``), with their reads done together: the due latches, profiles, latched
    states, equity peaks and period openings of every (user, account) in a few queries, the
    recent order times in one cache read; denials stored in one insert, order times in one
    cache write. A breaker that trips latches at once, as one by one, and that user's later
    items are checked by ``order_check`` itself. Any item's account not its user's →
    ``ApplicationError`` before anything is read or written."""
    for item in items:
        if item.account.owner_id != item.user.pk:
            raise ApplicationError("No such exchange account.", field="account")
    if not items:
        return []
    now = now or timezone.now()
    now_ms = _ms(now)
    users = {item.user.pk: item.user for item in items}
    due = set(
        TradingState.objects.filter(
            owner_id__in=list(users), latched_until__isnull=False, latched_until__lte=now
        )
        .exclude(state=State.ACTIVE)
        .values_list("owner_id", flat=True)
    )
    for user_id in sorted(due):
        trading_state_expire_latches(user=users[user_id], now=now)
    pairs = sorted({(item.user.pk, item.account.pk) for item in items})
    profiles = selectors.profiles_for_many(pairs)
    loaded = selectors.risk_reads_many(pairs, _period_starts(now_ms))
    stored = cache.get_many([_order_times_key(u, a) for u, a in pairs])
    writes = _KeptWrites({k: tuple(v) for k, v in stored.items() if v})
    tripped: set[int] = set()
    out: list[rules.Decision] = []
    for item in items:
        user, account = item.user, item.account
        if user.pk in tripped:  # its latch moved: read afresh, as one by one
            writes.flush()
            decision = order_check(
                user=user, account=account, proposal=item.proposal, positions=item.positions,
                equity=item.equity, source=item.source, now=now, adapter_for=item.adapter_for,
            )  # fmt: skip
        else:
            latched, peak, starts = loaded[(user.pk, account.pk)]

            def reads(
                user_id: int = user.pk,
                account_id: int = account.pk,
                latched: TradingState | None = latched,
                peak: Decimal | None = peak,
                starts: dict[str, Decimal | None] = starts,
            ) -> _Reads:
                times = writes.order_times(user_id, account_id, now_ms)
                return _Reads(latched, peak, dict(starts), times)

            profile = profiles.get((user.pk, account.pk)) or RiskProfile(owner=user, account=None)
            decision = _check(
                user=user, account=account, proposal=item.proposal, positions=item.positions,
                equity=item.equity, trades=(), returns=None, source=item.source, now_ms=now_ms,
                adapter_for=item.adapter_for, profile=profile, reads=reads, writes=writes,
            )  # fmt: skip
        if decision.trips:
            tripped.add(user.pk)
        out.append(decision)
    writes.flush()
    return out


# --- kill switch -------------------------------------------------------------------------------


def _client_id(run_id: int, account_id: int, symbol: str, attempt: int) -> str:
    base = re.sub(r"[^A-Za-z0-9]", "", symbol)[:12]
    return f"qfks{run_id}a{account_id}{base}r{attempt}"


def _kill_account(
    run: KillSwitchRun, account: ExchangeAccount, adapter: TradingAdapter, attempt: int
) -> dict[str, Any]:
    """Cancel every open order, then (when asked) close every position at market with a
    reduce-only order; each failure is recorded, nothing raises."""
    entry: dict[str, Any] = {
        "label": account.label,
        "ok": True,
        "cancelled": [],
        "closed": [],
        "skipped": [],
        "errors": [],
        "attempt": attempt,
    }
    try:
        orders = adapter.open_orders()
    except Exception as exc:
        entry["ok"] = False
        entry["errors"].append(f"open orders: {exc}")
        return entry
    for order in orders:
        try:
            adapter.cancel_order(order.symbol, order.client_order_id)
            entry["cancelled"].append(order.client_order_id)
        except Exception as exc:
            entry["ok"] = False
            entry["errors"].append(f"cancel {order.client_order_id}: {exc}")
    if not run.close_positions:
        return entry
    try:
        positions: list[Position] = [p for p in adapter.positions() if p.amount != 0]
    except Exception as exc:
        entry["ok"] = False
        entry["errors"].append(f"positions: {exc}")
        return entry
    held: dict[str, Decimal] | None = None
    for pos in positions:
        client_id = _client_id(run.pk, account.pk, pos.symbol, attempt)
        try:
            market = adapter.market(pos.symbol)
            amount = market.round_amount(abs(pos.amount))
            if amount <= 0:
                entry["skipped"].append({"symbol": pos.symbol, "why": "below the lot step"})
                continue
            # The client order id is stored before the order is sent.
            entry.setdefault("planned", []).append(client_id)
            _save_report(run, account, entry)
            if held is None:
                held = {a: b.total for a, b in adapter.balances().items()}
            request = OrderRequest(
                symbol=pos.symbol,
                side="sell" if pos.amount > 0 else "buy",
                type="market",
                amount=amount,
                client_order_id=client_id,
                reduce_only=not _spot_holding(pos, held),
            )
            state = submit_order(adapter, request, lookups=2, spacing=0.5)
            entry["closed"].append(
                {
                    "symbol": pos.symbol,
                    "amount": str(amount),
                    "client_order_id": client_id,
                    "status": state.status,
                }
            )
        except OrderTooSmall as exc:
            entry["skipped"].append({"symbol": pos.symbol, "why": exc.message})
        except Exception as exc:
            entry["ok"] = False
            entry["errors"].append(f"close {pos.symbol}: {exc}")
    return entry


def _spot_holding(pos: Position, held: Mapping[str, Decimal]) -> bool:
    """A long position that is the account's balance of its base asset (a spot holding):
    selling it cannot open a short, and spot venues refuse the reduce-only flag, so the close
    goes without it. Anything else (a short, a derivatives position) closes reduce-only."""
    base = pos.symbol.split("/")[0]
    return pos.amount > 0 and held.get(base, Decimal(0)) >= pos.amount


def _save_report(run: KillSwitchRun, account: ExchangeAccount, entry: dict[str, Any]) -> None:
    run.report = {**run.report, str(account.pk): entry}
    KillSwitchRun.objects.filter(pk=run.pk).update(report=run.report)


def _finish(run: KillSwitchRun) -> KillSwitchRun:
    failed = run.failed_account_ids
    if not failed:
        run.status = KillSwitchRun.Status.DONE
        run.finished_at = timezone.now()
    elif run.attempts >= KILL_SWITCH_MAX_ATTEMPTS:
        run.status = KillSwitchRun.Status.FAILED
        run.finished_at = timezone.now()
    else:
        run.status = KillSwitchRun.Status.PARTIAL
        delay = KILL_SWITCH_RETRY_SECONDS[min(run.attempts - 1, len(KILL_SWITCH_RETRY_SECONDS) - 1)]
        run_id = run.pk
        transaction.on_commit(lambda: _enqueue_retry(run_id, delay))
    run.save(update_fields=["status", "finished_at", "report", "attempts"])
    _notify(run.owner_id, "kill_switch", {"id": run.pk, "status": run.status, "report": run.report})
    return run


def _enqueue_retry(run_id: int, countdown: int) -> None:
    from config.celery import app

    try:
        app.send_task(
            KILL_SWITCH_TASK,
            args=[run_id],
            queue=settings.CELERY_LIVE_QUEUE,
            countdown=countdown,
        )
    except Exception:
        logger.exception("could not enqueue the kill-switch retry of run %s", run_id)


def _run_accounts(
    run: KillSwitchRun, accounts: Iterable[ExchangeAccount], adapter_for: AdapterFor
) -> None:
    attempt = run.attempts + 1
    run.attempts = attempt
    for account in accounts:
        try:
            adapter = adapter_for(account)
        except Exception as exc:
            entry = {
                "label": account.label,
                "ok": False,
                "cancelled": [],
                "closed": [],
                "skipped": [],
                "errors": [f"connect: {exc}"],
                "attempt": attempt,
            }
        else:
            entry = _kill_account(run, account, adapter, attempt)
        _save_report(run, account, entry)


def kill_switch_engage(
    *, user: Any, close_positions: bool, adapter_for: AdapterFor | None = None
) -> KillSwitchRun:
    """Halt the user's trading everywhere: HALTED on the user and every linked account (until
    reset), ``trading_halted`` sent (bots and copy subscriptions stop), open orders cancelled
    on every account, positions closed at market when asked. Reports per account; failed
    accounts are retried by a task on the ``live`` queue."""
    get_adapter = adapter_for or _kill_switch_adapter_for
    accounts = list(selectors.accounts_for(user))
    reason = "Kill switch: trading halted everywhere" + (
        ", positions closed at market." if close_positions else "."
    )
    with transaction.atomic():
        trading_state_set(
            user=user, to_state=State.HALTED, code="kill_switch", reason=reason,
            actor=f"user:{user.pk}",
        )  # fmt: skip
        for account in accounts:
            trading_state_set(
                user=user, account=account, to_state=State.HALTED, code="kill_switch",
                reason=reason, actor=f"user:{user.pk}",
            )  # fmt: skip
        run = KillSwitchRun.objects.create(owner=user, close_positions=close_positions)
    _run_accounts(run, accounts, get_adapter)
    with transaction.atomic():
        return _finish(run)


def kill_switch_retry(*, run_id: int, adapter_for: AdapterFor | None = None) -> KillSwitchRun:
    """Run the kill switch again on the accounts that failed last time (the task's body)."""
    get_adapter = adapter_for or _kill_switch_adapter_for
    run = KillSwitchRun.objects.select_related("owner").get(pk=run_id)
    if run.status != KillSwitchRun.Status.PARTIAL:
        return run
    accounts = list(ExchangeAccount.objects.filter(owner=run.owner, pk__in=run.failed_account_ids))
    _run_accounts(run, accounts, get_adapter)
    with transaction.atomic():
        return _finish(run)
