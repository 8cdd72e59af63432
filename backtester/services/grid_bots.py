"""Live grid bots: create, step, pause / resume / stop, and how they follow the rest of the product.

The grid is the engine's (``backtester.engine.gridbot``): the same lines (``grid_levels``) and
the same per-cell quantities (``cell_quantities``), validated by the same maximum-levels rules
against the market's tick and minimum order value. One ``GridLevel`` per cell.

``grid_step`` is the whole loop of a bot, run by a task on the ``live`` queue:

1. take the bot's lock (a PostgreSQL advisory lock: one stepper per bot, whatever the worker);
2. **reconcile** before acting: every level's order (and a pending exit sale) is looked up by
   its client order id. "planned" (stored, maybe sent by a run that stopped) is resolved with
   ``submit_order(may_exist=True)`` (created only if the exchange never got it); "unknown"
   is looked up, never resent; an "open" order still in the exchange's open-orders list with
   no new fill needs no lookup of its own. A fill moves the level: a filled buy holds its
   quantity, a filled sell realises the level's P&L (grid profit);
3. the stop-loss (below the range) or the take-profit (above it) reached since the last step:
   the stored candles of the market from the bot's watch cursor on (the market-data store, fed
   by the live feed) are walked with the engine's intrabar rule (``gridbot.bar_exit``), so a
   wick between two steps is seen, on the bar and at the price the backtest stops at (kept as
   ``exit_trigger_ts`` / ``exit_trigger_price``); the last price is the safety net when no
   candle shows it. Then: cancel every order, sell everything the levels hold at market (one
   stored sale, exactly once), and the bot is stopped, every level done;
4. a trailing grid whose price reached one spacing above its top line shifts up, as the
   engine's does: the lowest level's buy is canceled and the level done, a level joins on top
   (the spacing continued, ``gridbot.grid_line``), index ``levels - 1 + shift``: the engine's
   cell number. A worker dying between the cancel and the new level leaves a grid the next
   step completes (the canceled buy is booked by the reconcile, the shift is made again);
5. otherwise place what is missing: an idle level rests its buy at its line (through the risk
   check; a denial leaves it idle with the reason), a level holding rests its sell one line up.
   Every order's client order id is written to the level row, committed, before it is sent.

Limit prices at the market: the start (a buy line at or above the price) and any level whose
line the price has already passed fill at once as the exchange fills a marketable limit (at
the price, taker fee), where the simulation assumes the open and the maker fee.

A trading problem marks the bot ``error`` with the reason (an order the exchange does not know,
for instance); an exchange that is away for now (unreachable or rate-limiting after retries, no
price) leaves it running with "Waiting for the exchange" until a step gets through.

After every step and status change the bot's page gets its new state over Channels
(``grid_bot_publish``: group ``grid-bot-<id>``, route ``ws/grid-bots/<id>/``).

Pause keeps the sells: a paused bot cancels its resting buys (no new exposure) but leaves the
sells of what it holds resting, and its steps keep booking their fills (a paused grid still
exits what it bought, at its lines). Resume re-places the buys. Stop cancels every order and,
when asked, sells what the levels hold at market.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from datetime import timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_UP, Decimal, InvalidOperation
from typing import Any

import numpy as np
from django.db import transaction
from django.utils import timezone

from backtester.engine.errors import ConfigError
from backtester.engine.gridbot import (
    GridSettings,
    cell_quantities,
    grid_levels,
    max_levels_for_investment,
    max_levels_for_tick,
)
from backtester.models import GridBot, GridLevel
from backtester.services.live_bots import (
    bot_order_check,
    bots_in_words,
    bots_on_account,
    check_resumable,
    check_trading_account,
    first_reason,
    running_bots,
    stop_for_account_removal,
)
from config.exceptions import ApplicationError, Conflict, NotFound
from config.locks import session_lock, transaction_lock
from exchanges.models import ExchangeAccount
from exchanges.trading import (
    MarketRules,
    OrderRequest,
    OrderState,
    OrderStatusUnknown,
    fee_in,
    with_fill_fees,
)

logger = logging.getLogger(__name__)

EIGHT = Decimal("0.00000001")
# An idle level whose buy the risk check denied (or the exchange refused) is tried again after
# this long, not on every step (each denial is stored by the risk app).
RETRY_AFTER = timedelta(seconds=60)
OPEN_ORDER = (
    GridLevel.OrderStatus.PLANNED,
    GridLevel.OrderStatus.OPEN,
    GridLevel.OrderStatus.UNKNOWN,
)
EXIT_PENDING = (GridBot.ExitState.PLANNED, GridBot.ExitState.UNKNOWN)


# Errors that say "not now" rather than "no": the exchange unreachable or rate-limiting after
# its retries, or no current price. A step that meets one leaves the bot as it is.
TRANSIENT = frozenset({"exchange_unavailable", "no_price"})
WAITING = "Waiting for the exchange: "


class GridError(ApplicationError):
    code = "grid_bot_error"


# --- the grid: settings, validation, lines -------------------------------------------------------


def _dec(value: Any, field: str, what: str) -> Decimal:
    try:
        out = Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        raise ApplicationError(f"{what} must be a number", field=field) from None
    if not out.is_finite():
        raise ApplicationError(f"{what} must be a finite number", field=field)
    return out


def _field_of(message: str) -> str | None:
    head = message.split(" ", 1)[0].rstrip(":")
    return head if head in GRID_FIELDS else None


GRID_FIELDS = ("lower", "upper", "levels", "investment", "spacing", "stop_loss", "take_profit")


def grid_settings(
    *,
    lower: Any,
    upper: Any,
    levels: Any,
    investment: Any,
    spacing: str = "arithmetic",
    stop_loss: Any = None,
    take_profit: Any = None,
    trailing: bool = False,
    market: MarketRules,
) -> GridSettings:
    """The engine's ``GridSettings`` for these inputs on ``market`` (its tick, minimum order
    value and fees), validated: ``ApplicationError`` with the field it is about, and for too
    many levels the maximum that fits (by the tick, and by the investment)."""
    low = _dec(lower, "lower", "The lower price")
    up = _dec(upper, "upper", "The upper price")
    inv = _dec(investment, "investment", "The investment")
    try:
        n = int(str(levels))
    except (TypeError, ValueError):
        raise ApplicationError("levels must be a whole number", field="levels") from None
    if low <= 0:
        raise ApplicationError("The lower price must be above 0", field="lower")
    if up <= low:
        raise ApplicationError(
            f"The upper price ({up}) must be above the lower price ({low})", field="upper"
        )
    if n < 2:
        raise ApplicationError("levels must be at least 2 (one grid cell)", field="levels")
    if inv <= 0:
        raise ApplicationError("The investment must be above 0", field="investment")
    sl = _dec(stop_loss, "stop_loss", "The stop-loss") if stop_loss not in (None, "") else None
    tp = (
        _dec(take_profit, "take_profit", "The take-profit")
        if take_profit not in (None, "")
        else None
    )
    if sl is not None and not 0 < sl < low:
        raise ApplicationError(
            f"The stop-loss must be a price between 0 and the lower price ({low})",
            field="stop_loss",
        )
    if tp is not None and tp <= up:
        raise ApplicationError(
            f"The take-profit must be a price above the upper price ({up})", field="take_profit"
        )
    try:
        settings = GridSettings(
            lower=float(low),
            upper=float(up),
            levels=n,
            investment=float(inv),
            # (type: ignore below) spacing was checked against GridBot.Spacing above
            spacing=spacing,  # type: ignore[arg-type]
            maker_fee=float(market.maker_fee),
            taker_fee=float(market.taker_fee),
            tick=float(market.price_tick),
            min_notional=float(market.min_notional),
            stop_loss=float(sl or 0),
            take_profit=float(tp or 0),
            trailing=bool(trailing),
        )
    except ConfigError as exc:
        raise ApplicationError(str(exc), field=_field_of(str(exc)) or "levels") from None
    by_tick = max_levels_for_tick(settings)
    by_money = max_levels_for_investment(settings)
    ceiling = min(by_tick, by_money)
    if n <= ceiling and _plan_or_none(settings, market) is not None:
        return settings
    # The most levels whose every order, rounded down to the lot, still reaches the minimums.
    # Fewer levels mean larger orders: the fitting counts are 2..most (a binary search).
    fewest, most = 1, ceiling
    while fewest < most:
        mid = (fewest + most + 1) // 2
        if _plan_or_none(dataclasses.replace(settings, levels=mid), market) is not None:
            fewest = mid
        else:
            most = mid - 1
    if most < 2:
        share = market.min_notional * (1 + market.maker_fee)
        raise ApplicationError(
            f"The investment {inv} is below the minimum for this market: each of the grid's "
            f"cells must buy at least {market.min_notional} {market.quote}"
            + (f" and {market.min_amount} {market.base}" if market.min_amount else "")
            + f", so even 2 levels need at least {share.quantize(EIGHT, ROUND_UP).normalize()} "
            f"{market.quote}",
            field="investment",
        )
    if by_tick <= by_money and most == by_tick:
        why = (
            f"the market's tick of {market.price_tick.normalize()} keeps at most {by_tick} "
            "distinct lines in this range"
        )
    else:
        why = (
            f"{inv} {market.quote} over more levels would put an order under the minimum "
            f"order value of {market.min_notional} {market.quote} once rounded to the lot"
        )
    raise ApplicationError(
        f"Too many levels: at most {most} fit ({why})",
        field="levels",
        extra={"max_levels": most},
    )


def _plan_or_none(
    settings: GridSettings, market: MarketRules
) -> list[tuple[Decimal, Decimal, Decimal]] | None:
    try:
        return grid_plan(settings, market)
    except ApplicationError:
        return None


def grid_plan(
    settings: GridSettings, market: MarketRules
) -> list[tuple[Decimal, Decimal, Decimal]]:
    """(buy line, sell line, quantity) of every cell: the engine's lines on the tick and its
    quantities rounded down to the lot; each checked against the market's minimums."""
    try:
        lines = grid_levels(settings)
    except ConfigError as exc:
        raise ApplicationError(str(exc), field="levels") from None
    qty = cell_quantities(settings, lines)
    prices = [_line_price(x, market) for x in lines]
    cells: list[tuple[Decimal, Decimal, Decimal]] = []
    for i in range(settings.cells):
        amount = market.round_amount(Decimal(repr(float(qty[i]))))
        try:
            market.check_size(amount, prices[i])
        except ApplicationError as exc:
            raise ApplicationError(
                f"Level {i} ({prices[i]}): {exc.message}; use fewer levels or a larger investment",
                field="levels",
            ) from None
        cells.append((prices[i], prices[i + 1], amount))
    return cells


