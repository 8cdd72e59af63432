"""Engine benchmark: this engine next to vectorbt and backtesting.py on the same data.

Run with the bench virtualenv (the peers live only there)::

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -r requirements.txt -r requirements-bench.txt
    .venv-bench/bin/python bench/engine_bench.py                # 1,000,000 bars, everything
    .venv-bench/bin/python bench/engine_bench.py --only single  # one backtest vs vectorbt,
                                                                # both data shapes
    .venv-bench/bin/python bench/engine_bench.py --only first   # first call, fresh process
    .venv-bench/bin/python bench/engine_bench.py --only grid    # the grid (vectorbt: ~12 GB)
    .venv-bench/bin/python bench/engine_bench.py --quick        # 100,000 bars smoke run

The last lines are one PASS / MISS verdict per target (one backtest >= 8x faster than
vectorbt on each data shape, grid >= 10x faster, grid peak memory < 1.5 GB); a target whose
cases were not run says NOT RUN.

(c) The first call in a fresh process: the first ``run_backtest`` of a new interpreter loads the
compiled kernels from numba's cache (numba's first load also imports scipy.linalg when scipy is
installed, as it is here, to probe for BLAS), and the ``backtest`` command run end to end on a
Parquet file of the walk, three times, each in a new process: wall time, the file reading and
the engine time it reports. The command loads the kernels in a background thread while it reads
the file, and skips numba's BLAS probe (no kernel uses BLAS).

What is measured
----------------
Data: a seeded, deterministic 1-minute random walk (Gaussian log returns, sigma 0.1 % a bar,
open = previous close, high/low a little outside), 1,000,000 bars ("walk"). A second shape,
"quiet", is the same walk in a market that trades on only ~30 % of the minutes (chosen at random,
never 20 still minutes in a row): on the others the candle is the previous close four times over
with zero volume. SMA 10/30
still makes ~19,000 round trips on it, but the account value is unchanged on ~82 % of the bars
(out of the market, or in it while the price stands still), so the per-bar returns are mostly
equal zeros: the data shape that made numpy's partition (VaR/CVaR/tail ratio) 20-30 times
slower. Case (a) runs on both shapes.

(a) One backtest, indicators and metrics included: SMA 10/30 cross, long only, all-in, fee
0.1 % per fill, signal on bar t's close filled at bar t+1's open; open position at the end
marked at the last close without exit fee.

* this engine: ``run_backtest`` with the ``sma_cross`` preset (compile + simulate + all
  metrics).
* vectorbt: ``MA.run`` x2, ``ma_crossed_above/below``, signals shifted one bar
  (``vbt.fshift(1)``) and ``Portfolio.from_signals(price=open, size=inf, fees=0.001,
  min_size=0)``, then final value, total return, Sharpe, max drawdown, trade count, win rate.
* backtesting.py: its ``SMA`` pattern (rolling mean) with ``lib.crossover`` in ``next()``,
  ``buy()`` all-in and ``position.close()``; market orders fill at the next bar's open by
  default; ``commission=0.001`` is charged on entry and exit like ours. It trades whole units
  only, so it runs through ``lib.FractionalBacktest`` (the docs' fractional-trading recipe:
  prices scaled by ``fractional_unit``) with a unit of 1e-24 so whole-unit rounding stays
  below 1e-12 of the account even after it has shrunk. Its statistics are computed by
  ``run()`` itself.

(b) The grid fast 5..50 step 5 x slow 20..200 step 20 with fast < slow (90 combinations):
this engine's ``grid_search`` (objective Sharpe) against vectorbt's broadcasting (``MA.run``
with one window per column and ``run_unique=True``, then one ``from_signals`` over all 90
columns and the same per-column statistics). backtesting.py's grid is left out (it replays
its Python loop per combination: minutes).

Why the initial cash is 1e40 and not 10,000: an all-in SMA cross on a driftless random walk
makes about 19,000 round trips over 10^6 bars (up to ~33,000 for the grid's fastest pairs), and
at 0.2 % per round trip the account shrinks by a factor of e^-40 to e^-70. From 10,000 it
would end far below 1e-12, and vectorbt stops trading long before: its default ``min_size`` is
1e-8 units (lifted here with ``min_size=0``) and it treats any cash or position within 1e-12 of
zero as zero, so its orders get rejected and the trade lists part. Sizing is proportional, so
every return, ratio and trade is the same from any initial cash; from 1e40 no number comes
near those absolute thresholds and the three engines can be compared exactly. The tables show
final equity as a multiple of the initial cash.

Timing: every case first runs once to warm up: this engine's numba kernel and vectorbt's numba
functions compile (or load from their cache) there. Single backtests warm up on the full data;
grids on a 5,000-bar series, which compiles the same code without a second multi-gigabyte
vectorbt grid. backtesting.py has no JIT and is timed cold, once (``--bt-repeat``): a second
replay would only double its time. The median of ``--repeat`` runs (3, at least 3) is reported
for this engine and for vectorbt's single backtest, one run for vectorbt's grid
(``--vbt-grid-repeat``). This engine's single backtest is also timed stage by stage (compile,
simulate, metrics; median of 5) between the warm-up and the timed runs, where no result is
held: timed after them, with a result still alive, the stages would pay page faults the runs
do not.

Memory: every case runs in its own fresh subprocess, started through a small intermediate
process that waits for exactly that one child, so ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` in
the intermediate is that case's peak resident set: the whole process, interpreter, libraries
and data included ("peak RSS"). The case also reports what its timed runs added on top of
what the process already held ("run adds": ``VmHWM`` after resetting it through
``/proc/self/clear_refs``, minus ``VmRSS`` before the runs). ``--in-process`` runs every case in
this one process instead (no peak RSS then).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("TQDM_DISABLE", "1")  # backtesting.py's progress bar

SEED = 20_240_601
CASH = 1e40
FEE = 0.001
FAST, SLOW = 10, 30
GRID_FAST = list(range(5, 51, 5))
GRID_SLOW = list(range(20, 201, 20))
MINUTE_MS = 60_000
START_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
BT_UNIT = 1e-24
WARMUP_BARS = 5_000
CASES = (
    "ours_single", "vbt_single", "ours_quiet", "vbt_quiet", "bt_single", "ours_grid", "vbt_grid",
    "cli_first",
)  # fmt: skip
LABELS = {
    "ours_single": "this engine",
    "vbt_single": "vectorbt",
    "ours_quiet": "this engine",
    "vbt_quiet": "vectorbt",
    "bt_single": "backtesting.py",
    "ours_grid": "this engine",
    "vbt_grid": "vectorbt",
    "cli_first": "backtest command",
}
# Which data shape each case runs on (make_data's ``shape``).
SHAPE = {"ours_quiet": "quiet", "vbt_quiet": "quiet"}
QUIET_ACTIVE = 0.30  # share of minutes in which the quiet market trades
QUIET_MAX_STILL = 20  # ... and it never stands still this many minutes in a row
CLI_RUNS = 3
SINGLE_PAIR = ("ours_single", "vbt_single")
TARGET_SINGLE = 8.0
TARGET_GRID = 10.0
TARGET_GRID_MB = 1_500.0
# --only: which cases make up each part of the comparison. backtesting.py is part of the full
# run only: it replays a Python loop per bar (about a minute for 10^6 bars) and has no target.
ONLY = {
    "single": ("ours_single", "vbt_single", "ours_quiet", "vbt_quiet"),
    "grid": ("ours_grid", "vbt_grid"),
    "first": ("ours_single", "cli_first"),
}
MIN_REPEAT = 3
STAGE_ROUNDS = 5

# How the engines' conventions differ, printed with every report so the numbers are read right.
CONVENTIONS = (
    "Fills: every engine decides on bar t's close and trades at bar t+1's open. This engine "
    "does it natively; vectorbt gets its signals shifted one bar and price=open; "
    "backtesting.py's market orders fill at the next open by default.",
    "Fees: 0.1 % of the traded notional on entry and on exit in all three; all-in sizing "
    "spends cash / (price * (1 + fee)) so the fee fits in the cash (vectorbt size=inf does "
    "the same).",
    "Open position at the end: marked at the last close, no exit fee, not counted as a trade "
    "(vectorbt: trades.closed; backtesting.py: _trades lists closed trades only).",
    "Order minimums: vectorbt's default min_size of 1e-8 units is lifted (min_size=0); "
    "backtesting.py trades whole units, so it runs through FractionalBacktest with a unit of "
    "1e-24. Initial cash is 1e40 so no engine meets an absolute threshold (see the module "
    "docstring); final equity is shown as a multiple of the initial cash.",
    "Moving averages: this engine's SMA is a compensated running sum that agrees with "
    "math.fsum of each window to within an ulp (bit for bit in its tests); vectorbt's rolling "
    "mean is a plain running sum that drifts by ~1e-10 over 10^6 bars, so at a near-tie "
    "(fast - slow within rounding of zero) the two can put a cross one bar apart.",
    "Metrics: this engine computes every metric of its catalogue (empyrical's formulas, "
    "ddof=1, 365-day years) inside the timed run; vectorbt computes only the handful it is "
    "asked for (final value, returns, Sharpe, drawdown, trades, win rate). Sharpe and max "
    "drawdown are defined on the same per-bar returns of the account value in both and "
    "agree; backtesting.py's Sharpe is on daily-resampled returns and is not compared.",
)


# --------------------------------------------------------------------------------------------
# Data


def make_data(bars: int, seed: int = SEED, shape: str = "walk") -> dict[str, np.ndarray]:
    """A deterministic 1-minute random walk: OHLCV arrays and epoch-ms timestamps.

    ``shape="quiet"``: the market trades on QUIET_ACTIVE of the minutes only; the others are
    flat candles at the previous close with zero volume (see the module docstring).
    """
    rng = np.random.default_rng(seed)
    log_ret = rng.normal(0.0, 0.001, bars)
    wick = np.abs(rng.normal(0.0, 0.0005, (2, bars)))
    volume = rng.uniform(1.0, 10.0, bars)
    if shape == "quiet":
        active = np.random.default_rng(seed + 1).random(bars) < QUIET_ACTIVE
        # No still spell lasts QUIET_MAX_STILL minutes: after 30 still minutes both SMAs would
        # be the same constant, an exact tie that this engine's exact sums keep and vectorbt's
        # drifting running sums break either way, so the two would part on rounding alone.
        still = 0
        for i in range(bars):
            still = 0 if active[i] else still + 1
            if still == QUIET_MAX_STILL:
                active[i] = True
                still = 0
        log_ret = np.where(active, log_ret, 0.0)
        wick = wick * active
        volume = np.where(active, volume, 0.0)
    elif shape != "walk":
        raise ValueError(f"unknown data shape {shape!r}")
    close = 100.0 * np.exp(np.cumsum(log_ret))
    open_ = np.empty(bars)
    open_[0] = 100.0
    open_[1:] = close[:-1]
    high = np.maximum(open_, close) * (1.0 + wick[0])
    low = np.minimum(open_, close) * (1.0 - wick[1])
    timestamp = START_MS + MINUTE_MS * np.arange(bars, dtype=np.int64)
    return {
        "timestamp": timestamp,
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": volume,
    }


def grid_pairs() -> list[tuple[int, int]]:
    return [(f, s) for f in GRID_FAST for s in GRID_SLOW if f < s]


# --------------------------------------------------------------------------------------------
# Cases. Each returns (one run, summary of a result); the harness times and repeats the run.


def _ours_config() -> Any:
    from backtester.engine.simulate import SimConfig

    return SimConfig(
        initial_cash=CASH, taker_fee=FEE, maker_fee=FEE, allow_short=False, fill="next_open"
    )


def _candles(data: dict[str, np.ndarray]) -> Any:
    from backtester.engine.candles import Candles

    return Candles(
        data["timestamp"], data["open"], data["high"], data["low"], data["close"],
        data["volume"], symbol="RW", timeframe="1m",
    )  # fmt: skip


def case_ours_single(data: dict[str, np.ndarray]) -> tuple[Callable[[], Any], Any]:
    from backtester.engine.language import PRESETS
    from backtester.engine.run import run_backtest

    candles = _candles(data)
    config = _ours_config()

    def run() -> Any:
        return run_backtest(candles, PRESETS["sma_cross"], {"fast": FAST, "slow": SLOW}, config)

    # Timed by run_case before the timed runs, with no result held (see there).
    # (type: ignore below) read by the bench's report
    run.stages = lambda: _ours_stages(candles, config)  # type: ignore[attr-defined]

    def summary(result: Any) -> dict[str, Any]:
        m = result.metrics
        equity = result.sim.equity
        return {
            "final_equity": float(equity[-1]),
            "trades": int(result.sim.trades.shape[0]),
            "open_position": result.sim.open_position is not None,
            "sharpe": m["sharpe"],
            "max_drawdown": m["max_drawdown"],
            "total_return": m["total_return"],
            "exposure": m["exposure"],
            # Bars whose account value equals the previous bar's: their returns are all 0.
            "unchanged_bars": float(np.mean(equity[1:] == equity[:-1])),
        }

    return run, summary


def _ours_stages(candles: Any, config: Any) -> dict[str, float]:
    """Median seconds of each stage of run_backtest, to say where the time goes."""
    from backtester.engine.language import PRESETS, compile_strategy
    from backtester.engine.metrics import compute_metrics
    from backtester.engine.simulate import candle_periods_per_year, simulate

    spec = PRESETS["sma_cross"]
    params = spec.resolve_params({"fast": FAST, "slow": SLOW})
    times: dict[str, list[float]] = {"compile": [], "simulate": [], "metrics": []}
    for _ in range(STAGE_ROUNDS):
        t0 = time.perf_counter()
        signals = compile_strategy(spec, candles, params, {})
        t1 = time.perf_counter()
        sim = simulate(candles, signals, config)
        t2 = time.perf_counter()
        compute_metrics(
            equity=sim.equity,
            timestamps=sim.timestamp,
            trade_pnl=sim.trades["pnl"],
            trade_returns=sim.trades["return"],
            trade_bars_held=sim.trades["bars_held"],
            fees_paid=sim.fees_paid,
            turnover=sim.turnover,
            initial_cash=sim.initial_cash,
            benchmark_close=candles.close,
            bars_per_year=candle_periods_per_year(candles),
            exposure_bars=sim.position,
        )
        t3 = time.perf_counter()
        times["compile"].append(t1 - t0)
        times["simulate"].append(t2 - t1)
        times["metrics"].append(t3 - t2)
        # Let this round's arrays go before the next allocates, as between timed runs.
        del signals, sim
    return {k: statistics.median(v) for k, v in times.items()}


def _vbt_frame(data: dict[str, np.ndarray]) -> tuple[Any, Any, Any]:
    import pandas as pd

    # tz-naive (UTC implied): a tz-aware index sends vectorbt through a slow per-element path.
    index = pd.DatetimeIndex(pd.to_datetime(data["timestamp"], unit="ms"))
    close = pd.Series(data["close"], index=index, name="close")
    open_ = pd.Series(data["open"], index=index, name="open")
    return index, close, open_


def _vbt_portfolio(close: Any, open_: Any, entries: Any, exits: Any) -> Any:
    import vectorbt as vbt

    # A signal on bar t's close trades at bar t+1's open: shift the signals one bar and fill
    # at the open. min_size=0 lifts vectorbt's default minimum order of 1e-8 units.
    return vbt.Portfolio.from_signals(
        close,
        entries.vbt.fshift(1, fill_value=False).astype(bool),
        exits.vbt.fshift(1, fill_value=False).astype(bool),
        price=open_,
        size=np.inf,
        fees=FEE,
        init_cash=CASH,
        min_size=0.0,
        direction="longonly",
        freq="1min",
    )


def case_vbt_single(data: dict[str, np.ndarray]) -> tuple[Callable[[], Any], Any]:
    import vectorbt as vbt

    _, close, open_ = _vbt_frame(data)

    def run() -> Any:
        fast = vbt.MA.run(close, FAST, short_name="fast")
        slow = vbt.MA.run(close, SLOW, short_name="slow")
        entries = fast.ma_crossed_above(slow)
        exits = fast.ma_crossed_below(slow)
        pf = _vbt_portfolio(close, open_, entries, exits)
        trades = pf.trades
        pf.final_value()
        return {
            # The value series (cash + position at the close) rather than final_value(), which
            # adds the total profit to the initial cash and so rounds to the initial cash's ulp.
            "final_equity": float(pf.value().iloc[-1]),
            "total_return": float(pf.total_return()),
            "sharpe": float(pf.sharpe_ratio()),
            "max_drawdown": float(pf.max_drawdown()),
            "trades": int(trades.closed.count()),
            "open_position": int(trades.open.count()) > 0,
            "win_rate": float(trades.win_rate()),
        }

    return run, lambda result: result


def case_bt_single(data: dict[str, np.ndarray]) -> tuple[Callable[[], Any], Any]:
    import pandas as pd
    from backtesting import Strategy
    from backtesting.lib import FractionalBacktest, crossover

    index = pd.DatetimeIndex(pd.to_datetime(data["timestamp"], unit="ms"))
    frame = pd.DataFrame(
        {
            "Open": data["open"],
            "High": data["high"],
            "Low": data["low"],
            "Close": data["close"],
            "Volume": data["volume"],
        },
        index=index,
    )

    def sma(values: Any, n: int) -> Any:
        return pd.Series(values).rolling(n).mean()

    class SmaCross(Strategy):
        def init(self) -> None:
            self.fast = self.I(sma, self.data.Close, FAST)
            self.slow = self.I(sma, self.data.Close, SLOW)

        def next(self) -> None:
            if crossover(self.fast, self.slow):
                if not self.position:
                    self.buy()
            elif crossover(self.slow, self.fast) and self.position:
                self.position.close()

    def run() -> Any:
        bt = FractionalBacktest(
            frame,
            SmaCross,
            cash=CASH,
            commission=FEE,
            exclusive_orders=False,
            fractional_unit=BT_UNIT,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stats = bt.run()
        return {
            "final_equity": float(stats["Equity Final [$]"]),
            "total_return": float(stats["Return [%]"]) / 100,
            "sharpe": None,  # its Sharpe is on daily-resampled returns: not comparable
            "max_drawdown": float(stats["Max. Drawdown [%]"]) / 100,
            "trades": len(stats["_trades"]),  # closed trades only
            "open_position": bool(stats["_strategy"].position),
        }

    return run, lambda result: result


def case_ours_grid(data: dict[str, np.ndarray]) -> tuple[Callable[[], Any], Any]:
    from backtester.engine.grid import grid_search
    from backtester.engine.language import PRESETS

    candles = _candles(data)
    config = _ours_config()
    grid = {"fast": GRID_FAST, "slow": GRID_SLOW}

    def run() -> Any:
        return grid_search(
            candles,
            PRESETS["sma_cross"],
            grid,
            config,
            objective="sharpe",
            constraint="fast < slow",
        )

    def summary(result: Any) -> dict[str, Any]:
        per = {
            f"{r['params']['fast']}/{r['params']['slow']}": [r["final_equity"], r["trades"]]
            for r in result.rows
        }
        best = result.rows[0]
        return {
            "combinations": result.evaluated,
            "best": f"{best['params']['fast']}/{best['params']['slow']}",
            "best_sharpe": best["sharpe"],
            "indicators": result.indicator_counts,
            "workers": result.workers,
            "per_combination": per,
        }

    return run, summary


def case_vbt_grid(data: dict[str, np.ndarray]) -> tuple[Callable[[], Any], Any]:
    import vectorbt as vbt

    _, close, open_ = _vbt_frame(data)
    pairs = grid_pairs()
    fast_w = [f for f, _ in pairs]
    slow_w = [s for _, s in pairs]

    def run() -> Any:
        fast = vbt.MA.run(close, fast_w, short_name="fast", run_unique=True)
        slow = vbt.MA.run(close, slow_w, short_name="slow", run_unique=True)
        entries = fast.ma_crossed_above(slow)
        exits = fast.ma_crossed_below(slow)
        pf = _vbt_portfolio(close, open_, entries, exits)
        sharpe = pf.sharpe_ratio().to_numpy()
        pf.final_value()
        final = pf.value().to_numpy()[-1]  # see case_vbt_single
        pf.total_return()
        pf.max_drawdown()
        trades = pf.trades.closed.count().to_numpy()
        return sharpe, final, trades

    def summary(result: Any) -> dict[str, Any]:
        sharpe, final, trades = result
        best = int(np.nanargmax(sharpe))
        per = {f"{f}/{s}": [float(final[i]), int(trades[i])] for i, (f, s) in enumerate(pairs)}
        return {
            "combinations": len(pairs),
            "best": f"{pairs[best][0]}/{pairs[best][1]}",
            "best_sharpe": float(sharpe[best]),
            "per_combination": per,
        }

    return run, summary


CASE_FUNCS: dict[str, Callable[[dict[str, np.ndarray]], tuple[Callable[[], Any], Any]]] = {
    "ours_single": case_ours_single,
    "vbt_single": case_vbt_single,
    "ours_quiet": case_ours_single,
    "vbt_quiet": case_vbt_single,
    "bt_single": case_bt_single,
    "ours_grid": case_ours_grid,
    "vbt_grid": case_vbt_grid,
}


# --------------------------------------------------------------------------------------------
# Harness


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so it covers only what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def run_case(name: str, bars: int, repeat: int, warmup: bool) -> dict[str, Any]:
    """Build the data, warm up, time ``repeat`` runs and summarise; runs in this process."""
    data = make_data(bars, shape=SHAPE.get(name, "walk"))
    run, summary = CASE_FUNCS[name](data)
    compile_note = ""
    if warmup:
        # Grids warm up on a short series: that compiles everything the full run needs
        # without a second multi-gigabyte vectorbt grid.
        warm = run if not name.endswith("_grid") else CASE_FUNCS[name](make_data(WARMUP_BARS))[0]
        t0 = time.perf_counter()
        warm()
        compile_note = f"{time.perf_counter() - t0:.3f}"
    # Stage timings (this engine's single case) run here, in the state the timed runs start
    # from: timed after them, with a result still held, they pay page faults the runs do not.
    stage_probe = getattr(run, "stages", None)
    stages = stage_probe() if stage_probe is not None else None
    reset = _reset_peak()
    before_kb = _status_kb("VmRSS")
    times: list[float] = []
    result: Any = None
    for _ in range(repeat):
        result = None  # let the previous result go before the next run allocates
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
    peak_kb = _status_kb("VmHWM") if reset else None
    added_mb = None
    if peak_kb is not None and before_kb is not None:
        added_mb = max(peak_kb - before_kb, 0) / 1024
    summarised = summary(result)
    if stages is not None:
        summarised["stages"] = stages
    return {
        "case": name,
        "bars": bars,
        "times": times,
        "median": statistics.median(times),
        "warmup_seconds": float(compile_note) if compile_note else None,
        "added_mb": added_mb,
        "result": summarised,
    }


def run_in_subprocess(name: str, bars: int, repeat: int, warmup: bool) -> dict[str, Any]:
    """Run one case in a fresh interpreter; add its peak RSS from getrusage(RUSAGE_CHILDREN).

    ru_maxrss of RUSAGE_CHILDREN is the largest peak among the children waited for so far, so
    each case runs in its own short-lived intermediate process that waits for exactly one
    child, making that number belong to this case alone.
    """
    cmd = [
        sys.executable, __file__, "--case", name, "--bars", str(bars), "--repeat", str(repeat),
    ]  # fmt: skip
    if not warmup:
        cmd.append("--no-warmup")
    wrapper = [sys.executable, __file__, "--measure", json.dumps(cmd)]
    proc = subprocess.run(wrapper, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"case {name} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(cmd: list[str]) -> int:
    """The intermediate process: run ``cmd``, add its peak RSS to its JSON line, print it."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return proc.returncode
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    # Linux reports ru_maxrss in kilobytes.
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(report))
    return 0


