"""Pre-trade check benchmark: ``risk.rules.check_order`` with 50 open positions and the
correlation filter on.

Target (issue 12): at most 1 ms per call (median), since copy trading calls it before every
order it sends.

    .venv/bin/python bench/risk_bench.py
    .venv/bin/python bench/risk_bench.py --positions 200 --lookback 96 --calls 5000

What is timed is the pure check exactly as ``risk.services.order_check`` runs it once the
state is built: price checks, breakers (drawdown, daily, weekly), rate limit, protections
(cooldown, stop-loss guard and low-profit lock over 200 recent trades), max positions, the
size (fixed risk from the stop), position and order caps, the correlation of the candidate's
returns with each of the 50 open positions' over the lookback, heat and leverage. Every limit
is on and none denies, so every call walks the whole path. The state (positions, return
series, trades) is built before the clock starts; numba's sizing core is warmed up first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from risk.rules import (  # noqa: E402
    ClosedTrade,
    Limits,
    OpenPosition,
    Proposal,
    RiskState,
    check_order,
)

TARGET_MS = 1.0
NOW = 1_709_740_800_000


def build(positions: int, lookback: int, seed: int) -> tuple[RiskState, Proposal]:
    rng = np.random.default_rng(seed)
    symbols = [f"C{i:03d}/USDT" for i in range(positions)]
    returns = {s: rng.normal(0, 0.01, lookback + 10) for s in [*symbols, "NEW/USDT"]}
    held = tuple(
        OpenPosition(s, float(rng.uniform(0.1, 1.0)), float(rng.uniform(10, 100)), stop=5.0)
        for s in symbols
    )
    trades = tuple(
        ClosedTrade(
            symbols[i % positions],
            NOW - int(rng.integers(1, 10_000_000)),
            float(rng.normal(0.01, 0.02)),
            stop_loss=bool(i % 7 == 0),
        )
        for i in range(200)
    )
    limits = Limits(
        sizing="risk",
        risk_per_trade=0.005,
        max_position_fraction=0.5,
        max_heat=0.5,
        max_open_positions=positions + 10,
        max_leverage=10.0,
        max_order_notional=1e9,
        max_orders_per_minute=1000,
        drawdown_limit=0.5,
        daily_loss_limit=0.5,
        weekly_loss_limit=0.6,
        cooldown_minutes=1,
        stoploss_guard_count=100,
        stoploss_guard_lookback_minutes=1,
        stoploss_guard_lock_minutes=1,
        low_profit_lookback_minutes=1,
        low_profit_min=-1.0,
        low_profit_lock_minutes=1,
        correlation_threshold=0.99,
        correlation_lookback=lookback,
        correlation_mode="shrink",
    )
    state = RiskState(
        now_ms=NOW,
        equity=1_000_000.0,
        limits=limits,
        peak_equity=1_050_000.0,
        day_start_equity=1_010_000.0,
        week_start_equity=1_020_000.0,
        month_start_equity=1_000_000.0,
        positions=held,
        order_times_ms=tuple(NOW - i * 1000 for i in range(20)),
        trades=trades,
        returns=returns,
    )
    return state, Proposal("NEW/USDT", 1, 50.0, stop=48.0, lot_step=0.001, min_notional=5.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=50)
    parser.add_argument("--lookback", type=int, default=48, help="correlation lookback (48)")
    parser.add_argument("--calls", type=int, default=2000, help="timed calls (2000)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    state, proposal = build(args.positions, args.lookback, args.seed)
    decision = check_order(state, proposal)  # warm-up (numba compile or cache load)
    if not decision.allowed or "correlation" not in decision.figures:
        print(f"the benchmark state must walk the whole path, got {decision}", file=sys.stderr)
        return 2
    for _ in range(200):
        check_order(state, proposal)
    times = []
    for _ in range(args.calls):
        t0 = time.perf_counter()
        check_order(state, proposal)
        times.append(time.perf_counter() - t0)
    median_ms = statistics.median(times) * 1000
    p99_ms = float(np.percentile(times, 99)) * 1000
    print(
        f"check_order: {args.positions} open positions, correlation filter on "
        f"(lookback {args.lookback}), every limit on; {args.calls} calls"
    )
    print(f"  decision: {decision.status} qty {decision.qty:.6g} ({'; '.join(decision.reasons)})")
    print(f"  median {median_ms:.3f} ms, p99 {p99_ms:.3f} ms per call")
    ok = median_ms <= TARGET_MS
    print(
        f"{'PASS' if ok else 'FAIL'}  check_order median <= {TARGET_MS:g} ms ({median_ms:.3f} ms)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