def _line_price(line: float, market: MarketRules) -> Decimal:
    """The engine's float line as the Decimal price sent to the exchange (on the tick)."""
    step = market.price_tick if market.price_tick > 0 else EIGHT
    price = Decimal(repr(float(line))).quantize(step, ROUND_HALF_EVEN)
    return price.quantize(EIGHT, ROUND_HALF_EVEN) if step < EIGHT else price  # 8 decimals stored


def bot_settings(bot: GridBot) -> GridSettings:
    """The engine's settings of a live bot, with the rules it was sized with: what its lines
    (and a trailing grid's next ones) are computed from."""
    return GridSettings(
        lower=float(bot.lower),
        upper=float(bot.upper),
        levels=bot.levels,
        investment=float(bot.investment),
        spacing=bot.spacing,  # type: ignore[arg-type]
        maker_fee=float(bot.maker_fee),
        tick=float(bot.price_tick),
        min_notional=float(bot.min_notional),
        stop_loss=float(bot.stop_loss or 0),
        take_profit=float(bot.take_profit or 0),
        trailing=bot.trailing,
    )


# --- create and lifecycle ------------------------------------------------------------------------


def _adapter(account: ExchangeAccount) -> Any:
    from exchanges.adapters import adapter_for

    return adapter_for(account)