def measure_cli(bars: int, runs: int = CLI_RUNS) -> dict[str, Any]:
    """The ``backtest`` command on a Parquet file of the walk, each run in a new interpreter:
    wall time, and the reading and engine seconds the command reports."""
    import pandas as pd

    path = ROOT / "bench" / "out" / f"walk_{bars}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        pd.DataFrame(make_data(bars)).to_parquet(path)
    cmd = [
        sys.executable, "-m", "backtester.management.commands.backtest", "--data", str(path),
        "--preset", "sma_cross", "--set", f"fast={FAST}", "--set", f"slow={SLOW}",
        "--fee", str(FEE), "--cash", "1e40", "--json", "--no-trades",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    walls: list[float] = []
    reads: list[float] = []
    engines: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT, env=env)
        walls.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"backtest command failed:\n{proc.stderr[-4000:]}")
        summary = json.loads(proc.stdout)
        reads.append(float(summary["read_seconds"]))
        engines.append(float(summary["engine_seconds"]))
    return {"case": "cli_first", "bars": bars, "walls": walls, "reads": reads, "engines": engines}


# --------------------------------------------------------------------------------------------
# Report


def _fmt_s(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _fmt_mb(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w)
        for i, (h, w) in enumerate(zip(headers, widths, strict=True))
    )
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(out)


