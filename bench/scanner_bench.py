"""Signal scanner benchmark: fit the bands and signal 100 symbols x 720 daily candles.

Target (issue 6): a scan of 100 symbols x 720 daily candles in 1 s or less, data loading
excluded (median of 5 runs).

    .venv/bin/python bench/scanner_bench.py
    .venv/bin/python bench/scanner_bench.py --symbols 500 --candles 2000 --lookback 300 --runs 9

What is timed is ``backtester.engine.scanner.scan`` — the scanner's own work: taking each
symbol's last ``lookback`` closes, fitting every window at once, the bands, z-scores, signals,
potential returns and reasons — exactly what the scan task runs between loading the candles and
saving the alerts. The closes are synthetic random walks made before the clock starts (loading
is excluded by the target); for reference the script also times the bands of every bar
(``polyreg_bands`` per symbol, what the per-symbol chart draws), which the scan never needs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backtester.engine.indicators import polyreg_bands  # noqa: E402
from backtester.engine.scanner import BUY, HOLD, SELL, BandSettings, scan  # noqa: E402

TARGET_S = 1.0


def _closes(symbols: int, candles: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """Daily random walks with fat tails, each at its own price level (0.0001 .. 60,000)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, np.ndarray]] = []
    levels = np.exp(rng.uniform(np.log(1e-4), np.log(6e4), symbols))
    for i in range(symbols):
        steps = rng.standard_t(4, candles) * 0.03
        out.append((f"C{i:03d}/USDT", levels[i] * np.exp(np.cumsum(steps))))
    return out


def _load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min), {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--candles", type=int, default=720)
    parser.add_argument("--lookback", type=int, default=100)
    parser.add_argument("--degree", type=int, default=2)
    parser.add_argument("--k", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args(argv)

    settings = BandSettings(lookback=args.lookback, degree=args.degree, k=args.k)
    t0 = time.perf_counter()
    data = _closes(args.symbols, args.candles, args.seed)
    made = time.perf_counter() - t0
    print(
        f"scanner bench: {args.symbols} symbols x {args.candles} candles, lookback "
        f"{settings.lookback}, degree {settings.degree}, k {settings.k}"
    )
    print(f"machine load: {_load()}")
    print(f"(synthetic closes made in {made * 1000:.1f} ms, not timed)")

    scan(data[:2], settings)  # first call pays imports and the basis; not timed
    times: list[float] = []
    result = None
    for _ in range(args.runs):
        t = time.perf_counter()
        result = scan(data, settings)
        times.append(time.perf_counter() - t)
    assert result is not None
    median = statistics.median(times)
    counts = result.counts()
    print(
        "scan (fit + signals): "
        + ", ".join(f"{x * 1000:.2f} ms" for x in times)
        + f" -> median {median * 1000:.2f} ms"
    )
    print(f"signals: BUY {counts[BUY]}, SELL {counts[SELL]}, HOLD {counts[HOLD]}")

    t = time.perf_counter()
    for _, closes in data:
        polyreg_bands(closes, settings.lookback, settings.degree, settings.k)
    every_bar = time.perf_counter() - t
    print(f"for reference, bands at every bar of every symbol (charts): {every_bar * 1000:.1f} ms")

    verdict = "PASS" if median <= TARGET_S else "MISS"
    print(
        f"{verdict}: scan of {args.symbols} symbols x {args.candles} candles, median of "
        f"{args.runs} = {median:.4f} s (target <= {TARGET_S:.1f} s, data loading excluded)"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
