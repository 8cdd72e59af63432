"""How big a bot's entry order is: ONE function, so the integrator can point it at risk/rules.py.

For now it calls the engine's own sizing (``simulate._order_qty``, the function the simulation
kernel sizes every entry with), so a bot sizes exactly as its backtest did; the result is then
rounded down to the market's lot step as a Decimal. When the risk app lands, this is the only
place that changes (``risk.rules`` sizing + ``risk.services.order_check``).
"""

from __future__ import annotations

import math
from decimal import Decimal

from backtester.engine.simulate import SimConfig, _order_qty
from exchanges.trading import MarketRules


def size_order(
    *,
    side: int,
    price: float,
    equity: float,
    cash: float,
    config: SimConfig,
    rules: MarketRules,
    vol_now: float = 0.0,
) -> Decimal:
    """The amount of an entry at ``price`` (slippage already applied, as the kernel's ``px``)
    for a bot holding ``equity`` of which ``cash`` is free: the engine's sizing under
    ``config`` (fraction, notional, risk, caps, lot step, min notional), then the market's lot
    step. 0 means "too small: do not send"."""
    if not (math.isfinite(price) and price > 0 and equity > 0):
        return Decimal(0)
    qty = float(
        _order_qty(
            float(side),
            float(price),
            float(config.taker_fee),
            float(equity),
            float(cash),
            1.0,
            float(vol_now),
            config.as_vector(),
        )
    )
    if qty <= 0.0:
        return Decimal(0)
    # repr keeps every digit the float has; rounding is down, never above what was sized.
    return rules.round_amount(Decimal(repr(qty)))
