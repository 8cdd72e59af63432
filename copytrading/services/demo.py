"""The embedded demo of copy trading: a demo leader trading a paper account, and the demo user
following it with their own paper account ("Paper USDT"), so copying can be watched offline.

``demo_copy_ensure`` seeds them (idempotent). ``demo_leader_step`` is one beat of the replay:
it moves one bar further through the demo BTC/USDT 1h candles (accelerated time: one hour of
candles per beat) and applies the SMA crossover preset's rule at that bar (long while the fast
average is above the slow one, flat otherwise). When the rule's position differs from the
leader's, the leader places a paper market order; its fill is published like any paper fill,
and the copy path takes it from there. The replay is deterministic: it starts at the first
upward cross and walks the candles in order, wrapping around at the end; client order ids are
derived from the bar, so a step that runs twice places one order.

Fills happen at the paper exchange's current price (the latest stored candle when no fresher
source is reachable), the price the follower's copy sees too. The beat task runs only when
``COPYTRADING_DEMO_LEADER`` is set (on by default outside the production shape only).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import transaction

from accounts.models import Plan
from accounts.services import subscription_grant
from copytrading.models import Leader, Subscription
from copytrading.services.leaders import leader_publish
from copytrading.services.subscriptions import subscription_create
from exchanges.models import ExchangeAccount
from exchanges.trading import OrderRequest

logger = logging.getLogger(__name__)

DEMO_LEADER_EMAIL = "demo-leader@quantfold.invalid"
DEMO_LEADER_NAME = "Demo: SMA crossover on BTC/USDT"
DEMO_LEADER_ACCOUNT = "Demo leader paper"
DEMO_LEADER_BALANCE = Decimal("100000")
SYMBOL = "BTC/USDT"
FAST, SLOW = 10, 30  # the SMA crossover preset's windows
POSITION_FRACTION = Decimal("0.2")  # a long holds a fifth of the leader's cash
STEP_KEY = "copytrading:demo:bar"


@dataclass(frozen=True)
class DemoCopy:
    leader: Leader
    subscription: Subscription


def demo_copy_ensure(*, demo_user: Any) -> DemoCopy:
    """The demo leader (its own Pro user and paper account, published) and ``demo_user``'s
    subscription to it into their "Paper USDT" account. Leaves existing ones as they are."""
    from exchanges.services_paper import paper_account_create, paper_demo_ensure

    follower_account, _ = paper_demo_ensure(owner=demo_user)
    user_model = get_user_model()
    with transaction.atomic():
        leader_user = user_model.objects.filter(email=DEMO_LEADER_EMAIL).first()
        if leader_user is None:
            leader_user = user_model.objects.create_user(email=DEMO_LEADER_EMAIL, password=None)
            subscription_grant(user=leader_user, plan_code=Plan.PRO)
        account = ExchangeAccount.objects.filter(
            owner=leader_user, label=DEMO_LEADER_ACCOUNT
        ).first()
        if account is None:
            account = paper_account_create(
                owner=leader_user,
                label=DEMO_LEADER_ACCOUNT,
                quote="USDT",
                starting_balance=DEMO_LEADER_BALANCE,
            )
        leader = Leader.objects.filter(owner=leader_user, account=account).first()
        if leader is None:
            leader = leader_publish(user=leader_user, account_id=account.pk, name=DEMO_LEADER_NAME)
        sub = Subscription.objects.filter(follower=demo_user, leader=leader).first()
        if sub is None:
            sub = subscription_create(
                user=demo_user, leader_id=leader.pk, account_id=follower_account.pk, settings={}
            )
    return DemoCopy(leader, sub)


def _closes() -> np.ndarray | None:
    from backtester.marketdata.store import load_candles
    from backtester.services.samples import sample_series

    series = sample_series()
    if series is None:
        return None
    return np.asarray(load_candles(series).close, dtype=np.float64)


def _sma(values: np.ndarray, window: int) -> np.ndarray:
    out = np.full(values.shape[0], np.nan)
    csum = np.cumsum(np.insert(values, 0, 0.0))
    out[window - 1 :] = (csum[window:] - csum[:-window]) / window
    return out


def long_at(closes: np.ndarray) -> np.ndarray:
    """The preset's rule at each bar: True while the fast average is above the slow one."""
    fast, slow = _sma(closes, FAST), _sma(closes, SLOW)
    return np.nan_to_num(fast, nan=0.0) > np.nan_to_num(slow, nan=np.inf)


def first_cross_up(long: np.ndarray) -> int:
    for i in range(SLOW, long.shape[0]):
        if long[i] and not long[i - 1]:
            return i
    return SLOW


@dataclass(frozen=True)
class DemoStep:
    bar: int
    long: bool
    order: str  # "buy", "sell" or "" (the leader already holds what the rule says)


def demo_leader_step() -> DemoStep | None:
    """One replay step for the demo leader (see the module docstring). None when the demo is
    not seeded (no demo leader or no demo candles)."""
    from exchanges.adapters import adapter_for
    from exchanges.paper import DuplicateClientOrderId

    leader = (
        Leader.objects.select_related("account")
        .filter(owner__email=DEMO_LEADER_EMAIL, account__label=DEMO_LEADER_ACCOUNT)
        .exclude(status=Leader.Status.RETIRED)
        .first()
    )
    closes = _closes()
    if leader is None or leader.account is None or closes is None or closes.shape[0] <= SLOW:
        return None
    long = long_at(closes)
    start = first_cross_up(long)
    bar = cache.get(STEP_KEY)
    bar = start if bar is None or not SLOW <= int(bar) < closes.shape[0] else int(bar)
    cache.set(STEP_KEY, bar + 1 if bar + 1 < closes.shape[0] else SLOW, timeout=None)

    exchange = adapter_for(leader.account)
    market = exchange.market(SYMBOL)
    held = exchange.balances().get(market.base)
    holding = held.free if held is not None else Decimal(0)
    want_long = bool(long[bar])
    if want_long and holding < market.min_amount + market.amount_step:
        cash = exchange.balances()[market.quote].free
        price = exchange.last_price(SYMBOL)
        amount = market.round_amount((cash * POSITION_FRACTION / price).quantize(
            Decimal("0.00000001"), ROUND_DOWN
        ))  # fmt: skip
        side = "buy"
    elif not want_long and holding > 0:
        amount = market.round_amount(holding)
        side = "sell"
    else:
        return DemoStep(bar, want_long, "")
    request = OrderRequest(
        symbol=SYMBOL,
        side=side,  # type: ignore[arg-type]  # a choices column/value: only the Literal's strings
        type="market",
        amount=amount,
        client_order_id=f"demo-{leader.pk}-{bar}-{side}",
    )
    try:
        with transaction.atomic():  # the fill is published after the commit
            exchange.create_order(request)
    except DuplicateClientOrderId:
        logger.info("demo leader step %s ran before; nothing placed", bar)
    return DemoStep(bar, want_long, side)


def demo_enabled() -> bool:
    return bool(getattr(settings, "COPYTRADING_DEMO_LEADER", False))
