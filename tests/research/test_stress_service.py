"""Stress runs through the service: crisis windows with and without data (and with data found
in another series), shocks against the unstressed run, refusals, and a real worker."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime

import pytest

from accounts.models import Plan, Subscription
from backtester.engine.run import run_backtest
from backtester.engine.simulate import SimConfig
from backtester.marketdata.store import load_candles
from backtester.models import MarketSeries, StressRun
from backtester.services.montecarlo import MAX_ACTIVE_RUNS
from backtester.services.strategies import spec_from_dict, strategy_create
from backtester.services.stress import stress_create, stress_execute
from config.exceptions import ApplicationError, Conflict, NotFound, PlanRequired
from tests.backtester.backtest_factories import make_series, make_user
from tests.research.test_montecarlo_service import finished_backtest
from tests.worker_log import wait_for_log

HOUR = 3_600_000
MARCH_2020 = int(datetime(2020, 3, 1, tzinfo=UTC).timestamp() * 1000)
NO_COSTS = {"initial_cash": 10_000, "taker_fee": 0.0, "maker_fee": 0.0, "slippage_bps": 0.0}


def ms(*ymd) -> int:
    return int(datetime(*ymd).replace(tzinfo=UTC).timestamp() * 1000)


def _run(user, backtest, **kwargs) -> StressRun:
    run = stress_create(user=user, backtest=backtest, **kwargs)
    stress_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == StressRun.Status.COMPLETED, run.error
    return run


def _rows(run) -> dict[str, dict]:
    return {row.get("key") or row["label"]: row for row in run.results["rows"]}


@pytest.fixture
def covid(db):
    """30 days of hourly BTC from 1 March 2020 (covers the COVID window, not LUNA)."""
    user = make_user()
    series = make_series(n=24 * 30, seed=6, start_ms=MARCH_2020)
    return user, series


# --- windows --------------------------------------------------------------------------------


def test_a_covered_window_runs_with_warmup_and_a_missing_one_says_no_data(covid):
    user, series = covid
    backtest = finished_backtest(user, series)
    run = _run(user, backtest, windows=["covid", "luna"])
    rows = _rows(run)
    covered = rows["covid"]
    assert covered["status"] == "ok", covered["message"]
    assert covered["start_ms"] == ms(2020, 3, 9)
    assert covered["end_ms"] == ms(2020, 3, 24)
    # The data starts eight days before the window: the whole warm-up (31 bars) is there.
    assert run.results["warmup_bars"] == 31
    assert covered["warmup"] == {"wanted": 31, "used": 31}
    assert covered["outcome"]["bars"] == 15 * 24
    assert covered["outcome"]["start_ts"] == ms(2020, 3, 9)
    assert covered["outcome"]["end_ts"] == ms(2020, 3, 24) - HOUR
    assert covered["data"][0]["series_id"] == series.pk
    assert covered["data"][0]["own"] is True
    missing = rows["luna"]
    assert missing["status"] == "no_data"
    assert missing["outcome"] is None
    assert "2022-05-07 to 2022-05-14" in missing["message"]
    assert "covers 2020-03-01 to 2020-03-30" in missing["message"]


def test_a_window_run_matches_the_engine_run_on_exactly_the_window(covid):
    # A rule without look-back needs no warm-up, so the window's run is the engine's own run on
    # the window's candles: an independent path to the same numbers.
    user, series = covid
    strategy = strategy_create(
        user=user, name="candle colour", entry_long="close > open", exit_long="close < open"
    )
    backtest = finished_backtest(user, series, strategy=strategy, settings=NO_COSTS)
    run = _run(user, backtest, windows=["covid"])
    outcome = _rows(run)["covid"]["outcome"]
    expected = run_backtest(
        load_candles(series, start_ts=ms(2020, 3, 9), end_ts=ms(2020, 3, 24)),
        spec_from_dict(backtest.spec),
        {},
        SimConfig(**backtest.settings),
    )
    assert outcome["total_return"] == pytest.approx(expected.metrics["total_return"])
    assert outcome["max_drawdown"] == pytest.approx(expected.metrics["max_drawdown"])
    assert outcome["trades"] == expected.sim.trades.shape[0] > 0
    assert outcome["worst_trade"] <= float(expected.sim.trades["return"].min())


def test_a_window_the_data_covers_in_part_is_marked_partial(covid):
    user, series = covid
    backtest = finished_backtest(user, series)
    run = _run(
        user,
        backtest,
        custom_windows=[
            {"label": "Late March", "start": date(2020, 3, 25), "end": date(2020, 4, 5)}
        ],
    )
    row = _rows(run)["Late March"]
    assert row["status"] == "partial"
    assert row["end_ms"] == ms(2020, 4, 6)  # a date end includes that whole day
    assert "covers only 2020-03-25 00:00 UTC to 2020-03-30 23:00 UTC" in row["message"]
    assert row["outcome"]["bars"] == 6 * 24


def test_warmup_is_cut_short_when_the_data_starts_inside_it(covid):
    user, series = covid
    backtest = finished_backtest(user, series)
    run = _run(
        user,
        backtest,
        custom_windows=[{"label": "Early", "start": MARCH_2020 + 10 * HOUR, "end": ms(2020, 3, 5)}],
    )
    row = _rows(run)["Early"]
    assert row["warmup"] == {"wanted": 31, "used": 10}
    assert "Only 10 of the 31 warm-up bars" in row["message"]


def test_a_window_runs_on_another_visible_series_when_the_backtests_own_does_not_cover_it(db):
    user, stranger = make_user(), make_user()
    recent = make_series(n=1500, seed=2)  # 2024
    old = make_series(exchange="archive", n=24 * 30, seed=5, start_ms=MARCH_2020)
    # Someone else's upload covering LUNA must never be used.
    make_series(owner=stranger, n=24 * 10, seed=7, start_ms=ms(2022, 5, 6))
    backtest = finished_backtest(user, recent)
    run = _run(user, backtest, windows=["covid", "luna"])
    rows = _rows(run)
    assert rows["covid"]["status"] == "ok"
    assert rows["covid"]["data"][0] == {
        "series_id": old.pk,
        "label": "BTC/USDT 1h (archive)",
        "symbol": "BTC/USDT",
        "first_ts": old.first_ts,
        "last_ts": old.last_ts,
        "own": False,
    }
    assert "BTC/USDT 1h (archive)" in rows["covid"]["message"]
    assert rows["luna"]["status"] == "no_data"
    assert MarketSeries.objects.filter(owner=stranger).count() == 1


# --- shocks ---------------------------------------------------------------------------------


def test_a_gap_scales_an_always_long_runs_final_equity_against_the_unstressed_run(db):
    user = make_user()
    series = make_series(n=600, seed=9)
    always = strategy_create(user=user, name="always long", entry_long="close > 0")
    backtest = finished_backtest(user, series, strategy=always, settings=NO_COSTS)
    at = datetime.fromtimestamp((series.first_ts + 300 * HOUR) / 1000, tz=UTC)
    run = _run(
        user,
        backtest,
        shocks=[
            {"kind": "gap", "at": at, "change": -0.3},
            {"kind": "vol_spike", "at": at, "bars": 48, "factor": 3.0},
        ],
    )
    base, gap, spike = run.results["rows"]
    metrics = backtest.result.metrics
    # The unstressed row is the backtest itself.
    assert base["kind"] == "baseline"
    assert base["outcome"]["total_return"] == pytest.approx(metrics["total_return"])
    assert base["outcome"]["max_drawdown"] == pytest.approx(metrics["max_drawdown"])
    # All in from bar 1 to the end: 30 % off every later price is 30 % off the final equity.
    r0 = base["outcome"]["total_return"]
    assert gap["outcome"]["total_return"] == pytest.approx(0.7 * (1 + r0) - 1)
    assert gap["delta"]["total_return"] == pytest.approx(gap["outcome"]["total_return"] - r0)
    assert gap["outcome"]["max_drawdown"] <= -0.3 + 1e-9
    assert gap["label"].startswith("Gap -30.0 % at")
    assert spike["status"] == "ok"
    assert spike["outcome"]["bars"] == base["outcome"]["bars"] == 600
    assert spike["outcome"]["total_return"] != pytest.approx(r0)
    assert spike["delta"]["trades"] == 0


# --- refusals -------------------------------------------------------------------------------


@pytest.fixture
def ready(db):
    user = make_user()
    series = make_series(n=500, seed=4)
    return user, finished_backtest(user, series)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "windows"),
        ({"windows": ["dotcom"]}, "windows"),
        (
            {
                "custom_windows": [
                    {"label": "x", "start": date(2024, 2, 1), "end": date(2024, 1, 1)}
                ]
            },
            "custom_windows",
        ),
        ({"custom_windows": [{"label": "x", "start": date(2024, 2, 1)}]}, "custom_windows"),
        ({"custom_windows": [{"start": "2024-01-01", "end": date(2024, 2, 1)}]}, "custom_windows"),
        ({"custom_windows": [{"label": "y" * 61, "start": 0, "end": 10}]}, "custom_windows"),
        ({"shocks": [{"kind": "crash", "at": 0}]}, "shocks"),
        ({"shocks": [{"kind": "gap", "change": -0.1}]}, "gap_at"),
        ({"shocks": [{"kind": "gap", "at": date(2023, 1, 1), "change": -0.1}]}, "gap_at"),
        ({"shocks": [{"kind": "gap", "at": date(2024, 1, 5), "change": 0.0}]}, "gap_change"),
        ({"shocks": [{"kind": "gap", "at": date(2024, 1, 5), "change": -0.99}]}, "gap_change"),
        ({"shocks": [{"kind": "gap", "at": date(2024, 1, 5), "change": "x"}]}, "gap_change"),
        (
            {"shocks": [{"kind": "vol_spike", "at": date(2024, 1, 5), "bars": 5, "factor": 1.0}]},
            "vol_spike_factor",
        ),
        (
            {"shocks": [{"kind": "vol_spike", "at": date(2024, 1, 5), "bars": 0, "factor": 2.0}]},
            "vol_spike_bars",
        ),
        (
            {"shocks": [{"kind": "vol_spike", "at": date(2025, 1, 5), "bars": 5, "factor": 2.0}]},
            "vol_spike_at",
        ),
        ({"shocks": [{"kind": "gap", "at": date(2024, 1, 5), "change": -0.1}] * 5}, "shocks"),
    ],
)
def test_bad_requests_are_refused_on_their_field_and_save_nothing(ready, kwargs, field):
    user, backtest = ready
    with pytest.raises(ApplicationError) as caught:
        stress_create(user=user, backtest=backtest, **kwargs)
    assert caught.value.field == field, caught.value.message
    assert StressRun.objects.count() == 0


def test_a_window_longer_than_the_plan_allows_is_refused(ready):
    user, backtest = ready
    Plan.objects.filter(code=Plan.PRO).update(max_candles_per_backtest=1_000)
    user.refresh_from_db()
    with pytest.raises(ApplicationError, match="at most 1,000") as caught:
        stress_create(
            user=user,
            backtest=backtest,
            custom_windows=[
                {"label": "Year", "start": date(2023, 1, 1), "end": date(2023, 12, 31)}
            ],
        )
    assert caught.value.field == "custom_windows"


def test_someone_elses_backtest_free_users_and_the_queue_limit(ready):
    user, backtest = ready
    with pytest.raises(NotFound):
        stress_create(user=make_user(), backtest=backtest, windows=["ftx"])
    for _ in range(MAX_ACTIVE_RUNS):
        stress_create(user=user, backtest=backtest, windows=["ftx"])
    with pytest.raises(Conflict):
        stress_create(user=user, backtest=backtest, windows=["ftx"])
    Subscription.objects.filter(user=user).update(status=Subscription.Status.CANCELED)
    user.refresh_from_db()
    with pytest.raises(PlanRequired):
        stress_create(user=user, backtest=backtest, windows=["ftx"])


def test_a_run_whose_market_was_deleted_fails_with_the_reason(ready):
    user, backtest = ready
    run = stress_create(user=user, backtest=backtest, windows=["svb"])
    MarketSeries.objects.filter(pk__in=backtest.series_order).delete()
    stress_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == StressRun.Status.FAILED
    assert "deleted" in run.error


# --- a real worker --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_stress_run_goes_through_a_real_celery_worker(celery_worker_process):
    user = make_user()
    backtest = finished_backtest(user, make_series(n=24 * 30, seed=6, start_ms=MARCH_2020))
    run = stress_create(
        user=user,
        backtest=backtest,
        windows=["covid", "ftx"],
        shocks=[{"kind": "gap", "at": ms(2020, 3, 15), "change": -0.25}],
    )
    for _ in range(600):
        run.refresh_from_db()
        if not run.is_active:
            break
        time.sleep(0.1)
    assert run.status == StressRun.Status.COMPLETED, run.error
    kinds = [(r["kind"], r["status"]) for r in run.results["rows"]]
    assert kinds == [
        ("window", "ok"),
        ("window", "no_data"),
        ("baseline", "ok"),
        ("gap", "ok"),
    ]
    wait_for_log(celery_worker_process, f"backtester.run_stress[{run.task_id}] succeeded")
