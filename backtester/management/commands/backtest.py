"""``manage.py backtest``: run one backtest on a candle file from the command line.

Examples::

    python manage.py backtest --data btc.csv --preset sma_cross --set fast=10 --set slow=30 \\
        --fee 0.001
    python manage.py backtest --data btc.parquet --entry "rsi(close, 14) < 30" \\
        --exit "rsi(close, 14) > 70" --json

The work is done by ``run_cli`` (and ``main`` for a Django-free entry point), which use only the
engine and argparse: no settings, no database. Every expected error becomes one line on stderr
and a non-zero exit (``CommandError`` under Django).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from django.core.management.base import BaseCommand, CommandError

from backtester.engine.candles import Candles
from backtester.engine.errors import ConfigError, EngineError
from backtester.engine.language import PRESETS, Param, StrategySpec
from backtester.engine.metrics import METRICS
from backtester.engine.readers import read_csv, read_json, read_parquet
from backtester.engine.run import result_to_dict, run_backtest
from backtester.engine.simulate import SimConfig
from backtester.results.metric_table import METRIC_LABELS

_READERS = {
    ".csv": read_csv,
    ".txt": read_csv,
    ".tsv": read_csv,
    ".parquet": read_parquet,
    ".pq": read_parquet,
    ".json": read_json,
}
_FILLS = {"next_open": "next_open", "next-open": "next_open", "open": "next_open", "close": "close"}
_OPTION_OF = {
    "initial_cash": "--cash",
    "taker_fee": "--fee",
    "maker_fee": "--maker-fee",
    "slippage_bps": "--slippage-bps",
    "stop_loss": "--stop-loss",
    "take_profit": "--take-profit",
    "trailing_stop": "--trailing-stop",
    "max_heat": "--max-heat",
    "max_open_positions": "--max-positions",
    "cooldown_bars": "--cooldown-bars",
    "weekly_loss_limit": "--weekly-loss",
    "monthly_loss_limit": "--monthly-loss",
    "max_order_notional": "--max-order-value",
    "max_leverage": "--max-leverage",
    "stoploss_guard_count": "--sl-guard-count",
    "stoploss_guard_lookback_bars": "--sl-guard-lookback-bars",
    "stoploss_guard_lock_bars": "--sl-guard-lock-bars",
    "low_profit_lookback_bars": "--low-profit-lookback-bars",
    "low_profit_min": "--low-profit-min",
    "low_profit_lock_bars": "--low-profit-lock-bars",
}
_GROUP_TITLES = {
    "returns": "Returns",
    "risk": "Risk",
    "risk_adjusted": "Risk-adjusted",
    "drawdown": "Drawdown",
    "trades": "Trades",
    "benchmark": "Benchmark",
    "costs": "Costs",
}


class CliError(Exception):
    """A user error with a one-line message meant for stderr."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options on ``parser`` (shared by Django and ``main``)."""
    parser.add_argument("--data", metavar="FILE", help="candles as .csv, .parquet or .json")
    parser.add_argument("--symbol", default="", help="symbol name to report (optional)")
    parser.add_argument(
        "--timeframe", default="", help='bar length such as "1m" or "1h" (default: inferred)'
    )
    parser.add_argument("--preset", metavar="NAME", help="a built-in strategy, e.g. sma_cross")
    parser.add_argument("--entry", metavar="EXPR", help="long entry rule (instead of --preset)")
    parser.add_argument("--exit", metavar="EXPR", help="long exit rule")
    parser.add_argument("--entry-short", metavar="EXPR", help="short entry rule")
    parser.add_argument("--exit-short", metavar="EXPR", help="short exit rule")
    parser.add_argument(
        "--set",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="a strategy parameter (repeatable); with --entry/--exit it also declares it",
    )
    parser.add_argument("--cash", type=float, default=10_000.0, help="initial cash (10000)")
    parser.add_argument(
        "--fee",
        type=float,
        default=None,
        help="taker fee per fill as a fraction, e.g. 0.001 (default 0.001, as the web form)",
    )
    parser.add_argument(
        "--maker-fee",
        type=float,
        default=None,
        help="fee of limit fills (default: --fee when given, else 0.0005)",
    )
    parser.add_argument(
        "--slippage-bps", type=float, default=None, help="adverse slippage (default 2)"
    )
    parser.add_argument(
        "--fill",
        default="next_open",
        choices=sorted(_FILLS),
        help="fill signals at the next bar's open (default) or at the signal bar's close",
    )
    parser.add_argument(
        "--stop-loss", type=float, default=0.0, help="stop-loss distance, fraction (off)"
    )
    parser.add_argument(
        "--take-profit", type=float, default=0.0, help="take-profit distance, fraction (off)"
    )
    parser.add_argument(
        "--trailing-stop", type=float, default=0.0, help="trailing stop distance, fraction (off)"
    )
    # Risk limits of risk/rules.py (0 = off).
    parser.add_argument(
        "--max-heat", type=float, default=0.0, help="max loss to stops / equity, fraction (off)"
    )
    parser.add_argument(
        "--max-positions", type=int, default=0, help="max positions open at once (off)"
    )
    parser.add_argument(
        "--cooldown-bars", type=int, default=0, help="bars without entry after an exit (off)"
    )
    parser.add_argument(
        "--weekly-loss", type=float, default=0.0, help="weekly loss breaker, fraction (off)"
    )
    parser.add_argument(
        "--monthly-loss", type=float, default=0.0, help="monthly loss breaker, fraction (off)"
    )
    parser.add_argument(
        "--max-order-value", type=float, default=0.0, help="max value of one entry (off)"
    )
    parser.add_argument(
        "--max-leverage", type=float, default=0.0, help="max gross exposure / equity (off)"
    )
    parser.add_argument(
        "--sl-guard-count", type=int, default=0, help="stop-loss guard: losing stops (off)"
    )
    parser.add_argument(
        "--sl-guard-lookback-bars", type=int, default=0, help="stop-loss guard: lookback (0)"
    )
    parser.add_argument(
        "--sl-guard-lock-bars", type=int, default=0, help="stop-loss guard: lock length (0)"
    )
    parser.add_argument(
        "--sl-guard-all", action="store_true", help="stop-loss guard over every symbol at once"
    )
    parser.add_argument(
        "--low-profit-lookback-bars", type=int, default=0, help="low-profit lock: lookback (off)"
    )
    parser.add_argument(
        "--low-profit-min", type=float, default=0.0, help="low-profit lock: min summed return"
    )
    parser.add_argument(
        "--low-profit-lock-bars", type=int, default=0, help="low-profit lock: lock length (0)"
    )
    parser.add_argument(
        "--allow-short",
        action="store_true",
        help="let short rules trade (implied by --entry-short)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--no-trades", action="store_true", help="leave the trade list out of the JSON"
    )
    parser.add_argument(
        "--list-presets", action="store_true", help="list the built-in strategies and exit"
    )


