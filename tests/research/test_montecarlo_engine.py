"""engine/montecarlo.py against answers known without it: closed-form shuffles, binomial
bootstraps, the normal law of a sum of i.i.d. log returns, degenerate lists and hand-made paths."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from backtester.engine.errors import ConfigError
from backtester.engine.montecarlo import (
    CHUNK,
    FAN_LEVELS,
    MonteCarloConfig,
    aggregate_returns,
    bar_returns,
    default_block_length,
    fan_steps,
    histogram,
    path_stats,
    percentile_interval,
    result_summary,
    run_monte_carlo,
    summarize,
    trade_equity_returns,
)


def mc(returns, method="shuffle", **kwargs):
    return run_monte_carlo(np.asarray(returns, dtype=float), MonteCarloConfig(method, **kwargs))


# --- shuffling ------------------------------------------------------------------------------


def test_shuffling_keeps_the_final_return_of_every_path_and_changes_the_drawdowns():
    rng = np.random.default_rng(7)
    trades = rng.normal(0.004, 0.03, 200)
    result = mc(trades, "shuffle", iterations=2_000, seed=1)
    exact = float(np.prod(1.0 + trades) - 1.0)
    np.testing.assert_allclose(result.final_return, exact, rtol=1e-12)
    assert result.original_final_return == pytest.approx(exact, rel=1e-12)
    # The order matters for the path: drawdowns spread out around the original one.
    assert np.unique(np.round(result.max_drawdown, 12)).shape[0] > 1000
    assert result.max_drawdown.min() < result.original_max_drawdown < result.max_drawdown.max()
    summary = result.summaries()["final_return"]
    assert summary.ci_low == pytest.approx(summary.ci_high, rel=1e-12)
    # The products differ in the last bits only: the histogram shows them as one value.
    edges, counts = histogram(result.final_return)
    assert counts.tolist() == [2_000]
    assert edges[0] < exact < edges[1]


def test_three_trade_shuffle_drawdown_follows_its_closed_form_distribution():
    # Trades +50 %, -20 %, -20 %: the win first or last gives -36 % (0.8 x 0.8 from a peak),
    # the win in the middle gives -20 %. Three orders are equally likely: P(-36 %) = 2/3.
    result = mc([0.5, -0.2, -0.2], "shuffle", iterations=30_000, seed=11, ruin_threshold=0.3)
    dd = result.max_drawdown
    deep = np.isclose(dd, -0.36, atol=1e-12)
    shallow = np.isclose(dd, -0.2, atol=1e-12)
    assert np.all(deep | shallow)
    sigma = math.sqrt(2 / 9 / 30_000)
    assert abs(deep.mean() - 2 / 3) < 5 * sigma
    # Ruin at -30 % is exactly the deep paths.
    assert result.ruined == int(deep.sum())
    assert result.probability_of_ruin == pytest.approx(deep.mean())


def test_two_trade_shuffle_fan_chart_has_the_closed_form_percentiles():
    # After the first trade a path is at 1.10 or 0.95 with probability 1/2 each; after the
    # second every path is at 1.10 x 0.95.
    result = mc([0.10, -0.05], "shuffle", iterations=4_000, seed=3)
    assert result.fan_x.tolist() == [0, 1, 2]
    assert result.fan_levels == FAN_LEVELS
    np.testing.assert_allclose(result.fan[:, 0], 1.0)
    low, high = FAN_LEVELS.index(5.0), FAN_LEVELS.index(95.0)
    assert result.fan[low, 1] == pytest.approx(0.95)
    assert result.fan[FAN_LEVELS.index(25.0), 1] == pytest.approx(0.95)
    assert result.fan[FAN_LEVELS.index(75.0), 1] == pytest.approx(1.10)
    assert result.fan[high, 1] == pytest.approx(1.10)
    np.testing.assert_allclose(result.fan[:, 2], 1.045, rtol=1e-12)
    np.testing.assert_allclose(result.original, [1.0, 1.10, 1.045])


# --- bootstrap of trades --------------------------------------------------------------------


def _binomial_quantile(n: int, q: float) -> int:
    """Smallest k with P(K <= k) >= q for K ~ Binomial(n, 1/2)."""
    total = 0.0
    for k in range(n + 1):
        total += math.comb(n, k) / 2**n
        if total >= q:
            return k
    return n


def test_bootstrap_of_two_trade_values_matches_the_binomial_law():
    # 10 trades of +10 % and 10 of -5 %: a resampled path holds K ~ Binomial(20, 1/2) winners
    # and ends at 1.1^K x 0.95^(20-K). The quantiles below are away from the CDF's steps.
    trades = [0.10] * 10 + [-0.05] * 10
    result = mc(trades, "bootstrap", iterations=50_000, seed=5)

    def final(k: int) -> float:
        return 1.1**k * 0.95 ** (20 - k) - 1.0

    summary = result.summaries()["final_return"]
    assert summary.p5 == pytest.approx(final(_binomial_quantile(20, 0.05)), rel=1e-9)
    assert summary.median == pytest.approx(final(_binomial_quantile(20, 0.5)), rel=1e-9)
    assert summary.p95 == pytest.approx(final(_binomial_quantile(20, 0.95)), rel=1e-9)
    assert summary.ci_low == pytest.approx(final(_binomial_quantile(20, 0.025)), rel=1e-9)
    assert summary.ci_high == pytest.approx(final(_binomial_quantile(20, 0.975)), rel=1e-9)
    # The mean of 1 + final is (E[per-trade factor])^20 = 1.025^20.
    assert summary.mean + 1.0 == pytest.approx(1.025**20, rel=0.01)


def test_bootstrap_of_a_constant_trade_list_is_degenerate():
    result = mc([0.02] * 12, "bootstrap", iterations=1_500, seed=9, years=2.0)
    exact = 1.02**12 - 1.0
    np.testing.assert_allclose(result.final_return, exact, rtol=1e-12)
    assert np.all(result.max_drawdown == 0.0)
    summaries = result.summaries()
    for name in ("final_return", "max_drawdown", "cagr"):
        s = summaries[name]
        assert s.ci_low == pytest.approx(s.ci_high, abs=1e-12)
        assert s.std == pytest.approx(0.0, abs=1e-12)
    assert summaries["cagr"].median == pytest.approx(math.sqrt(1.02**12) - 1.0)
    assert result.ruined == 0
    edges, counts = histogram(result.final_return)
    assert counts.tolist() == [1_500]
    assert edges[0] < exact < edges[1]


def test_a_constant_losing_list_is_ruined_on_every_path():
    result = mc([-0.1] * 10, "bootstrap", iterations=1_000, seed=2, ruin_threshold=0.5)
    np.testing.assert_allclose(result.max_drawdown, 0.9**10 - 1.0)
    assert result.probability_of_ruin == 1.0


# --- block bootstrap of bar returns ---------------------------------------------------------


@pytest.mark.parametrize("block_length", [1, 10])
def test_block_bootstrap_of_iid_normal_returns_gives_the_normal_final_log_wealth(block_length):
    # The final log wealth is a sum of n draws from the sample's log returns: by the CLT it is
    # about N(n m, n s^2) with m, s the sample's mean and population std (exactly so in the
    # mean for the circular block bootstrap, whatever the block length).
    rng = np.random.default_rng(2024)
    log_r = rng.normal(0.0005, 0.01, 1_500)
    result = mc(np.expm1(log_r), "block", iterations=20_000, seed=4, block_length=block_length)
    assert result.bars_per_step == 1
    assert result.block_steps == block_length
    final_log = np.log1p(result.final_return)
    n, m, s = log_r.shape[0], float(log_r.mean()), float(log_r.std())
    law = NormalDist(n * m, math.sqrt(n) * s)
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        assert np.percentile(final_log, q * 100) == pytest.approx(
            law.inv_cdf(q), abs=0.06 * law.stdev
        )
    assert final_log.mean() == pytest.approx(n * m, abs=0.05 * law.stdev)
    # The fan's last column is the distribution of the final equity.
    np.testing.assert_allclose(
        result.fan[:, -1], np.percentile(1.0 + result.final_return, FAN_LEVELS), rtol=1e-12
    )


def test_a_block_as_long_as_the_series_gives_rotations_with_the_same_final_return():
    rng = np.random.default_rng(8)
    returns = rng.normal(0.001, 0.02, 300)
    result = mc(returns, "block", iterations=1_000, seed=6, block_length=300)
    np.testing.assert_allclose(result.final_return, np.prod(1.0 + returns) - 1.0, rtol=1e-10)
    # Where the series is cut moves the drawdowns (the deepest stretch is often kept whole).
    assert np.unique(np.round(result.max_drawdown, 12)).shape[0] > 1


def test_block_sharpe_is_the_annualised_mean_over_std_of_the_steps():
    rng = np.random.default_rng(12)
    returns = rng.normal(0.001, 0.02, 400)
    result = mc(returns, "block", iterations=1_000, seed=1, block_length=400, periods_per_year=8760)
    expected = returns.mean() / returns.std(ddof=1) * math.sqrt(8760)
    assert result.original_sharpe == pytest.approx(expected, rel=1e-12)
    # Every path is a rotation of the same returns: the same Sharpe.
    np.testing.assert_allclose(result.sharpe, expected, rtol=1e-9)
    assert "sharpe" in result.summaries()
    assert mc(returns, "shuffle", iterations=10, periods_per_year=8760).sharpe is None


def test_long_curves_are_compounded_into_steps_and_the_block_is_converted():
    rng = np.random.default_rng(1)
    returns = rng.normal(0.0, 0.001, 5_000)
    result = mc(returns, "block", iterations=1_000, seed=3, block_length=30, max_steps=1_000)
    assert result.bars_per_step == 5
    assert result.steps == 1_000
    assert result.block_steps == 6
    assert result.original_final_return == pytest.approx(np.prod(1.0 + returns) - 1.0)
    default = mc(returns, "block", iterations=1_000, max_steps=1_000)
    assert default.block_steps == round(default_block_length(5_000) / 5)


def test_aggregate_returns_compounds_groups_of_bars():
    steps, k = aggregate_returns([0.1, -0.1, 0.2], max_steps=2)
    assert k == 2
    np.testing.assert_allclose(steps, [1.1 * 0.9 - 1.0, 0.2])
    same, k1 = aggregate_returns([0.1, -0.1], max_steps=5)
    assert k1 == 1
    np.testing.assert_allclose(same, [0.1, -0.1])


def test_default_block_length_is_the_rounded_cube_root():
    assert default_block_length(1) == 1
    assert default_block_length(500) == 8
    assert default_block_length(8_760) == 21


# --- path statistics and P(ruin) by hand ----------------------------------------------------


def test_path_stats_on_four_hand_made_paths():
    paths = np.array(
        [
            [1.2, 0.6, 0.9],  # peak 1.2 then 0.6: -50 %
            [0.9, 0.8, 1.1],  # from the starting capital to 0.8: -20 %
            [0.4, 0.5, 0.6],  # -60 %
            [1.1, 1.21, 1.3],  # never below a peak
        ]
    )
    final, dd, ruined = path_stats(paths.copy(), 0.5)
    np.testing.assert_allclose(final, [-0.1, 0.1, -0.4, 0.3])
    np.testing.assert_allclose(dd, [-0.5, -0.2, -0.6, 0.0])
    assert ruined == 2  # reaching -50 % counts
    assert path_stats(paths.copy(), 0.55)[2] == 1
    assert path_stats(paths.copy(), 0.1)[2] == 3


def test_trade_equity_returns_compound_to_the_realized_equity():
    pnl = np.array([100.0, -55.0, 200.0])
    r = trade_equity_returns(pnl, 1_000.0)
    np.testing.assert_allclose(r, [0.1, -55.0 / 1_100.0, 200.0 / 1_045.0])
    assert np.prod(1.0 + r) == pytest.approx((1_000.0 + pnl.sum()) / 1_000.0, rel=1e-14)


def test_a_loss_bigger_than_the_equity_is_capped_and_the_account_stays_dead():
    np.testing.assert_allclose(trade_equity_returns([-1_500.0, 10.0], 1_000.0), [-1.0, 0.0])


def test_bar_returns_start_from_the_capital():
    np.testing.assert_allclose(bar_returns([110.0, 99.0, 99.0], 100.0), [0.1, -0.1, 0.0])
    np.testing.assert_allclose(bar_returns([0.0, 0.0], 100.0), [-1.0, 0.0])


def test_cagr_of_each_path_uses_the_span_in_years():
    result = mc([0.21], "shuffle", iterations=10, years=2.0)
    np.testing.assert_allclose(result.cagr, 0.1)
    assert result.original_cagr == pytest.approx(0.1)
    assert mc([-1.0], "shuffle", iterations=10, years=2.0).cagr.tolist() == [-1.0] * 10


# --- reproducibility and chunking -----------------------------------------------------------


def test_a_seed_reproduces_a_run_and_longer_runs_extend_shorter_ones():
    rng = np.random.default_rng(5)
    trades = rng.normal(0.002, 0.02, 80)
    for method in ("shuffle", "bootstrap", "block"):
        long = mc(trades, method, iterations=2 * CHUNK + 500, seed=42)
        again = mc(trades, method, iterations=2 * CHUNK + 500, seed=42)
        short = mc(trades, method, iterations=CHUNK, seed=42)
        other = mc(trades, method, iterations=CHUNK, seed=43)
        np.testing.assert_array_equal(long.max_drawdown, again.max_drawdown)
        np.testing.assert_array_equal(long.final_return, again.final_return)
        np.testing.assert_array_equal(long.max_drawdown[:CHUNK], short.max_drawdown)
        assert not np.array_equal(short.max_drawdown, other.max_drawdown)
        assert long.iterations == 2 * CHUNK + 500


def test_the_fan_is_sampled_at_about_fan_points_steps():
    assert fan_steps(3, 101).tolist() == [0, 1, 2, 3]
    steps = fan_steps(500, 101)
    assert steps[0] == 0
    assert steps[-1] == 500
    assert steps.shape[0] == 101
    result = mc(np.full(500, 0.001), "shuffle", iterations=10)
    assert result.fan.shape == (len(FAN_LEVELS), 101)
    np.testing.assert_allclose(result.fan[2], 1.001**result.fan_x, rtol=1e-12)


# --- summaries and histograms ---------------------------------------------------------------


def test_summaries_and_histograms_skip_non_finite_values():
    values = np.array([1.0, 2.0, 3.0, 4.0, np.nan, np.inf])
    s = summarize(values, original=2.5)
    assert s.mean == pytest.approx(2.5)
    assert s.median == pytest.approx(2.5)
    assert s.original == 2.5
    assert percentile_interval(values, 0.5) == pytest.approx((1.75, 3.25))
    edges, counts = histogram(values, bins=3)
    assert counts.sum() == 4
    assert edges[0] == 1.0
    assert edges[-1] == 4.0
    empty = summarize([np.nan], original=1.0)
    assert math.isnan(empty.mean)
    assert empty.as_dict()["original"] == 1.0
    assert all(math.isnan(v) for v in percentile_interval([np.nan]))
    assert histogram([np.nan])[1].shape == (0,)


def test_result_summary_is_plain_numbers():
    result = mc([0.1, -0.05, 0.02], "bootstrap", iterations=1_000, seed=1, years=1.0)
    digest = result_summary(result)
    assert digest["iterations"] == 1_000
    assert digest["method"] == "bootstrap"
    assert set(digest["summaries"]) == {"final_return", "max_drawdown", "cagr"}
    assert 0.0 <= digest["probability_of_ruin"] <= 1.0


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"method": "jackknife"}, "method"),
        ({"method": "shuffle", "iterations": 0}, "iterations"),
        ({"method": "shuffle", "iterations": 100_001}, "iterations"),
        ({"method": "shuffle", "iterations": True}, "iterations"),
        ({"method": "shuffle", "seed": -1}, "seed"),
        ({"method": "block", "block_length": 0}, "block_length"),
        ({"method": "shuffle", "ruin_threshold": 0.0}, "ruin_threshold"),
        ({"method": "shuffle", "ruin_threshold": 1.5}, "ruin_threshold"),
        ({"method": "shuffle", "years": 0.0}, "years"),
        ({"method": "block", "periods_per_year": -1.0}, "periods_per_year"),
        ({"method": "shuffle", "fan_points": 1}, "fan_points"),
        ({"method": "block", "max_steps": 1}, "max_steps"),
        ({"method": "shuffle", "ci_level": 1.0}, "ci_level"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        MonteCarloConfig(**kwargs)


@pytest.mark.parametrize("returns", [[], [0.1, float("nan")], [0.1, -1.5], [[0.1, 0.2]]], ids=str)
def test_impossible_return_series_are_refused(returns):
    with pytest.raises(ConfigError):
        mc(returns, "shuffle", iterations=10)


def test_bad_inputs_to_the_return_builders_are_refused():
    with pytest.raises(ConfigError):
        trade_equity_returns([1.0], 0.0)
    with pytest.raises(ConfigError):
        trade_equity_returns([[1.0]], 100.0)
    with pytest.raises(ConfigError):
        trade_equity_returns([float("inf")], 100.0)
    with pytest.raises(ConfigError):
        bar_returns([], 100.0)
    with pytest.raises(ConfigError):
        bar_returns([1.0], -5.0)


def test_long_blocks_drawn_without_the_block_table_give_the_same_paths(monkeypatch):
    from backtester.engine import montecarlo as module

    rng = np.random.default_rng(4)
    returns = rng.normal(0.0005, 0.01, 600)
    with_table = mc(returns, "block", iterations=1_500, seed=8, block_length=25)
    monkeypatch.setattr(module, "_BLOCK_TABLE_MAX", 0)
    without = mc(returns, "block", iterations=1_500, seed=8, block_length=25)
    np.testing.assert_array_equal(with_table.max_drawdown, without.max_drawdown)
    np.testing.assert_array_equal(with_table.final_return, without.final_return)
