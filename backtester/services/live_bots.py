"""Live strategy bots: deploy, start/pause/stop, and the step that trades one closed candle.

``bot_step`` is the whole loop of a bot, run by a task on the ``live`` queue:

1. take the bot's lock (a PostgreSQL advisory lock: one stepper per bot, whatever the worker);
2. **reconcile** before acting: every order left ``planned`` (stored, maybe sent) by a run that
   stopped is resolved with ``submit_order(may_exist=True)`` (looked up by its client order id,
   created only if the exchange never got it); ``unknown`` ones are looked up, never resent;
   the bot's position must be held by the account, else the bot goes to ``error``; its
   resting stop-loss / take-profit orders are looked up (see below);
3. for every candle that closed after ``cursor_ts``, in order: take the decision from the
   engine (``backtester.live.decide``), store each order with its deterministic client order
   id (committed), send it, record the fill in the bot's ledger, then move the cursor.

Running a step twice for the same candle sends nothing: the cursor has moved, and a row that
exists for (bot, bar, action) is never planned again.

**Resting stops and targets.** Where the adapter can rest them (``supports_stop_orders``), a
bot whose settings have a stop-loss and/or take-profit places them on the exchange as soon as
its entry fills: a ``stop_market`` / ``take_profit_market`` sell of the whole position at the
engine's levels (entry fill x (1 -/+ the fraction), rounded to the tick so they fire no later),
each a ``BotOrder`` (action ``stop`` / ``target``) stored with a deterministic client order id
before it is sent and risk-checked like any exit. The bot does the OCO itself: when one fills
(seen at the next step's lookup, or while the bot was down) the exit is booked with its reason
and the other is cancelled; a signal exit, a watched exit or a stop of the bot cancels both
first. A resting order the exchange lost (cancelled outside the bot, or gone) is re-placed
once (``stop-r`` / ``target-r``); after that the level is only watched. The engine's decision
stays the reference: when a bar's high/low reaches a level the feed did not trigger, the bot
cancels the resting orders and exits at market with the engine's reason, so backtest parity
holds either way. Trailing stops are always watched by the bot (their level moves every bar;
amending a resting order each bar would cost a cancel and a new order per bar). Adapters
without stop orders keep the watching for every level.

Every important point writes a ``BotEvent`` (the bot's log) and, after the commit, pushes an
update to the bot's page (group ``bot-<id>``, ``backtester.consumers.BotConsumer``).
``bot_stop`` can also cancel the bot's open orders and close its position (risk-checked,
exactly once); ``bot_drift`` compares the bot's equity with the engine's expectation; and
``demo_bot_ensure`` seeds the embedded demo's bot.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_UP, Decimal
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from backtester.engine.candles import timeframe_ms
from backtester.engine.errors import EngineError, StrategyError
from backtester.engine.language.compiler import strategy_warmup, validate_strategy
from backtester.live.decide import Action, decide
from backtester.live.sizing import size_order
from backtester.models import Backtest, BotOrder, GridBot, LiveBot, MarketSeries, Strategy
from backtester.models.live import BotEvent
from backtester.services.backtests import normalize_settings, sim_config
from backtester.services.strategies import spec_from_dict, spec_to_dict, strategy_spec
from config.exceptions import ApplicationError, Conflict, NotFound
from config.locks import session_lock, transaction_lock
from exchanges.models import ExchangeAccount
from exchanges.trading import (
    MarketRules,
    OrderRequest,
    OrderState,
    OrderStatusUnknown,
    Side,
    TradingAdapter,
    supports_stop_orders,
    with_fill_fees,
)

if TYPE_CHECKING:
    from risk.rules import Decision

logger = logging.getLogger(__name__)

# Bars of history before the deployment that indicators are computed over, in multiples of
# the strategy's warm-up (at least MIN_HISTORY_BARS).
HISTORY_WARMUPS = 3
MIN_HISTORY_BARS = 50
EIGHT = Decimal("0.00000001")
PROTECTIVE = frozenset({"stop_loss", "take_profit", "trailing_stop"})
PRO_LOST = "Pro plan ended: no new entries (exits still run). Renew Pro to trade again."


class BotError(ApplicationError):
    code = "bot_error"


# --- the bot's log and its live page -----------------------------------------------------------


def bot_group(bot_id: int) -> str:
    """The Channels group of one bot's page (``ws/bots/<id>/``)."""
    return f"bot-{int(bot_id)}"


def _publish(bot_id: int, kind: str, payload: Mapping[str, Any]) -> None:
    """Tell the bot's page, once the current transaction commits (at once outside one)."""
    from config.realtime import group_send

    message = {"type": "bot.update", "kind": kind, "bot": int(bot_id), **payload}
    transaction.on_commit(lambda: group_send(bot_group(bot_id), message))


def _ms_iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def event_json(event: BotEvent) -> dict[str, Any]:
    return {
        "id": event.pk,
        "at": event.at.isoformat().replace("+00:00", "Z"),
        "level": event.level,
        "kind": event.kind,
        "message": event.message,
        "data": event.data,
    }


def order_json(order: BotOrder) -> dict[str, Any]:
    def num(v: Decimal | None) -> str | None:
        return None if v is None else format(v.normalize(), "f")

    return {
        "id": order.pk,
        "client_order_id": order.client_order_id,
        "bar_ts": order.bar_ts,
        "bar": _ms_iso(order.bar_ts),
        "action": order.action,
        "resting": order.action in BotOrder.RESTING_ACTIONS,
        "trigger_price": num(order.trigger_price),
        "reason": order.reason,
        "side": order.side,
        "amount": num(order.amount),
        "state": order.state,
        "state_display": order.get_state_display(),
        "filled": num(order.filled),
        "average_price": num(order.average_price),
        "fee": num(order.fee),
        "fee_currency": order.fee_currency or order.bot.symbol.partition("/")[2],
        "fee_quote": num(order_fee_quote(order)),
        "error": order.error,
        "exchange_order_id": order.exchange_order_id,
        "created_at": order.created_at.isoformat().replace("+00:00", "Z")
        if order.created_at
        else None,
    }


def order_fee_quote(order: BotOrder) -> Decimal:
    """The order's fee valued in the quote currency: as booked when the exchange took it in the
    quote, at the fill price when it took it in the base coin, 0 in any other asset (BNB)."""
    base, _, quote = order.bot.symbol.partition("/")
    currency = (order.fee_currency or quote).upper()
    if currency == quote.upper():
        return order.fee
    if currency == base.upper():
        return (order.fee * (order.average_price or Decimal(0))).quantize(EIGHT, ROUND_UP)
    return Decimal(0)


def bot_event(
    bot: LiveBot | int,
    message: str,
    *,
    level: str = BotEvent.Level.INFO,
    kind: str = "",
    data: Mapping[str, Any] | None = None,
) -> BotEvent:
    """Write one line of the bot's log and push it to the bot's page after the commit."""
    bot_id = bot if isinstance(bot, int) else bot.pk
    event = BotEvent.objects.create(
        bot_id=bot_id, level=level, kind=kind[:24], message=message[:4000], data=dict(data or {})
    )
    _publish(bot_id, "event", {"event": event_json(event)})
    return event


def _publish_status(bot: LiveBot) -> None:
    _publish(
        bot.pk,
        "status",
        {
            "status": bot.status,
            "status_display": LiveBot.Status(bot.status).label,
            "reason": bot.status_reason,
        },
    )


def _publish_order(order: BotOrder) -> None:
    _publish(order.bot_id, "order", {"order": order_json(order)})


# --- deploy and lifecycle ----------------------------------------------------------------------


def check_trading_account(*, user: Any, account: ExchangeAccount) -> None:
    """Refuse an account that is not the user's, or that cannot trade (bots and grid bots)."""
    if account.owner_id != user.pk:
        raise NotFound("No such exchange account")
    if not account.can_trade or account.status == ExchangeAccount.Status.DISABLED:
        raise ApplicationError(
            f"{account.label} cannot trade (its key is read-only or the account is disabled): "
            "link a key with trading permission",
            field="account",
        )


