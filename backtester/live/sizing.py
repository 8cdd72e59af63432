"""How big a bot's entry order is: the sizing core of ``risk/rules.py`` (``sized_qty``), the
very function the simulation kernel sizes every entry with, so a bot sizes exactly as its
backtest did; the result is then rounded down to the market's lot step as a Decimal.

A bot enters from flat on one symbol, so of the kernel's entry gate only the heat limit, the
max order value and the leverage room can bind here, each computed as the kernel computes it
with nothing else open (the locks and breakers are the simulation's own, run by ``decide``).
"""

from __future__ import annotations

import math
from decimal import Decimal

from backtester.engine import simulate as sim
from backtester.engine.simulate import SimConfig
from exchanges.trading import MarketRules
from risk import rules as risk_rules


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
    cfg = config.as_vector()
    heat_room = config.max_heat * equity if config.max_heat > 0 else math.inf
    # The kernel's entry gate with nothing else open: the max order value and the leverage
    # room (no gross exposure yet) cap the units.
    qty_cap = min(
        risk_rules.max_notional_qty(cfg[sim._C_MAX_NOTIONAL], float(price)),
        risk_rules.leverage_room_qty(cfg[sim._C_MAX_LEVERAGE], float(equity), 0.0, float(price)),
    )
    if qty_cap <= 0.0:
        return Decimal(0)
    # The same arguments, from the same config vector, as the kernel's _order_qty passes.
    qty = float(
        risk_rules.sized_qty_capped(
            float(side), float(price), float(config.taker_fee), float(equity), float(cash),
            1.0, float(vol_now),
            int(cfg[sim._C_SIZING]), cfg[sim._C_SIZE_VALUE], cfg[sim._C_STOP_LOSS],
            cfg[sim._C_MAX_FRACTION], cfg[sim._C_LOT], cfg[sim._C_MIN_NOTIONAL],
            1.0, float(heat_room), float(qty_cap),
        )
    )  # fmt: skip
    if qty <= 0.0:
        return Decimal(0)
    # repr keeps every digit the float has; rounding is down, never above what was sized.
    return rules.round_amount(Decimal(repr(qty)))