def grid_bot_create(
    *,
    user: Any,
    account: ExchangeAccount,
    symbol: str,
    lower: Any,
    upper: Any,
    levels: Any,
    investment: Any,
    spacing: str = "arithmetic",
    stop_loss: Any = None,
    take_profit: Any = None,
    trailing: bool = False,
    name: str = "",
    adapter: Any = None,
) -> GridBot:
    """A running grid bot of ``user`` on ``account`` (Pro; the account is theirs and can trade).
    The settings are validated against the market's rules (field errors; too many levels
    names the maximum); nothing is saved when any is wrong. The first step places the grid."""
    from accounts.gating import require_pro

    require_pro(user)
    check_trading_account(user=user, account=account)
    symbol = (symbol or "").strip().upper()
    if "/" not in symbol:
        raise ApplicationError("The symbol is a spot market like SOL/USDT", field="symbol")
    if spacing not in GridBot.Spacing.values:
        raise ApplicationError("spacing must be arithmetic or geometric", field="spacing")
    adapter = adapter or _adapter(account)
    try:
        market = adapter.market(symbol)
    except ApplicationError as exc:
        raise ApplicationError(f"{symbol}: {exc.message}", field="symbol") from None
    settings = grid_settings(
        lower=lower,
        upper=upper,
        levels=levels,
        investment=investment,
        spacing=spacing,
        stop_loss=stop_loss,
        take_profit=take_profit,
        trailing=trailing,
        market=market,
    )
    cells = grid_plan(settings, market)
    with transaction.atomic():
        bot = GridBot.objects.create(
            owner=user,
            account=account,
            name=(name or f"Grid {symbol} {lower}-{upper}")[:160],
            symbol=symbol,
            lower=Decimal(str(lower)),
            upper=Decimal(str(upper)),
            levels=settings.levels,
            spacing=spacing,
            investment=Decimal(str(investment)),
            stop_loss=Decimal(str(stop_loss)) if settings.stop_loss else None,
            take_profit=Decimal(str(take_profit)) if settings.take_profit else None,
            trailing=settings.trailing,
            price_tick=market.price_tick,
            min_notional=market.min_notional,
            maker_fee=market.maker_fee,
        )
        GridLevel.objects.bulk_create(
            GridLevel(bot=bot, index=i, price=buy, sell_price=sell, quantity=q)
            for i, (buy, sell, q) in enumerate(cells)
        )
    return bot


def _set_status(bot: GridBot, status: str, reason: str = "") -> GridBot:
    GridBot.objects.filter(pk=bot.pk).update(
        status=status, status_reason=reason[:2000], updated_at=timezone.now()
    )
    bot.status, bot.status_reason = status, reason[:2000]
    grid_bot_publish(bot.pk)
    return bot


@contextlib.contextmanager
def _held(bot: GridBot) -> Iterator[None]:
    """The bot's step lock for an owner's action; Conflict while a step holds it."""
    with _bot_lock(bot.pk) as got:
        if not got:
            raise Conflict("The bot is placing orders right now: try again in a moment.")
        yield


def grid_bot_pause(*, user: Any, bot: GridBot, adapter: Any = None) -> GridBot:
    """Pause: cancel the resting buys, keep the sells of what the levels hold (booked as they
    fill); no new orders until resumed."""
    if bot.owner_id != user.pk:
        raise NotFound("No such bot")
    if bot.status != GridBot.Status.RUNNING:
        raise ApplicationError("Only a running bot can be paused")
    with _held(bot):
        bot = GridBot.objects.select_related("account", "owner").get(pk=bot.pk)
        _set_status(bot, GridBot.Status.PAUSED, "Paused by its owner")
        if bot.account is not None and _has_orders(bot):
            _cancel_levels(bot, adapter or _adapter(bot.account), sides=("buy",))
    return bot


def _has_orders(bot: GridBot) -> bool:
    return bot.grid_levels.filter(order_status__in=OPEN_ORDER).exists()


def grid_bot_resume(*, user: Any, bot: GridBot) -> GridBot:
    """Run again (a paused or failed bot): the next step reconciles, then re-places the buys."""
    check_resumable(user=user, bot=bot)
    # What the price did while the bot was not running is not walked for its stops.
    GridBot.objects.filter(pk=bot.pk).update(watch_ts=None, watch_prev=None)
    bot.watch_ts = bot.watch_prev = None
    return _set_status(bot, GridBot.Status.RUNNING)


def grid_bot_stop(*, user: Any, bot: GridBot, sell: bool = False, adapter: Any = None) -> GridBot:
    """Stop for good: cancel every resting order; with ``sell``, also sell at market what the
    levels hold (one stored sale). Without it the holdings stay in the account."""
    if bot.owner_id != user.pk:
        raise NotFound("No such bot")
    if bot.status == GridBot.Status.STOPPED:
        return bot
    with _held(bot):
        bot = GridBot.objects.select_related("account", "owner").get(pk=bot.pk)
        if bot.account is None or not (_has_orders(bot) or sell):
            GridLevel.objects.filter(bot=bot).update(state=GridLevel.State.DONE)
            return _set_status(bot, GridBot.Status.STOPPED, "Stopped by its owner")
        adapter = adapter or _adapter(bot.account)
        _settle_for_stop(bot, adapter)
        if sell:
            _exit(bot, GridBot.Exit.STOP, adapter)
            return GridBot.objects.get(pk=bot.pk)
        _cancel_levels(bot, adapter, sides=("buy", "sell"))
        GridLevel.objects.filter(bot=bot).update(state=GridLevel.State.DONE)
        return _set_status(bot, GridBot.Status.STOPPED, "Stopped by its owner (holdings kept)")


def _settle_for_stop(bot: GridBot, adapter: Any) -> None:
    """Before stopping: look every level's order up, never sending one. An order the exchange
    does not have (stored but never sent, or lost after a timeout) is forgotten with a note,
    so a bot whose order cannot be found can still be stopped."""
    for level in bot.grid_levels.filter(order_status__in=OPEN_ORDER):
        found = adapter.fetch_order_by_client_id(bot.symbol, level.client_order_id)
        if found is not None:
            _book_locked(bot, level, found, adapter)
            continue
        back = GridLevel.State.IDLE if level.order_side == "buy" else GridLevel.State.BOUGHT
        GridLevel.objects.filter(pk=level.pk).update(
            order_status=GridLevel.OrderStatus.NONE,
            state=back,
            note=f"Order {level.client_order_id} was not on the exchange when the bot stopped",
        )


def grid_bots_pause_for_halt(*, user_id: int, account_id: int | None, reason: str) -> int:
    """The owner's trading was halted: their running grid bots (on that account, or all) are
    paused with the reason (their next step cancels the resting buys). Returns how many."""
    bots = running_bots(GridBot, user_id=user_id, account_id=account_id)
    why = f" ({reason})" if reason else ""
    return bots.update(
        status=GridBot.Status.PAUSED,
        status_reason=(
            f"Paused because your trading was halted{why}. Reset the state on the Risk page, "
            "then start the bot again."
        )[:2000],
        updated_at=timezone.now(),
    )


def grid_bot_account_uses(*, account_id: int) -> list[str]:
    return bots_in_words(GridBot, account_id=account_id, what="grid bot")