def explain_difference(fast: int, slow: int, bars: int) -> list[str]:
    """Where this engine's and vectorbt's signals for one SMA pair part, checked exactly.

    At each bar where the cross signals differ, fast - slow is recomputed with exactly rounded
    sums (math.fsum) to show which side of zero it really is on.
    """
    import math

    import vectorbt as vbt

    from backtester.engine.indicators import sma
    from backtester.engine.language import PRESETS, compile_strategy

    data = make_data(bars)
    candles = _candles(data)
    _, close, _ = _vbt_frame(data)
    ours = compile_strategy(PRESETS["sma_cross"], candles, {"fast": fast, "slow": slow})
    fm = vbt.MA.run(close, fast)
    sm = vbt.MA.run(close, slow)
    theirs = {
        "entry": fm.ma_crossed_above(sm).to_numpy(),
        "exit": fm.ma_crossed_below(sm).to_numpy(),
    }
    gap_vbt = fm.ma.to_numpy() - sm.ma.to_numpy()
    x = data["close"]
    out: list[str] = []
    for name, mine in (("entry", ours.entry_long), ("exit", ours.exit_long)):
        for i in np.flatnonzero(mine != theirs[name])[:4].tolist():
            exact = (
                math.fsum(x[i - fast + 1 : i + 1]) / fast
                - math.fsum(x[i - slow + 1 : i + 1]) / slow
            )
            gap_ours = float(sma(x, fast)[i] - sma(x, slow)[i])
            out.append(
                f"{name} signal at bar {i:,}: ours {bool(mine[i])}, vectorbt "
                f"{bool(theirs[name][i])}; fast - slow there is {exact:+.3e} (exact sums), "
                f"{gap_ours:+.3e} in ours, {gap_vbt[i]:+.3e} in vectorbt"
            )
    if not out:
        out.append("signals identical: the difference comes from the simulation")
    return out


