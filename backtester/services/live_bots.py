"""Live strategy bots: deploy, start/pause/stop, and the step that trades one closed candle.

``bot_step`` is the whole loop of a bot, run by a task on the ``live`` queue:

1. take the bot's lock (a PostgreSQL advisory lock: one stepper per bot, whatever the worker);
2. **reconcile** before acting: every order left ``planned`` (stored, maybe sent) by a run that
   stopped is resolved with ``submit_order(may_exist=True)`` (looked up by its client order id,
   created only if the exchange never got it); ``unknown`` ones are looked up, never resent;
   the bot's position must be held by the account, else the bot goes to ``error``;
3. for every candle that closed after ``cursor_ts``, in order: take the decision from the
   engine (``backtester.live.decide``), store each order with its deterministic client order
   id (committed), send it, record the fill in the bot's ledger, then move the cursor.

Running a step twice for the same candle sends nothing: the cursor has moved, and a row that
exists for (bot, bar, action) is never planned again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from decimal import ROUND_FLOOR, ROUND_UP, Decimal
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from backtester.engine.candles import timeframe_ms
from backtester.engine.errors import EngineError, StrategyError
from backtester.engine.language.compiler import strategy_warmup, validate_strategy
from backtester.live.decide import Action, decide
from backtester.live.sizing import size_order
from backtester.models import Backtest, BotOrder, LiveBot, MarketSeries, Strategy
from backtester.services.backtests import normalize_settings, sim_config
from backtester.services.strategies import spec_from_dict, spec_to_dict, strategy_spec
from config.exceptions import ApplicationError, Conflict, NotFound
from exchanges.models import ExchangeAccount
from exchanges.trading import (
    MarketRules,
    OrderRequest,
    OrderState,
    OrderStatusUnknown,
    TradingAdapter,
)

logger = logging.getLogger(__name__)

# Bars of history before the deployment that indicators are computed over, in multiples of
# the strategy's warm-up (at least MIN_HISTORY_BARS).
HISTORY_WARMUPS = 3
MIN_HISTORY_BARS = 50
EIGHT = Decimal("0.00000001")
PROTECTIVE = frozenset({"stop_loss", "take_profit", "trailing_stop"})


class BotError(ApplicationError):
    code = "bot_error"


# --- deploy and lifecycle ----------------------------------------------------------------------


def _check_account(*, user: Any, account: ExchangeAccount) -> None:
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
    _check_account(user=user, account=account)
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
    return bot


def bot_pause(*, user: Any, bot: LiveBot) -> LiveBot:
    if bot.owner_id != user.pk:
        raise NotFound("No such bot")
    if bot.status != LiveBot.Status.RUNNING:
        raise ApplicationError("Only a running bot can be paused")
    return _set_status(bot, LiveBot.Status.PAUSED, "Paused by its owner")


def bot_resume(*, user: Any, bot: LiveBot) -> LiveBot:
    """Run again (a paused or failed bot). It reconciles before it acts, and candles that
    closed while it was paused are evaluated in order from its cursor."""
    from accounts.gating import require_pro

    if bot.owner_id != user.pk:
        raise NotFound("No such bot")
    require_pro(user)
    if bot.status not in (LiveBot.Status.PAUSED, LiveBot.Status.ERROR):
        raise ApplicationError("Only a paused or failed bot can be started again")
    if bot.account_id is None:
        raise ApplicationError("The bot's exchange account was deleted")
    from risk.selectors import effective_state

    latched = effective_state(user, bot.account)
    if latched is not None and latched.state == "halted":
        raise ApplicationError(
            f"Trading is halted ({latched.reason or latched.code}): reset it on the Risk page "
            "first, then start the bot again"
        )
    return _set_status(bot, LiveBot.Status.RUNNING)


def bot_stop(*, user: Any, bot: LiveBot) -> LiveBot:
    """Stop for good. The position is left as it is (closing it is the owner's decision)."""
    if bot.owner_id != user.pk:
        raise NotFound("No such bot")
    if bot.status == LiveBot.Status.STOPPED:
        return bot
    return _set_status(bot, LiveBot.Status.STOPPED, "Stopped by its owner")


def bots_pause_for_halt(*, user_id: int, account_id: int | None, reason: str) -> int:
    """The owner's trading was halted (kill switch or a breaker; ``account_id`` None: all of
    their trading): their running bots (on that account, or all) are paused with the reason.
    Returns how many. They start again only by hand, after the state is reset."""
    bots = LiveBot.objects.filter(owner_id=user_id, status=LiveBot.Status.RUNNING)
    if account_id is not None:
        bots = bots.filter(account_id=account_id)
    why = f" ({reason})" if reason else ""
    return bots.update(
        status=LiveBot.Status.PAUSED,
        status_reason=(
            f"Paused because your trading was halted{why}. Reset the state on the Risk page, "
            "then start the bot again."
        )[:2000],
        updated_at=timezone.now(),
    )


def bot_account_uses(*, account_id: int) -> list[str]:
    """The bots that still run (or could be resumed) on the account, in words."""
    return [
        f"bot “{name}” (it will be stopped)"
        for name in LiveBot.objects.filter(account_id=account_id)
        .exclude(status=LiveBot.Status.STOPPED)
        .values_list("name", flat=True)
    ]


def bots_account_removing(*, account_id: int) -> None:
    """The account is being deleted (inside that transaction): stop its bots. Refused while a
    bot is stepping right now or has an order whose outcome is not settled (once the keys
    are erased it could never be looked up)."""
    bots = list(
        LiveBot.objects.select_for_update()
        .filter(account_id=account_id)
        .exclude(status=LiveBot.Status.STOPPED)
    )
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
    if bots:
        LiveBot.objects.filter(pk__in=[b.pk for b in bots]).update(
            status=LiveBot.Status.STOPPED,
            status_reason="Stopped: its exchange account was deleted.",
            updated_at=timezone.now(),
        )


# --- the step ----------------------------------------------------------------------------------


def _bot_busy_lock(bot_id: int) -> bool:
    """Take the bot's step lock until the current transaction ends (False: a step holds it).
    Always True off PostgreSQL (one embedded worker)."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_xact_lock(%s)", [_lock_key(bot_id)])
        return bool(cur.fetchone()[0])


def _lock_key(bot_id: int) -> int:
    return 0x51B0_0000 + int(bot_id)


@contextlib.contextmanager
def _bot_lock(bot_id: int) -> Iterator[bool]:
    """A session-level advisory lock on PostgreSQL (held across the step's transactions);
    other databases (the embedded SQLite default) run one worker and need none."""
    if connection.vendor != "postgresql":
        yield True
        return
    key = _lock_key(bot_id)
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", [key])
        got = bool(cur.fetchone()[0])
    try:
        yield got
    finally:
        if got:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", [key])


def client_order_id(bot_id: int, bar_ts: int, action: str) -> str:
    """Deterministic: the same (bot, bar, action) always gives the same id (<= 36 chars)."""
    code = {"enter": "E", "exit": "X", "protect": "P"}[action]
    return f"qfb{bot_id}-{bar_ts // 1000}-{code}"


def _apply_state(bot: LiveBot, order: BotOrder, state: OrderState) -> None:
    """Record what the exchange says about ``order``; a new fill moves the bot's ledger.
    Called inside a transaction holding the bot row."""
    order.exchange_order_id = state.exchange_order_id or order.exchange_order_id
    new_fill = Decimal(state.filled) - order.filled
    if new_fill > 0:
        price = Decimal(state.average_price or state.price or 0)
        # The fill's quote amount and fee as the account booked them (paper rounds to 8).
        fee = Decimal(state.fee) - order.fee
        # Quote amounts are booked to 8 decimals against the trader (a buy's cost up, a
        # sell's proceeds down), as the paper exchange and Binance book them.
        cost = (new_fill * price).quantize(EIGHT, ROUND_UP if order.side == "buy" else ROUND_FLOOR)
        if order.side == "buy":
            bot.cash -= cost + fee
            old = bot.position
            bot.position += new_fill
            bot.entry_price = (
                ((bot.entry_price or Decimal(0)) * old + cost) / bot.position
            ).quantize(EIGHT)
            bot.entry_ts = bot.entry_ts or order.bar_ts
        else:
            bot.cash += cost - fee
            bot.position -= new_fill
            if bot.position <= 0:
                bot.position = Decimal(0)
                bot.entry_price = None
                bot.entry_ts = None
        bot.cash = bot.cash.quantize(EIGHT)
        order.filled = Decimal(state.filled)
        order.average_price = price.quantize(EIGHT)
        order.fee = Decimal(state.fee)
    if state.status == "closed":
        order.state = BotOrder.State.FILLED
    elif state.status in ("canceled", "expired", "rejected"):
        order.state = BotOrder.State.FILLED if order.filled > 0 else BotOrder.State.REJECTED
    else:
        order.state = BotOrder.State.ACKNOWLEDGED
    order.save()
    bot.save(update_fields=["cash", "position", "entry_price", "entry_ts", "updated_at"])


def _send(bot: LiveBot, order: BotOrder, adapter: TradingAdapter, *, may_exist: bool) -> None:
    from exchanges.clients import submit_order

    request = OrderRequest(
        symbol=bot.symbol,
        side=order.side,  # type: ignore[arg-type]
        type="market",
        amount=order.amount,
        client_order_id=order.client_order_id,
    )
    try:
        state = submit_order(adapter, request, may_exist=may_exist, spacing=0.5)
    except OrderStatusUnknown as exc:
        BotOrder.objects.filter(pk=order.pk).update(
            state=BotOrder.State.UNKNOWN, error=str(exc)[:2000], updated_at=timezone.now()
        )
        raise BotError(f"Order {order.client_order_id} is unknown after lookups") from exc
    except ApplicationError as exc:
        BotOrder.objects.filter(pk=order.pk).update(
            state=BotOrder.State.REJECTED, error=str(exc)[:2000], updated_at=timezone.now()
        )
        return
    with transaction.atomic():
        locked = LiveBot.objects.select_for_update().get(pk=bot.pk)
        fresh = BotOrder.objects.select_for_update().get(pk=order.pk)
        _apply_state(locked, fresh, state)
        _copy_ledger(locked, bot)


def _copy_ledger(src: LiveBot, dst: LiveBot) -> None:
    dst.cash, dst.position = src.cash, src.position
    dst.entry_price, dst.entry_ts = src.entry_price, src.entry_ts


def bot_reconcile(*, bot: LiveBot, adapter: TradingAdapter) -> None:
    """Resolve every order a previous run left open, then check the account holds the bot's
    position. Raises BotError (the caller marks the bot failed) when it cannot be made sure."""
    for order in list(bot.orders.filter(state__in=BotOrder.OPEN_STATES).order_by("pk")):
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
        with transaction.atomic():
            locked = LiveBot.objects.select_for_update().get(pk=bot.pk)
            fresh = BotOrder.objects.select_for_update().get(pk=order.pk)
            _apply_state(locked, fresh, found)
            _copy_ledger(locked, bot)
    base = bot.symbol.partition("/")[0]
    held = adapter.balances().get(base)
    total = held.total if held is not None else Decimal(0)
    if bot.position > 0 and total < bot.position:
        raise BotError(
            f"The account holds {total} {base} but the bot's position is {bot.position} {base}: "
            "it was changed outside the bot"
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
    return order if created and order.state == BotOrder.State.PLANNED else None


def _act(bot: LiveBot, action: Action, adapter: TradingAdapter, config: Any) -> None:
    rules = adapter.market(bot.symbol)
    price = Decimal(adapter.last_price(bot.symbol))
    if action.kind == "exit":
        if bot.position <= 0:
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
    from risk.services import approved_amount, order_request_check

    side = "buy" if (action.kind == "enter") == (action.side > 0) else "sell"
    request = OrderRequest(
        symbol=bot.symbol,
        side=side,  # type: ignore[arg-type]
        type="market",
        amount=amount,
        client_order_id=client_order_id(bot.pk, action.bar_ts, "enter"),
    )
    decision = order_request_check(
        user=bot.owner,
        account=bot.account,
        request=request,
        market=market,
        price=price,
        source=f"bot:{bot.pk}",
        adapter_for=lambda _account: adapter,
    )
    if not decision.allowed:
        reason = decision.reasons[0] if decision.reasons else decision.code
        return Decimal(0), f"risk check denied ({decision.code}): {reason}"[:2000]
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
            _set_status(bot, LiveBot.Status.ERROR, str(exc))
            return 0


def _step(bot: LiveBot, now_ms: int, adapter: TradingAdapter | None) -> int:
    from accounts.gating import user_has_pro

    if adapter is None:
        from exchanges.adapters import adapter_for

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
                _set_status(bot, bot.status, "Pro plan ended: no new entries")
                continue
            _act(bot, action, adapter, config)
        LiveBot.objects.filter(pk=bot.pk).update(
            cursor_ts=int(ts[i]), last_step_at=timezone.now(), updated_at=timezone.now()
        )
        bot.cursor_ts = int(ts[i])
    return len(todo)


def bot_equity(bot: LiveBot, mark_price: Decimal) -> Decimal:
    """The bot's money now: its cash plus its position at ``mark_price``."""
    return bot.cash + bot.position * mark_price


def running_bot_ids() -> list[int]:
    return list(LiveBot.objects.filter(status=LiveBot.Status.RUNNING).values_list("pk", flat=True))