# --------------------------------------------------------------------------------------------
# The work, without Django.


def _parse_sets(items: Sequence[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise CliError(f"--set expects NAME=VALUE, got {item!r}")
        if name in values:
            raise CliError(f"--set {name} is given twice")
        values[name] = value
    return values


def _declared_param(name: str, text: str) -> Param:
    """A parameter for a custom rule, its kind read off the value given with --set."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return Param(name, "bool", lowered == "true")
    try:
        return Param(name, "int", int(text))
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise CliError(f"--set {name}: {text!r} is not a number or true/false") from None
    if not math.isfinite(value):
        raise CliError(f"--set {name}: {text!r} is not a finite number")
    return Param(name, "float", value)


def _preset_listing() -> str:
    return ", ".join(sorted(PRESETS))


def _strategy(options: Mapping[str, Any], sets: dict[str, str]) -> StrategySpec:
    rules = {
        "entry_long": options.get("entry") or "",
        "exit_long": options.get("exit") or "",
        "entry_short": options.get("entry_short") or "",
        "exit_short": options.get("exit_short") or "",
    }
    preset = options.get("preset")
    if preset:
        if any(rules.values()):
            raise CliError("give either --preset or --entry/--exit rules, not both")
        if preset not in PRESETS:
            raise CliError(f"unknown preset {preset!r}; available: {_preset_listing()}")
        return PRESETS[preset]
    if not any(rules.values()):
        raise CliError(f"give --preset NAME or --entry EXPR (presets: {_preset_listing()})")
    params = tuple(_declared_param(name, text) for name, text in sets.items())
    return StrategySpec(name="custom", params=params, **rules)


def _config(options: Mapping[str, Any]) -> SimConfig:
    from backtester.services.backtests import DEFAULT_CONFIG

    # The product's defaults (services.backtests.DEFAULT_CONFIG), as the web form and the API:
    # the same request gives the same result wherever it is made.
    given = options.get("fee")
    fee = DEFAULT_CONFIG.taker_fee if given is None else float(given)
    maker = options.get("maker_fee")
    if maker is None and given is None:
        maker = DEFAULT_CONFIG.maker_fee
    fill = _FILLS.get(str(options.get("fill") or "next_open"))
    if fill is None:
        raise CliError(f"--fill must be one of {', '.join(sorted(_FILLS))}")
    # Short rules trade only when asked for: explicitly, or by writing a short rule.
    allow_short = bool(options.get("allow_short")) or bool(
        options.get("entry_short") and not options.get("preset")
    )
    try:
        return SimConfig(
            initial_cash=float(options.get("cash", 10_000.0)),
            fill="close" if fill == "close" else "next_open",
            taker_fee=fee,
            maker_fee=fee if maker is None else float(maker),
            slippage_bps=float(
                DEFAULT_CONFIG.slippage_bps
                if options.get("slippage_bps") is None
                else options["slippage_bps"]
            ),
            stop_loss=float(options.get("stop_loss") or 0.0),
            take_profit=float(options.get("take_profit") or 0.0),
            trailing_stop=float(options.get("trailing_stop") or 0.0),
            allow_short=allow_short,
            max_heat=float(options.get("max_heat") or 0.0),
            max_open_positions=int(options.get("max_positions") or 0),
            cooldown_bars=int(options.get("cooldown_bars") or 0),
            weekly_loss_limit=float(options.get("weekly_loss") or 0.0),
            monthly_loss_limit=float(options.get("monthly_loss") or 0.0),
            max_order_notional=float(options.get("max_order_value") or 0.0),
            max_leverage=float(options.get("max_leverage") or 0.0),
            stoploss_guard_count=int(options.get("sl_guard_count") or 0),
            stoploss_guard_lookback_bars=int(options.get("sl_guard_lookback_bars") or 0),
            stoploss_guard_lock_bars=int(options.get("sl_guard_lock_bars") or 0),
            stoploss_guard_all=bool(options.get("sl_guard_all")),
            low_profit_lookback_bars=int(options.get("low_profit_lookback_bars") or 0),
            low_profit_min=float(options.get("low_profit_min") or 0.0),
            low_profit_lock_bars=int(options.get("low_profit_lock_bars") or 0),
        )
    except ConfigError as exc:
        # Name the command-line option, not the SimConfig field behind it.
        text = str(exc)
        for field, option in _OPTION_OF.items():
            if text.startswith(field + " "):
                text = option + text[len(field) :]
                break
        raise CliError(text) from None


def load_candles(path_text: str, *, symbol: str = "", timeframe: str = "") -> Candles:
    """Read a candle file chosen by its extension; CliError names the file and the problem."""
    path = Path(path_text)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise CliError(
            f"{path}: unknown file type {path.suffix or '(none)'!r}; use .csv, .parquet or .json"
        )
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    try:
        return reader(path, symbol=symbol or path.stem, timeframe=timeframe)
    except EngineError as exc:
        raise CliError(f"{path}: {exc}") from None
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}") from None


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


_BLAS_PROBE = "scipy.linalg.cython_blas"
_WARM_BARS = 400


@contextmanager
def _blas_probe_skipped() -> Iterator[None]:
    """While numba loads its first kernel it imports scipy.linalg (when scipy is installed:
    ~0.4 s of a fresh process) only to learn whether np.dot may use BLAS. No engine kernel
    calls BLAS, so during the warm-up that one import answers "not installed"; the entry is
    removed afterwards, so scipy itself imports normally later."""
    if _BLAS_PROBE in sys.modules:  # scipy.linalg already loaded: nothing to skip
        yield
        return
    sys.modules[_BLAS_PROBE] = None  # type: ignore[assignment]  # "not importable"
    try:
        yield
    finally:
        if _BLAS_PROBE in sys.modules and sys.modules[_BLAS_PROBE] is None:
            del sys.modules[_BLAS_PROBE]


def _warm_candles() -> Candles:
    """A small random walk: enough bars for any preset's warm-up to produce trades."""
    rng = np.random.default_rng(0)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, _WARM_BARS)))
    open_ = np.r_[100.0, close[:-1]]
    return Candles(
        np.arange(_WARM_BARS, dtype=np.int64) * 3_600_000,
        open_,
        np.maximum(open_, close) * 1.002,
        np.minimum(open_, close) * 0.998,
        close,
        np.ones(_WARM_BARS),
        timeframe="1h",
    )