def grid_bots_account_removing(*, account_id: int) -> None:
    """The account is being deleted (inside that transaction): stop its grid bots. Refused
    while one is stepping, or has an order on the exchange (resting, or not settled): once the
    keys are erased it could never be canceled or looked up. Stopping the bot cancels them."""
    bots = list(bots_on_account(GridBot, account_id=account_id).select_for_update())
    for bot in bots:
        if not _bot_busy_lock(bot.pk):
            raise Conflict(f"The grid bot “{bot.name}” is placing orders right now: try again.")
    waiting = (
        GridLevel.objects.filter(bot__account_id=account_id, order_status__in=OPEN_ORDER).count()
        + GridBot.objects.filter(account_id=account_id, exit_state__in=EXIT_PENDING).count()
    )
    if waiting:
        raise Conflict(
            f"{waiting} grid bot order(s) on this account are resting or not settled: stop the "
            "grid bot first (stopping cancels its orders), then delete the account."
        )
    stop_for_account_removal(GridBot, bots)


# --- locks ---------------------------------------------------------------------------------------


def _lock_key(bot_id: int) -> int:
    return 0x51B1_0000_0000 + int(bot_id)


def _bot_busy_lock(bot_id: int) -> bool:
    """Take the bot's step lock until the current transaction ends (False: a step holds it)."""
    return transaction_lock(_lock_key(bot_id))


def _bot_lock(bot_id: int) -> contextlib.AbstractContextManager[bool]:
    """The bot's step lock for the session, held across the step's transactions."""
    return session_lock(_lock_key(bot_id))


# --- orders: store, send, book -------------------------------------------------------------------


def level_client_order_id(bot_id: int, index: int, seq: int) -> str:
    """Deterministic: (bot, level, the level's n-th order) always gives the same id."""
    return f"qfg{bot_id}-{index}-{seq}"


def exit_client_order_id(bot_id: int) -> str:
    return f"qfg{bot_id}-exit"


def _book(bot: GridBot, level: GridLevel, state: OrderState) -> None:
    """Record what the exchange says about the level's order (inside a transaction holding
    both rows). New fills move the level's holding and the bot's totals; a finished order
    moves the level to its next state. ``order_fee`` is the fee booked so far, as the exchange
    states it (in the quote currency, or in the base when the exchange takes it from a buy)."""
    level.exchange_order_id = state.exchange_order_id or level.exchange_order_id
    base = bot.symbol.partition("/")[0]
    filled = Decimal(state.filled or 0)
    new = max(Decimal(0), filled - level.order_filled)
    # A later lookup may state no fee where an earlier answer did (Binance puts fees on fills
    # only): a fee is only ever added, never taken back.
    new_fee = max(Decimal(0), Decimal(state.fee or 0) - level.order_fee)
    if new > 0 or new_fee > 0:
        price = Decimal(state.average_price or state.price or level.price)
        in_base = fee_in(state, base)
        fee_q = (new_fee * price).quantize(EIGHT, ROUND_UP) if in_base else new_fee
        if level.order_side == "buy":
            cost = (new * price).quantize(EIGHT, ROUND_UP)
            # A fee taken in the base is already paid by receiving less of it: the cost of what
            # is held is the quote spent. A quote fee adds to the cost.
            level.held += new - (new_fee if in_base else 0)
            level.held_cost += cost + (0 if in_base else fee_q)
        else:
            proceeds = (new * price).quantize(EIGHT, ROUND_FLOOR)
            part = min(new, level.held)
            share = (
                (level.held_cost * part / level.held).quantize(EIGHT) if level.held else Decimal(0)
            )
            pnl = proceeds - fee_q - share
            level.held -= part
            level.held_cost -= share
            level.realized_pnl += pnl
            bot.grid_profit += pnl
        bot.fees_paid += fee_q
        level.order_filled = max(level.order_filled, filled)
        level.order_fee += new_fee
    if state.status == "open":
        level.order_status = GridLevel.OrderStatus.OPEN
    else:
        side, complete = level.order_side, filled >= level.order_amount > 0
        level.order_status = GridLevel.OrderStatus.NONE
        level.order_filled = level.order_fee = Decimal(0)
        if side == "buy":
            if filled > 0:
                level.buys += 1
            level.state = GridLevel.State.BOUGHT if level.held > 0 else GridLevel.State.IDLE
            if filled <= 0 and state.status != "canceled":
                level.note = f"The buy was {state.status} by the exchange"
        elif complete:
            # A round trip: the level buys again (dust a base-asset fee left stays held and
            # goes with the next sell).
            level.sells += 1
            level.state = GridLevel.State.IDLE
        else:  # canceled before (completely) filling: still holding
            level.state = GridLevel.State.BOUGHT if level.held > 0 else GridLevel.State.IDLE
    level.save()
    bot.save(update_fields=["grid_profit", "fees_paid", "updated_at"])


def _book_locked(
    bot: GridBot, level: GridLevel, state: OrderState, adapter: Any = None
) -> GridLevel:
    if adapter is not None:
        state = with_fill_fees(adapter, state)
    with transaction.atomic():
        locked_bot = GridBot.objects.select_for_update().get(pk=bot.pk)
        fresh = GridLevel.objects.select_for_update().get(pk=level.pk)
        _book(locked_bot, fresh, state)
        bot.grid_profit, bot.fees_paid = locked_bot.grid_profit, locked_bot.fees_paid
    return fresh


def _request(bot: GridBot, level: GridLevel) -> OrderRequest:
    price = level.price if level.order_side == "buy" else level.sell_price
    return OrderRequest(
        symbol=bot.symbol,
        # (type: ignore below) a choices column/value: only the Literal's strings
        side=level.order_side,  # type: ignore[arg-type]
        type="limit",
        amount=level.order_amount,
        client_order_id=level.client_order_id,
        price=price,
        time_in_force="GTC",
    )


def _send(bot: GridBot, level: GridLevel, adapter: Any, *, may_exist: bool) -> GridLevel:
    """Send the level's stored order once; a timeout is looked up (``submit_order``) and, still
    unknown, left "unknown" for the next reconcile; a refusal puts the level back."""
    from exchanges.clients import submit_order

    try:
        state = submit_order(adapter, _request(bot, level), may_exist=may_exist, spacing=0.5)
    except OrderStatusUnknown as exc:
        GridLevel.objects.filter(pk=level.pk).update(
            order_status=GridLevel.OrderStatus.UNKNOWN, note=str(exc)[:2000]
        )
        level.order_status = GridLevel.OrderStatus.UNKNOWN
        return level
    except ApplicationError as exc:
        back = GridLevel.State.IDLE if level.order_side == "buy" else GridLevel.State.BOUGHT
        GridLevel.objects.filter(pk=level.pk).update(
            order_status=GridLevel.OrderStatus.NONE,
            state=back,
            note=f"Refused by the exchange: {exc.message}"[:2000],
            updated_at=timezone.now(),
        )
        level.order_status, level.state = GridLevel.OrderStatus.NONE, back
        return level
    return _book_locked(bot, level, state, adapter)


