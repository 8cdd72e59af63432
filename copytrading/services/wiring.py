"""The live parts copy trading uses but does not own, named once.

Each is a setting holding a dotted path, resolved lazily, so a test or the integrator can
point it elsewhere: the adapter factory of the exchanges app (``account → TradingAdapter``;
ccxt for linked keys, the paper exchange for paper accounts) and the risk app's pre-trade
check. Every service that talks to an exchange also takes them as keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from exchanges.models import ExchangeAccount
from exchanges.trading import OrderRequest, TradingAdapter

AdapterFor = Callable[[ExchangeAccount], TradingAdapter]
OrderCheck = Callable[..., Any]


def default_adapter_for(account: ExchangeAccount) -> TradingAdapter:
    factory: AdapterFor = import_string(settings.COPYTRADING_ADAPTER_FACTORY)
    return factory(account)


def default_order_check(*, user: Any, account: ExchangeAccount, proposal: OrderRequest) -> Any:
    check: OrderCheck = import_string(settings.COPYTRADING_ORDER_CHECK)
    return check(user=user, account=account, proposal=proposal)


@dataclass(frozen=True)
class RiskVerdict:
    approved: bool
    amount: Decimal | None  # the size the risk app allows (None: as proposed)
    code: str
    message: str


def read_verdict(decision: Any) -> RiskVerdict:
    """The risk app's Decision as copy trading needs it: approved (maybe with a smaller size)
    or denied with a code. Reads the attributes by name so the two apps stay decoupled."""
    approved = bool(getattr(decision, "approved", False))
    amount = getattr(decision, "amount", None)
    if amount is None:
        amount = getattr(decision, "size", None)
    return RiskVerdict(
        approved=approved,
        amount=Decimal(amount) if amount is not None else None,
        code=str(getattr(decision, "code", "") or ("ok" if approved else "denied")),
        message=str(getattr(decision, "message", "") or ""),
    )