def start_warmup(
    spec: StrategySpec, sets: Mapping[str, str], config: SimConfig
) -> threading.Thread:
    """Load the compiled kernels this backtest needs in a background thread while the main
    thread reads the candle file: the same strategy and settings run once on a small synthetic
    series, so exactly the kernels (and type signatures) of the real run get loaded. Best
    effort: a strategy the small series cannot serve (an extra column) just warms less."""

    def warm() -> None:
        with _blas_probe_skipped(), suppress(EngineError):
            run_backtest(_warm_candles(), spec, dict(sets), config)

    thread = threading.Thread(target=warm, name="backtest-kernel-warmup", daemon=True)
    thread.start()
    return thread


def run_cli(options: Mapping[str, Any]) -> dict[str, Any]:
    """Do what the command does and return the JSON-ready summary (``result_to_dict`` plus
    data, config and read time). ``options`` are the parsed command-line options by dest name.
    Raises CliError with a one-line message for every user error."""
    data = options.get("data")
    if not data:
        raise CliError("--data FILE is required")
    sets = _parse_sets(options.get("set") or [])
    try:
        spec = _strategy(options, sets)
        config = _config(options)
    except EngineError as exc:
        raise CliError(str(exc)) from None
    # A fresh process spends ~0.5 s loading compiled kernels on its first backtest; that runs
    # in the background while the file is read (pandas and pyarrow parse without the GIL).
    warmup = start_warmup(spec, sets, config)
    started = time.perf_counter()
    try:
        candles = load_candles(
            str(data), symbol=options.get("symbol") or "", timeframe=options.get("timeframe") or ""
        )
    finally:
        read_seconds = time.perf_counter() - started
        warmup.join()
    if len(candles) == 0:
        raise CliError(f"{data}: the file holds no candles")
    try:
        result = run_backtest(candles, spec, sets, config)
    except EngineError as exc:
        raise CliError(str(exc)) from None
    summary = result_to_dict(result, include_trades=not options.get("no_trades"))
    summary["data"] = {
        "file": str(data),
        "symbol": candles.symbol,
        "timeframe": candles.timeframe or None,
        "bars": len(candles),
        "start": _iso(int(candles.timestamp[0])),
        "end": _iso(int(candles.timestamp[-1])),
    }
    summary["config"] = {
        "initial_cash": config.initial_cash,
        "fill": config.fill,
        "taker_fee": config.taker_fee,
        "maker_fee": config.maker_fee,
        "slippage_bps": config.slippage_bps,
        "stop_loss": config.stop_loss,
        "take_profit": config.take_profit,
        "trailing_stop": config.trailing_stop,
        "allow_short": config.allow_short,
    }
    # The risk limits the options set (0 = off), so a run says which ones applied.
    for field in (*_OPTION_OF, "stoploss_guard_all"):
        if field not in summary["config"]:
            summary["config"][field] = getattr(config, field)
    summary["read_seconds"] = read_seconds
    return summary


