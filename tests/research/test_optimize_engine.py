"""Specification of backtester.engine.optimize: the search space, grid enumeration and seeded
random sampling, constraints, objectives (against the engine's metrics and a hand-computed
oracle), rows equal to single backtests, and ranking."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from backtester.engine import optimize as opt
from backtester.engine.candles import Candles
from backtester.engine.errors import EngineError, StrategyError
from backtester.engine.language import PRESETS, Param, StrategySpec
from backtester.engine.run import run_backtest
from backtester.engine.simulate import SimConfig

HOUR = 3_600_000
START = 1_700_000_000_000
CROSS = PRESETS["sma_cross"]
CONFIG = SimConfig(taker_fee=0.001, maker_fee=0.0005, slippage_bps=1.0)


def walk(n: int, *, seed: int = 3, timeframe: str = "1h") -> Candles:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0002, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.random(n) * 0.002)
    low = np.minimum(open_, close) * (1 - rng.random(n) * 0.002)
    ts = START + HOUR * np.arange(n, dtype=np.int64)
    return Candles(ts, open_, high, low, close, np.ones(n), timeframe=timeframe)


@pytest.fixture(scope="module")
def candles() -> Candles:
    return walk(3000)


# --- the search space -----------------------------------------------------------------------


def test_a_parameter_left_out_takes_its_declared_grid() -> None:
    space = opt.search_space(CROSS)
    assert space.axes == (
        ("fast", CROSS.param("fast").values()),
        ("slow", CROSS.param("slow").values()),
    )
    assert space.size == 10 * 19


def test_ranges_take_lists_low_high_step_and_fixed_values() -> None:
    space = opt.search_space(
        CROSS, {"fast": {"low": "10", "high": 20, "step": 5}, "slow": [40, 30, 40]}
    )
    assert space.axes == (("fast", (10, 15, 20)), ("slow", (40, 30)))
    fixed = opt.search_space(CROSS, {"fast": 25, "slow": {"low": 100}})
    assert fixed.axes == (("fast", (25,)), ("slow", tuple(range(100, 201, 10))))
    # A step smaller than the declared one is allowed; it is not a value of the parameter.
    assert opt.search_space(CROSS, {"fast": {"low": 5, "high": 8, "step": 1}}).axes[0][1] == (
        5,
        6,
        7,
        8,
    )


def test_float_ranges_follow_the_grid_rules_without_drift() -> None:
    spec = PRESETS["bollinger_reversion"]
    space = opt.search_space(spec, {"k": {"low": 1.0, "high": 1.3, "step": 0.1}})
    assert dict(space.axes)["k"] == (1.0, 1.1, 1.2, 1.3)
    # The declared step applies when none is given ...
    declared = opt.search_space(spec, {"k": {"low": 1.0, "high": 2.0}})
    assert dict(declared.axes)["k"] == (1.0, 1.25, 1.5, 1.75, 2.0)
    # ... and without one a float range is cut into quarters.
    bare = StrategySpec(
        "bands",
        entry_long="close < bb_lower(close, 20, k)",
        params=(Param("k", "float", 2.0, 1.0, 3.0),),
    )
    quarters = opt.search_space(bare, {"k": {"low": 1.0, "high": 3.0}})
    assert dict(quarters.axes)["k"] == (1.0, 1.5, 2.0, 2.5, 3.0)


@pytest.mark.parametrize(
    ("ranges", "field", "fragment"),
    [
        ({"fast": {"low": 5, "high": 60}}, "fast", "between 5 and 50"),
        ({"fast": {"low": 30, "high": 20}}, "fast", "starts above its end"),
        ({"fast": {"low": 5, "high": 20, "step": 0}}, "fast", "more than 0"),
        ({"fast": {"low": 5, "high": 20, "step": 2.5}}, "fast", "whole number"),
        ({"fast": {"low": 5, "high": 20, "step": "x"}}, "fast", "must be a number"),
        ({"fast": {"low": 5, "high": 20, "step": True}}, "fast", "must be a number"),
        ({"fast": {"start": 5}}, "fast", "low, high and step"),
        ({"fast": []}, "fast", "no values"),
        ({"fast": [5, "abc"]}, "fast", "must be a number"),
        ({"fats": [5]}, "fats", "did you mean 'fast'"),
        ({"fast": object()}, "fast", "must be a list"),
    ],
)
def test_bad_ranges_name_the_parameter(ranges, field, fragment) -> None:
    with pytest.raises(StrategyError) as caught:
        opt.search_space(CROSS, ranges)
    assert caught.value.field == field
    assert fragment in str(caught.value)


def test_a_bool_takes_values_not_a_range_and_an_undeclared_range_needs_bounds() -> None:
    poly = PRESETS["polyband_reversion"]
    assert dict(opt.search_space(poly, {"exit_at_upper": [True]}).axes)["exit_at_upper"] == (True,)
    with pytest.raises(StrategyError, match="values to try"):
        opt.search_space(poly, {"exit_at_upper": {"low": 0, "high": 1}})
    bare = StrategySpec("bare", entry_long="close > n", params=(Param("n", "int", 3),))
    assert opt.search_space(bare).axes == (("n", (3,)),)
    with pytest.raises(StrategyError, match="declares no range"):
        opt.search_space(bare, {"n": {"step": 1}})
    assert opt.search_space(bare, {"n": {"low": 1, "high": 3}}).axes == (("n", (1, 2, 3)),)


def test_lattice_index_decodes_in_product_order() -> None:
    space = opt.search_space(CROSS, {"fast": [5, 10, 15], "slow": [20, 30]})
    assert [space.combination(i) for i in range(space.size)] == list(space)
    assert list(space) == [
        {"fast": f, "slow": s} for f, s in itertools.product((5, 10, 15), (20, 30))
    ]
    with pytest.raises(IndexError):
        space.combination(6)


# --- enumeration, sampling, constraints -----------------------------------------------------


def test_grid_enumerates_every_combination_passing_the_constraint() -> None:
    space = opt.search_space(CROSS, {"fast": [5, 10, 15, 20], "slow": [20, 30]})
    plan = opt.plan_combinations(CROSS, space, constraint="fast * 2 < slow")
    expected = [
        {"fast": f, "slow": s} for f, s in itertools.product((5, 10, 15, 20), (20, 30)) if f * 2 < s
    ]
    assert list(plan.combinations) == expected
    assert plan.space_size == 8
    assert plan.rejected == 8 - len(expected)
    assert plan.method == "grid"


def test_a_callable_constraint_works_like_an_expression() -> None:
    space = opt.search_space(CROSS, {"fast": [5, 10, 15, 20], "slow": [20, 30]})
    by_text = opt.plan_combinations(CROSS, space, constraint="fast < slow and slow != 30")
    by_code = opt.plan_combinations(
        CROSS, space, constraint=lambda p: p["fast"] < p["slow"] and p["slow"] != 30
    )
    assert by_text.combinations == by_code.combinations


def test_a_constraint_with_an_unknown_name_is_refused() -> None:
    with pytest.raises(StrategyError) as caught:
        opt.plan_combinations(CROSS, opt.search_space(CROSS), constraint="fast < slower")
    assert caught.value.field == "constraint"
    assert "slower" in caught.value.message


def test_a_grid_too_large_to_enumerate_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(opt, "MAX_LATTICE", 100)
    with pytest.raises(EngineError, match="random search"):
        opt.plan_combinations(CROSS, opt.search_space(CROSS))


def test_random_search_draws_distinct_points_of_the_lattice_reproducibly() -> None:
    space = opt.search_space(CROSS)
    a = opt.plan_combinations(CROSS, space, method="random", samples=40, seed=7)
    b = opt.plan_combinations(CROSS, space, method="random", samples=40, seed=7)
    c = opt.plan_combinations(CROSS, space, method="random", samples=40, seed=8)
    assert a.combinations == b.combinations
    assert a.combinations != c.combinations
    keys = [tuple(sorted(p.items())) for p in a.combinations]
    assert len(set(keys)) == 40
    lattice = {tuple(sorted(p.items())) for p in space}
    assert set(keys) <= lattice
    assert a.method == "random"


def test_random_search_is_uniform_over_the_lattice() -> None:
    # 4 x 5 lattice, one point drawn per seed: every point comes up about 1/20 of the time.
    space = opt.search_space(CROSS, {"fast": [5, 10, 15, 20], "slow": [20, 30, 40, 50, 60]})
    counts: dict[tuple, int] = {}
    for seed in range(4000):
        (combo,) = opt.random_combinations(space, 1, seed=seed).combinations
        key = (combo["fast"], combo["slow"])
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 20
    # Binomial(4000, 0.05): mean 200, sd ~13.8; 6 sd either side.
    assert all(117 <= n <= 283 for n in counts.values()), counts


def test_random_search_respects_the_constraint_and_stops_when_the_lattice_runs_out() -> None:
    space = opt.search_space(CROSS, {"fast": [5, 10, 15, 20], "slow": [20, 30]})
    plan = opt.plan_combinations(
        CROSS, space, method="random", samples=50, seed=1, constraint="fast < slow"
    )
    assert len(plan.combinations) == 7  # all that pass: (20, 20) fails
    assert all(p["fast"] < p["slow"] for p in plan.combinations)
    assert plan.rejected == 1


def test_random_search_on_a_huge_lattice_draws_each_parameter_independently(monkeypatch) -> None:
    monkeypatch.setattr(opt, "_PERMUTATION_LIMIT", 10)
    space = opt.search_space(CROSS)
    a = opt.random_combinations(space, 30, seed=5, constraint=lambda p: p["fast"] < p["slow"])
    b = opt.random_combinations(space, 30, seed=5, constraint=lambda p: p["fast"] < p["slow"])
    assert a.combinations == b.combinations
    assert len({tuple(sorted(p.items())) for p in a.combinations}) == 30
    assert all(p["fast"] < p["slow"] for p in a.combinations)
    # A constraint nothing meets: it gives up after its draws instead of looping forever.
    none = opt.random_combinations(space, 3, seed=5, constraint=lambda p: False)
    assert none.combinations == ()
    assert 0 < none.rejected <= 3 * opt._DRAWS_PER_SAMPLE


@pytest.mark.parametrize("samples", [0, -1, 2.5, True, None])
def test_random_search_needs_a_positive_whole_number_of_samples(samples) -> None:
    with pytest.raises(EngineError, match="samples"):
        opt.plan_combinations(CROSS, opt.search_space(CROSS), method="random", samples=samples)


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(EngineError, match="grid or random"):
        opt.plan_combinations(CROSS, opt.search_space(CROSS), method="genetic")


# --- objectives -----------------------------------------------------------------------------


def test_every_objective_is_larger_is_better_and_documented() -> None:
    assert set(opt.OBJECTIVES) == {
        "sharpe",
        "sortino",
        "calmar",
        "total_return",
        "profit_factor",
        "return_over_drawdown",
    }
    assert all(o.definition and o.label for o in opt.OBJECTIVES.values())
    with pytest.raises(EngineError, match="unknown objective"):
        opt.objective_value("alpha", {})


def _reference_run(close: np.ndarray, cash: float) -> tuple[np.ndarray, list[float]]:
    """Buy all-in at a close below the previous close, sell at a close above it, no costs:
    the equity at every close and each closed trade's profit, worked out directly."""
    equity = np.empty(close.size)
    qty = 0.0
    entry = 0.0
    pnls: list[float] = []
    for t in range(close.size):
        if t > 0 and qty > 0 and close[t] > close[t - 1]:
            cash = qty * close[t]
            pnls.append(qty * (close[t] - entry))
            qty = 0.0
        elif t > 0 and qty == 0 and close[t] < close[t - 1]:
            qty = cash / close[t]
            entry = close[t]
            cash = 0.0
        equity[t] = cash + qty * close[t]
    return equity, pnls