def _plan(level: GridLevel, side: str, amount: Decimal) -> GridLevel | None:
    """Store the level's next order (committed) before anything is sent; None when the level
    already has one (another run got there first)."""
    with transaction.atomic():
        fresh = GridLevel.objects.select_for_update().get(pk=level.pk)
        if fresh.order_status or fresh.state == GridLevel.State.DONE:
            return None
        fresh.order_seq += 1
        fresh.client_order_id = level_client_order_id(fresh.bot_id, fresh.index, fresh.order_seq)
        fresh.exchange_order_id = ""
        fresh.order_side = side
        fresh.order_amount = amount
        fresh.order_filled = fresh.order_fee = Decimal(0)
        fresh.order_status = GridLevel.OrderStatus.PLANNED
        fresh.state = GridLevel.State.BUY_RESTING if side == "buy" else GridLevel.State.SELL_RESTING
        fresh.note = ""
        fresh.save()
    return fresh


def _risk_denial(bot: GridBot, level: GridLevel, market: MarketRules, adapter: Any) -> str:
    """The risk app's pre-trade check of the level's buy; "" when allowed, else why. A cut to a
    smaller size is a denial here: a grid cell trades its fixed quantity or nothing."""
    from risk.services import approved_amount

    request = OrderRequest(
        symbol=bot.symbol,
        side="buy",
        type="limit",
        amount=level.quantity,
        client_order_id=level_client_order_id(bot.pk, level.index, level.order_seq + 1),
        price=level.price,
    )
    decision = bot_order_check(
        bot,
        adapter,
        request,
        market=market,
        price=level.price,
        stop=bot.stop_loss,
        source=f"grid:{bot.pk}",
    )
    if not decision.allowed:
        reason = first_reason(decision)
        return f"Risk check denied the buy ({decision.code}): {reason}"[:2000]
    try:
        allowed = approved_amount(decision=decision, market=market, price=level.price)
    except ApplicationError as exc:
        return f"Risk check cut the buy below the market's minimum: {exc.message}"[:2000]
    if allowed < level.quantity:
        return f"Risk check allows {allowed}, less than the level's {level.quantity}"[:2000]
    return ""


def _sell_denial(
    bot: GridBot, amount: Decimal, price: Decimal, market: MarketRules, adapter: Any, cid: str
) -> str:
    """The pre-trade check of a sale of what the grid holds (a level's sell, or the exit): a
    reducing order, so it passes in every trading state; "" when allowed, else why (an
    account that cannot be read or priced, a sale larger than the account holds)."""
    request = OrderRequest(
        symbol=bot.symbol, side="sell", type="limit", amount=amount, client_order_id=cid,
        price=price,
    )  # fmt: skip
    decision = bot_order_check(
        bot, adapter, request, market=market, price=price, source=f"grid:{bot.pk}"
    )
    if decision.allowed:
        return ""
    return f"Risk check denied the sale ({decision.code}): {first_reason(decision)}"[:2000]


def _resolve(bot: GridBot, level: GridLevel, adapter: Any) -> GridLevel:
    """Settle one level's order with the exchange (restart safety)."""
    if level.order_status == GridLevel.OrderStatus.PLANNED:
        return _send(bot, level, adapter, may_exist=True)
    found = adapter.fetch_order_by_client_id(bot.symbol, level.client_order_id)
    if found is None:
        raise GridError(
            f"Level {level.index}'s order {level.client_order_id} is not known to the exchange; "
            "it was not resent. Check the account, then start the bot again."
        )
    return _book_locked(bot, level, found, adapter)


def _reconcile(bot: GridBot, adapter: Any) -> list[GridLevel]:
    """Settle every level's order (and an exit a previous run began) with the exchange. Orders
    still in the exchange's open list with no new fill need no lookup of their own."""
    if bot.exit_reason and bot.exit_state in ("", *EXIT_PENDING):
        _exit(bot, bot.exit_reason, adapter)
        return list(bot.grid_levels.order_by("index"))
    levels = list(bot.grid_levels.order_by("index"))
    resting: dict[str, OrderState] = {}
    if any(lv.order_status == GridLevel.OrderStatus.OPEN for lv in levels):
        resting = {
            o.client_order_id: o for o in adapter.open_orders(bot.symbol) if o.client_order_id
        }
    out = []
    for lv in levels:
        if lv.order_status not in OPEN_ORDER:
            out.append(lv)
            continue
        seen = resting.get(lv.client_order_id) if lv.order_status == "open" else None
        if seen is not None and Decimal(seen.filled or 0) == lv.order_filled:
            out.append(lv)  # still resting, nothing new
            continue
        out.append(_resolve(bot, lv, adapter))
    return out


def _cancel_levels(
    bot: GridBot, adapter: Any, *, sides: tuple[str, ...], only: int | None = None
) -> None:
    """Cancel the levels' resting orders of these sides (``only``: that level's) and book what
    they had filled."""
    rows = bot.grid_levels.filter(order_status__in=OPEN_ORDER, order_side__in=sides)
    for level in rows if only is None else rows.filter(pk=only):
        if level.order_status != GridLevel.OrderStatus.OPEN:
            level = _resolve(bot, level, adapter)
            if level.order_status != GridLevel.OrderStatus.OPEN:
                continue
        try:
            state = adapter.cancel_order(bot.symbol, level.client_order_id)
        except NotFound:
            state = adapter.fetch_order_by_client_id(bot.symbol, level.client_order_id)
            if state is None:
                raise GridError(
                    f"Level {level.index}'s order {level.client_order_id} could not be found "
                    "to cancel"
                ) from None
        if state.status == "open":  # the exchange has not confirmed yet: look once more
            state = adapter.fetch_order_by_client_id(bot.symbol, level.client_order_id) or state
        _book_locked(bot, level, state, adapter)


