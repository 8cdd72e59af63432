"""Monte Carlo benchmark: 10,000 iterations of a 500-trade backtest, each method.

Target (issue 6): 1 s or less per run of 10,000 iterations (median of --repeat runs).

    .venv/bin/python bench/montecarlo_bench.py             # 5 runs per method
    .venv/bin/python bench/montecarlo_bench.py --repeat 9 --big

The backtest is the engine's own: an SMA 5/20 cross, long and short, 0.02 % taker fee, on a
seeded random walk of hourly candles, cut at the exit of its 500th closed trade. The shuffle and
bootstrap methods resample those 500 trades' equity returns; the block bootstrap resamples the
per-bar returns of the same equity curve (compounded into at most 2,000 steps, as the app does).
Timed: ``run_monte_carlo`` alone (the trades and curve are ready before the clock starts), the
same call the worker makes, including percentile bands, drawdowns, CAGR and Sharpe. No database
is needed. ``--big`` adds one 100,000-iteration shuffle with its peak traced memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_S = 1.0
ITERATIONS = 10_000
TRADES = 500
SEED = 20240101


def _backtest():  # -> (trade pnl, equity, initial cash, bars per year)
    import numpy as np

    from backtester.engine.candles import Candles
    from backtester.engine.language import PRESETS
    from backtester.engine.run import run_backtest
    from backtester.engine.simulate import SimConfig, candle_periods_per_year

    rng = np.random.default_rng(SEED)
    n = 40_000
    close = 30_000.0 * np.exp(np.cumsum(rng.standard_t(4, n) * 0.004))
    open_ = np.concatenate(([close[0]], close[:-1]))
    high = np.maximum(open_, close) * (1 + rng.random(n) * 0.002)
    low = np.minimum(open_, close) * (1 - rng.random(n) * 0.002)
    ts = 1_577_836_800_000 + np.arange(n, dtype=np.int64) * 3_600_000
    candles = Candles(ts, open_, high, low, close, np.ones(n), symbol="BTC/USDT", timeframe="1h")
    spec = PRESETS["sma_cross"]
    config = SimConfig(taker_fee=0.0002, allow_short=True)
    result = run_backtest(candles, spec, {"fast": 5, "slow": 20}, config)
    trades = result.sim.trades
    if trades.shape[0] < TRADES:
        raise SystemExit(f"the bench backtest made only {trades.shape[0]} trades")
    last_exit = int(trades["exit_index"][TRADES - 1])
    equity = np.asarray(result.sim.equity[: last_exit + 1], dtype=np.float64)
    return (
        np.asarray(trades["pnl"][:TRADES], dtype=np.float64),
        equity,
        float(config.initial_cash),
        candle_periods_per_year(candles),
    )


def _time(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per method (median shown)")
    parser.add_argument("--big", action="store_true", help="also time 100,000 iterations")
    args = parser.parse_args()

    from backtester.engine import montecarlo as mc

    pnl, equity, cash, per_year = _backtest()
    trade_returns = mc.trade_equity_returns(pnl, cash)
    bar_rets = mc.bar_returns(equity, cash)
    years = equity.shape[0] / per_year
    print(
        f"Monte Carlo bench: {TRADES} trades over {equity.shape[0]:,} hourly bars "
        f"({years:.2f} years), {ITERATIONS:,} iterations, median of {args.repeat}"
    )
    print(
        f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores"
    )
    mc.run_monte_carlo(trade_returns, mc.MonteCarloConfig("shuffle", iterations=1_000))  # warm

    medians: dict[str, float] = {}
    for method in mc.METHODS:
        source = bar_rets if method == "block" else trade_returns
        config = mc.MonteCarloConfig(
            method,
            iterations=ITERATIONS,
            seed=SEED,
            years=years,
            periods_per_year=per_year,
        )
        times = _time(lambda s=source, c=config: mc.run_monte_carlo(s, c), args.repeat)
        medians[method] = statistics.median(times)
        result = mc.run_monte_carlo(source, config)
        final = result.summaries()["final_return"]
        print(
            f"  {method:<9} median {medians[method] * 1000:7.1f} ms  "
            f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f})  "
            f"steps {result.steps}  final return 95 % CI {final.ci_low:+.2%} .. "
            f"{final.ci_high:+.2%}  P(ruin at -50 %) {result.probability_of_ruin:.2%}"
        )

    if args.big:
        config = mc.MonteCarloConfig("shuffle", iterations=mc.MAX_ITERATIONS, seed=SEED)
        tracemalloc.start()
        start = time.perf_counter()
        mc.run_monte_carlo(trade_returns, config)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        print(
            f"  100,000-iteration shuffle: {elapsed:.2f} s (traced), peak traced memory "
            f"{peak:,.0f} MB"
        )

    worst = max(medians.values())
    verdict = "PASS" if worst <= TARGET_S else "MISS"
    print(
        f"{verdict}     {ITERATIONS:,} Monte Carlo iterations of a {TRADES}-trade backtest: "
        f"slowest method {max(medians, key=lambda m: medians[m])} {worst:.3f} s "
        f"(target <= {TARGET_S:.0f} s)"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