def _fmt_runs(times: list[float]) -> str:
    return " ".join(f"{t:.3f}" for t in times)


def _single_section(
    results: dict[str, dict[str, Any]], bars: int, shape: str = "walk"
) -> tuple[list[str], dict[str, Any]]:
    """(a): the table, the stages, the agreement with each peer, for one data shape."""
    lines: list[str] = []
    verdict: dict[str, Any] = {}
    ours_key, vbt_key = ("ours_quiet", "vbt_quiet") if shape == "quiet" else SINGLE_PAIR
    peers = (vbt_key,) if shape == "quiet" else (vbt_key, "bt_single")
    ours = results[ours_key]
    mine = ours["result"]
    suffix = "" if shape == "walk" else f"_{shape}"
    title = (
        "random walk"
        if shape == "walk"
        else (f"quiet market (trades on {QUIET_ACTIVE:.0%} of the minutes)")
    )
    lines.append(
        f"(a{'' if shape == 'walk' else '2'}) One backtest, {title}: {bars:,} 1-minute bars, SMA "
        f"{FAST}/{SLOW} cross, long only, all-in, fee {FEE:.1%}, next-open fills, metrics "
        f"included; in the market on {mine.get('exposure', float('nan')):.0%} of the bars, "
        f"account value unchanged on {mine.get('unchanged_bars', float('nan')):.0%}"
    )
    rows = []
    for name in (ours_key, *peers):
        if name not in results:
            continue
        r = results[name]
        res = r["result"]
        rows.append(
            [
                LABELS[name],
                _fmt_s(r["median"]),
                _fmt_runs(r["times"]),
                "1.0x" if name == ours_key else f"{r['median'] / ours['median']:.1f}x",
                _fmt_mb(r.get("peak_rss_mb")),
                _fmt_mb(r.get("added_mb")),
                f"{res['final_equity'] / CASH:.10g}",
                "-"
                if name == ours_key
                else f"{_rel(res['final_equity'], mine['final_equity']):.1e}",
                f"{res['trades']:,}",
                "yes" if res["open_position"] else "no",
            ]
        )
    headers = [
        "engine", "median s", "runs (s)", "ours faster by", "peak RSS MB", "run adds MB",
        "final/initial", "rel diff", "trades", "open at end",
    ]  # fmt: skip
    lines.append(_table(headers, rows))
    st = mine.get("stages") or {}
    lines.append(
        f"this engine by stage (median of {STAGE_ROUNDS}, timed separately): "
        + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in st.items())
        + f" (run_backtest median {ours['median'] * 1000:.1f} ms)"
    )
    if vbt_key in results:
        v = results[vbt_key]["result"]
        lines.append(
            f"Sharpe: ours {mine['sharpe']:.6f}, vectorbt {v['sharpe']:.6f}; max "
            f"drawdown: ours {mine['max_drawdown']:.6f}, vectorbt {v['max_drawdown']:.6f}"
        )
    for name in peers:
        if name not in results:
            continue
        res = results[name]["result"]
        rel = _rel(res["final_equity"], mine["final_equity"])
        ok = (
            rel <= 1e-6
            and res["trades"] == mine["trades"]
            and res["open_position"] == mine["open_position"]
        )
        verdict[f"agree_{'vbt_single' if name == vbt_key else name}{suffix}"] = ok
        lines.append(
            f"agreement with {LABELS[name]}: final equity rel diff {rel:.1e} (limit 1e-6), "
            f"trades {res['trades']:,} vs ours {mine['trades']:,}, open position at the end "
            f"{'both' if res['open_position'] == mine['open_position'] else 'DIFFERS'} "
            f"-> {'agrees' if ok else 'DIFFERS'}"
        )
    if vbt_key in results:
        verdict[f"single_speedup_vs_vectorbt{suffix}"] = results[vbt_key]["median"] / ours["median"]
    return lines, verdict