def _exit(bot: GridBot, reason: str, adapter: Any) -> None:
    """Close the bot: cancel every order, sell what the levels hold at market (stored first,
    sent once), every level done, the bot stopped with the reason."""
    from exchanges.clients import submit_order

    with transaction.atomic():
        fresh = GridBot.objects.select_for_update().get(pk=bot.pk)
        if not fresh.exit_reason:
            fresh.exit_reason = reason
            fresh.save(update_fields=["exit_reason", "updated_at"])
    bot.exit_reason = fresh.exit_reason
    if fresh.exit_state not in EXIT_PENDING:
        if fresh.exit_state:  # the sale is settled: only the closing may be missing
            if bot.status != GridBot.Status.STOPPED:
                _finish(bot, fresh.exit_error)
            return
        _cancel_levels(bot, adapter, sides=("buy", "sell"))
        market = adapter.market(bot.symbol)
        held = sum((lv.held for lv in bot.grid_levels.all()), Decimal(0))
        amount = market.round_amount(held)
        price = Decimal(adapter.last_price(bot.symbol))
        try:
            market.check_size(amount, price)
        except ApplicationError:
            amount = Decimal(0)
        with transaction.atomic():
            fresh = GridBot.objects.select_for_update().get(pk=bot.pk)
            fresh.exit_client_order_id = exit_client_order_id(bot.pk)
            fresh.exit_amount = amount
            fresh.exit_state = (
                GridBot.ExitState.PLANNED if amount > 0 else GridBot.ExitState.NOTHING
            )
            fresh.save()
        may_exist = False
    else:
        may_exist = fresh.exit_state == GridBot.ExitState.PLANNED
    if fresh.exit_state in EXIT_PENDING:
        request = OrderRequest(
            symbol=bot.symbol,
            side="sell",
            type="market",
            amount=fresh.exit_amount,
            client_order_id=fresh.exit_client_order_id,
        )
        try:
            if fresh.exit_state == GridBot.ExitState.UNKNOWN:
                state = adapter.fetch_order_by_client_id(bot.symbol, fresh.exit_client_order_id)
                if state is None:
                    raise OrderStatusUnknown("the exit sale is still not found")
            else:
                if not may_exist or fresh.exit_error.startswith("Risk check denied"):
                    # Checked before its first sending (a restart's resend was checked then,
                    # unless the check denied it: then it was never sent).
                    denial = _sell_denial(
                        bot, fresh.exit_amount, Decimal(adapter.last_price(bot.symbol)),
                        adapter.market(bot.symbol), adapter, fresh.exit_client_order_id,
                    )  # fmt: skip
                    if denial:
                        GridBot.objects.filter(pk=bot.pk).update(exit_error=denial)
                        raise GridError(f"{denial}. The exit is tried again at the next step.")
                state = submit_order(adapter, request, may_exist=may_exist, spacing=0.5)
        except OrderStatusUnknown as exc:
            GridBot.objects.filter(pk=bot.pk).update(
                exit_state=GridBot.ExitState.UNKNOWN, exit_error=str(exc)[:2000]
            )
            raise GridError(
                f"The exit sale {fresh.exit_client_order_id} is unknown after lookups; it was "
                "not resent. Check the account."
            ) from exc
        except ApplicationError as exc:
            GridBot.objects.filter(pk=bot.pk).update(
                exit_state=GridBot.ExitState.FAILED, exit_error=exc.message[:2000]
            )
            _finish(bot, f"the exit sale was refused: {exc.message}")
            return
        _book_exit(bot, with_fill_fees(adapter, state))
    _finish(bot, "")


def _book_exit(bot: GridBot, state: OrderState) -> None:
    base = bot.symbol.partition("/")[0]
    with transaction.atomic():
        fresh = GridBot.objects.select_for_update().get(pk=bot.pk)
        levels = list(GridLevel.objects.select_for_update().filter(bot=bot))
        filled = Decimal(state.filled or 0)
        price = Decimal(state.average_price or state.price or 0)
        fee = Decimal(state.fee or 0)
        fee_q = (fee * price).quantize(EIGHT, ROUND_UP) if fee_in(state, base) else fee
        held = sum((lv.held for lv in levels), Decimal(0))
        cost = sum((lv.held_cost for lv in levels), Decimal(0))
        sold_cost = (cost * filled / held).quantize(EIGHT) if held else Decimal(0)
        proceeds = (filled * price).quantize(EIGHT, ROUND_FLOOR)
        fresh.exit_price = price.quantize(EIGHT) if filled else None
        fresh.exit_pnl = proceeds - fee_q - sold_cost
        fresh.fees_paid += fee_q
        fresh.exit_state = GridBot.ExitState.FILLED
        fresh.save()
        for lv in levels:
            if lv.held and held:
                part = min(lv.held, (lv.held * filled / held).quantize(EIGHT))
                share = (lv.held_cost * part / lv.held).quantize(EIGHT)
                lv.realized_pnl += (part * price).quantize(EIGHT, ROUND_FLOOR) - share
                lv.held -= part
                lv.held_cost -= share
                lv.save()


def _finish(bot: GridBot, problem: str) -> None:
    words = {
        GridBot.Exit.STOP_LOSS: "Stop-loss reached: orders canceled, holdings sold at market",
        GridBot.Exit.TAKE_PROFIT: "Take-profit reached: orders canceled, holdings sold at market",
        GridBot.Exit.STOP: "Stopped by its owner: orders canceled, holdings sold at market",
    }
    # (type: ignore below) exit_reason is one of GridBot.Exit's values
    reason = words.get(bot.exit_reason, "Stopped")  # type: ignore[call-overload]
    GridLevel.objects.filter(bot=bot).update(
        state=GridLevel.State.DONE, order_status=GridLevel.OrderStatus.NONE
    )
    _set_status(bot, GridBot.Status.STOPPED, f"{reason}{'; ' + problem if problem else ''}")


# --- the step ------------------------------------------------------------------------------------


def grid_step(*, bot_id: int, adapter: Any = None) -> int:
    """One pass of the bot: reconcile, exit at the stop-loss / take-profit, place what is
    missing. Returns how many orders it sent. Never raises for a trading problem: the bot is
    marked ``error`` with the reason. A paused bot only books fills and cancels its buys."""
    with _bot_lock(bot_id) as got:
        if not got:
            return 0
        bot = GridBot.objects.select_related("account", "owner").filter(pk=bot_id).first()
        if bot is None or bot.account is None:
            return 0
        if bot.status not in (GridBot.Status.RUNNING, GridBot.Status.PAUSED):
            return 0
        try:
            if adapter is None:
                adapter = _adapter(bot.account)
            return _step(bot, adapter)
        except ApplicationError as exc:
            if exc.code in TRANSIENT:
                # The exchange (or the price) is away for now: nothing was decided on it; the
                # next step reconciles and carries on. The status keeps its value, says why.
                logger.info("grid bot %s waits: %s", bot_id, exc)
                GridBot.objects.filter(pk=bot_id, status=GridBot.Status.RUNNING).update(
                    status_reason=f"{WAITING}{exc.message}"[:2000]
                )
                return 0
            logger.warning("grid bot %s failed: %s", bot_id, exc)
            _set_status(bot, GridBot.Status.ERROR, str(exc.message))
            return 0
        finally:
            grid_bot_publish(bot_id)