def test_objectives_match_a_hand_computed_run() -> None:
    rng = np.random.default_rng(21)
    n = 400
    close = 100 * np.exp(np.cumsum(rng.normal(0.0005, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    candles = Candles(
        START + HOUR * np.arange(n, dtype=np.int64),
        open_,
        np.maximum(open_, close) * 1.001,
        np.minimum(open_, close) * 0.999,
        close,
        np.ones(n),
        timeframe="1h",
    )
    spec = StrategySpec(
        "dip",
        entry_long="close < shift(close, 1)",
        exit_long="close > shift(close, 1)",
        params=(Param("unused", "int", 1, 1, 2),),
    )
    config = SimConfig(fill="close", taker_fee=0.0, maker_fee=0.0, initial_cash=1000.0)
    (row,) = opt.evaluate_combinations(candles, spec, [{"unused": 1}], config, objective="sharpe")

    equity, pnls = _reference_run(close, 1000.0)
    curve = np.r_[1000.0, equity]
    r = curve[1:] / curve[:-1] - 1.0
    ppy = 8760.0
    sharpe = r.mean() / r.std(ddof=1) * math.sqrt(ppy)
    downside = math.sqrt(np.mean(np.minimum(r, 0.0) ** 2)) * math.sqrt(ppy)
    sortino = r.mean() * ppy / downside
    total = equity[-1] / 1000.0 - 1.0
    cagr = (equity[-1] / 1000.0) ** (ppy / n) - 1.0
    mdd = float(np.min(curve / np.maximum.accumulate(curve) - 1.0))
    wins = sum(p for p in pnls if p > 0)
    losses = -sum(p for p in pnls if p < 0)
    expected = {
        "sharpe": sharpe,
        "sortino": sortino,
        "calmar": cagr / abs(mdd),
        "total_return": total,
        "profit_factor": wins / losses,
        "return_over_drawdown": total / abs(mdd),
    }
    assert row["trades"] == len(pnls) > 20
    for name, value in expected.items():
        assert opt.objective_value(name, row) == pytest.approx(value, rel=1e-9), name
    assert row["final_equity"] == pytest.approx(equity[-1], rel=1e-12)


def test_objectives_read_the_engines_metrics(candles: Candles) -> None:
    single = run_backtest(candles, CROSS, {"fast": 10, "slow": 40}, CONFIG)
    (row,) = opt.evaluate_combinations(candles, CROSS, [{"fast": 10, "slow": 40}], CONFIG)
    for name in ("sharpe", "sortino", "calmar", "total_return", "profit_factor"):
        assert opt.objective_value(name, row) == single.metrics[name], name
        assert opt.objective_value(name, single.metrics) == single.metrics[name], name
    ratio = single.metrics["total_return"] / abs(single.metrics["max_drawdown"])
    assert opt.objective_value("return_over_drawdown", single.metrics) == ratio
    assert row["return_over_drawdown"] == ratio


def test_return_over_drawdown_follows_the_zero_denominator_convention() -> None:
    assert opt.return_over_drawdown(0.2, -0.1) == pytest.approx(2.0)
    assert opt.return_over_drawdown(0.2, 0.0) == math.inf
    assert opt.return_over_drawdown(-0.2, 0.0) == -math.inf
    assert math.isnan(opt.return_over_drawdown(0.0, 0.0))
    assert math.isnan(opt.return_over_drawdown(math.nan, -0.1))


# --- evaluation -----------------------------------------------------------------------------


def test_rows_equal_running_each_combination_through_run_backtest(candles: Candles) -> None:
    plan = opt.plan_combinations(
        CROSS,
        opt.search_space(CROSS, {"fast": [5, 10, 20], "slow": [20, 50, 100]}),
        constraint="fast < slow",
    )
    rows = opt.evaluate_combinations(
        candles, CROSS, plan.combinations, CONFIG, objective="sortino", start_index=100
    )
    assert [r["index"] for r in rows] == list(range(100, 100 + len(plan.combinations)))
    for combo, row in zip(plan.combinations, rows, strict=True):
        single = run_backtest(candles, CROSS, combo, CONFIG)
        assert row["params"] == single.params
        assert row["trades"] == single.sim.trades.shape[0]
        assert row["final_equity"] == pytest.approx(single.sim.equity[-1], rel=1e-12)
        for key in opt.ROW_METRICS:
            if key in single.metrics:
                assert row[key] == pytest.approx(single.metrics[key], rel=1e-12, nan_ok=True), key
        assert row["objective"] == single.metrics["sortino"]


def test_each_distinct_indicator_is_computed_once_across_combinations(candles: Candles) -> None:
    from backtester.engine.grid import _CountingCache

    cache = _CountingCache(1 << 30)
    combos = [{"fast": f, "slow": s} for f in (5, 10, 15) for s in (20, 30, 40)]
    opt.evaluate_combinations(candles, CROSS, combos, CONFIG, cache=cache)
    assert cache.computed == {"sma": 6}


def test_runs_below_the_minimum_trades_are_kept_but_never_ranked(candles: Candles) -> None:
    combos = [{"fast": 5, "slow": 20}, {"fast": 50, "slow": 200}]
    rows = opt.evaluate_combinations(candles, CROSS, combos, CONFIG, min_trades=15)
    few = [r for r in rows if r["trades"] < 15]
    assert few, "the slow pair should trade rarely on 3,000 bars"
    assert all(not r["qualified"] and math.isnan(r["objective"]) for r in few)
    assert all(r["qualified"] for r in rows if r["trades"] >= 15)
    assert opt.best_row(few) is None


@pytest.mark.parametrize("min_trades", [-1, 1.5, True])
def test_min_trades_must_be_a_whole_number(candles: Candles, min_trades) -> None:
    with pytest.raises(EngineError, match="min_trades"):
        opt.evaluate_combinations(candles, CROSS, [{}], CONFIG, min_trades=min_trades)


def test_empty_candles_are_refused() -> None:
    empty = walk(10).slice(0, 0)
    with pytest.raises(EngineError, match="empty"):
        opt.evaluate_combinations(empty, CROSS, [{}], CONFIG)


def test_should_stop_cancels_between_combinations(candles: Candles) -> None:
    asked: list[int] = []

    def stop() -> bool:
        asked.append(1)
        return True

    combos = [{"fast": 5, "slow": s} for s in range(20, 201, 10)] * 3
    with pytest.raises(opt.SearchCancelled):
        opt.evaluate_combinations(candles, CROSS, combos, CONFIG, should_stop=stop)
    assert asked == [1]  # first asked after STOP_CHECK_EVERY combinations


def test_ranking_puts_infinity_first_nan_last_and_breaks_ties_by_index() -> None:
    rows = [
        {"index": 0, "objective": 1.0},
        {"index": 1, "objective": math.nan},
        {"index": 2, "objective": math.inf},
        {"index": 3, "objective": 1.0},
        {"index": 4, "objective": -2.0},
    ]
    assert [r["index"] for r in opt.rank_rows(rows)] == [2, 0, 3, 4, 1]
    assert (top := opt.best_row(rows)) is not None
    assert top["index"] == 2
    assert opt.is_better({"index": 3, "objective": 1.0}, {"index": 0, "objective": 1.0}) is False
    assert opt.is_better({"index": 0, "objective": 1.0}, {"index": 3, "objective": 1.0}) is True
    assert opt.is_better({"index": 9, "objective": math.nan}, None) is False
    assert opt.is_better({"index": 9, "objective": -5.0}, None) is True


def test_chunked_evaluation_ranks_exactly_like_one_pass(candles: Candles) -> None:
    plan = opt.plan_combinations(
        CROSS, opt.search_space(CROSS), method="random", samples=60, seed=3
    )
    whole = opt.evaluate_combinations(candles, CROSS, plan.combinations, CONFIG)
    parts: list[dict] = []
    for first in range(0, 60, 17):
        parts += opt.evaluate_combinations(
            candles, CROSS, plan.combinations[first : first + 17], CONFIG, start_index=first
        )
    assert [r["index"] for r in opt.rank_rows(parts)] == [r["index"] for r in opt.rank_rows(whole)]
    best = None
    for first in range(0, 60, 17):  # chunks finishing in any order keep the same best
        chunk_best = opt.best_row(parts[first : first + 17])
        if chunk_best is not None and opt.is_better(chunk_best, best):
            best = chunk_best
    assert best is not None
    assert (top := opt.best_row(whole)) is not None
    assert best["index"] == top["index"]