def _first_call_section(results: dict[str, dict[str, Any]]) -> list[str]:
    """(c): what the first backtest of a new process costs, and the command end to end."""
    lines = ["(c) First call in a fresh process (compiled kernels loaded from numba's cache)"]
    ours = results.get("ours_single")
    if ours is not None and ours.get("warmup_seconds") is not None:
        first = float(ours["warmup_seconds"])
        lines.append(
            f"run_backtest, {ours['bars']:,} bars: first call {first:.3f} s, warm median "
            f"{ours['median']:.3f} s, so loading the kernels adds {first - ours['median']:.3f} s"
        )
    cli_run = results.get("cli_first")
    if cli_run is not None:
        lines.append(
            f"backtest command on a Parquet file of {cli_run['bars']:,} bars, each run a new "
            f"process: wall {_fmt_runs(cli_run['walls'])} s (interpreter, imports, reading and "
            f"the backtest); reading {_fmt_runs(cli_run['reads'])} s with the kernels loading "
            f"beside it; engine {_fmt_runs(cli_run['engines'])} s"
        )
    return lines


def _grid_section(
    results: dict[str, dict[str, Any]], bars: int
) -> tuple[list[str], dict[str, Any]]:
    """(b): the table and the agreement per combination."""
    lines: list[str] = []
    verdict: dict[str, Any] = {}
    og = results["ours_grid"]
    n_comb = og["result"]["combinations"]
    lines.append(
        f"(b) Grid: fast {GRID_FAST[0]}..{GRID_FAST[-1]} step 5 x slow {GRID_SLOW[0]}.."
        f"{GRID_SLOW[-1]} step 20, fast < slow: {n_comb} combinations, objective Sharpe "
        f"({og['result']['workers']} worker threads; indicators computed: "
        f"{og['result']['indicators']})"
    )
    rows = []
    for name in ("ours_grid", "vbt_grid"):
        if name not in results:
            continue
        r = results[name]
        rows.append(
            [
                LABELS[name],
                _fmt_s(r["median"]),
                _fmt_runs(r["times"]),
                "1.0x" if name == "ours_grid" else f"{r['median'] / og['median']:.1f}x",
                _fmt_mb(r.get("peak_rss_mb")),
                _fmt_mb(r.get("added_mb")),
                r["result"]["best"],
                f"{r['result']['best_sharpe']:.4f}",
            ]
        )
    headers = [
        "engine", "median s", "runs (s)", "ours faster by", "peak RSS MB", "run adds MB",
        "best fast/slow", "best Sharpe",
    ]  # fmt: skip
    lines.append(_table(headers, rows))
    verdict["grid_peak_rss_mb"] = og.get("peak_rss_mb")
    if "vbt_grid" in results:
        mine = og["result"]["per_combination"]
        theirs = results["vbt_grid"]["result"]["per_combination"]
        differing = sorted(
            (k for k in theirs if _rel(mine[k][0], theirs[k][0]) > 1e-6),
            key=lambda k: tuple(int(x) for x in k.split("/")),
        )
        same_trades = all(mine[k][1] == theirs[k][1] for k in theirs)
        verdict["agree_grid"] = set(mine) == set(theirs) and not differing and same_trades
        verdict["grid_differing"] = differing
        lines.append(
            f"agreement per combination (final equity within 1e-6 relative): "
            f"{len(theirs) - len(differing)} of {len(theirs)}; trade counts "
            f"{'all equal' if same_trades else 'DIFFER'}"
        )
        for key in differing:
            fast, slow = (int(x) for x in key.split("/"))
            rel = _rel(mine[key][0], theirs[key][0])
            lines.append(
                f"  {key}: final/initial ours {mine[key][0] / CASH:.6g}, vectorbt "
                f"{theirs[key][0] / CASH:.6g} (rel diff {rel:.1e})"
            )
            lines.extend("    " + x for x in explain_difference(fast, slow, bars))
        verdict["grid_speedup_vs_vectorbt"] = results["vbt_grid"]["median"] / og["median"]
    return lines, verdict