def _step(bot: GridBot, adapter: Any) -> int:
    from accounts.gating import user_has_pro

    levels = _reconcile(bot, adapter)
    bot.refresh_from_db()
    if bot.status == GridBot.Status.STOPPED:
        return 0
    GridBot.objects.filter(pk=bot.pk).update(last_step_at=timezone.now())
    if bot.status_reason.startswith(WAITING):
        _set_status(bot, bot.status, "")
    if bot.status == GridBot.Status.PAUSED:
        _cancel_levels(bot, adapter, sides=("buy",))
        return 0
    price = Decimal(adapter.last_price(bot.symbol))
    watching = bot.stop_loss is not None or bot.take_profit is not None or bot.trailing
    bars = _unseen_bars(bot, price) if watching else []
    trigger = _exit_trigger(bot, bars, price)
    if trigger is not None:
        reason, at_price, at_ts = trigger
        GridBot.objects.filter(pk=bot.pk, exit_reason="").update(
            exit_trigger_price=at_price, exit_trigger_ts=at_ts
        )
        _exit(bot, reason, adapter)
        return 1
    market = adapter.market(bot.symbol)
    if bot.trailing:
        highest = max([price, *(Decimal(repr(b[2])) for b in bars)])
        if _trail(bot, highest, market, adapter):
            levels = list(bot.grid_levels.order_by("index"))
    _advance_watch(bot, bars)
    buys_allowed = user_has_pro(bot.owner)
    if not buys_allowed and bot.status_reason != NO_PRO:
        _set_status(bot, bot.status, NO_PRO)
    sent = 0
    retry_before = timezone.now() - RETRY_AFTER
    for level in levels:
        # A buy the exchange fills at once (its line at or above the price) rests its sell in
        # the same pass, as the simulation rests it at once; at most buy, sell, buy again.
        for _ in range(3):
            if level.order_status:
                break
            after = _place_next(bot, level, market, adapter, buys_allowed, retry_before)
            if after is None:
                break
            sent += 1
            level = after
    if not bot.started:
        GridBot.objects.filter(pk=bot.pk).update(started=True)
    return sent


def _place_next(
    bot: GridBot,
    level: GridLevel,
    market: MarketRules,
    adapter: Any,
    buys_allowed: bool,
    retry_before: Any,
) -> GridLevel | None:
    """Store and send the order the level is missing (its sell when holding, else its buy);
    None when it needs none now."""
    if level.note and level.updated_at > retry_before:
        return None  # refused or denied a moment ago: tried again after RETRY_AFTER
    if level.state == GridLevel.State.BOUGHT:
        amount = market.round_amount(level.held)
        try:
            market.check_size(amount, level.sell_price)
        except ApplicationError as exc:
            GridLevel.objects.filter(pk=level.pk).update(note=exc.message[:2000])
            return None
        denial = _sell_denial(
            bot, amount, level.sell_price, market, adapter,
            level_client_order_id(bot.pk, level.index, level.order_seq + 1),
        )  # fmt: skip
        if denial:
            GridLevel.objects.filter(pk=level.pk).update(note=denial, updated_at=timezone.now())
            return None
        planned = _plan(level, "sell", amount)
    elif level.state == GridLevel.State.IDLE and buys_allowed:
        denial = _risk_denial(bot, level, market, adapter)
        if denial:
            GridLevel.objects.filter(pk=level.pk).update(note=denial, updated_at=timezone.now())
            return None
        planned = _plan(level, "buy", level.quantity)
    else:
        return None
    if planned is None:
        return None
    return _send(bot, planned, adapter, may_exist=False)


# --- the price between two steps: stop-loss / take-profit inside the candle, trailing ------------


def _unseen_bars(bot: GridBot, price: Decimal) -> list[tuple[int, float, float, float, float]]:
    """(open time, open, high, low, close) of the stored candles of the bot's market from the
    watch cursor on (the market-data store, fed by the live feed): what the price did since the
    last step, wicks included. The first step only sets the cursor (the candle forming then
    began before the bot). Empty when the store has no candles of the market."""
    from backtester.engine.candles import timeframe_ms
    from backtester.marketdata.store import load_candles
    from exchanges.paper import StorePrices

    series = StorePrices(prefer_exchange=bot.account.exchange if bot.account else "").series(
        bot.symbol
    )
    if series is None:
        return []
    if bot.watch_ts is None:
        start = int(series.last_ts) + timeframe_ms(series.timeframe)
        GridBot.objects.filter(pk=bot.pk).update(watch_ts=start, watch_prev=price)
        bot.watch_ts, bot.watch_prev = start, price
        return []
    c = load_candles(series, start_ts=int(bot.watch_ts))
    return [
        (int(c.timestamp[i]), float(c.open[i]), float(c.high[i]), float(c.low[i]),
         float(c.close[i]))
        for i in range(len(c))
    ]  # fmt: skip


def _exit_trigger(
    bot: GridBot, bars: list[tuple[int, float, float, float, float]], price: Decimal
) -> tuple[str, Decimal, int | None] | None:
    """(exit reason, price, candle open time) when the stop-loss or take-profit fired since
    the last step: on the candles by the engine's intrabar rule (``bar_exit``: the same bar
    and price as the backtest), else on the last price (no candle shows it yet)."""
    from backtester.engine.gridbot import bar_exit

    stop, take = float(bot.stop_loss or 0), float(bot.take_profit or 0)
    if not stop and not take:
        return None
    prev = float(bot.watch_prev) if bot.watch_prev is not None else None
    for ts, o, h, low, c in bars:
        hit = bar_exit(o if prev is None else prev, o, h, low, c, stop=stop, take=take)
        if hit is not None:
            return hit[0], Decimal(repr(hit[1])).quantize(EIGHT), ts
        prev = c
    if bot.stop_loss is not None and price <= bot.stop_loss:
        return GridBot.Exit.STOP_LOSS, price, None
    if bot.take_profit is not None and price >= bot.take_profit:
        return GridBot.Exit.TAKE_PROFIT, price, None
    return None


def _advance_watch(bot: GridBot, bars: list[tuple[int, float, float, float, float]]) -> None:
    """Move the cursor to the newest candle walked: it is walked again next time (it may
    still have been forming), coming from the close before it."""
    if not bars:
        return
    prev = Decimal(repr(bars[-2][4])) if len(bars) > 1 else bot.watch_prev
    GridBot.objects.filter(pk=bot.pk).update(watch_ts=bars[-1][0], watch_prev=prev)
    bot.watch_ts, bot.watch_prev = bars[-1][0], prev