def _check_settings(settings: Mapping[str, Any], spec_dict: Mapping[str, Any]) -> dict[str, Any]:
    normalized = normalize_settings(settings)
    if normalized["fill"] != "next_open" or normalized["entry_order"] != "market":
        raise ApplicationError(
            "Bots trade the engine's next-open market orders only: set fill to next_open and "
            "entry_order to market",
            field="settings",
        )
    if normalized["sizing"] == "vol_target":
        raise ApplicationError(
            "Volatility-target sizing is not available for bots yet", field="settings"
        )
    if spec_dict.get("entry_short") and normalized["allow_short"]:
        raise ApplicationError(
            "Spot accounts cannot sell short: turn allow_short off to deploy this strategy",
            field="settings",
        )
    normalized["allow_short"] = False
    return normalized


# The engine settings a risk profile also sets (``risk.rules.engine_settings``): a bot runs
# under the stricter of its backtest's value and its account's profile, so its own sizing
# already obeys the limits the pre-trade check applies to every live order.
PROFILE_CAPS = (
    "max_position_fraction",
    "max_heat",
    "max_open_positions",
    "max_drawdown_halt",
    "daily_loss_limit",
    "weekly_loss_limit",
    "monthly_loss_limit",
    "max_order_notional",
    "max_leverage",
    "cooldown_bars",
)
# Protections the profile switches on apply as the profile sets them (a count, a lookback and
# a lock do not order as "stricter" one by one).
PROFILE_PROTECTIONS = {
    "stoploss_guard_count": (
        "stoploss_guard_count",
        "stoploss_guard_lookback_bars",
        "stoploss_guard_lock_bars",
        "stoploss_guard_all",
    ),
    "low_profit_lookback_bars": (
        "low_profit_lookback_bars",
        "low_profit_min",
        "low_profit_lock_bars",
    ),
}


def _stricter(a: float, b: float) -> float:
    """The tighter of two limits where 0 means "off"."""
    if a <= 0:
        return b
    if b <= 0:
        return a
    return min(a, b)


def _with_risk_profile(
    settings: dict[str, Any], *, user: Any, account: ExchangeAccount, bar_ms: int
) -> dict[str, Any]:
    from risk.rules import engine_settings
    from risk.selectors import profile_for

    caps = engine_settings(profile_for(user, account).limits(), bar_ms=bar_ms)
    out = dict(settings)
    for name in PROFILE_CAPS:
        out[name] = type(caps[name])(_stricter(out.get(name) or 0, caps[name]))
    for switch, names in PROFILE_PROTECTIONS.items():
        if caps[switch]:
            out.update({name: caps[name] for name in names})
    return out