def _target_lines(results: dict[str, dict[str, Any]], verdict: dict[str, Any]) -> list[str]:
    """One PASS / MISS / NOT RUN line per target."""
    out: list[str] = []
    for shape, (ours_key, vbt_key) in (
        ("walk", SINGLE_PAIR),
        ("quiet", ("ours_quiet", "vbt_quiet")),
    ):
        suffix = "" if shape == "walk" else f"_{shape}"
        speed = verdict.get(f"single_speedup_vs_vectorbt{suffix}")
        agree = bool(verdict.get(f"agree_vbt_single{suffix}"))
        label = (
            f"one backtest ({shape}) >= {TARGET_SINGLE:.0f}x faster than vectorbt, results agreeing"
        )
        if speed is None:
            out.append(f"NOT RUN  {label} (needs {ours_key} and {vbt_key})")
            continue
        ok = speed >= TARGET_SINGLE and agree
        ours, theirs = results[ours_key]["median"], results[vbt_key]["median"]
        out.append(
            f"{'PASS' if ok else 'MISS'}     {label}: {speed:.1f}x ({ours:.3f} s vs "
            f"{theirs:.3f} s, medians of {len(results[ours_key]['times'])} and "
            f"{len(results[vbt_key]['times'])}); {'agrees' if agree else 'DIFFERS'}"
        )
    speed = verdict.get("grid_speedup_vs_vectorbt")
    label = f"grid >= {TARGET_GRID:.0f}x faster than vectorbt"
    if speed is None:
        out.append(f"NOT RUN  {label} (needs ours_grid and vbt_grid)")
    else:
        ours, theirs = results["ours_grid"]["median"], results["vbt_grid"]["median"]
        out.append(
            f"{'PASS' if speed >= TARGET_GRID else 'MISS'}     {label}: {speed:.1f}x "
            f"({ours:.3f} s vs {theirs:.3f} s)"
        )
    label = f"grid peak memory < {TARGET_GRID_MB:,.0f} MB"
    if "ours_grid" not in results:
        out.append(f"NOT RUN  {label} (needs ours_grid)")
    elif verdict.get("grid_peak_rss_mb") is None:
        out.append(f"NOT RUN  {label} (not measured with --in-process)")
    else:
        peak = float(verdict["grid_peak_rss_mb"])
        out.append(
            f"{'PASS' if peak < TARGET_GRID_MB else 'MISS'}     {label}: {peak:,.0f} MB peak "
            f"RSS of the whole process"
        )
    return out


