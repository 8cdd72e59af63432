"""The live parts copy trading uses but does not own, named once.

Each is a setting holding a dotted path, resolved lazily, so a test or the integrator can
point it elsewhere: the adapter factory of the exchanges app (``account → TradingAdapter``;
ccxt for linked keys, the paper exchange for paper accounts) and the risk app's pre-trade
check (``risk.services.order_request_check``: an ``OrderRequest`` in, a ``risk.rules.Decision``
out). Every service that talks to an exchange also takes them as keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from exchanges.models import ExchangeAccount
from exchanges.trading import MarketRules, OrderRequest, TradingAdapter
from risk import rules

AdapterFor = Callable[[ExchangeAccount], TradingAdapter]
OrderCheck = Callable[..., Any]


def default_adapter_for(account: ExchangeAccount) -> TradingAdapter:
    factory: AdapterFor = import_string(settings.COPYTRADING_ADAPTER_FACTORY)
    return factory(account)


DEFAULT_ADAPTER_FACTORY = "exchanges.adapters.adapter_for"


def async_fanout() -> bool:
    """Whether the fan-out sends key/OAuth accounts' copies through async ccxt
    (``exchanges.async_trading``). ``COPYTRADING_ASYNC_FANOUT`` (True/False) decides when set;
    otherwise only while the adapter factory is the product's own: a test double or another
    factory configured in ``COPYTRADING_ADAPTER_FACTORY`` is then used for every copy."""
    explicit = getattr(settings, "COPYTRADING_ASYNC_FANOUT", None)
    if explicit is not None:
        return bool(explicit)
    return bool(settings.COPYTRADING_ADAPTER_FACTORY == DEFAULT_ADAPTER_FACTORY)


def async_timeout_ms() -> int:
    """The async clients' request timeout (``COPYTRADING_ASYNC_TIMEOUT_MS``, default 10 s as
    the sync adapter's)."""
    return int(getattr(settings, "COPYTRADING_ASYNC_TIMEOUT_MS", 10_000))


def max_in_flight() -> int:
    """Exchange requests a process keeps in flight at once (``COPYTRADING_ASYNC_MAX_IN_FLIGHT``,
    default 100: one leader's fan-out to 100 followers goes out in one wave)."""
    return int(getattr(settings, "COPYTRADING_ASYNC_MAX_IN_FLIGHT", 100))


def default_order_check(
    *,
    user: Any,
    account: ExchangeAccount,
    request: OrderRequest,
    market: MarketRules,
    price: Decimal,
    stop: Decimal | None = None,
    adapter_for: AdapterFor | None = None,
) -> rules.Decision:
    """The risk app's check of one copy (``risk.services.order_request_check`` unless the
    setting says otherwise), reading the follower's book through the same adapter factory."""
    check: OrderCheck = import_string(settings.COPYTRADING_ORDER_CHECK)
    decision: rules.Decision = check(
        user=user,
        account=account,
        request=request,
        market=market,
        price=price,
        stop=stop,
        source="copy",
        adapter_for=adapter_for or default_adapter_for,
    )
    return decision


@dataclass(frozen=True)
class RiskVerdict:
    approved: bool
    amount: Decimal | None  # the size the risk app allows when smaller (None: as proposed)
    code: str
    message: str


def read_verdict(*, decision: rules.Decision, request: OrderRequest) -> RiskVerdict:
    """The risk app's ``Decision`` as copy trading needs it: denied with its code, or allowed
    with the amount to send when the rules cut it below the request (``qty`` is a float: it is
    turned back into a Decimal through its shortest repr, then rounded down by the caller)."""
    message = "; ".join(decision.reasons)
    if not decision.allowed:
        return RiskVerdict(False, None, decision.code or decision.status, message)
    allowed = Decimal(repr(decision.qty))
    smaller = allowed < request.amount
    code = decision.code or (decision.status if decision.status != rules.APPROVED else "ok")
    if smaller and code == "ok":
        code = "reduced"
    return RiskVerdict(True, allowed if smaller else None, code, message)
