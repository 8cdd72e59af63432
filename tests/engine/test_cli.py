"""The `backtest` management command's work, run through its Django-free `main`/`run_cli`."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import pytest

from backtester.engine.candles import Candles
from backtester.engine.language import PRESETS, Param, StrategySpec
from backtester.engine.metrics import METRICS
from backtester.engine.run import result_to_dict, run_backtest
from backtester.engine.simulate import SimConfig
from backtester.management.commands import backtest as cli

HOUR_MS = 3_600_000
ENTRY = "cross_above(sma(close, fast), sma(close, slow))"
EXIT = "cross_below(sma(close, fast), sma(close, slow))"
# The 12-bar series of test_run.py: the 2/4 SMA cross buys at bar 6's open (11.5) and sells
# at bar 10's open (10.5).
CLOSE = [10, 10, 10, 10, 10, 11, 12, 13, 12, 10, 9, 9]
OPEN = [10, 10, 10, 10, 10, 10, 11.5, 12, 13, 12, 10.5, 9]
FINAL_FEE = 10_000 / (11.5 * 1.001) * 10.5 * 0.999  # fee 0.001 fitted in, paid on both fills
FINAL_NO_FEE = 10_000 / 11.5 * 10.5  # with --fee 0 --slippage-bps 0


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "twelve.csv"
    lines = ["timestamp,open,high,low,close,volume"]
    for i, (o, c) in enumerate(zip(OPEN, CLOSE, strict=True)):
        ts = 1_700_000_000_000 + i * HOUR_MS
        lines.append(f"{ts},{o},{max(o, c) + 0.25},{min(o, c) - 0.25},{c},1")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def walk_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(5)
    n = 600
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    path = tmp_path_factory.mktemp("data") / "walk.csv"
    lines = ["time,open,high,low,close,volume"]
    for i in range(n):
        o, c = open_[i], close[i]
        lines.append(f"{1_600_000_000_000 + i * HOUR_MS},{o},{max(o, c)},{min(o, c)},{c},2")
    path.write_text("\n".join(lines) + "\n")
    return path


def custom_args(csv_file: Path, *extra: str) -> list[str]:
    return [
        "--data",
        str(csv_file),
        "--entry",
        ENTRY,
        "--exit",
        EXIT,
        "--set",
        "fast=2",
        "--set",
        "slow=4",
        *extra,
    ]


def test_json_output_is_one_object_with_the_hand_computed_result(csv_file: Path) -> None:
    code, out, err = run(custom_args(csv_file, "--fee", "0.001", "--slippage-bps", "0", "--json"))
    assert (code, err) == (0, "")
    assert out.count("\n") == 1  # one line, one object
    d = json.loads(out)
    for key in (
        "final_equity",
        "total_return",
        "trades",
        "sharpe",
        "max_drawdown",
        "engine_seconds",
        "open_position",
        "metrics",
    ):
        assert key in d, key
    assert d["final_equity"] == pytest.approx(FINAL_FEE, rel=1e-12)
    assert d["total_return"] == pytest.approx(FINAL_FEE / 10_000 - 1, rel=1e-12)
    assert d["trades"] == 1
    assert d["max_drawdown"] == pytest.approx(10 / 13 - 1, rel=1e-12)
    assert d["open_position"] is None
    assert d["params"] == {"fast": 2, "slow": 4}
    assert d["engine_seconds"] > 0
    assert set(d["metrics"]) == {m.key for m in METRICS}
    assert d["data"]["bars"] == 12
    assert len(d["trade_list"]) == 1


def test_costs_default_to_the_products_defaults_and_can_be_zeroed(csv_file: Path) -> None:
    from backtester.services.backtests import default_settings

    _, out, _ = run(custom_args(csv_file, "--json"))
    d = json.loads(out)
    # The same defaults as the web form, the API and one-click runs (issue 9 item 3).
    defaults = default_settings()
    for key in ("taker_fee", "maker_fee", "slippage_bps", "initial_cash", "fill"):
        assert d["config"][key] == defaults[key], key
    assert d["config"]["slippage_bps"] == 2.0
    assert d["metrics"]["fees_paid"] > 0.0
    _, out, _ = run(custom_args(csv_file, "--fee", "0", "--slippage-bps", "0", "--json"))
    d = json.loads(out)
    assert d["final_equity"] == pytest.approx(FINAL_NO_FEE, rel=1e-12)
    assert d["metrics"]["fees_paid"] == 0.0


def test_json_values_match_run_backtest_on_the_same_data(walk_csv: Path) -> None:
    argv = ["--data", str(walk_csv), "--preset", "sma_cross", "--set", "fast=5"]
    argv += ["--set", "slow=20", "--fee", "0.001", "--slippage-bps", "0", "--json", "--no-trades"]
    code, out, _ = run(argv)
    assert code == 0
    d = json.loads(out)
    candles = cli.load_candles(str(walk_csv))
    cfg = SimConfig(taker_fee=0.001, maker_fee=0.001, allow_short=False)
    expected = result_to_dict(
        run_backtest(candles, PRESETS["sma_cross"], {"fast": 5, "slow": 20}, cfg),
        include_trades=False,
    )
    for key in ("final_equity", "total_return", "trades", "sharpe", "max_drawdown", "params"):
        assert d[key] == expected[key], key
    assert d["metrics"] == expected["metrics"]
    assert "trade_list" not in d


def test_cash_fill_and_stops_reach_the_simulation(csv_file: Path) -> None:
    argv = custom_args(csv_file, "--cash", "500", "--fill", "close", "--json")
    argv += ["--fee", "0", "--slippage-bps", "0"]
    d = json.loads(run(argv)[1])
    # Close fills: buy at close[5] = 11, sell at close[9] = 10, no fee.
    assert d["final_equity"] == pytest.approx(500 / 11 * 10, rel=1e-12)
    argv = custom_args(csv_file, "--stop-loss", "0.05", "--take-profit", "0.5", "--json")
    argv += ["--slippage-bps", "10"]
    d = json.loads(run(argv)[1])
    assert d["config"]["stop_loss"] == 0.05
    assert d["config"]["take_profit"] == 0.5
    assert d["config"]["slippage_bps"] == 10.0
    # Bought near 11.5; bar 9's low of 9.75 is more than 5 % under it: the stop closes it.
    assert d["trade_list"][0]["exit_reason"] == "stop_loss"


def test_the_risk_protections_reach_the_simulation(csv_file: Path) -> None:
    argv = custom_args(csv_file, "--fill", "close", "--fee", "0", "--slippage-bps", "0")
    argv += ["--max-order-value", "500", "--sl-guard-count", "2", "--sl-guard-lock-bars", "3"]
    argv += ["--sl-guard-all", "--weekly-loss", "0.1", "--low-profit-min", "-0.5", "--json"]
    d = json.loads(run(argv)[1])
    # Close fills: 500 / 11 units bought at close[5] = 11, sold at close[9] = 10.
    assert d["final_equity"] == pytest.approx(10_000 - 500 + 500 / 11 * 10, rel=1e-12)
    cfg = d["config"]
    assert (cfg["max_order_notional"], cfg["stoploss_guard_count"]) == (500.0, 2)
    assert (cfg["stoploss_guard_lock_bars"], cfg["stoploss_guard_all"]) == (3, True)
    assert (cfg["weekly_loss_limit"], cfg["low_profit_min"]) == (0.1, -0.5)
    code, _, err = run(custom_args(csv_file, "--max-leverage", "-1"))
    assert code == 2
    assert err.startswith("error: --max-leverage must be at least 0")


def test_presets_trade_long_only_by_default(walk_csv: Path) -> None:
    argv = ["--data", str(walk_csv), "--preset", "ema_cross", "--json"]
    d = json.loads(run(argv)[1])
    assert d["trades"] > 0
    assert {t["side"] for t in d["trade_list"]} == {"long"}
    d = json.loads(run([*argv, "--allow-short"])[1])
    assert {t["side"] for t in d["trade_list"]} == {"long", "short"}


def test_short_rules_given_on_the_command_line_trade(csv_file: Path) -> None:
    argv = ["--data", str(csv_file), "--entry-short", EXIT, "--exit-short", ENTRY]
    argv += ["--set", "fast=2", "--set", "slow=4", "--fee", "0", "--slippage-bps", "0", "--json"]
    d = json.loads(run(argv)[1])
    # Shorted at bar 10's open (10.5); still open at the last close (9).
    assert d["trades"] == 0
    assert d["open_position"]["side"] == "short"
    assert d["final_equity"] == pytest.approx(10_000 + 10_000 / 10.5 * (10.5 - 9), rel=1e-12)


def test_readable_summary_groups_metrics_in_an_aligned_table(csv_file: Path) -> None:
    code, out, _ = run(custom_args(csv_file, "--fee", "0.001", "--slippage-bps", "0"))
    assert code == 0
    for title in ("Run", "Result", "Returns", "Risk", "Risk-adjusted", "Drawdown", "Trades"):
        assert f"\n{title}\n" in f"\n{out}", title
    lines = {line.split("  ")[1].strip(): line for line in out.splitlines() if line[:2] == "  "}
    assert lines["Final equity"].endswith(f"{FINAL_FEE:,.2f}")
    assert lines["Max drawdown"].endswith(f"{(10 / 13 - 1) * 100:,.2f} %")
    assert lines["SQN"].endswith("n/a")
    # Numbers are right-aligned to one column.
    ends = {len(lines[k]) for k in ("Final equity", "Total return", "Sharpe ratio", "Trades")}
    assert len(ends) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "/nonexistent/x.csv", "--preset", "sma_cross"], "/nonexistent/x.csv: no such"),
        (["--data", "FILE", "--preset", "nope"], "unknown preset 'nope'; available: "),
        (["--data", "FILE", "--preset", "sma_cross", "--set", "fast"], "NAME=VALUE"),
        (["--data", "FILE", "--preset", "sma_cross", "--set", "fats=9"], "did you mean 'fast'"),
        (["--data", "FILE", "--preset", "sma_cross", "--set", "fast=500"], "between 5 and 50"),
        (["--data", "FILE", "--entry", "close > sma(close, 3) +"], "entry_long: "),
        (["--data", "FILE", "--entry", "close > foo"], "unknown name 'foo'. If 'foo' is a value"),
        (["--data", "FILE"], "give --preset NAME or --entry EXPR"),
        (["--data", "FILE", "--preset", "sma_cross", "--entry", "close > 1"], "not both"),
        (["--data", "FILE", "--preset", "sma_cross", "--fee", "-1"], "--fee must be at least 0"),
        (["--data", "FILE", "--preset", "sma_cross", "--cash", "0"], "--cash must be greater"),
        (["--preset", "sma_cross"], "--data FILE is required"),
        (["--data", "data.xlsx", "--preset", "sma_cross"], "unknown file type '.xlsx'"),
    ],
)
def test_errors_give_one_line_on_stderr_and_a_nonzero_exit(
    csv_file: Path, argv: list[str], message: str
) -> None:
    argv = [str(csv_file) if a == "FILE" else a for a in argv]
    code, out, err = run(argv)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert message in err
    assert "Traceback" not in err


def test_unknown_preset_lists_every_available_one(csv_file: Path) -> None:
    _, _, err = run(["--data", str(csv_file), "--preset", "nope"])
    for name in PRESETS:
        assert name in err


def test_bad_csv_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,open,high,low,close,volume\n1,2,3,1,2,5\n2,2,3,1,2,lots\n")
    code, _, err = run(["--data", str(bad), "--preset", "sma_cross"])
    assert code == 2
    assert f"{bad}: line 3:" in err


def test_list_presets_shows_names_and_params() -> None:
    code, out, _ = run(["--list-presets"])
    assert code == 0
    for name, spec in PRESETS.items():
        assert f"{name}: " in out
        for p in spec.params:
            assert f"    {p.name} = " in out


def test_django_command_wraps_the_same_work(csv_file: Path) -> None:
    from django.core.management.base import CommandError

    out = io.StringIO()
    command = cli.Command(stdout=out)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    options = vars(
        parser.parse_args(custom_args(csv_file, "--fee", "0.001", "--slippage-bps", "0", "--json"))
    )
    command.handle(**options)
    assert json.loads(out.getvalue())["final_equity"] == pytest.approx(FINAL_FEE, rel=1e-12)
    options["preset"], options["entry"], options["exit"] = "nope", None, None
    with pytest.raises(CommandError, match="unknown preset 'nope'"):
        command.handle(**options)


def test_custom_param_kinds_follow_the_values_given(csv_file: Path) -> None:
    spec_args = ["--data", str(csv_file), "--entry", "close > level and on", "--json"]
    d = json.loads(run([*spec_args, "--set", "level=10.5", "--set", "on=true"])[1])
    assert d["params"] == {"level": 10.5, "on": True}
    code, _, err = run([*spec_args, "--set", "level=abc", "--set", "on=true"])
    assert code == 2
    assert "level" in err


def test_candles_helper_reads_by_extension(csv_file: Path, tmp_path: Path) -> None:
    c = cli.load_candles(str(csv_file))
    assert isinstance(c, Candles)
    assert c.symbol == "twelve"
    as_json = tmp_path / "twelve.json"
    as_json.write_text(
        json.dumps(
            [
                {"timestamp": int(t), "open": o, "high": h, "low": lo, "close": cl, "volume": 1}
                for t, o, h, lo, cl in zip(c.timestamp, c.open, c.high, c.low, c.close, strict=True)
            ]
        )
    )
    assert np.array_equal(cli.load_candles(str(as_json)).close, c.close)
    # Declared params of a custom spec still resolve like any StrategySpec.
    spec = StrategySpec(
        "s", entry_long=ENTRY, params=(Param("fast", "int", 2), Param("slow", "int", 4))
    )
    assert run_backtest(c, spec).sim.trades.shape[0] == 0  # only an entry rule: stays open


def test_manage_py_backtest_prints_one_json_object_with_the_documented_keys(csv_file: Path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "backtest",
            "--data",
            str(csv_file),
            "--entry",
            ENTRY,
            "--exit",
            EXIT,
            "--set",
            "fast=2",
            "--set",
            "slow=4",
            "--fee",
            "0.001",
            "--slippage-bps",
            "0",
            "--json",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    for key in (
        "final_equity",
        "total_return",
        "trades",
        "sharpe",
        "max_drawdown",
        "engine_seconds",
        "open_position",
        "metrics",
    ):
        assert key in data
    assert data["final_equity"] == pytest.approx(FINAL_FEE, rel=1e-12)
    assert data["trades"] == 1
    assert data["open_position"] is None


def test_manage_py_backtest_reports_a_bad_preset_in_one_line_without_traceback(csv_file: Path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "manage.py", "backtest", "--data", str(csv_file), "--preset", "nope"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "sma_cross" in result.stderr  # the message lists the presets there are


# --- the kernel warm-up that runs while the file is read --------------------------------------


def test_warmup_loads_the_run_through_the_same_strategy_and_settings(csv_file: Path) -> None:
    spec = StrategySpec("t", entry_long=ENTRY, exit_long=EXIT)
    thread = cli.start_warmup(spec, {"fast": "2", "slow": "4"}, SimConfig(taker_fee=0.001))
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert thread.daemon  # never keeps a finished command's process alive
    code, out, _ = run([*custom_args(csv_file, "--fee", "0.001", "--slippage-bps", "0"), "--json"])
    assert code == 0
    assert json.loads(out)["final_equity"] == pytest.approx(FINAL_FEE, rel=1e-12)


def test_a_strategy_the_warmup_series_cannot_serve_still_runs(tmp_path: Path) -> None:
    # The warm-up's synthetic candles have no 'funding' column: its StrategyError is swallowed
    # there, and the real run on the file that has the column trades as usual.
    path = tmp_path / "funding.csv"
    lines = ["timestamp,open,high,low,close,volume,funding"]
    for i, (o, c) in enumerate(zip(OPEN, CLOSE, strict=True)):
        funding = -0.01 if i == 5 else 0.01
        lines.append(
            f"{1_700_000_000_000 + i * HOUR_MS},{o},{max(o, c)},{min(o, c)},{c},1,{funding}"
        )
    path.write_text("\n".join(lines) + "\n")
    code, out, err = run(
        ["--data", str(path), "--entry", "funding < 0", "--slippage-bps", "0", "--json"]
    )
    assert (code, err) == (0, "")
    assert json.loads(out)["open_position"]["entry_price"] == 11.5  # bar 6's open


def test_the_blas_probe_is_hidden_only_during_the_warmup(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.delitem(sys.modules, cli._BLAS_PROBE, raising=False)
    with cli._blas_probe_skipped():
        assert sys.modules[cli._BLAS_PROBE] is None
        with pytest.raises(ImportError):
            __import__(cli._BLAS_PROBE)
    assert cli._BLAS_PROBE not in sys.modules
    # Already imported (scipy.linalg loaded earlier in the process): left alone.
    marker = object()
    monkeypatch.setitem(sys.modules, cli._BLAS_PROBE, marker)
    with cli._blas_probe_skipped():
        assert sys.modules[cli._BLAS_PROBE] is marker
    assert sys.modules[cli._BLAS_PROBE] is marker