@transaction.atomic
def bot_create(
    *,
    user: Any,
    account: ExchangeAccount,
    series: MarketSeries,
    strategy: Strategy | None = None,
    backtest: Backtest | None = None,
    settings: Mapping[str, Any] | None = None,
    param_values: Mapping[str, Any] | None = None,
    name: str = "",
    start_ts: int | None = None,
    data_start_ts: int | None = None,
) -> LiveBot:
    """A running bot of ``user`` trading ``series``' symbol on ``account``.

    From a completed ``backtest`` ("Deploy") the rules, parameter values and settings are its
    snapshots; from a ``strategy`` they are its rules and values with ``settings`` over the
    defaults. The bot acts from the first candle that opens at or after ``start_ts`` (default:
    the next one); indicators are computed from ``data_start_ts`` (default: a few warm-ups
    earlier). ``settings["initial_cash"]`` is the money the bot may use.
    """
    from accounts.gating import require_pro

    require_pro(user)
    check_trading_account(user=user, account=account)
    if backtest is not None:
        if backtest.owner_id != user.pk:
            raise NotFound("No such backtest")
        if backtest.status != Backtest.Status.COMPLETED:
            raise ApplicationError("Only a completed backtest can be deployed", field="backtest")
        spec_dict = dict(backtest.spec)
        values = dict(backtest.param_values)
        raw_settings = dict(backtest.settings)
        strategy = backtest.strategy
    elif strategy is not None:
        if strategy.owner_id != user.pk:
            raise NotFound("No such strategy")
        spec_dict = spec_to_dict(strategy_spec(strategy))
        values = dict(strategy.param_values)
        raw_settings = {}
    else:
        raise ApplicationError("Choose a strategy or a completed backtest", field="strategy")
    raw_settings.update(settings or {})
    values.update(param_values or {})
    if series.owner_id not in (None, user.pk):
        raise NotFound("No such market")
    spec = spec_from_dict(spec_dict)
    try:
        resolved = spec.resolve_params(values)
    except StrategyError as exc:
        raise ApplicationError(str(exc), field="param_values") from None
    try:
        validate_strategy(spec, columns=[str(c) for c in series.extra_columns or []])
    except StrategyError as exc:
        raise ApplicationError(
            f"This market cannot supply what the rules need: {exc}", field="series"
        ) from None
    tf_ms = timeframe_ms(series.timeframe)
    normalized = _with_risk_profile(
        _check_settings(raw_settings, spec_dict), user=user, account=account, bar_ms=tf_ms
    )
    capital = Decimal(str(normalized["initial_cash"]))
    if start_ts is None:
        now_ms = int(timezone.now().timestamp() * 1000)
        start_ts = (now_ms // tf_ms) * tf_ms
    if data_start_ts is None:
        warm = max(MIN_HISTORY_BARS, HISTORY_WARMUPS * strategy_warmup(spec, resolved))
        data_start_ts = start_ts - warm * tf_ms
    if data_start_ts > start_ts:
        raise ApplicationError("The data start must not be after the start", field="start_ts")
    return LiveBot.objects.create(
        owner=user,
        name=(name or f"{spec.name} on {series.symbol} {series.timeframe}")[:160],
        strategy=strategy,
        source_backtest=backtest,
        spec=spec_dict,
        param_values=dict(resolved),
        settings=normalized,
        account=account,
        series=series,
        symbol=series.symbol,
        timeframe=series.timeframe,
        data_start_ts=data_start_ts,
        start_ts=start_ts,
        capital=capital,
        cash=capital,
    )


def bot_deploy(*, user: Any, backtest: Backtest, account: ExchangeAccount) -> LiveBot:
    """Deploy a completed single-market backtest on ``account`` from the next candle on."""
    if backtest.owner_id != user.pk:
        raise NotFound("No such backtest")
    order = list(backtest.series_order or [])
    if len(order) != 1:
        raise ApplicationError("Only a single-market backtest can be deployed as a bot")
    series = MarketSeries.objects.get(pk=order[0])
    return bot_create(user=user, account=account, series=series, backtest=backtest)


def _set_status(bot: LiveBot, status: str, reason: str = "") -> LiveBot:
    LiveBot.objects.filter(pk=bot.pk).update(
        status=status, status_reason=reason[:2000], updated_at=timezone.now()
    )
    bot.status, bot.status_reason = status, reason[:2000]
    _publish_status(bot)
    return bot


def bot_pause(*, user: Any, bot: LiveBot) -> LiveBot:
    if bot.owner_id != user.pk:
        raise NotFound("No such bot")
    if bot.status != LiveBot.Status.RUNNING:
        raise ApplicationError("Only a running bot can be paused")
    bot_event(bot, "Paused by its owner", kind="status")
    return _set_status(bot, LiveBot.Status.PAUSED, "Paused by its owner")


def check_resumable(*, user: Any, bot: LiveBot | GridBot) -> None:
    """Refuse to start a bot (strategy or grid) again unless it is the user's (Pro), paused
    or failed, still has its exchange account, and trading there is not halted."""
    from accounts.gating import require_pro
    from risk.selectors import effective_state

    if bot.owner_id != user.pk:
        raise NotFound("No such bot")
    require_pro(user)
    if bot.status not in (LiveBot.Status.PAUSED, LiveBot.Status.ERROR):
        raise ApplicationError("Only a paused or failed bot can be started again")
    if bot.account_id is None:
        raise ApplicationError("The bot's exchange account was deleted")
    latched = effective_state(user, bot.account)
    if latched is not None and latched.state == "halted":
        raise ApplicationError(
            f"Trading is halted ({latched.reason or latched.code}): reset it on the Risk page "
            "first, then start the bot again"
        )


def bot_resume(*, user: Any, bot: LiveBot) -> LiveBot:
    """Run again (a paused or failed bot). It reconciles before it acts, and candles that
    closed while it was paused are evaluated in order from its cursor."""
    check_resumable(user=user, bot=bot)
    bot_event(bot, f"Started again by its owner (was {bot.status})", kind="status")
    return _set_status(bot, LiveBot.Status.RUNNING)


def bot_stop(
    *,
    user: Any,
    bot: LiveBot,
    cancel_orders: bool = False,
    close_position: bool = False,
    adapter: TradingAdapter | None = None,
    now_ms: int | None = None,
) -> LiveBot:
    """Stop for good. By default the position and any open order are left as they are.

    ``cancel_orders``: every order of the bot still open (stored, sent, or unknown) is looked up
    by its client order id; one resting on the exchange is cancelled, one that filled meanwhile
    is booked, one the exchange never got is marked as not sent. ``close_position``: the bot's
    position is sold at market, through the risk check (a reducing order passes even when
    trading is halted) and the exactly-once path (a ``close`` BotOrder with a deterministic
    client order id is stored before sending; an ambiguous answer is looked up, never resent).
    A stopped bot can be stopped again with these options to close what it left open.
    Conflict while a step of the bot is running; nothing changes then."""
    if bot.owner_id != user.pk:
        raise NotFound("No such bot")
    if not (cancel_orders or close_position):
        if bot.status == LiveBot.Status.STOPPED:
            return bot
        bot_event(bot, "Stopped by its owner (position left as it is)", kind="status")
        return _set_status(bot, LiveBot.Status.STOPPED, "Stopped by its owner")
    with _bot_lock(bot.pk) as got:
        if not got:
            raise Conflict("The bot is processing a candle right now: try again in a moment.")
        bot = LiveBot.objects.select_related("account", "series", "owner").get(pk=bot.pk)
        if bot.account is None:  # read under the lock: the account may go until it is taken
            raise ApplicationError(
                "The bot's exchange account was deleted: its orders and position cannot be reached"
            )
        if adapter is None:
            from exchanges.adapters import adapter_for

            adapter = adapter_for(bot.account)
        quote: tuple[MarketRules, Decimal] | None = None
        if close_position and bot.position > 0:
            # Read the market first: when it cannot be priced, nothing changes.
            try:
                quote = (adapter.market(bot.symbol), Decimal(adapter.last_price(bot.symbol)))
            except ApplicationError as exc:
                raise ApplicationError(
                    f"The position cannot be closed now ({exc.message}); nothing was changed"
                ) from exc
        if bot.status != LiveBot.Status.STOPPED:
            what = " and ".join(
                w
                for w, on in (("cancel its orders", cancel_orders), ("close", close_position))
                if on
            )
            bot_event(bot, f"Stopped by its owner, asked to {what}", kind="status")
            _set_status(bot, LiveBot.Status.STOPPED, "Stopped by its owner")
        if cancel_orders:
            _cancel_open_orders(bot, adapter)
        if close_position:
            _close_position(bot, adapter, now_ms=now_ms, quote=quote)
        bot.refresh_from_db()
    return bot


def _cancel_open_orders(bot: LiveBot, adapter: TradingAdapter) -> None:
    for order in list(bot.orders.filter(state__in=BotOrder.OPEN_STATES).order_by("pk")):
        found = adapter.fetch_order_by_client_id(bot.symbol, order.client_order_id)
        if found is None:
            if order.state == BotOrder.State.UNKNOWN:
                bot_event(
                    bot,
                    f"Order {order.client_order_id} is still unknown to the exchange: it "
                    "could not be cancelled; check the account",
                    level=BotEvent.Level.WARNING,
                    kind="order",
                    data={"order": order.pk},
                )
                continue
            # Stored but never received by the exchange (we hold the bot's lock, so nobody
            # is sending it now): it will never be sent.
            BotOrder.objects.filter(pk=order.pk).update(
                state=BotOrder.State.SKIPPED,
                error="cancelled at stop before it reached the exchange",
                updated_at=timezone.now(),
            )
            order.refresh_from_db()
            _publish_order(order)
            bot_event(
                bot,
                f"Order {order.client_order_id} cancelled at stop (never sent)",
                kind="order",
                data={"order": order.pk},
            )
            continue
        state = found
        if found.status == "open":
            try:
                state = adapter.cancel_order(bot.symbol, order.client_order_id)
            except ApplicationError as exc:
                bot_event(
                    bot,
                    f"Could not cancel {order.client_order_id}: {exc.message}",
                    level=BotEvent.Level.WARNING,
                    kind="order",
                    data={"order": order.pk},
                )
                continue
        fresh = _book(bot, order, state, adapter)
        word = "cancelled" if found.status == "open" else f"settled ({state.status})"
        bot_event(
            bot,
            f"Order {order.client_order_id} {word} at stop; filled {fresh.filled.normalize()}",
            kind="order",
            data={"order": order.pk, "status": state.status},
        )


def first_reason(decision: Decision) -> str:
    """The first reason a risk decision gives, else its code."""
    return decision.reasons[0] if decision.reasons else decision.code


def bot_order_check(
    bot: LiveBot | GridBot,
    adapter: TradingAdapter,
    request: OrderRequest,
    *,
    market: MarketRules,
    price: Decimal,
    source: str,
    stop: Decimal | None = None,
) -> Decision:
    """The risk app's pre-trade check of one of a bot's orders (strategy or grid bot), the
    account's book read through the bot's adapter (a denial is also stored by the risk app)."""
    from risk.services import order_request_check

    # A bot sending an order holds its account (deleting the account stops the bot first).
    assert bot.account is not None
    return order_request_check(
        user=bot.owner, account=bot.account, request=request, market=market, price=price,
        stop=stop, source=source, adapter_for=lambda _account: adapter,
    )  # fmt: skip


def _bot_order_check(
    bot: LiveBot,
    adapter: TradingAdapter,
    request: OrderRequest,
    *,
    market: MarketRules,
    price: Decimal,
) -> tuple[Decision, str]:
    """``bot_order_check`` of a strategy bot's order: the decision and, when it is a denial,
    its text "risk check denied (<code>): <first reason>" ("" when allowed)."""
    decision = bot_order_check(
        bot, adapter, request, market=market, price=price, source=f"bot:{bot.pk}"
    )
    if decision.allowed:
        return decision, ""
    return decision, f"risk check denied ({decision.code}): {first_reason(decision)}"


def close_client_order_id(bot_id: int, attempt: int) -> str:
    """Deterministic id of the bot's ``attempt``-th closing order (1, 2, ...)."""
    return f"qfb{bot_id}-C{attempt}"


def _close_position(
    bot: LiveBot,
    adapter: TradingAdapter,
    *,
    now_ms: int | None,
    quote: tuple[MarketRules, Decimal] | None = None,
) -> None:
    """Sell the bot's position at market (see ``bot_stop``). An earlier close still open is
    settled first (looked up by its id, sent only if the exchange never got it)."""
    for pending in bot.orders.filter(action="close", state__in=BotOrder.OPEN_STATES):
        _send(bot, pending, adapter, may_exist=True)
        bot.refresh_from_db()
    _cancel_resting(bot, adapter, why="the position is closed at stop")
    if bot.position <= 0:
        bot_event(bot, "Nothing to close: the bot holds no position", kind="order")
        return
    from risk.services import approved_amount

    market, price = quote or (adapter.market(bot.symbol), Decimal(adapter.last_price(bot.symbol)))
    amount = market.round_amount(bot.position)
    attempt = bot.orders.filter(action="close").count() + 1
    cid = close_client_order_id(bot.pk, attempt)
    skipped = ""
    if amount <= 0:
        skipped = "the position is below the market's lot size: not sent"
    else:
        request = OrderRequest(
            symbol=bot.symbol, side="sell", type="market", amount=amount, client_order_id=cid
        )
        decision, skipped = _bot_order_check(bot, adapter, request, market=market, price=price)
        if not skipped:
            try:
                amount = min(amount, approved_amount(decision=decision, market=market, price=price))
            except ApplicationError as exc:
                skipped = f"below the market's minimum order: {exc.message}"
    now_ms = int(timezone.now().timestamp() * 1000) if now_ms is None else now_ms
    with transaction.atomic():
        order = BotOrder.objects.create(
            bot=bot,
            client_order_id=cid,
            bar_ts=now_ms,
            action="close",
            reason="stop",
            side="sell",
            amount=amount,
            state=BotOrder.State.SKIPPED if skipped else BotOrder.State.PLANNED,
            error=skipped[:2000],
        )
    _publish_and_send(
        bot,
        order,
        adapter,
        skipped_note=f"Close at stop not sent: {skipped}" if skipped else "",
        sending_note=(
            f"Closing the position at stop: sell {amount.normalize()} {bot.symbol} at market"
        ),
        data={"client_order_id": cid},
    )


def _publish_and_send(
    bot: LiveBot,
    order: BotOrder,
    adapter: TradingAdapter,
    *,
    skipped_note: str,
    sending_note: str,
    data: dict[str, Any],
) -> None:
    """Publish an order just stored; log why it is not sent (``skipped_note``, a warning),
    else log ``sending_note`` with ``data`` and send it."""
    _publish_order(order)
    if skipped_note:
        bot_event(
            bot, skipped_note, level=BotEvent.Level.WARNING, kind="order", data={"order": order.pk}
        )
        return
    bot_event(bot, sending_note, kind="order", data={"order": order.pk, **data})
    _send(bot, order, adapter, may_exist=False)


def bots_pause_for_halt(*, user_id: int, account_id: int | None, reason: str) -> int:
    """The owner's trading was halted (kill switch or a breaker; ``account_id`` None: all of
    their trading): their running bots (on that account, or all) are paused with the reason.
    Returns how many. They start again only by hand, after the state is reset."""
    bots = running_bots(LiveBot, user_id=user_id, account_id=account_id)
    why = f" ({reason})" if reason else ""
    text = (
        f"HALTED: paused because your trading was halted{why}; no new entries. Reset the "
        "state on the Risk page, then start the bot again."
    )[:2000]
    ids = list(bots.values_list("pk", flat=True))
    count = LiveBot.objects.filter(pk__in=ids, status=LiveBot.Status.RUNNING).update(
        status=LiveBot.Status.PAUSED, status_reason=text, updated_at=timezone.now()
    )
    for bot in LiveBot.objects.filter(pk__in=ids):
        bot_event(bot, text, level=BotEvent.Level.WARNING, kind="status")
        _publish_status(bot)
    return count


def running_bots(
    model: type[LiveBot] | type[GridBot], *, user_id: int, account_id: int | None
) -> QuerySet[Any]:
    """The owner's running bots of ``model`` on the account (``None``: on all of them)."""
    bots = model.objects.filter(owner_id=user_id, status=LiveBot.Status.RUNNING)
    if account_id is not None:
        bots = bots.filter(account_id=account_id)
    return bots


def bots_on_account(model: type[LiveBot] | type[GridBot], *, account_id: int) -> QuerySet[Any]:
    """The bots of ``model`` that still run (or could be resumed) on the account."""
    return model.objects.filter(account_id=account_id).exclude(status=LiveBot.Status.STOPPED)


def bots_in_words(model: type[LiveBot] | type[GridBot], *, account_id: int, what: str) -> list[str]:
    """``bots_on_account`` in words: ``what`` “name” (it will be stopped)."""
    names = bots_on_account(model, account_id=account_id).values_list("name", flat=True)
    return [f"{what} “{name}” (it will be stopped)" for name in names]


ACCOUNT_DELETED = "Stopped: its exchange account was deleted."


def stop_for_account_removal(model: type[LiveBot] | type[GridBot], bots: Sequence[Any]) -> None:
    """Mark ``bots`` stopped because their exchange account is being deleted."""
    if bots:
        model.objects.filter(pk__in=[b.pk for b in bots]).update(
            status=LiveBot.Status.STOPPED, status_reason=ACCOUNT_DELETED, updated_at=timezone.now()
        )


def bot_account_uses(*, account_id: int) -> list[str]:
    """The bots that still run (or could be resumed) on the account, in words."""
    return bots_in_words(LiveBot, account_id=account_id, what="bot")


def bots_account_removing(*, account_id: int) -> None:
    """The account is being deleted (inside that transaction): stop its bots. Refused while a
    bot is stepping right now or has an order whose outcome is not settled (once the keys
    are erased it could never be looked up)."""
    bots = list(bots_on_account(LiveBot, account_id=account_id).select_for_update())
    for bot in bots:
        if not _bot_busy_lock(bot.pk):
            raise Conflict(f"The bot “{bot.name}” is placing orders right now: try again shortly.")
    open_orders = BotOrder.objects.filter(
        bot__account_id=account_id, state__in=BotOrder.OPEN_STATES
    ).count()
    if open_orders:
        raise Conflict(
            f"{open_orders} bot order(s) on this account are not settled yet (sent, or being "
            "looked up). Start the bot so it can settle them, or try again later."
        )
    stop_for_account_removal(LiveBot, bots)
    for bot in bots:
        bot.status = LiveBot.Status.STOPPED
        bot.status_reason = ACCOUNT_DELETED
        bot_event(bot, bot.status_reason, level=BotEvent.Level.WARNING, kind="status")
        _publish_status(bot)


# --- the step ----------------------------------------------------------------------------------


def _bot_busy_lock(bot_id: int) -> bool:
    """Take the bot's step lock until the current transaction ends (False: a step holds it)."""
    return transaction_lock(_lock_key(bot_id))


def _lock_key(bot_id: int) -> int:
    return 0x51B0_0000 + int(bot_id)


def _bot_lock(bot_id: int) -> contextlib.AbstractContextManager[bool]:
    """The bot's step lock for the session, held across the step's transactions."""
    return session_lock(_lock_key(bot_id))


def client_order_id(bot_id: int, bar_ts: int, action: str) -> str:
    """Deterministic: the same (bot, bar, action) always gives the same id (<= 36 chars)."""
    code = {"enter": "E", "exit": "X", "protect": "P"}[action]
    return f"qfb{bot_id}-{bar_ts // 1000}-{code}"


def _apply_state(bot: LiveBot, order: BotOrder, state: OrderState) -> None:
    """Record what the exchange says about ``order``; a new fill or fee moves the bot's ledger.
    Called inside a transaction holding the bot row.

    The fee is booked in the currency the exchange took it in: in the quote it moves the cash;
    in the base coin (Binance spot takes a buy's fee from the coin bought) it shrinks the
    position, so the bot holds what the account received (filled - fee); in any other asset
    (BNB paying) it moves neither. A fee is only ever added (a later lookup may state none)."""
    base, _, quote = bot.symbol.partition("/")
    order.exchange_order_id = state.exchange_order_id or order.exchange_order_id
    new_fill = max(Decimal(0), Decimal(state.filled) - order.filled)
    new_fee = max(Decimal(0), Decimal(state.fee or 0) - order.fee)
    if new_fee > 0 and state.fee_currency:
        order.fee_currency = state.fee_currency
    currency = order.fee_currency or quote
    fee_base = new_fee if currency.upper() == base.upper() else Decimal(0)
    fee_quote = new_fee if currency.upper() == quote.upper() else Decimal(0)
    if new_fill > 0 or new_fee > 0:
        price = Decimal(state.average_price or state.price or order.average_price or 0)
        # Quote amounts are booked to 8 decimals against the trader (a buy's cost up, a
        # sell's proceeds down), as the paper exchange and Binance book them.
        cost = (new_fill * price).quantize(EIGHT, ROUND_UP if order.side == "buy" else ROUND_FLOOR)
        if order.side == "buy":
            bot.cash -= cost + fee_quote
            old = bot.position
            bot.position += new_fill - fee_base
            if new_fill > 0:
                # The entry price is the fill price (the engine's stop and target hang on it),
                # whatever the fee took.
                bot.entry_price = (
                    ((bot.entry_price or Decimal(0)) * old + cost) / (old + new_fill)
                ).quantize(EIGHT)
            bot.entry_ts = bot.entry_ts or order.bar_ts
        else:
            bot.cash += cost - fee_quote
            bot.position -= new_fill + fee_base
        bot.cash = bot.cash.quantize(EIGHT)
        order.filled = max(order.filled, Decimal(state.filled))
        if price > 0:
            order.average_price = price.quantize(EIGHT)
        order.fee += new_fee
    finishing = order.state != BotOrder.State.FILLED
    if finishing and order.side == "sell" and state.status == "closed" and order.filled > 0:
        # The bot's sells are of its whole position rounded down to the lot step: what is left
        # once one filled completely is dust below the step (a base fee's remainder), which
        # cannot be sold. It stays on the account; the bot's ledger lets it go.
        bot.position = Decimal(0)
    if bot.position <= 0:
        bot.position = Decimal(0)
        bot.entry_price = None
        bot.entry_ts = None
    if state.status == "closed":
        order.state = BotOrder.State.FILLED
    elif state.status in ("canceled", "expired", "rejected"):
        if order.filled > 0:
            order.state = BotOrder.State.FILLED
        elif order.action in BotOrder.RESTING_ACTIONS and state.status != "rejected":
            order.state = BotOrder.State.CANCELED
        else:
            order.state = BotOrder.State.REJECTED
    else:
        order.state = BotOrder.State.ACKNOWLEDGED
    order.save()
    bot.save(update_fields=["cash", "position", "entry_price", "entry_ts", "updated_at"])


def _send(bot: LiveBot, order: BotOrder, adapter: TradingAdapter, *, may_exist: bool) -> None:
    from exchanges.clients import submit_order

    resting = RESTING.get(order.action)
    request = OrderRequest(
        symbol=bot.symbol,
        # (type: ignore below) a choices column/value: only the Literal's strings
        side=order.side,  # type: ignore[arg-type]
        type=resting[0] if resting else "market",  # type: ignore[arg-type]
        amount=order.amount,
        client_order_id=order.client_order_id,
        trigger_price=order.trigger_price if resting else None,
    )
    try:
        state = submit_order(adapter, request, may_exist=may_exist, spacing=0.5)
    except OrderStatusUnknown as exc:
        _order_failed(
            bot, order, BotOrder.State.UNKNOWN, str(exc),
            f"Order {order.client_order_id} is unknown after lookups: not resent",
            BotEvent.Level.ERROR,
        )  # fmt: skip
        raise BotError(f"Order {order.client_order_id} is unknown after lookups") from exc
    except ApplicationError as exc:
        _order_failed(
            bot, order, BotOrder.State.REJECTED, str(exc),
            f"Order {order.client_order_id} rejected by the exchange: {exc}",
            BotEvent.Level.WARNING,
        )  # fmt: skip
        return
    fresh = _book(bot, order, state, adapter)
    filled = fresh.filled > 0
    bot_event(
        bot,
        f"{fresh.side.capitalize()} {fresh.filled.normalize()} {bot.symbol} filled at "
        f"{(fresh.average_price or Decimal(0)).normalize()} ({fresh.action}"
        f"{', ' + fresh.reason if fresh.reason else ''}); fee {fresh.fee.normalize()}"
        if filled
        else f"Order {fresh.client_order_id} sent: {fresh.get_state_display().lower()}",
        kind="fill" if filled else "order",
        data={"order": fresh.pk, "state": fresh.state},
    )
    if fresh.action == "enter" and filled:
        _ensure_resting(bot, adapter)


def _order_failed(
    bot: LiveBot, order: BotOrder, state: str, error: str, message: str, level: str
) -> None:
    """Store an order's failed outcome (unknown or rejected), tell the page, log it."""
    BotOrder.objects.filter(pk=order.pk).update(
        state=state, error=error[:2000], updated_at=timezone.now()
    )
    order.refresh_from_db()
    _publish_order(order)
    bot_event(bot, message, level=level, kind="order", data={"order": order.pk})


def _book(bot: LiveBot, order: BotOrder, state: OrderState, adapter: TradingAdapter) -> BotOrder:
    """Record the exchange's ``state`` of ``order`` under the bot's row lock (the ledger moves
    with any new fill), copy the ledger back to ``bot`` and tell the bot's page. A finished
    order stating no fee (Binance's order lookup) has it read from the account's fills first."""
    state = with_fill_fees(adapter, state)
    with transaction.atomic():
        locked = LiveBot.objects.select_for_update().get(pk=bot.pk)
        fresh = BotOrder.objects.select_for_update().get(pk=order.pk)
        _apply_state(locked, fresh, state)
        _copy_ledger(locked, bot)
    _publish_order(fresh)
    return fresh


def _copy_ledger(src: LiveBot, dst: LiveBot) -> None:
    dst.cash, dst.position = src.cash, src.position
    dst.entry_price, dst.entry_ts = src.entry_price, src.entry_ts


def bot_reconcile(*, bot: LiveBot, adapter: TradingAdapter) -> None:
    """Resolve every order a previous run left open, then check the account holds the bot's
    position, then settle the resting stop/target orders (``_sync_resting``). Raises BotError
    (the caller marks the bot failed) when it cannot be made sure."""
    open_orders = list(
        bot.orders.filter(state__in=BotOrder.OPEN_STATES)
        .exclude(action__in=BotOrder.RESTING_ACTIONS, state=BotOrder.State.ACKNOWLEDGED)
        .order_by("pk")
    )
    if open_orders:
        bot_event(
            bot,
            f"Reconciling {len(open_orders)} order(s) left open by an earlier run",
            kind="reconcile",
            data={"orders": [o.pk for o in open_orders]},
        )
    for order in open_orders:
        if order.state == BotOrder.State.PLANNED:
            # Stored before sending: the previous run may or may not have sent it.
            _send(bot, order, adapter, may_exist=True)
            continue
        found = adapter.fetch_order_by_client_id(bot.symbol, order.client_order_id)
        if found is None:
            if order.state == BotOrder.State.UNKNOWN:
                raise BotError(
                    f"Order {order.client_order_id} is still unknown to the exchange; it was "
                    "not resent. Check the account, then start the bot again."
                )
            continue
        fresh = _book(bot, order, found, adapter)
        bot_event(
            bot,
            f"Reconciled {fresh.client_order_id}: the exchange says {found.status}, "
            f"filled {fresh.filled.normalize()}",
            kind="reconcile",
            data={"order": fresh.pk, "status": found.status},
        )
    _sync_resting(bot, adapter)
    base = bot.symbol.partition("/")[0]
    held = adapter.balances().get(base)
    total = held.total if held is not None else Decimal(0)
    if bot.position > 0 and total < bot.position:
        raise BotError(
            f"The account holds {total} {base} but the bot's position is {bot.position} {base}: "
            "it was changed outside the bot"
        )
    if open_orders:
        bot_event(
            bot,
            f"Reconciled: the account holds {total.normalize()} {base}, the bot "
            f"{bot.position.normalize()} {base}",
            kind="reconcile",
            data={"held": str(total), "position": str(bot.position)},
        )
    _ensure_resting(bot, adapter)


# --- resting stop-loss / take-profit orders (see the module docstring) ------------------------

# action -> (order type on the exchange, the engine's exit reason, client order id code)
RESTING: dict[str, tuple[str, str, str]] = {
    "stop": ("stop_market", "stop_loss", "S"),
    "stop-r": ("stop_market", "stop_loss", "S2"),
    "target": ("take_profit_market", "take_profit", "T"),
    "target-r": ("take_profit_market", "take_profit", "T2"),
}
LOST = "lost: "
RESTING_WORDS = {"stop_loss": "Stop-loss", "take_profit": "Take-profit"}


def resting_client_order_id(bot_id: int, entry_ts: int, action: str) -> str:
    """Deterministic id of the resting order ``action`` protecting the entry at ``entry_ts``."""
    return f"qfb{bot_id}-{entry_ts // 1000}-{RESTING[action][2]}"


def _resting_levels(bot: LiveBot) -> dict[str, Decimal]:
    """The engine's stop and target for the bot's position: its entry fill price times
    (1 - stop_loss) and (1 + take_profit), as the kernel sets them for a long."""
    config = sim_config(bot.settings)
    if bot.entry_price is None:
        return {}
    levels = {}
    if config.stop_loss > 0:
        levels["stop"] = bot.entry_price * (1 - Decimal(repr(config.stop_loss)))
    if config.take_profit > 0:
        levels["target"] = bot.entry_price * (1 + Decimal(repr(config.take_profit)))
    return levels


def _may_rest(bot: LiveBot) -> bool:
    """Whether the bot's settings have a level it may rest (read from the settings snapshot:
    the hundreds of bots without one skip every resting-order query)."""
    settings = bot.settings or {}
    return any(float(settings.get(key) or 0) > 0 for key in ("stop_loss", "take_profit"))


def _ensure_resting(bot: LiveBot, adapter: TradingAdapter) -> None:
    """Place the position's resting stop and target when they are not on the exchange yet:
    the first time after the entry fills, and once more (``-r``) when the first was lost."""
    if bot.position <= 0 or bot.entry_ts is None or not _may_rest(bot):
        return
    levels = _resting_levels(bot)
    if not levels or not supports_stop_orders(adapter, bot.symbol):
        return
    for first, level in levels.items():
        rows = list(
            bot.orders.filter(bar_ts=bot.entry_ts, action__in=(first, f"{first}-r")).order_by("pk")
        )
        if rows and not (len(rows) == 1 and rows[0].error.startswith(LOST)):
            continue  # placed (open, filled, refused or cancelled by the bot), or re-placed
        action = first if not rows else f"{first}-r"
        if rows:
            bot_event(
                bot,
                f"Resting {RESTING_WORDS[RESTING[first][1]].lower()} {rows[0].client_order_id} "
                "was lost on the exchange: placing it again (once)",
                level=BotEvent.Level.WARNING,
                kind="reconcile",
                data={"order": rows[0].pk},
            )
        _place_resting(bot, adapter, action, level)


def _place_resting(bot: LiveBot, adapter: TradingAdapter, action: str, level: Decimal) -> None:
    """Store (committed), risk-check as an exit, and send one resting stop/target sell."""
    order_type, reason, _ = RESTING[action]
    market = adapter.market(bot.symbol)
    trigger = market.round_trigger(level, "sell", order_type)
    amount = market.round_amount(bot.position)
    cid = resting_client_order_id(bot.pk, int(bot.entry_ts or 0), action)
    skipped = ""
    if amount <= 0:
        skipped = "the position is below the market's lot size: not sent"
    else:
        request = OrderRequest(
            symbol=bot.symbol,
            side="sell",
            type=order_type,  # type: ignore[arg-type]
            amount=amount,
            client_order_id=cid,
            trigger_price=trigger,
        )
        _, denial = _bot_order_check(bot, adapter, request, market=market, price=trigger)
        if denial:
            skipped = f"{denial}; the level is watched"
    with transaction.atomic():
        order, created = BotOrder.objects.get_or_create(
            bot=bot,
            bar_ts=int(bot.entry_ts or 0),
            action=action,
            defaults={
                "client_order_id": cid,
                "reason": reason,
                "side": "sell",
                "amount": amount,
                "trigger_price": trigger,
                "state": BotOrder.State.SKIPPED if skipped else BotOrder.State.PLANNED,
                "error": skipped[:2000],
            },
        )
    if not created:
        return
    word = RESTING_WORDS[reason]
    _publish_and_send(
        bot,
        order,
        adapter,
        skipped_note=f"{word} not placed on the exchange: {skipped}" if skipped else "",
        sending_note=(
            f"Placing the {word.lower()} on the exchange: sell {amount.normalize()} {bot.symbol} "
            f"when the price reaches {trigger.normalize():f} ({cid})"
        ),
        data={"client_order_id": cid, "trigger": str(trigger)},
    )


def _mark(order: BotOrder, state: str, error: str) -> None:
    BotOrder.objects.filter(pk=order.pk).update(
        state=state, error=error[:2000], updated_at=timezone.now()
    )
    order.refresh_from_db()
    _publish_order(order)


def _sync_resting(bot: LiveBot, adapter: TradingAdapter) -> None:
    """Look up the resting orders the exchange holds for the bot: a fill is the exit (booked
    with its reason, the other side cancelled); one cancelled outside the bot or gone is
    marked lost (``_ensure_resting`` places it again, once)."""
    if not _may_rest(bot):
        return
    resting = bot.orders.filter(
        action__in=BotOrder.RESTING_ACTIONS, state=BotOrder.State.ACKNOWLEDGED
    ).order_by("pk")
    for order in list(resting):
        found = adapter.fetch_order_by_client_id(bot.symbol, order.client_order_id)
        if found is not None and found.status == "open" and Decimal(found.filled) == order.filled:
            continue
        if found is None:
            _mark(order, BotOrder.State.CANCELED, f"{LOST}the exchange has no such order")
        else:
            before = order.filled
            order = _book(bot, order, found, adapter)
            if order.filled > before:
                _log_resting_fill(bot, order)
            elif order.state == BotOrder.State.CANCELED:
                _mark(order, order.state, f"{LOST}{found.status} outside the bot")
        if order.error.startswith(LOST):
            bot_event(
                bot,
                f"Resting order {order.client_order_id} is no longer on the exchange "
                f"({order.error[len(LOST) :]})",
                level=BotEvent.Level.WARNING,
                kind="reconcile",
                data={"order": order.pk},
            )
    _settle_resting_fills(bot, adapter)


def _settle_resting_fills(bot: LiveBot, adapter: TradingAdapter) -> None:
    """After a resting order filled: book it on the bar it filled in (the first the bot has
    not processed, when that is after the entry's) and cancel the other side (the bot's own
    OCO). Only the latest fills can need it."""
    tf_ms = timeframe_ms(bot.timeframe)
    fill_bar = bot.start_ts if bot.cursor_ts is None else int(bot.cursor_ts) + tf_ms
    latest = bot.orders.filter(action__in=BotOrder.RESTING_ACTIONS, filled__gt=0).order_by("-pk")
    for order in list(latest[:4]):
        entry_ts = int(order.client_order_id.split("-")[1]) * 1000
        moved = BotOrder.objects.filter(bot=bot, bar_ts=fill_bar, action=order.action)
        if order.bar_ts == entry_ts and fill_bar > entry_ts and not moved.exists():
            BotOrder.objects.filter(pk=order.pk).update(bar_ts=fill_bar, updated_at=timezone.now())
            order.refresh_from_db()
            _publish_order(order)
        prefix = order.client_order_id.rsplit("-", 1)[0] + "-"
        _cancel_resting(
            bot, adapter, why=f"{order.reason} filled", only_prefix=prefix, keep=order.pk
        )


def _log_resting_fill(bot: LiveBot, order: BotOrder) -> None:
    bot_event(
        bot,
        f"{RESTING_WORDS[order.reason]} filled on the exchange: sold "
        f"{order.filled.normalize()} {bot.symbol} at "
        f"{(order.average_price or Decimal(0)).normalize()} ({order.reason}); "
        f"fee {order.fee.normalize()}",
        kind="fill",
        data={"order": order.pk, "state": order.state},
    )


def _cancel_resting(
    bot: LiveBot,
    adapter: TradingAdapter,
    *,
    why: str,
    only_prefix: str = "",
    keep: int | None = None,
) -> None:
    """Take the bot's open resting orders off the exchange (``why`` is logged). One that
    filled meanwhile is booked (the position moves) instead."""
    if not _may_rest(bot):
        return
    rows = bot.orders.filter(action__in=BotOrder.RESTING_ACTIONS, state__in=BotOrder.OPEN_STATES)
    if only_prefix:
        rows = rows.filter(client_order_id__startswith=only_prefix)
    if keep is not None:
        rows = rows.exclude(pk=keep)
    note = f"cancelled by the bot: {why}"
    for order in list(rows.order_by("pk")):
        state: OrderState | None = None
        with contextlib.suppress(ApplicationError):
            state = adapter.cancel_order(bot.symbol, order.client_order_id)
        if state is None:  # not open on the exchange: filled, gone, or never sent
            state = adapter.fetch_order_by_client_id(bot.symbol, order.client_order_id)
        if state is None:
            if order.state == BotOrder.State.UNKNOWN:
                continue  # still unknown: reconciliation looks it up again
            _mark(order, BotOrder.State.CANCELED, f"{note} (it never reached the exchange)")
        else:
            before = order.filled
            order = _book(bot, order, state, adapter)
            if order.filled > before:
                _log_resting_fill(bot, order)  # it filled first: that was the exit
            if order.filled > 0:
                continue
            _mark(order, BotOrder.State.CANCELED, note)
        bot_event(
            bot,
            f"Resting {RESTING_WORDS[order.reason].lower()} {order.client_order_id} "
            f"cancelled: {why}",
            kind="order",
            data={"order": order.pk},
        )


def _plan(bot: LiveBot, action: Action, amount: Decimal, skipped: str = "") -> BotOrder | None:
    """Store the order (committed) before anything is sent; None when this (bot, bar, action)
    already has a row (a rerun of the same candle), or when it is stored as skipped (an amount
    of 0: below the market's minimum; or ``skipped`` says why, e.g. the risk check's denial)."""
    # A watched level (stop, target, trailing) on bar t is its own action: bar t may also
    # carry the open-time entry decided at the previous close.
    if action.kind == "enter":
        kind = "enter"
    else:
        kind = "protect" if action.reason in PROTECTIVE else "exit"
    side = "buy" if (action.kind == "enter") == (action.side > 0) else "sell"
    with transaction.atomic():
        order, created = BotOrder.objects.get_or_create(
            bot=bot,
            bar_ts=action.bar_ts,
            action=kind,
            defaults={
                "client_order_id": client_order_id(bot.pk, action.bar_ts, kind),
                "reason": action.reason,
                "side": side,
                "amount": amount,
                "state": BotOrder.State.PLANNED
                if amount > 0 and not skipped
                else BotOrder.State.SKIPPED,
                "error": skipped
                or ("" if amount > 0 else "below the market's minimum order: not sent"),
            },
        )
    if created:
        _publish_order(order)
        planned = order.state == BotOrder.State.PLANNED
        bot_event(
            bot,
            f"Planned {side} {amount.normalize()} {bot.symbol} ({kind}, {action.reason}) "
            f"as {order.client_order_id}"
            if planned
            else f"Skipped {side} {bot.symbol} ({kind}, {action.reason}): {order.error}",
            level=BotEvent.Level.INFO if planned else BotEvent.Level.WARNING,
            kind="order",
            data={"order": order.pk, "bar_ts": action.bar_ts},
        )
    return order if created and order.state == BotOrder.State.PLANNED else None


def _act(bot: LiveBot, action: Action, adapter: TradingAdapter, config: Any) -> None:
    rules = adapter.market(bot.symbol)
    price = Decimal(adapter.last_price(bot.symbol))
    if action.kind == "exit":
        if bot.position <= 0:
            return
        # A resting stop/target would sell the same coins: off first (on a real exchange it
        # also holds them). One that filled meanwhile was the exit.
        _cancel_resting(bot, adapter, why=f"{action.reason} exit at market")
        if bot.position <= 0:
            _settle_resting_fills(bot, adapter)
            return
        amount = rules.round_amount(bot.position)
    else:
        if bot.position > 0:
            return
        px = float(price) * (1.0 + action.side * config.slippage_bps / 1e4)
        equity = float(bot.cash)
        amount = size_order(
            side=action.side, price=px, equity=equity, cash=equity, config=config, rules=rules
        )
        if amount > 0:
            try:
                rules.check_size(amount, price)
            except ApplicationError:
                amount = Decimal(0)
    skipped = ""
    if amount > 0:
        amount, skipped = _risk_check(bot, action, amount, price, rules, adapter)
    order = _plan(bot, action, amount, skipped)
    if order is not None:
        _send(bot, order, adapter, may_exist=False)


def _risk_check(
    bot: LiveBot,
    action: Action,
    amount: Decimal,
    price: Decimal,
    market: MarketRules,
    adapter: TradingAdapter,
) -> tuple[Decimal, str]:
    """The risk app's pre-trade check of the order (the account's book read through the
    bot's adapter): the amount to send (the approved size, rounded down: never above what
    the bot sized) and, when denied, why (the denial is also stored by the risk app)."""
    from risk.services import approved_amount

    side: Side = "buy" if (action.kind == "enter") == (action.side > 0) else "sell"
    request = OrderRequest(
        symbol=bot.symbol,
        side=side,
        type="market",
        amount=amount,
        client_order_id=client_order_id(bot.pk, action.bar_ts, "enter"),
    )
    decision, denial = _bot_order_check(bot, adapter, request, market=market, price=price)
    if denial:
        if decision.code == "trading_halted":
            reason = first_reason(decision)
            return Decimal(0), f"HALTED: no new entries (trading_halted: {reason})"[:2000]
        return Decimal(0), denial[:2000]
    try:
        allowed = approved_amount(decision=decision, market=market, price=price)
    except ApplicationError as exc:
        return Decimal(0), f"risk check cut the order below the market's minimum: {exc}"[:2000]
    return min(amount, allowed), ""


def _history(bot: LiveBot, until_ms: int) -> Any:
    from backtester.marketdata.store import load_candles

    return load_candles(bot.series, start_ts=bot.data_start_ts, end_ts=until_ms)


def bot_step(*, bot_id: int, now_ms: int, adapter: TradingAdapter | None = None) -> int:
    """Process every candle of the bot that closed by ``now_ms`` and after its cursor.

    Returns how many candles were processed (0 when the bot is not running, another worker
    holds it, or no new candle has closed). Never raises for a trading problem: the bot is
    marked ``error`` with the reason instead.
    """
    with _bot_lock(bot_id) as got:
        if not got:
            return 0
        bot = LiveBot.objects.select_related("account", "series").filter(pk=bot_id).first()
        if bot is None or bot.status != LiveBot.Status.RUNNING:
            return 0
        try:
            return _step(bot, now_ms, adapter)
        except (ApplicationError, EngineError) as exc:
            logger.warning("bot %s failed: %s", bot_id, exc)
            bot_event(bot, f"Stopped on an error: {exc}", level=BotEvent.Level.ERROR, kind="error")
            _set_status(bot, LiveBot.Status.ERROR, str(exc))
            return 0


def _step(bot: LiveBot, now_ms: int, adapter: TradingAdapter | None) -> int:
    from accounts.gating import user_has_pro

    if adapter is None:
        from exchanges.adapters import adapter_for

        assert bot.account is not None  # a running bot keeps its account (deleting stops it)
        adapter = adapter_for(bot.account)
    bot_reconcile(bot=bot, adapter=adapter)
    tf_ms = timeframe_ms(bot.timeframe)
    # A candle opening at ts is closed once ts + tf_ms <= now.
    history = _history(bot, now_ms - tf_ms + 1)
    ts = history.timestamp
    first_new = bot.start_ts if bot.cursor_ts is None else max(bot.start_ts, bot.cursor_ts + 1)
    todo = list(range(int(ts.searchsorted(first_new)), len(ts)))
    if not todo:
        return 0
    spec = spec_from_dict(bot.spec)
    config = sim_config(bot.settings)
    params = spec.resolve_params(bot.param_values)
    act_from = int(ts.searchsorted(bot.start_ts))
    entries_allowed = user_has_pro(bot.owner)
    # Until the history is longer than the rules' look-back, no rule can fire (the backtest's
    # signals are false there too) and the compiler refuses the short window: nothing to do.
    warmup = strategy_warmup(spec, params)
    protective = (
        config.stop_loss > 0
        or config.take_profit > 0
        or config.trailing_stop > 0
        or config.trailing_atr_mult > 0
    )
    for i in todo:
        actions: tuple[Action, ...] = ()
        if i + 1 > warmup:
            window = history.slice(0, i + 1)
            next_open: float | None = None
            if i + 1 < len(history):  # catching up: the next candle is known
                next_open = float(history.open[i + 1])
            elif protective:
                next_open = float(adapter.last_price(bot.symbol))
            actions = decide(
                window, spec, params, config, act_from=act_from, tf_ms=tf_ms, next_open=next_open
            ).actions
        for action in actions:
            if action.kind == "enter" and not entries_allowed:
                if bot.status_reason != PRO_LOST:
                    bot_event(bot, PRO_LOST, level=BotEvent.Level.WARNING, kind="status")
                    _set_status(bot, bot.status, PRO_LOST)
                continue
            _act(bot, action, adapter, config)
        LiveBot.objects.filter(pk=bot.pk).update(
            cursor_ts=int(ts[i]), last_step_at=timezone.now(), updated_at=timezone.now()
        )
        bot.cursor_ts = int(ts[i])
    last = int(ts[todo[-1]])
    bot_event(
        bot,
        f"Processed {len(todo)} candle(s) up to {_ms_iso(last)}",
        kind="step",
        data={"candles": len(todo), "cursor_ts": last, "index": todo[-1] - act_from},
    )
    _publish(
        bot.pk,
        "step",
        {
            "cursor_ts": last,
            "cash": str(bot.cash),
            "position": str(bot.position),
            "entry_price": None if bot.entry_price is None else str(bot.entry_price),
            "close": float(history.close[todo[-1]]),
        },
    )
    return len(todo)


def bot_equity(bot: LiveBot, mark_price: Decimal) -> Decimal:
    """The bot's money now: its cash plus its position at ``mark_price``."""
    return bot.cash + bot.position * mark_price


def running_bot_ids() -> list[int]:
    return list(LiveBot.objects.filter(status=LiveBot.Status.RUNNING).values_list("pk", flat=True))


# --- equity and drift ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerFill:
    """A fill as the bot's ledger books it: at ``bar_ts`` (the bar whose open it filled at,
    or the bar whose level it reached), ``side`` buy/sell, ``qty`` at ``price``, ``fee`` in
    the quote currency, ``fee_base`` a fee the exchange took in the base coin (the position
    holds that much less), ``closes``: a sell that emptied the position (dust below the lot
    step left behind is no longer the bot's)."""

    bar_ts: int
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    fee_base: Decimal = Decimal(0)
    closes: bool = False


def equity_from_fills(
    *,
    timestamps: Sequence[int],
    closes: Sequence[float],
    capital: Decimal,
    fills: Sequence[LedgerFill],
) -> list[float]:
    """The bot's equity at each candle's close: cash plus position times the close, where cash
    and position are what the fills booked at or before that candle (booked as ``_apply_state``
    books them: a buy's cost rounded up to 8 decimals, a sell's proceeds down)."""
    ordered = sorted(fills, key=lambda f: f.bar_ts)
    cash, position = capital, Decimal(0)
    k = 0
    out: list[float] = []
    for ts, close in zip(timestamps, closes, strict=True):
        while k < len(ordered) and ordered[k].bar_ts <= ts:
            f = ordered[k]
            if f.side == "buy":
                cash -= (f.qty * f.price).quantize(EIGHT, ROUND_UP) + f.fee
                position += f.qty - f.fee_base
            else:
                cash += (f.qty * f.price).quantize(EIGHT, ROUND_FLOOR) - f.fee
                position -= f.qty + f.fee_base
                if f.closes:
                    position = Decimal(0)
            k += 1
        out.append(float(cash + position * Decimal(repr(float(close)))))
    return out


def bot_fills(bot: LiveBot) -> list[LedgerFill]:
    base, _, quote = bot.symbol.partition("/")
    out = []
    for o in bot.orders.filter(filled__gt=0).order_by("bar_ts", "pk"):
        currency = (o.fee_currency or quote).upper()
        out.append(
            LedgerFill(
                o.bar_ts,
                o.side,
                o.filled,
                o.average_price or Decimal(0),
                o.fee if currency == quote.upper() else Decimal(0),
                fee_base=o.fee if currency == base.upper() else Decimal(0),
                closes=o.side == "sell"
                and o.state == BotOrder.State.FILLED
                and o.filled >= o.amount,
            )
        )
    return out


@dataclass(frozen=True)
class BotDrift:
    """The bot's equity beside the backtest's expectation, candle by candle from its start
    (``timestamps``), and the gap at the last one in % of the expectation (None if 0)."""

    timestamps: list[int]
    closes: list[float]
    live: list[float]
    expected: list[float]
    gap_pct: float | None


def bot_drift(bot: LiveBot) -> BotDrift | None:
    """Live against expected, over the candles the bot has processed (None before the first,
    or when the rules cannot be evaluated on the stored history yet).

    The expectation is the engine's own simulation under the bot's settings
    (``sim_config(bot.settings)``, ``initial_cash`` = the bot's capital), its indicators
    computed over the stored candles from ``data_start_ts`` exactly as the bot computes them,
    trading from ``start_ts`` (the deployment). Each step of the bot runs this same
    simulation (``backtester.live.decide``), so a bot that followed it has no drift beyond
    fills, fees and rounding."""
    from backtester.engine.language import compile_strategy
    from backtester.engine.signals import Signals
    from backtester.engine.simulate import simulate

    if bot.cursor_ts is None:
        return None
    history = _history(bot, int(bot.cursor_ts) + 1)
    ts = history.timestamp
    act_from = int(ts.searchsorted(bot.start_ts))
    if act_from >= len(ts):
        return None
    spec = spec_from_dict(bot.spec)
    try:
        params = spec.resolve_params(bot.param_values)
        signals = compile_strategy(spec, history, params, {})
        sim = simulate(
            history.slice(act_from),
            Signals(
                entry_long=signals.entry_long[act_from:],
                exit_long=signals.exit_long[act_from:],
                entry_short=signals.entry_short[act_from:],
                exit_short=signals.exit_short[act_from:],
            ),
            sim_config(bot.settings),
        )
    except (EngineError, StrategyError, ValueError):
        return None
    stamps = [int(x) for x in ts[act_from:]]
    closes = [float(x) for x in history.close[act_from:]]
    live = equity_from_fills(
        timestamps=stamps, closes=closes, capital=bot.capital, fills=bot_fills(bot)
    )
    expected = [float(x) for x in sim.equity]
    gap = None
    if expected and expected[-1] != 0:
        gap = (live[-1] / expected[-1] - 1.0) * 100.0
    return BotDrift(stamps, closes, live, expected, gap)


# --- the embedded demo --------------------------------------------------------------------------

DEMO_BOT_NAME = "Demo: SMA crossover on ETH/USDT 1h"
DEMO_BOT_ACCOUNT = "Demo bot paper"
DEMO_BOT_BALANCE = Decimal("10000")
DEMO_BOT_SYMBOL = "ETH/USDT"
DEMO_BOT_DAYS = 7


def demo_bot_ensure(*, user: Any, strategy: Strategy) -> tuple[LiveBot, bool]:
    """The demo user's running paper bot (``make run``): ``strategy`` on the shared demo
    ETH/USDT 1h candles, on its own paper account ("Demo bot paper"), deployed
    ``DEMO_BOT_DAYS`` before the end of the demo data. When it is created its past week is
    replayed bar by bar (the paper exchange quoting each next bar's open, as the parity test
    does), so its page has candles, orders, fills, a log and a drift chart; then it waits,
    running, for candles the store has not got. (bot, created); an existing one is left as
    it is. Must not be called inside a transaction (each step commits its orders)."""
    from exchanges.services_paper import paper_account_create

    existing = LiveBot.objects.filter(owner=user, name=DEMO_BOT_NAME).first()
    if existing is not None:
        return existing, False
    series = MarketSeries.objects.filter(
        owner=None, exchange="demo", symbol=DEMO_BOT_SYMBOL, timeframe="1h"
    ).first()
    if series is None or series.last_ts is None or series.first_ts is None:
        raise ApplicationError("The demo candles are not stored yet: seed them first.")
    account = ExchangeAccount.objects.filter(owner=user, label=DEMO_BOT_ACCOUNT).first()
    if account is None:
        account = paper_account_create(
            owner=user, label=DEMO_BOT_ACCOUNT, quote="USDT", starting_balance=DEMO_BOT_BALANCE
        )
    tf = timeframe_ms(series.timeframe)
    start = max(
        int(series.first_ts) + MIN_HISTORY_BARS * 2 * tf,
        int(series.last_ts) - DEMO_BOT_DAYS * 24 * tf,
    )
    bot = bot_create(
        user=user,
        account=account,
        series=series,
        strategy=strategy,
        settings={"initial_cash": float(DEMO_BOT_BALANCE)},
        name=DEMO_BOT_NAME,
        start_ts=start,
    )
    bot_event(bot, "Demo bot: replaying its first week of demo candles", kind="status")
    _demo_replay(bot)
    bot.refresh_from_db()
    return bot, True


def _demo_replay(bot: LiveBot) -> None:
    from backtester.marketdata.store import load_candles
    from exchanges.paper import ManualPrices, PaperExchange, default_rules

    candles = load_candles(bot.series, start_ts=bot.start_ts)
    ts, tf = candles.timestamp, timeframe_ms(bot.timeframe)
    prices = ManualPrices()
    clock = {"now": 0}
    adapter = PaperExchange(
        # (type: ignore below) a replayed bot has its account (checked by the caller)
        bot.account,  # type: ignore[arg-type]
        price_source=prices,
        clock=lambda: clock["now"],
        rules=default_rules,
    )
    for i in range(len(ts) - 1):
        clock["now"] = int(ts[i + 1])
        prices.set(bot.symbol, Decimal(repr(float(candles.open[i + 1]))), at_ms=int(ts[i + 1]))
        bot_step(bot_id=bot.pk, now_ms=int(ts[i]) + tf, adapter=adapter)
