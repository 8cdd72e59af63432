"""grid_search: same numbers as single runs, indicators reused, constraints, ordering."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from backtester.engine.candles import Candles
from backtester.engine.errors import EngineError, StrategyError
from backtester.engine.grid import GRID_METRICS, GridResult, grid_search, parse_constraint
from backtester.engine.language import PRESETS, Param, StrategySpec
from backtester.engine.run import run_backtest
from backtester.engine.simulate import SimConfig

CROSS = StrategySpec(
    name="cross",
    entry_long="cross_above(sma(close, fast), sma(close, slow))",
    exit_long="cross_below(sma(close, fast), sma(close, slow))",
    params=(Param("fast", "int", 3, 2, 4, 1), Param("slow", "int", 8, 8, 12, 2)),
)
CONFIG = SimConfig(taker_fee=0.001, maker_fee=0.001, allow_short=False)


@pytest.fixture(scope="module")
def candles() -> Candles:
    rng = np.random.default_rng(11)
    n = 3_000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    open_ = np.r_[100.0, close[:-1]] * (1 + rng.normal(0, 0.0005, n))
    high = np.maximum(open_, close) * 1.002
    low = np.minimum(open_, close) * 0.998
    ts = 1_600_000_000_000 + 900_000 * np.arange(n, dtype=np.int64)
    return Candles(ts, open_, high, low, close, np.ones(n), timeframe="15m")


@pytest.fixture(scope="module")
def sma_grid(candles: Candles) -> GridResult:
    grid = {"fast": [5, 10, 15], "slow": [20, 30, 40]}
    return grid_search(candles, PRESETS["sma_cross"], grid, CONFIG, workers=2)


def test_grid_rows_equal_each_combination_run_alone(candles: Candles, sma_grid: GridResult) -> None:
    assert len(sma_grid.rows) == 9
    for row in sma_grid.rows:
        single = run_backtest(candles, PRESETS["sma_cross"], row["params"], CONFIG)
        m = single.metrics
        assert row["trades"] == single.sim.trades.shape[0]
        assert row["final_equity"] == pytest.approx(single.sim.equity[-1], rel=1e-12)
        for key in ("total_return", "sharpe", "max_drawdown", "cagr", "calmar"):
            assert row[key] == pytest.approx(m[key], rel=1e-9), key
        assert row["annual_volatility"] == pytest.approx(m["annual_volatility"], rel=1e-9)
        assert row["fees_paid"] == pytest.approx(m["fees_paid"], rel=1e-12)


def test_each_distinct_indicator_is_computed_once(sma_grid: GridResult) -> None:
    # 3 fast + 3 slow lengths: 6 SMAs, not 9 combinations x 4 references = 36.
    assert sma_grid.indicator_counts == {"sma": 6}
    # Every other reference (entry and exit rule each name both SMAs) is a cache hit.
    assert sma_grid.indicator_hits == 9 * 4 - 6


def test_rows_are_sorted_by_the_objective_best_first(sma_grid: GridResult) -> None:
    sharpes = [row["sharpe"] for row in sma_grid.rows]
    assert sharpes == sorted(sharpes, reverse=True)
    assert [row["objective"] for row in sma_grid.rows] == sharpes
    assert sma_grid.best is sma_grid.rows[0]
    assert sma_grid.objective == "sharpe"


def test_volatility_objective_ranks_the_calmest_first(candles: Candles) -> None:
    grid = {"fast": [5, 10, 15], "slow": [20, 30, 40]}
    r = grid_search(
        candles, PRESETS["sma_cross"], grid, CONFIG, objective="annual_volatility", workers=1
    )
    vols = [row["annual_volatility"] for row in r.rows]
    assert vols == sorted(vols)


def test_grid_defaults_to_every_params_declared_values(candles: Candles) -> None:
    r = grid_search(candles, CROSS, None, CONFIG, workers=1)
    # fast 2..4 step 1, slow 8..12 step 2.
    assert r.combinations == 9
    assert r.evaluated == 9
    assert sorted((row["params"]["fast"], row["params"]["slow"]) for row in r.rows) == [
        (f, s) for f in (2, 3, 4) for s in (8, 10, 12)
    ]


def test_param_missing_from_the_grid_takes_its_values(candles: Candles) -> None:
    r = grid_search(candles, CROSS, {"fast": [3]}, CONFIG, workers=1)
    assert sorted(row["params"]["slow"] for row in r.rows) == [8, 10, 12]
    assert {row["params"]["fast"] for row in r.rows} == {3}


def test_constraint_expression_skips_invalid_combinations(candles: Candles) -> None:
    grid = {"fast": [10, 20, 30], "slow": [20, 30]}
    r = grid_search(candles, PRESETS["sma_cross"], grid, CONFIG, constraint="fast < slow")
    kept = sorted((row["params"]["fast"], row["params"]["slow"]) for row in r.rows)
    assert kept == [(10, 20), (10, 30), (20, 30)]
    assert (r.combinations, r.evaluated, r.skipped) == (6, 3, 3)
    # Only the SMAs of kept combinations were computed: fast 10, 20 and slow 20, 30.
    assert r.indicator_counts == {"sma": 3}


def test_constraint_callable_is_applied_like_an_expression(candles: Candles) -> None:
    grid = {"fast": [10, 20, 30], "slow": [20, 30]}
    r = grid_search(
        candles, PRESETS["sma_cross"], grid, CONFIG, constraint=lambda p: p["slow"] >= 2 * p["fast"]
    )
    assert sorted((row["params"]["fast"], row["params"]["slow"]) for row in r.rows) == [
        (10, 20),
        (10, 30),
    ]


@pytest.mark.parametrize(
    ("expr", "values", "expected"),
    [
        ("fast < slow", {"fast": 1, "slow": 2}, True),
        ("fast < slow", {"fast": 2, "slow": 2}, False),
        ("fast * 2 <= slow and not slow > 100", {"fast": 5, "slow": 10}, True),
        ("fast < slow < 5 or slow % 7 == 0", {"fast": 1, "slow": 14}, True),
        ("-fast + slow // 3 != 0", {"fast": 3, "slow": 9}, False),
        ("slow / (fast - fast) > 0", {"fast": 3, "slow": 9}, False),  # division by zero
        ("true", {"fast": 3, "slow": 9}, True),
    ],
)
def test_constraint_expressions_evaluate_like_python(
    expr: str, values: dict[str, int], expected: bool
) -> None:
    predicate = parse_constraint(expr, CROSS)
    assert predicate is not None
    assert predicate(values) is expected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("fast < slwo", "unknown parameter 'slwo'"),
        ("fast.__class__", "Attribute is not allowed"),
        ("__import__('os')", "Call is not allowed"),
        ("fast < 'a'", "only numbers"),
        ("fast <", "not a valid expression"),
        ("fast in slow", "only < <= > >= == != comparisons"),
        ("fast ** slow", "only + - * / // % arithmetic"),
    ],
)
def test_bad_constraints_raise_strategy_errors(expr: str, message: str) -> None:
    with pytest.raises(StrategyError, match=re.escape(message)) as info:
        parse_constraint(expr, CROSS)
    assert info.value.field == "constraint"


def test_min_trades_leaves_quiet_combinations_out(candles: Candles, sma_grid: GridResult) -> None:
    counts = sorted(row["trades"] for row in sma_grid.rows)
    threshold = counts[4]  # the median: at least half the runs qualify
    grid = {"fast": [5, 10, 15], "slow": [20, 30, 40]}
    r = grid_search(candles, PRESETS["sma_cross"], grid, CONFIG, min_trades=threshold)
    assert all(row["trades"] >= threshold for row in r.rows)
    assert len(r.rows) == sum(c >= threshold for c in counts)
    assert r.below_min_trades == 9 - len(r.rows)


def test_one_worker_and_many_workers_agree(candles: Candles, sma_grid: GridResult) -> None:
    grid = {"fast": [5, 10, 15], "slow": [20, 30, 40]}
    serial = grid_search(candles, PRESETS["sma_cross"], grid, CONFIG, workers=1)
    assert serial.rows == sma_grid.rows
    assert serial.workers == 1


def test_nan_objective_sorts_last(candles: Candles) -> None:
    # A rule that never fires keeps the equity flat: Sharpe is undefined (NaN).
    spec = StrategySpec(
        name="maybe",
        entry_long="close > level",
        exit_long="close < level",
        params=(Param("level", "float", 1e9, 0.0, 1e9),),
    )
    r = grid_search(candles, spec, {"level": [1e9, 1.0]}, CONFIG, workers=1)
    assert [row["params"]["level"] for row in r.rows] == [1.0, 1e9]
    assert math.isnan(r.rows[-1]["sharpe"])
    assert r.rows[-1]["trades"] == 0


def test_unknown_objective_and_bad_arguments_are_refused(candles: Candles) -> None:
    with pytest.raises(EngineError, match="unknown objective 'alpha'"):
        grid_search(candles, CROSS, objective="alpha")
    with pytest.raises(EngineError, match="workers"):
        grid_search(candles, CROSS, workers=0)
    with pytest.raises(EngineError, match="min_trades"):
        grid_search(candles, CROSS, min_trades=-1)
    assert "sharpe" in GRID_METRICS


def test_grid_values_are_checked_against_the_params(candles: Candles) -> None:
    with pytest.raises(StrategyError, match="did you mean 'fast'"):
        grid_search(candles, CROSS, {"fsat": [2]})
    with pytest.raises(StrategyError, match="between 2 and 4"):
        grid_search(candles, CROSS, {"fast": [2, 9]})
    with pytest.raises(StrategyError, match="no values"):
        grid_search(candles, CROSS, {"fast": []})
    with pytest.raises(StrategyError, match="list of values"):
        grid_search(candles, CROSS, {"fast": "23"})


def test_duplicate_grid_values_run_once(candles: Candles) -> None:
    r = grid_search(candles, CROSS, {"fast": [3, 3, "3"], "slow": [8]}, CONFIG, workers=1)
    assert r.combinations == 1
    assert len(r.rows) == 1


def test_indicator_cache_stays_within_its_budget_and_results_do_not_change(
    candles: Candles, sma_grid: GridResult
) -> None:
    grid = {"fast": [5, 10, 15], "slow": [20, 30, 40]}
    one_sma = len(candles) * 8
    tight = grid_search(
        candles, PRESETS["sma_cross"], grid, CONFIG, workers=1, cache_bytes=2 * one_sma
    )
    assert tight.rows == sma_grid.rows
    assert tight.indicator_evictions > 0
    # Evicted SMAs are computed again when a later combination needs them.
    assert tight.indicator_counts["sma"] > 6
    assert sma_grid.indicator_evictions == 0
