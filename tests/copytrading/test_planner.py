"""The copy planner against hand-computed cases: every sizing mode, every skip reason.

Shared figures unless a test says otherwise: the follower trades BTC/USDT (lot 0.00001 BTC,
tick 0.01, minimum order 5 USDT, taker fee 0.1 %) at a last price of 60 000 with 10 000 USDT
of equity, all of it free; the leader (equity 100 000 USDT) buys 0.5 BTC at 60 000, one
second before "now", from a flat position.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from decimal import Decimal as D

import pytest

from copytrading.planner import (
    CopySettings,
    FollowerSnapshot,
    LeaderFillView,
    PlannedOrder,
    Skip,
    client_order_id,
    default_slippage_guard,
    plan_copy,
)
from exchanges.trading import MarketRules

NOW = 1_800_000_000_000
BTC = MarketRules(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=D("0.00001"),
    price_tick=D("0.01"),
    min_amount=D("0.00001"),
    min_notional=D("5"),
    taker_fee=D("0.001"),
)
SOL = MarketRules("SOL/USDT", "SOL", "USDT", D("0.001"), D("0.01"), D("0.001"), D("5"))
KRAKEN_BTC = MarketRules("BTC/USD", "BTC", "USD", D("0.00000001"), D("0.1"), D("0.0001"), D("0"))

FILL = LeaderFillView(
    fill_id="L1",
    symbol="BTC/USDT",
    side="buy",
    amount=D("0.5"),
    price=D("60000"),
    timestamp_ms=NOW - 1_000,
    position_before=D(0),
    leader_equity=D("100000"),
)
FOLLOWER = FollowerSnapshot(
    market=BTC,
    price=D("60000"),
    equity=D("10000"),
    free_quote=D("10000"),
    free_base=D(0),
    copy_position=D(0),
    open_positions=0,
    taken_at_ms=NOW - 500,
)
PROPORTIONAL = CopySettings(sizing_mode="proportional")


def plan(fill=FILL, settings=PROPORTIONAL, follower=FOLLOWER, now=NOW):
    return plan_copy(
        subscription_id=7,
        leader_fill_pk=42,
        fill=fill,
        settings=settings,
        follower=follower,
        now_ms=now,
    )


def order(result) -> PlannedOrder:
    assert isinstance(result, PlannedOrder), result
    return result


def skip(result) -> Skip:
    assert isinstance(result, Skip), result
    return result


# --- sizing modes ---------------------------------------------------------------------------


def test_proportional_applies_the_leaders_position_fraction_to_the_followers_equity():
    # leader: 0.5 x 60 000 = 30 000 of 100 000 equity = 30 %;
    # follower: 30 % x 10 000 = 3 000 USDT / 60 000 = 0.05 BTC.
    # IOC limit: 60 000 x (1 + 0.5 %) = 60 300.
    o = order(plan())
    assert (o.side, o.amount, o.type, o.time_in_force) == ("buy", D("0.05"), "limit", "IOC")
    assert o.price == D("60300")
    assert o.reduce_only is False
    assert o.closing is False
    assert o.capped is False
    assert o.reference_price == D("60000")
    assert o.client_order_id == client_order_id(7, 42)


def test_fixed_ratio_multiplies_the_leaders_quantity_and_rounds_down_to_the_lot():
    # 0.5 x 0.012345 = 0.0061725 → lot 0.00001, rounded down → 0.00617
    o = order(plan(settings=CopySettings(sizing_mode="fixed_ratio", ratio=D("0.012345"))))
    assert o.amount == D("0.00617")


def test_fixed_notional_buys_that_much_quote_at_the_followers_price():
    # 1 000 USDT / 60 000 = 0.0166666… → 0.01666
    o = order(plan(settings=CopySettings(sizing_mode="fixed_notional", notional=D("1000"))))
    assert o.amount == D("0.01666")


def test_fixed_risk_sizes_from_the_distance_to_the_leaders_stop():
    # risk 1 % of 10 000 = 100 USDT; stop 58 800 → 1 200 per BTC; 100 / 1 200 = 0.083333… → 0.08333
    fill = replace(FILL, stop_price=D("58800"))
    s = CopySettings(sizing_mode="fixed_risk", risk_fraction=D("0.01"))
    assert order(plan(fill=fill, settings=s)).amount == D("0.08333")


def test_fixed_risk_skips_a_trade_without_a_stop():
    s = CopySettings(sizing_mode="fixed_risk", risk_fraction=D("0.01"))
    assert skip(plan(settings=s)).reason == "no_stop_for_risk_sizing"


def test_fixed_risk_skips_a_stop_on_the_wrong_side_of_the_entry():
    s = CopySettings(sizing_mode="fixed_risk", risk_fraction=D("0.01"))
    fill = replace(FILL, stop_price=D("61000"))  # above a long entry
    assert skip(plan(fill=fill, settings=s)).reason == "no_stop_for_risk_sizing"


def test_proportional_without_leader_equity_is_skipped_rather_than_guessed():
    assert skip(plan(fill=replace(FILL, leader_equity=D(0)))).reason == "no_leader_equity"


# --- partial fills and closes ---------------------------------------------------------------


def test_partial_fills_of_one_leader_order_are_copied_proportionally():
    # The leader's 0.5 BTC order fills as 0.2 then 0.3.
    # proportional: 0.2 x 60 000 / 100 000 = 12 % x 10 000 / 60 000 = 0.02; then 18 % → 0.03
    first = replace(FILL, amount=D("0.2"), order_amount=D("0.5"))
    second = replace(FILL, amount=D("0.3"), order_amount=D("0.5"), position_before=D("0.2"))
    assert order(plan(fill=first)).amount == D("0.02")
    assert order(plan(fill=second)).amount == D("0.03")
    # fixed notional 1 000 per trade: 40 % → 400 / 60 000 = 0.0066666 → 0.00666;
    # 60 % → 600 / 60 000 = 0.01
    s = CopySettings(sizing_mode="fixed_notional", notional=D("1000"))
    assert order(plan(fill=first, settings=s)).amount == D("0.00666")
    assert order(plan(fill=second, settings=s)).amount == D("0.01")


def test_per_trade_sizing_of_partial_fills_without_the_order_amount_never_exceeds_the_trade():
    # The order's amount is unknown (a fill stream reports fills, not orders). Fixed notional
    # 1 000 = 0.01666 BTC at 60 000: the first fill copies the whole trade, later fills of the
    # same order only what is left of it.
    s = CopySettings(sizing_mode="fixed_notional", notional=D("1000"))
    first = replace(FILL, amount=D("0.2"))
    assert order(plan(fill=first, settings=s)).amount == D("0.01666")
    second = replace(FILL, amount=D("0.3"), position_before=D("0.2"))
    # What is left after 0.01666 is 0.0000066… BTC: under the minimum order, not sent.
    after_first = replace(FOLLOWER, order_qty_copied=D("0.01666"))
    assert skip(plan(fill=second, settings=s, follower=after_first)).reason == (
        "below_min_notional"
    )
    done = replace(FOLLOWER, order_qty_copied=D("0.017"))
    assert skip(plan(fill=second, settings=s, follower=done)).reason == "order_already_copied"
    # A first copy cut short (the follower got 0.01 of it): the rest, 0.00666…, is copied.
    part = replace(FOLLOWER, order_qty_copied=D("0.01"))
    assert order(plan(fill=second, settings=s, follower=part)).amount == D("0.00666")
    # fixed risk 1 % of 10 000 = 100 at a 1 000 stop distance = 0.1 BTC per trade
    r = CopySettings(sizing_mode="fixed_risk", risk_fraction=D("0.01"))
    stopped = replace(first, stop_price=D("59000"))
    assert order(plan(fill=stopped, settings=r)).amount == D("0.1")
    half = replace(FOLLOWER, order_qty_copied=D("0.06"))
    assert order(plan(fill=stopped, settings=r, follower=half)).amount == D("0.04")


def _closing_follower(copy: str) -> FollowerSnapshot:
    return replace(FOLLOWER, copy_position=D(copy), free_base=D(copy), open_positions=1)


def test_full_close_sells_the_whole_copy_at_market_with_reduce_only():
    fill = replace(FILL, side="sell", position_before=D("0.5"))
    o = order(plan(fill=fill, follower=_closing_follower("0.05")))
    assert (o.side, o.amount, o.type, o.price) == ("sell", D("0.05"), "market", None)
    assert o.reduce_only is True
    assert o.closing is True


def test_partial_close_closes_the_same_fraction_of_the_copy():
    # leader sells 0.3 of 1.2 = 25 %; follower holds 0.07777 → 0.0194425 → 0.01944
    fill = replace(FILL, side="sell", amount=D("0.3"), position_before=D("1.2"))
    assert order(plan(fill=fill, follower=_closing_follower("0.07777"))).amount == D("0.01944")


def test_a_fill_that_overshoots_the_position_closes_the_whole_copy():
    fill = replace(FILL, side="sell", amount=D("0.8"), position_before=D("0.5"))
    assert order(plan(fill=fill, follower=_closing_follower("0.05"))).amount == D("0.05")


def test_close_never_sells_more_than_the_account_holds():
    # copies say 0.05 but only 0.04 is free (e.g. moved away) → sell 0.04
    fill = replace(FILL, side="sell", position_before=D("0.5"))
    follower = replace(_closing_follower("0.05"), free_base=D("0.04"))
    assert order(plan(fill=fill, follower=follower)).amount == D("0.04")


def test_closes_ignore_the_guard_expiry_pause_filters_and_stale_balance():
    fill = replace(
        FILL, side="sell", position_before=D("0.5"), timestamp_ms=NOW - 3_600_000
    )  # an hour late
    follower = replace(
        _closing_follower("0.05"), price=D("50000"), taken_at_ms=NOW - 600_000
    )  # price 16.7 % below the leader's, balance ten minutes old
    s = CopySettings(
        sizing_mode="proportional",
        paused=True,
        excluded_symbols=frozenset({"BTC/USDT"}),
        allowed_sides=frozenset({"buy"}),
        max_positions=0,
    )
    o = order(plan(fill=fill, settings=s, follower=follower))
    assert (o.side, o.amount, o.closing) == ("sell", D("0.05"), True)


def test_close_without_a_copy_position_is_skipped():
    fill = replace(FILL, side="sell", position_before=D("0.5"))
    r = skip(plan(fill=fill))
    assert (r.reason, r.closing) == ("no_copy_position", True)


def test_close_too_small_for_the_market_is_skipped_as_below_min_notional():
    # 25 % of 0.0002 = 0.00005 BTC x 60 000 = 3 USDT < 5
    fill = replace(FILL, side="sell", amount=D("0.3"), position_before=D("1.2"))
    assert skip(plan(fill=fill, follower=_closing_follower("0.0002"))).reason == (
        "below_min_notional"
    )


# --- slippage guard -------------------------------------------------------------------------


def test_default_guard_is_half_a_percent_for_btc_and_eth_and_one_and_a_half_for_others():
    assert default_slippage_guard("BTC") == D("0.005")
    assert default_slippage_guard("ETH") == D("0.005")
    assert default_slippage_guard("SOL") == D("0.015")


def test_entry_at_the_guard_goes_and_one_cent_past_it_is_skipped():
    # limit 60 000 x 1.005 = 60 300
    assert order(plan(follower=replace(FOLLOWER, price=D("60300")))).price == D("60300")
    r = skip(plan(follower=replace(FOLLOWER, price=D("60300.01"))))
    assert r.reason == "slippage_exceeded"
    assert "0.500 %" in r.detail


def test_other_assets_get_the_wider_guard_and_a_custom_guard_replaces_the_default():
    sol_fill = replace(FILL, symbol="SOL/USDT", amount=D("10"), price=D("100"))
    sol = replace(FOLLOWER, market=SOL, price=D("101.4"))
    # limit 100 x 1.015 = 101.5 ≥ 101.4 → goes;
    # 10 x 100 / 100 000 = 1 % x 10 000 / 101.4 = 0.986… → 0.986
    o = order(plan(fill=sol_fill, follower=sol))
    assert (o.price, o.amount) == (D("101.5"), D("0.986"))
    assert skip(plan(fill=sol_fill, follower=replace(sol, price=D("101.51")))).reason == (
        "slippage_exceeded"
    )
    tight = CopySettings(sizing_mode="proportional", slippage_guard=D("0.001"))  # 100.1
    assert skip(plan(fill=sol_fill, settings=tight, follower=sol)).reason == "slippage_exceeded"


def test_limit_price_rounds_to_the_tick_on_the_safe_side():
    # buy: 60 000.37 x 1.005 = 60 300.37185 → tick 0.01 rounded down → 60 300.37
    fill = replace(FILL, price=D("60000.37"))
    assert order(plan(fill=fill)).price == D("60300.37")


def test_sell_entry_limit_is_below_the_leaders_price():
    # An opening sell (from a flat leader) with base to sell: limit 100 x (1 - 1.5 %) = 98.5
    fill = replace(FILL, symbol="SOL/USDT", side="sell", amount=D("10"), price=D("100"))
    follower = replace(FOLLOWER, market=SOL, price=D("99"), free_base=D("5"))
    o = order(
        plan(fill=fill, settings=CopySettings("fixed_ratio", ratio=D("0.1")), follower=follower)
    )
    assert (o.side, o.price, o.amount, o.closing) == ("sell", D("98.5"), D("1"), False)


# --- skips for opening trades ---------------------------------------------------------------


def test_order_below_the_markets_minimum_is_skipped_with_the_figures():
    # 4 USDT / 60 000 = 0.0000666 → 0.00006 BTC x 60 300 = 3.618 USDT < 5
    r = skip(plan(settings=CopySettings(sizing_mode="fixed_notional", notional=D("4"))))
    assert r.reason == "below_min_notional"
    assert "3.618" in r.detail


def test_symbol_filters_apply_to_either_name_of_the_market():
    only_eth = CopySettings(sizing_mode="proportional", allowed_symbols=frozenset({"ETH/USDT"}))
    assert skip(plan(settings=only_eth)).reason == "symbol_filtered"
    no_btc = CopySettings(sizing_mode="proportional", excluded_symbols=frozenset({"BTC/USDT"}))
    assert skip(plan(settings=no_btc)).reason == "symbol_filtered"
    allowed = CopySettings(sizing_mode="proportional", allowed_symbols=frozenset({"BTC/USDT"}))
    assert isinstance(plan(settings=allowed), PlannedOrder)


def test_side_filter_skips_entries_on_a_side_not_copied():
    s = CopySettings(sizing_mode="proportional", allowed_sides=frozenset({"sell"}))
    assert skip(plan(settings=s)).reason == "side_filtered"


def test_paused_subscription_opens_nothing():
    assert skip(plan(settings=replace(PROPORTIONAL, paused=True))).reason == "paused"


def test_opening_fill_older_than_the_expiry_is_skipped_and_one_at_the_limit_goes():
    assert skip(plan(fill=replace(FILL, timestamp_ms=NOW - 60_001))).reason == "expired"
    assert isinstance(plan(fill=replace(FILL, timestamp_ms=NOW - 60_000)), PlannedOrder)
    longer = replace(PROPORTIONAL, expiry_ms=120_000)
    assert isinstance(
        plan(fill=replace(FILL, timestamp_ms=NOW - 90_000), settings=longer), PlannedOrder
    )


def test_stale_balance_is_never_used_for_sizing():
    r = skip(plan(follower=replace(FOLLOWER, taken_at_ms=NOW - 5_001)))
    assert r.reason == "stale_balance"
    assert isinstance(plan(follower=replace(FOLLOWER, taken_at_ms=NOW - 5_000)), PlannedOrder)


def test_insufficient_balance_reduces_the_order_then_skips_when_nothing_fits():
    # 1 000 USDT free / (60 300 x 1.001) = 0.0165672… → 0.01656 (wanted 0.05)
    o = order(plan(follower=replace(FOLLOWER, free_quote=D("1000"))))
    assert o.amount == D("0.01656")
    assert "free balance" in o.note
    # 3 USDT free → 0.0000497 → 0.00004 x 60 300 = 2.41 < 5 → nothing fits
    assert skip(plan(follower=replace(FOLLOWER, free_quote=D("3")))).reason == (
        "insufficient_balance"
    )


def test_max_positions_blocks_a_new_symbol_but_not_adding_to_a_held_one():
    s = replace(PROPORTIONAL, max_positions=3)
    assert skip(plan(settings=s, follower=replace(FOLLOWER, open_positions=3))).reason == (
        "max_positions"
    )
    adding = replace(FOLLOWER, open_positions=3, copy_position=D("0.01"))
    assert isinstance(plan(settings=s, follower=adding), PlannedOrder)


def test_max_notional_caps_the_order_instead_of_skipping_it():
    # wanted 0.05 x 60 300 = 3 015 USDT; cap 1 000 → 1 000 / 60 300 = 0.0165837… → 0.01658
    o = order(plan(settings=replace(PROPORTIONAL, max_notional=D("1000"))))
    assert o.amount == D("0.01658")
    assert o.capped is True


# --- symbol mapping and client order ids ----------------------------------------------------


def test_symbol_map_sends_the_order_on_the_followers_market():
    # Leader on Binance BTC/USDT, follower on Kraken BTC/USD (lot 1e-8, tick 0.1).
    # 30 % x 10 000 / 60 000 = 0.05; limit 60 300.0
    s = replace(PROPORTIONAL, symbol_map={"BTC/USDT": "BTC/USD"})
    o = order(plan(settings=s, follower=replace(FOLLOWER, market=KRAKEN_BTC)))
    assert (o.symbol, o.amount, o.price) == ("BTC/USD", D("0.05"), D("60300"))


def test_client_order_id_is_deterministic_short_and_alphanumeric():
    cid = client_order_id(7, 42)
    assert cid == client_order_id(7, 42)
    assert cid == "qf" + hashlib.sha256(b"copy:7:42").hexdigest()[:30]
    assert len(cid) == 32
    assert cid.isalnum()
    assert len({client_order_id(s, f) for s in range(1, 30) for f in range(1, 30)}) == 29 * 29


@pytest.mark.parametrize("mode", ["proportional", "fixed_ratio", "fixed_notional", "fixed_risk"])
def test_every_mode_rounds_the_quantity_to_the_lot_step(mode):
    s = CopySettings(
        sizing_mode=mode, ratio=D("0.0333333"), notional=D("777"), risk_fraction=D("0.0077")
    )
    fill = replace(FILL, stop_price=D("58777"), leader_equity=D("123456"))
    o = order(plan(fill=fill, settings=s))
    assert o.amount == o.amount.quantize(D("0.00001"))
    assert o.amount > 0