def report(results: dict[str, dict[str, Any]], bars: int) -> tuple[str, dict[str, Any]]:
    """The printed comparison, closing with one PASS / MISS / NOT RUN line per target."""
    lines: list[str] = []
    verdict: dict[str, Any] = {}
    if "ours_single" in results:
        part, found = _single_section(results, bars)
        lines += [*part, ""]
        verdict.update(found)
    if "ours_quiet" in results:
        part, found = _single_section(results, bars, "quiet")
        lines += [*part, ""]
        verdict.update(found)
    if "cli_first" in results or "ours_single" in results:
        lines += [*_first_call_section(results), ""]
    if "ours_grid" in results:
        part, found = _grid_section(results, bars)
        lines += [*part, ""]
        verdict.update(found)
    lines.append("Conventions, and where the engines differ:")
    lines += [f"- {text}" for text in CONVENTIONS]
    lines.append(
        f"- Times are wall-clock medians of the timed runs (at least {MIN_REPEAT} for this "
        "engine and vectorbt's single backtest) after one warm-up run, in which numba "
        "compiles or loads its cache; vectorbt's grid runs once (it needs ~12 GB); "
        "backtesting.py runs once, cold (no JIT). Peak RSS is the whole process "
        "(interpreter, libraries and data included), measured in a fresh process per case; "
        "'run adds' is the peak during the timed runs minus the memory held before them."
    )
    lines.append("")
    targets = _target_lines(results, verdict)
    verdict["targets"] = targets
    lines += targets
    return "\n".join(lines), verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 bars smoke run")
    parser.add_argument("--bars", type=int, default=None, help="number of bars (1,000,000)")
    parser.add_argument(
        "--only",
        choices=sorted(ONLY),
        help="run one part: single (this engine and vectorbt, one backtest) or grid",
    )
    parser.add_argument("--repeat", type=int, default=MIN_REPEAT, help="timed runs per case (3)")
    parser.add_argument("--bt-repeat", type=int, default=1, help="timed backtesting.py runs (1)")
    parser.add_argument("--vbt-grid-repeat", type=int, default=1, help="timed vectorbt grids (1)")
    parser.add_argument("--cases", default=None, help="comma-separated cases (default: all)")
    parser.add_argument("--in-process", action="store_true", help="no subprocesses, no memory")
    parser.add_argument(
        "--json-out",
        default=None,
        help="where to write the results (bench/out/engine_bench[_single|_grid].json)",
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--no-warmup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.measure:
        return measure(json.loads(args.measure))
    bars = args.bars or (100_000 if args.quick else 1_000_000)
    if args.case:
        print(json.dumps(run_case(args.case, bars, args.repeat, not args.no_warmup)))
        return 0
    if args.only and args.cases:
        parser.error("--only and --cases exclude each other")
    if args.repeat < MIN_REPEAT:
        parser.error(f"--repeat must be at least {MIN_REPEAT}: the report shows medians")
    names = (
        list(ONLY[args.only])
        if args.only
        else [c.strip() for c in (args.cases or ",".join(CASES)).split(",") if c.strip()]
    )

    results: dict[str, dict[str, Any]] = {}
    for name in names:
        if name == "cli_first":
            print(
                f"running cli_first ({bars:,} bars, {CLI_RUNS} fresh processes)...", file=sys.stderr
            )
            results[name] = measure_cli(bars)
            continue
        if name not in CASE_FUNCS:
            parser.error(f"unknown case {name!r}; choose from {', '.join(CASES)}")
        repeat = {"bt_single": args.bt_repeat, "vbt_grid": args.vbt_grid_repeat}.get(
            name, args.repeat
        )
        # backtesting.py has no JIT to warm up; a second full replay would only double its
        # time, so it is timed cold unless it is asked to run several times.
        warmup = not (name == "bt_single" and repeat == 1)
        print(f"running {name} ({bars:,} bars, {repeat} timed run(s))...", file=sys.stderr)
        if args.in_process:
            results[name] = run_case(name, bars, repeat, warmup)
        else:
            results[name] = run_in_subprocess(name, bars, repeat, warmup)
    text, verdict = report(results, bars)
    print(text)
    suffix = f"_{args.only}" if args.only else ""
    out = Path(args.json_out or ROOT / "bench" / "out" / f"engine_bench{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    for r in results.values():
        r.get("result", {}).pop("per_combination", None)
    out.write_text(json.dumps({"bars": bars, "results": results, "verdict": verdict}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
