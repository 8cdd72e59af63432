"""Creating a grid bot (bad input: field errors, nothing saved), who may touch it, and how it
follows the rest of the product: pause keeps the sells, stop cancels (and optionally sells),
a halted owner's bots pause, Pro lost means no new buys, deleting the account is refused while
the grid has orders on it. Paper accounts on a SOL/USDT-like market (tests/bots/helpers.py)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D
from typing import Any

import pytest

from accounts.models import Subscription
from backtester.models import GridBot, GridLevel
from backtester.services.grid_bots import (
    grid_bot_create,
    grid_bot_pause,
    grid_bot_resume,
    grid_bot_stop,
    grid_step,
)
from config.exceptions import ApplicationError, Conflict, NotFound
from exchanges.models import ExchangeAccount
from exchanges.paper import ManualPrices, PaperExchange
from exchanges.paper_models import PaperOrder
from exchanges.services import account_delete
from risk.models import TradingState
from risk.services import trading_state_reset, trading_state_set
from tests.backtester.backtest_factories import make_user
from tests.bots.helpers import RULES, Clock, paper_account
from tests.grid.helpers import SYMBOL, GridWorld

pytestmark = pytest.mark.django_db(transaction=True)
GOOD: dict[str, Any] = {"lower": "90", "upper": "110", "levels": 5, "investment": "400"}


def adapter_with(account: Any, rules: Any = RULES) -> PaperExchange:
    """The paper adapter at a fixed price of 100 with these market rules."""
    prices = ManualPrices()
    prices.set(SYMBOL, "100")
    return PaperExchange(account, price_source=prices, clock=Clock(1), rules=lambda _s: rules)


def refused(user: Any, account: Any, rules: Any = RULES, **values: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        grid_bot_create(
            user=user, account=account, symbol=SYMBOL,
            adapter=adapter_with(account, rules) if account.kind == "paper" else None,
            **(GOOD | values),
        )  # fmt: skip
    assert GridBot.objects.count() == 0
    assert GridLevel.objects.count() == 0
    return info.value


def test_bad_settings_are_field_errors_and_nothing_is_saved() -> None:
    user = make_user(pro=True)
    account = paper_account(user)
    err = refused(user, account, lower="110", upper="90")
    assert (err.field, err.status) == ("upper", 400)
    assert "must be above the lower price" in err.message
    for levels in (0, 1, "x"):
        assert refused(user, account, levels=levels).field == "levels"
    assert refused(user, account, investment="0").field == "investment"
    assert refused(user, account, lower="abc").field == "lower"
    assert refused(user, account, stop_loss="95").field == "stop_loss"  # inside the range
    assert refused(user, account, take_profit="100").field == "take_profit"
    assert refused(user, account, spacing="spiral").field == "spacing"
    # Below the minimum: 5 USDT per order plus the 0.1 % fee is 5.005 for one cell.
    err = refused(user, account, investment="4")
    assert err.field == "investment"
    assert "at least 5.005 USDT" in err.message


def test_too_many_levels_names_the_maximum_that_fits() -> None:
    user = make_user(pro=True)
    account = paper_account(user)
    # By the money: 100 USDT at 5 USDT (+0.1 % fee) per order is 19 cells (19 x 5.005 = 95.1;
    # 20 x 5.005 = 100.1 is too much), so 20 levels. The lot (0.001 SOL, under 0.11 USDT
    # here) does not bite at 20: each order is 100 / 19 / 1.001 = 5.26 USDT before rounding.
    err = refused(user, account, levels=50, investment="100")
    assert err.field == "levels"
    assert "at most 20 fit" in err.message
    assert err.extra["max_levels"] == 20
    # The named maximum is accepted, one more is not.
    assert refused(user, account, levels=21, investment="100").extra["max_levels"] == 20
    bot = grid_bot_create(
        user=user, account=account, symbol=SYMBOL, adapter=adapter_with(account),
        **(GOOD | {"levels": 20, "investment": "100"}),
    )  # fmt: skip
    assert bot.grid_levels.count() == 19
    bot.delete()
    # By the tick: 0.01 between 100 and 100.1 separates at most 11 lines (100.00 ... 100.10).
    coarse = replace(RULES, price_tick=D("0.01"))
    err = refused(user, account, coarse, lower="100", upper="100.1", levels=12)
    assert err.field == "levels"
    assert "at most 11 fit" in err.message
    assert "tick of 0.01" in err.message


def test_who_may_create_and_touch_a_grid_bot() -> None:
    owner, other = make_user(pro=True), make_user(pro=True)
    account = paper_account(owner)
    # Another user's account: it does not exist for them.
    with pytest.raises(NotFound):
        grid_bot_create(
            user=other, account=account, symbol=SYMBOL, adapter=adapter_with(account), **GOOD
        )
    # A key without trading permission: refused on the account field.
    read_only = ExchangeAccount.objects.create(
        owner=owner, kind="api_key", exchange="binance", label="watch only", can_trade=False
    )
    err = refused(owner, read_only)
    assert err.field == "account"
    assert "cannot trade" in err.message
    # A Free user: the upgrade message.
    free = make_user(pro=False)
    with pytest.raises(ApplicationError) as info:
        grid_bot_create(
            user=free, account=paper_account(free), symbol=SYMBOL,
            adapter=adapter_with(account), **GOOD,
        )  # fmt: skip
    assert info.value.status == 403
    assert GridBot.objects.count() == 0
    bot = grid_bot_create(
        user=owner, account=account, symbol=SYMBOL, adapter=adapter_with(account), **GOOD
    )
    for action in (grid_bot_pause, grid_bot_resume, grid_bot_stop):
        with pytest.raises(NotFound):
            action(user=other, bot=bot)
    assert GridBot.objects.get(pk=bot.pk).status == "running"


def started() -> tuple[GridWorld, GridBot]:
    """A grid on 90..110 (5 levels) started at 100: two buys rest (90, 95), two cells bought
    at once and rest their sells (at 105 and 110)."""
    w = GridWorld()
    bot = grid_bot_create(
        user=w.user, account=w.account, symbol=SYMBOL, adapter=w.adapter(), **GOOD
    )
    w.set_price(100)
    w.step(bot.pk)
    states = [lv.state for lv in bot.grid_levels.order_by("index")]
    assert states == ["buy_resting", "buy_resting", "sell_resting", "sell_resting"]
    return w, bot


def open_sides(w: GridWorld) -> list[str]:
    return sorted(
        PaperOrder.objects.filter(account=w.account, status="open").values_list("side", flat=True)
    )


def test_pause_cancels_the_buys_and_keeps_the_sells_then_resume_replaces_them() -> None:
    w, bot = started()
    grid_bot_pause(user=w.user, bot=bot, adapter=w.adapter())
    assert open_sides(w) == ["sell", "sell"]
    states = [lv.state for lv in bot.grid_levels.order_by("index")]
    assert states == ["idle", "idle", "sell_resting", "sell_resting"]
    # Paused, a sell that fills is still booked; no buy is placed.
    w.move(100, 106)
    w.step(bot.pk)
    lv = bot.grid_levels.get(index=2)
    assert (lv.state, lv.sells) == ("idle", 1)
    assert open_sides(w) == ["sell"]
    grid_bot_resume(user=w.user, bot=GridBot.objects.get(pk=bot.pk))
    w.step(bot.pk)
    assert open_sides(w) == ["buy", "buy", "buy", "sell"]


def test_stop_cancels_everything_and_sells_only_when_asked() -> None:
    w, bot = started()
    grid_bot_stop(user=w.user, bot=bot, adapter=w.adapter())
    bot.refresh_from_db()
    assert bot.status == "stopped"
    assert open_sides(w) == []
    held = sum((lv.held for lv in bot.grid_levels.all()), D(0))
    assert held > 0  # kept in the account
    assert {lv.state for lv in bot.grid_levels.all()} == {"done"}
    assert grid_step(bot_id=bot.pk, adapter=w.adapter()) == 0

    w2, bot2 = started()
    grid_bot_stop(user=w2.user, bot=bot2, sell=True, adapter=w2.adapter())
    bot2.refresh_from_db()
    assert (bot2.status, bot2.exit_reason, bot2.exit_state) == ("stopped", "stop", "filled")
    assert open_sides(w2) == []
    sells = PaperOrder.objects.filter(account=w2.account, type="market", side="sell")
    assert [o.client_order_id for o in sells] == [f"qfg{bot2.pk}-exit"]
    assert sum((lv.held for lv in bot2.grid_levels.all()), D(0)) == 0


def test_take_profit_above_the_range_closes_the_bot() -> None:
    w = GridWorld()
    bot = grid_bot_create(
        user=w.user, account=w.account, symbol=SYMBOL, adapter=w.adapter(),
        **(GOOD | {"take_profit": "115"}),
    )  # fmt: skip
    w.set_price(100)
    w.step(bot.pk)
    w.move(100, 116)
    w.step(bot.pk)
    bot.refresh_from_db()
    assert (bot.status, bot.exit_reason) == ("stopped", "take_profit")
    assert open_sides(w) == []
    # The two start cells sold at 105 and 110 on the way up (grid profit), nothing was left.
    assert bot.exit_state == "nothing"
    assert bot.grid_profit > 0


def test_a_halt_pauses_the_grid_and_resume_waits_for_the_reset() -> None:
    w, bot = started()
    trading_state_set(
        user=w.user, account=w.account, to_state="halted", code="drawdown",
        reason="Drawdown 21 % (limit 20 %)", actor="breaker:drawdown",
    )  # fmt: skip
    bot.refresh_from_db()
    assert bot.status == "paused"
    assert "Drawdown 21 %" in bot.status_reason
    w.step(bot.pk)  # the paused step cancels the resting buys
    bot.refresh_from_db()
    assert bot.status == "paused", bot.status_reason
    assert open_sides(w) == ["sell", "sell"]
    with pytest.raises(ApplicationError, match="Trading is halted"):
        grid_bot_resume(user=w.user, bot=bot)
    for state in TradingState.objects.filter(owner=w.user):
        trading_state_reset(user=w.user, state=state)
    assert grid_bot_resume(user=w.user, bot=bot).status == "running"


def test_without_pro_no_new_buys_but_sells_still_run() -> None:
    w, bot = started()
    grid_bot_pause(user=w.user, bot=bot, adapter=w.adapter())
    grid_bot_resume(user=w.user, bot=GridBot.objects.get(pk=bot.pk))
    Subscription.objects.filter(user=w.user).delete()
    w.step(bot.pk)
    bot.refresh_from_db()
    assert "Pro plan ended" in bot.status_reason
    assert open_sides(w) == ["sell", "sell"]


def test_a_risk_denial_leaves_the_level_idle_with_the_reason() -> None:
    w = GridWorld(open_limits=False)  # the default profile: 6 % heat on 10 000 USDT
    bot = grid_bot_create(
        user=w.user, account=w.account, symbol=SYMBOL, adapter=w.adapter(),
        **(GOOD | {"investment": "2000", "levels": 3}),
    )  # fmt: skip
    w.set_price(100)
    w.step(bot.pk)
    levels = list(bot.grid_levels.order_by("index"))
    assert [lv.state for lv in levels] == ["idle", "idle"]
    assert all("Risk check" in lv.note for lv in levels)
    assert PaperOrder.objects.filter(account=w.account).count() == 0


def test_deleting_the_account_is_refused_while_the_grid_has_orders_then_stops_it() -> None:
    w, bot = started()
    with pytest.raises(Conflict, match="stop the grid bot first"):
        account_delete(user=w.user, account=w.account)
    assert ExchangeAccount.objects.filter(pk=w.account.pk).exists()
    grid_bot_stop(user=w.user, bot=bot, adapter=w.adapter())
    account_delete(user=w.user, account=ExchangeAccount.objects.get(pk=w.account.pk))
    bot.refresh_from_db()
    assert bot.account_id is None
    assert bot.status == "stopped"


def test_a_levels_sell_passes_the_risk_check_and_a_halt_does_not_block_it() -> None:
    """Sales of what the grid holds go through the pre-trade check too (each allowed order is
    counted by the risk app's order-rate book); being reducing, they pass while HALTED, when
    the buys do not."""
    import time

    from risk.models import DeniedOrder
    from risk.services import _order_times

    w, bot = started()
    before = len(_order_times(w.user.pk, w.account.pk, int(time.time() * 1000)))
    TradingState.objects.create(
        owner=w.user, account=w.account, state="halted", code="manual", reason="Held by hand"
    )
    w.move(100, 95)  # the resting buy at 95 fills; its sell at 100 is placed in the same pass
    w.step(bot.pk)
    level = bot.grid_levels.get(index=1)
    assert level.state == GridLevel.State.SELL_RESTING
    assert level.note == ""
    after = len(_order_times(w.user.pk, w.account.pk, int(time.time() * 1000)))
    assert after == before + 1  # the sale was checked (and allowed)
    assert not DeniedOrder.objects.filter(owner=w.user).exists()