def list_presets() -> str:
    """The built-in strategies with their parameters, one block per preset."""
    lines: list[str] = []
    for name in sorted(PRESETS):
        spec = PRESETS[name]
        lines.append(f"{name}: {spec.description}")
        for p in spec.params:
            span = "" if p.low is None else f" [{p.low}..{p.high} step {p.step or 1}]"
            lines.append(f"    {p.name} = {p.default}{span}  {p.description}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Human-readable output.


def _format_duration(ms: float) -> str:
    minutes = round(ms / 60_000)
    days, rest = divmod(minutes, 1_440)
    hours, mins = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if hours or days:
        parts.append(f"{hours}h")
    parts.append(f"{mins}m")
    return " ".join(parts)


def format_value(value: float | None, fmt: str) -> str:
    """One metric as the summary table shows it: pct as %, money with separators, etc."""
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if fmt == "pct":
        return f"{value * 100:,.2f} %"
    if fmt == "money":
        return f"{value:,.2f}"
    if fmt == "bars":
        return f"{value:,.0f} bars"
    if fmt == "duration":
        return _format_duration(value)
    if fmt == "number":
        return f"{value:,.0f}" if value == int(value) else f"{value:,.4g}"
    return f"{value:,.3f}"


def format_summary(summary: Mapping[str, Any]) -> str:
    """The readable report: run header, headline numbers and every metric grouped.

    Numbers are right-aligned in one column so magnitudes can be compared at a glance.
    """
    # (label, value, is_number) per row, grouped under a title.
    sections: list[tuple[str, list[tuple[str, str, bool]]]] = []
    data = summary.get("data") or {}
    params = ", ".join(f"{k}={v}" for k, v in (summary.get("params") or {}).items())
    sections.append(
        (
            "Run",
            [
                ("Strategy", summary["strategy"] + (f" ({params})" if params else ""), False),
                ("Data", f"{data.get('file', '')} ({data.get('bars', 0):,} bars)", False),
                ("Period", f"{data.get('start', '')} .. {data.get('end', '')}", False),
                ("Engine time", f"{summary['engine_seconds'] * 1000:,.1f} ms", True),
            ],
        )
    )
    pos = summary.get("open_position")
    sections.append(
        (
            "Result",
            [
                ("Final equity", format_value(summary["final_equity"], "money"), True),
                ("Total return", format_value(summary["total_return"], "pct"), True),
                ("Closed trades", f"{summary['trades']:,}", True),
                ("Open position", "none" if not pos else _position_text(pos), False),
            ],
        )
    )
    metrics = summary.get("metrics") or {}
    for group, title in _GROUP_TITLES.items():
        rows = [
            (METRIC_LABELS[m.key], format_value(metrics.get(m.key), m.fmt), True)
            for m in METRICS
            if m.group == group and m.key in metrics
        ]
        if rows:
            sections.append((title, rows))
    width = max(len(label) for _, rs in sections for label, _, _ in rs)
    vwidth = max(len(value) for _, rs in sections for _, value, num in rs if num)
    out: list[str] = []
    for title, rs in sections:
        out.append(title)
        for label, value, num in rs:
            out.append(f"  {label.ljust(width)}  {value.rjust(vwidth) if num else value}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _position_text(pos: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    items = [pos] if isinstance(pos, Mapping) else list(pos)
    return "; ".join(
        f"{p['side']} {p['qty']:.6g} @ {p['entry_price']:,.4f} "
        f"(unrealized {p['unrealized_pnl']:,.2f})"
        for p in items
    )


def render(summary: Mapping[str, Any], *, as_json: bool) -> str:
    """The text the command prints: one JSON object, or the readable report."""
    if as_json:
        # allow_nan=False guarantees strict JSON: every non-finite value was mapped to null.
        return json.dumps(summary, allow_nan=False) + "\n"
    return format_summary(summary)


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the command without Django: 0 on success, 2 for a user error (message on stderr)."""
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    parser = argparse.ArgumentParser(prog="backtest", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        options = vars(parser.parse_args(argv))
    except SystemExit as exc:  # argparse has already printed its usage message
        return int(exc.code or 0)
    try:
        if options.get("list_presets"):
            out.write(list_presets() + "\n")
            return 0
        summary = run_cli(options)
    except CliError as exc:
        err.write(f"error: {exc}\n")
        return 2
    out.write(render(summary, as_json=bool(options.get("json"))))
    return 0


class Command(BaseCommand):
    help = "Run one backtest on a candle file (preset or custom rules) and print its metrics."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options.get("list_presets"):
                self.stdout.write(list_presets())
                return
            summary = run_cli(options)
        except CliError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(render(summary, as_json=bool(options.get("json"))), ending="")


if __name__ == "__main__":  # pragma: no cover - convenience without manage.py
    raise SystemExit(main())
