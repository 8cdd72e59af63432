"""The scanner's services: watchlist validation, a scan over stored candles, what it stores,
new-signal flagging, the schedule, and the backtest of the band strategy behind an alert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from django.utils import timezone

from backtester.engine.language import PRESETS
from backtester.engine.scanner import BandSettings, scan
from backtester.marketdata.store import load_candles
from backtester.models import Alert, Backtest, MarketSeries, ScanRun, Strategy, Watchlist
from backtester.services.scan_alerts import alert_backtest_create
from backtester.services.scan_watchlists import (
    MAX_SYMBOLS,
    MAX_WATCHLISTS,
    next_slot,
    watchlist_delete,
    watchlist_update,
)
from backtester.services.scanner import scan_start, scans_due_enqueue
from config.exceptions import ApplicationError, Conflict, NotFound, PlanRequired
from config.runs import lifecycle
from tests.research.scanner_support import (
    BUY_CLOSES,
    DAY_MS,
    LOOKBACK,
    SELL_CLOSES,
    START_MS,
    closes_series,
    demo_market,
    demo_watchlist,
    line_closes,
    make_user,
    run_scan_now,
)

# --- watchlists --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_demo_watchlist_is_saved_with_its_symbols_normalised_and_deduplicated():
    demo_market()
    user = make_user()
    watchlist = demo_watchlist(user, symbols="buy/usdt, SELL/USDT\nbuy/usdt  hold/usdt")
    assert watchlist.symbols == ["BUY/USDT", "SELL/USDT", "HOLD/USDT"]
    assert (watchlist.exchange, watchlist.timeframe) == ("demo", "1d")
    assert (watchlist.lookback, watchlist.degree, watchlist.k) == (LOOKBACK, 1, 2.0)
    assert watchlist.next_run_at is None
    assert watchlist.universe_label == "3 symbols"


BAD_WATCHLISTS = [
    ({"name": "  "}, "name", "name"),
    ({"exchange": "mtgox"}, "exchange", "demo data or one of these exchanges"),
    ({"timeframe": "7x"}, "timeframe", "not a timeframe"),
    ({"symbols": []}, "symbols", "at least one symbol"),
    ({"symbols": ["BTCUSDT"]}, "symbols", "BASE/QUOTE"),
    ({"symbols": ["DOGE/USDT"]}, "symbols", "no 1d candles for DOGE/USDT"),
    ({"timeframe": "1h"}, "symbols", "no 1h candles"),
    ({"lookback": 29}, "lookback", "between 30 and 300"),
    ({"lookback": 301}, "lookback", "between 30 and 300"),
    ({"lookback": 50.5}, "lookback", "whole number"),
    ({"degree": 0}, "degree", "between 1 and 3"),
    ({"degree": 4}, "degree", "between 1 and 3"),
    ({"k": 0.5}, "k", "between 1 and 3"),
    ({"k": "wide"}, "k", "must be a number"),
    ({"schedule_minutes": 7}, "schedule_minutes", "offered schedules"),
    ({"universe": "top", "top_n": 10}, "universe", "no trading volume"),
    ({"universe": "everything"}, "universe", "my symbols or the top"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("change", "field", "text"), BAD_WATCHLISTS)
def test_a_bad_watchlist_is_refused_on_its_field_and_nothing_is_saved(change, field, text):
    demo_market()
    user = make_user()
    with pytest.raises(ApplicationError) as info:
        demo_watchlist(user, **change)
    assert info.value.field == field
    assert text in info.value.message
    assert not Watchlist.objects.exists()


@pytest.mark.django_db
def test_watchlist_names_are_unique_per_owner_only():
    demo_market()
    alice, bob = make_user(), make_user()
    demo_watchlist(alice)
    demo_watchlist(bob)  # the same name is fine for someone else
    with pytest.raises(ApplicationError, match="already have a watchlist") as info:
        demo_watchlist(alice)
    assert info.value.field == "name"
    assert Watchlist.objects.filter(owner=alice).count() == 1


@pytest.mark.django_db
def test_a_watchlist_holds_at_most_the_symbol_limit():
    user = make_user()
    symbols = [f"C{i}/USDT" for i in range(MAX_SYMBOLS + 1)]
    with pytest.raises(ApplicationError, match=f"at most {MAX_SYMBOLS} symbols"):
        demo_watchlist(user, symbols=symbols)


@pytest.mark.django_db
def test_a_user_has_at_most_the_watchlist_limit_and_free_users_none():
    demo_market()
    user = make_user()
    for i in range(MAX_WATCHLISTS):
        demo_watchlist(user, name=f"List {i}")
    with pytest.raises(PlanRequired, match="delete one first"):
        demo_watchlist(user, name="One more")
    with pytest.raises(PlanRequired):
        demo_watchlist(make_user(pro=False))
    assert Watchlist.objects.count() == MAX_WATCHLISTS


@pytest.mark.django_db
def test_an_update_changes_only_what_is_given_and_is_checked_like_a_create():
    demo_market()
    user = make_user()
    watchlist = demo_watchlist(user)
    watchlist = watchlist_update(user=user, watchlist=watchlist, k=2.5, schedule_minutes=60)
    assert watchlist.k == 2.5
    assert watchlist.symbols == ["BUY/USDT", "SELL/USDT", "HOLD/USDT", "NEW/USDT"]
    assert watchlist.next_run_at is not None
    with pytest.raises(ApplicationError) as info:
        watchlist_update(user=user, watchlist=watchlist, degree=9)
    assert info.value.field == "degree"
    watchlist.refresh_from_db()
    assert watchlist.degree == 1
    with pytest.raises(NotFound):
        watchlist_update(user=make_user(), watchlist=watchlist, k=1.0)
    with pytest.raises(NotFound):
        watchlist_delete(user=make_user(), watchlist=watchlist)
    assert Watchlist.objects.filter(pk=watchlist.pk).exists()


def test_scheduled_scans_run_a_minute_after_each_utc_boundary_of_their_period():
    now = datetime(2024, 5, 6, 10, 20, 30, tzinfo=UTC)
    assert next_slot(now, 60) == datetime(2024, 5, 6, 11, 1, tzinfo=UTC)
    assert next_slot(now, 240) == datetime(2024, 5, 6, 12, 1, tzinfo=UTC)
    assert next_slot(now, 1440) == datetime(2024, 5, 7, 0, 1, tzinfo=UTC)
    assert next_slot(now, 15) == datetime(2024, 5, 6, 10, 31, tzinfo=UTC)
    assert next_slot(now, 0) is None


# --- a scan ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_scan_stores_every_symbols_outcome_with_the_engines_numbers():
    market = demo_market()
    user = make_user()
    watchlist = demo_watchlist(user)
    run = run_scan_now(watchlist)
    assert run.status == ScanRun.Status.COMPLETED
    assert (run.buy_count, run.sell_count, run.hold_count) == (1, 1, 2)
    assert (run.symbols_total, run.symbols_done, run.progress) == (4, 4, 1.0)
    alerts = {a.symbol: a for a in Alert.objects.filter(scan=run)}
    assert set(alerts) == set(market)
    assert alerts["BUY/USDT"].signal == "BUY"
    assert alerts["SELL/USDT"].signal == "SELL"
    assert alerts["HOLD/USDT"].signal == "HOLD"
    assert alerts["NEW/USDT"].signal == "HOLD"
    assert (
        alerts["NEW/USDT"].reason == f"Too little data: 20 candles, the lookback needs {LOOKBACK}"
    )
    assert alerts["NEW/USDT"].lower is None
    assert alerts["NEW/USDT"].potential_return is None
    assert alerts["HOLD/USDT"].potential_return is None
    assert [a.is_alert for a in (alerts["BUY/USDT"], alerts["HOLD/USDT"])] == [True, False]
    # The stored numbers are the engine's on the stored closes.
    expected = scan(
        {"BUY/USDT": BUY_CLOSES, "SELL/USDT": SELL_CLOSES},
        BandSettings(lookback=LOOKBACK, degree=1, k=2.0),
    )
    for i, symbol in enumerate(expected.symbols):
        stored, outcome = alerts[symbol], expected.outcome(i)
        assert stored.price == outcome.price
        assert stored.lower == pytest.approx(outcome.lower, rel=1e-12)
        assert stored.mid == pytest.approx(outcome.mid, rel=1e-12)
        assert stored.upper == pytest.approx(outcome.upper, rel=1e-12)
        assert stored.zscore == pytest.approx(outcome.zscore, rel=1e-12)
        assert stored.potential_return == pytest.approx(outcome.potential_return, rel=1e-12)
        assert stored.series_id == market[symbol].pk
        assert stored.candle_ts == START_MS + (len(BUY_CLOSES) - 1) * DAY_MS
        assert stored.created_at == run.finished_at
        assert stored.owner_id == user.pk
        assert stored.bars == len(BUY_CLOSES)  # every stored candle, not only the lookback


@pytest.mark.django_db(transaction=True)
def test_a_symbol_with_no_stored_candles_is_hold_with_the_reason():
    demo_market()
    user = make_user()
    watchlist = demo_watchlist(user, symbols=["BUY/USDT"])
    MarketSeries.objects.filter(symbol="BUY/USDT").delete()
    run = run_scan_now(watchlist)
    alert = Alert.objects.get(scan=run)
    assert run.status == ScanRun.Status.COMPLETED
    assert alert.signal == "HOLD"
    assert alert.reason == "No 1d candles stored for BUY/USDT from the demo data"
    assert alert.series_id is None


@pytest.mark.django_db(transaction=True)
def test_a_users_own_series_wins_over_the_shared_one():
    demo_market()
    user = make_user()
    mine = closes_series("BUY/USDT", SELL_CLOSES, owner=user)  # mine says SELL
    watchlist = demo_watchlist(user, symbols=["BUY/USDT"])
    alert = Alert.objects.get(scan=run_scan_now(watchlist))
    assert alert.series_id == mine.pk
    assert alert.signal == "SELL"
    other = demo_watchlist(make_user(), symbols=["BUY/USDT"])
    assert Alert.objects.get(scan=run_scan_now(other)).signal == "BUY"


@pytest.mark.django_db(transaction=True)
def test_only_signals_absent_from_the_previous_scan_are_new():
    market = demo_market()
    user = make_user()
    watchlist = demo_watchlist(user)
    first = run_scan_now(watchlist)
    assert set(Alert.objects.filter(scan=first, is_new=True).values_list("symbol", flat=True)) == {
        "BUY/USDT",
        "SELL/USDT",
    }
    second = run_scan_now(watchlist)
    assert not Alert.objects.filter(scan=second, is_new=True).exists()
    # HOLD/USDT now closes far below its line: a BUY the previous scan did not have.
    candles = load_candles(market["HOLD/USDT"])
    from backtester.marketdata.store import write_candles
    from tests.research.scanner_support import candles_from_closes

    closes = np.append(candles.close, line_closes(-9.0, n=len(candles.close) + 1)[-1])
    write_candles(
        series=market["HOLD/USDT"], candles=candles_from_closes(closes, symbol="HOLD/USDT")
    )
    third = run_scan_now(watchlist)
    fresh = list(Alert.objects.filter(scan=third, is_new=True).values_list("symbol", "signal"))
    assert fresh == [("HOLD/USDT", "BUY")]


@pytest.mark.django_db(transaction=True)
def test_a_scan_whose_owner_lost_pro_fails_without_storing_anything():
    from accounts.models import Subscription

    demo_market()
    user = make_user()
    watchlist = demo_watchlist(user)
    Subscription.objects.filter(user=user).delete()
    run = run_scan_now(watchlist)
    assert run.status == ScanRun.Status.FAILED
    assert "Pro plan required" in run.error
    assert not Alert.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_running_a_finished_scan_again_changes_nothing():
    from backtester.services.scanner import scan_execute

    demo_market()
    run = run_scan_now(demo_watchlist(make_user()))
    again = scan_execute(scan_id=run.pk)
    assert again.pk == run.pk
    assert Alert.objects.filter(scan=run).count() == 4
    assert scan_execute(scan_id=run.pk + 1000) is None


# --- starting scans ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_one_scan_per_watchlist_at_a_time_unless_the_running_one_is_stale():
    demo_market()
    user = make_user()
    watchlist = demo_watchlist(user)
    first = scan_start(user=user, watchlist=watchlist)
    assert first.status == ScanRun.Status.QUEUED
    assert first.symbols == watchlist.symbols
    with pytest.raises(Conflict, match="already running"):
        scan_start(user=user, watchlist=watchlist)
    silent = timezone.now() - lifecycle.stale_after() - timedelta(seconds=1)
    ScanRun.objects.filter(pk=first.pk).update(
        status=ScanRun.Status.RUNNING, started_at=silent, heartbeat_at=silent
    )
    assert lifecycle.sweep() == [("scan", first.pk)]
    second = scan_start(user=user, watchlist=watchlist)
    first.refresh_from_db()
    assert first.status == ScanRun.Status.FAILED
    assert "stopped answering" in first.error
    assert second.status == ScanRun.Status.QUEUED
    with pytest.raises(NotFound):
        scan_start(user=make_user(), watchlist=watchlist)
    with pytest.raises(PlanRequired):
        scan_start(user=make_user(pro=False), watchlist=watchlist)


@pytest.mark.django_db
def test_due_watchlists_get_a_scheduled_scan_and_move_to_theirnext_slot():
    demo_market()
    now = datetime(2024, 6, 1, 9, 30, tzinfo=UTC)
    alice, lapsed = make_user(), make_user()
    due = demo_watchlist(alice, name="Due", schedule_minutes=60)
    later = demo_watchlist(alice, name="Later", schedule_minutes=60)
    off = demo_watchlist(alice, name="Off")
    theirs = demo_watchlist(lapsed, name="Lapsed", schedule_minutes=1440)
    Watchlist.objects.filter(pk__in=[due.pk, theirs.pk]).update(next_run_at=now - timedelta(1))
    Watchlist.objects.filter(pk=later.pk).update(next_run_at=now + timedelta(minutes=5))
    from accounts.models import Subscription

    Subscription.objects.filter(user=lapsed).delete()
    started = scans_due_enqueue(now=now)
    assert [(r.watchlist_id, r.trigger) for r in started] == [(due.pk, "schedule")]
    due.refresh_from_db()
    theirs.refresh_from_db()
    later.refresh_from_db()
    off.refresh_from_db()
    assert due.next_run_at == datetime(2024, 6, 1, 10, 1, tzinfo=UTC)
    assert theirs.next_run_at == datetime(2024, 6, 2, 0, 1, tzinfo=UTC)  # skipped, moved on
    assert later.next_run_at == now + timedelta(minutes=5)
    assert off.next_run_at is None
    assert not ScanRun.objects.filter(watchlist=theirs).exists()
    # Nothing before the next slot; then the other watchlist; a still-queued scan blocks a slot.
    assert scans_due_enqueue(now=now + timedelta(minutes=2)) == []
    assert [r.watchlist_id for r in scans_due_enqueue(now=now + timedelta(minutes=6))] == [later.pk]
    assert scans_due_enqueue(now=datetime(2024, 6, 1, 10, 2, tzinfo=UTC)) == []
    assert ScanRun.objects.filter(watchlist=due).count() == 1


# --- the band strategy behind an alert ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_alert_becomes_a_backtest_of_the_band_preset_with_the_scans_settings():
    market = demo_market()
    user = make_user()
    run = run_scan_now(demo_watchlist(user, k=2.5, degree=2, lookback=40))
    alert = Alert.objects.get(scan=run, symbol="BUY/USDT")
    backtest = alert_backtest_create(user=user, alert=alert)
    assert backtest.status in (Backtest.Status.QUEUED, Backtest.Status.COMPLETED)
    assert backtest.param_values == {"window": 40, "degree": 2, "k": 2.5, "exit_at_upper": True}
    assert backtest.spec["entry_long"] == PRESETS["polyband_reversion"].entry_long
    assert backtest.series_order == [market["BUY/USDT"].pk]
    series = market["BUY/USDT"]
    assert backtest.start_ts == series.first_ts
    assert backtest.end_ts == series.last_ts + DAY_MS - 1
    assert Strategy.objects.get(pk=backtest.strategy_id).preset == "polyband_reversion"
    with pytest.raises(NotFound):
        alert_backtest_create(user=make_user(), alert=alert)


@pytest.mark.django_db(transaction=True)
def test_an_alert_without_enough_stored_history_cannot_be_backtested():
    demo_market()
    user = make_user()
    run = run_scan_now(demo_watchlist(user))
    short = Alert.objects.get(scan=run, symbol="NEW/USDT")
    with pytest.raises(ApplicationError, match="needs more than 31") as info:
        alert_backtest_create(user=user, alert=short)
    assert info.value.field == "series"
    gone = Alert.objects.get(scan=run, symbol="SELL/USDT")
    MarketSeries.objects.filter(pk=gone.series_id).delete()
    gone.refresh_from_db()
    with pytest.raises(ApplicationError, match="no longer stored"):
        alert_backtest_create(user=user, alert=gone)
    assert not Backtest.objects.exists()