def _trail(bot: GridBot, highest: Decimal, market: MarketRules, adapter: Any) -> bool:
    """Shift a trailing grid up, once per line the price reached one spacing above the top:
    the lowest level's buy is canceled and the level done, a level joins on top (buying at the
    old top line, selling at the next). A lowest level still holding (its sale not yet
    booked) waits for the next step. True when the grid moved."""
    from backtester.engine.gridbot import grid_line

    settings = bot_settings(bot)
    moved = False
    while True:
        top = bot.levels - 1 + bot.trail_shifts  # the top line's number
        next_line = _line_price(grid_line(settings, top + 1), market)
        if highest < next_line:
            return moved
        lowest = bot.grid_levels.exclude(state=GridLevel.State.DONE).order_by("index").first()
        if lowest is None:
            return moved
        if lowest.order_status:
            _cancel_levels(bot, adapter, sides=("buy",), only=lowest.pk)
            lowest.refresh_from_db()
        if lowest.order_status or lowest.held > 0:
            return moved  # still holding or not settled: the shift waits for its sale
        top_line = grid_line(settings, top)
        amount = market.round_amount(
            Decimal(repr(float(cell_quantities(settings, np.array([top_line, 0.0]))[0])))
        )
        with transaction.atomic():
            fresh = GridBot.objects.select_for_update().get(pk=bot.pk)
            if fresh.trail_shifts != bot.trail_shifts:
                return moved
            GridLevel.objects.filter(pk=lowest.pk).update(
                state=GridLevel.State.DONE,
                note=f"Left the grid when it trailed up past {next_line.normalize()}",
                updated_at=timezone.now(),
            )
            GridLevel.objects.create(
                bot=bot, index=top, price=_line_price(top_line, market), sell_price=next_line,
                quantity=amount,
            )  # fmt: skip
            fresh.trail_shifts += 1
            fresh.save(update_fields=["trail_shifts", "updated_at"])
        bot.trail_shifts += 1
        moved = True
        logger.info("grid bot %s trailed up: top line %s", bot.pk, next_line)


NO_PRO = "Pro plan ended: no new grid buys (resting sells still run)"


def grid_unrealized(bot: GridBot, mark: Decimal) -> Decimal:
    """What the levels hold, marked at ``mark``, less what buying it cost (fees in)."""
    out = Decimal(0)
    for level in bot.grid_levels.all():
        if level.held:
            out += level.held * mark - level.held_cost
    return out.quantize(EIGHT)


def grid_bots_due_ids() -> list[int]:
    """Bots a step has work for: running ones, and paused ones with an order on the exchange."""
    running = GridBot.objects.filter(status=GridBot.Status.RUNNING).values_list("pk", flat=True)
    paused = (
        GridBot.objects.filter(
            status=GridBot.Status.PAUSED, grid_levels__order_status__in=OPEN_ORDER
        )
        .values_list("pk", flat=True)
        .distinct()
    )
    return sorted(set(running) | set(paused))


# --- reads (pages and API) -----------------------------------------------------------------------


def grid_bots_for(*, user: Any) -> Any:
    """``user``'s grid bots, newest first."""
    return GridBot.objects.filter(owner=user).select_related("account").order_by("-created_at")


def grid_bot_get(*, user: Any, pk: int) -> GridBot:
    """``user``'s grid bot ``pk``; NotFound for a missing one or someone else's."""
    bot = GridBot.objects.filter(owner=user, pk=pk).select_related("account", "owner").first()
    if bot is None:
        raise NotFound("Grid bot not found.")
    return bot


# --- the live page (ws/grid-bots/<id>/) ----------------------------------------------------------


def grid_bot_group(bot_id: int) -> str:
    """The Channels group the bot's page listens to."""
    return f"grid-bot-{bot_id}"


def grid_mark(bot: GridBot) -> Decimal | None:
    """The price the page marks the holdings at: the latest stored candle (None without)."""
    from exchanges.paper import StorePrices

    try:
        return StorePrices().last_price(bot.symbol)
    except Exception:  # the page still shows without a mark (no stored candles)
        return None


def _plain(value: Decimal | None, places: str = "") -> str | None:
    if value is None:
        return None
    if places:
        return format(value.quantize(Decimal(places)), "f")
    return format(value.normalize(), "f")


def grid_bot_snapshot(bot: GridBot, mark: Decimal | None) -> dict[str, Any]:
    """What the bot's page shows, as plain JSON: status, P&L, and every level (top first)."""
    levels = list(bot.grid_levels.order_by("-index"))
    held = sum((lv.held for lv in levels), Decimal(0))
    active = [lv for lv in levels if lv.state != GridLevel.State.DONE]
    unrealized = (
        sum((lv.held * mark - lv.held_cost for lv in levels if lv.held), Decimal(0))
        if mark is not None
        else None
    )
    return {
        "bot": bot.pk,
        "status": bot.status,
        "status_display": bot.get_status_display(),
        "status_reason": bot.status_reason,
        "grid_profit": _plain(bot.grid_profit, "0.0001"),
        "exit_pnl": _plain(bot.exit_pnl, "0.0001"),
        "fees_paid": _plain(bot.fees_paid, "0.0001"),
        "held": _plain(held),
        "mark": _plain(mark),
        "unrealized": _plain(unrealized, "0.0001") if unrealized is not None else None,
        "trail_shifts": bot.trail_shifts,
        "range": [
            _plain(min(lv.price for lv in active)),
            _plain(max(lv.sell_price for lv in active)),
        ]
        if active
        else None,
        "exit": bot.get_exit_reason_display() if bot.exit_reason else "",
        "last_step_at": bot.last_step_at.isoformat() if bot.last_step_at else None,
        "levels": [
            {
                "index": lv.index,
                "price": _plain(lv.price),
                "sell_price": _plain(lv.sell_price),
                "quantity": _plain(lv.quantity),
                "state": lv.state,
                "state_display": lv.get_state_display(),
                "note": lv.note,
                "held": _plain(lv.held),
                "order": (
                    f"{lv.client_order_id} {lv.order_side} {lv.get_order_status_display()}"
                    if lv.client_order_id
                    else ""
                ),
                "buys": lv.buys,
                "sells": lv.sells,
                "realized_pnl": _plain(lv.realized_pnl, "0.0001"),
            }
            for lv in levels
        ],
    }


def grid_bot_publish(bot_id: int) -> None:
    """After the current transaction commits, send the bot's page its new snapshot."""
    from config.realtime import group_send

    def send() -> None:
        bot = GridBot.objects.filter(pk=bot_id).first()
        if bot is not None:
            snapshot = grid_bot_snapshot(bot, grid_mark(bot))
            group_send(grid_bot_group(bot_id), {"type": "grid.update", "kind": "state", **snapshot})

    transaction.on_commit(send)
