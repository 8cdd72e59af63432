"""python manage.py fetch_candles binance BTC/USDT 1h --since 2024-01-01 [--until 2024-06-01]

Downloads candles from an exchange into the shared series, with a progress bar on stderr.
Incremental and resumable: run it again and it continues from the last stored candle.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from backtester.services.marketdata import candles_fetch
from config.exceptions import ApplicationError


def parse_utc(value: str) -> int:
    """ "2024-01-01" or "2024-01-01T12:00" (UTC unless an offset is given) -> epoch ms."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{value!r} is not a date like 2024-01-01 or 2024-01-01T12:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


class ProgressBar:
    """A one-line bar redrawn with \\r: fraction, candles so far, elapsed time.

    ``stream`` is a file or a command's OutputWrapper (written without its line ending).
    """

    def __init__(self, stream: Any, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.started = time.monotonic()
        self.drawn = False

    def __call__(self, fraction: float, candles: int) -> None:
        fraction = max(0.0, min(1.0, fraction))
        filled = round(fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = time.monotonic() - self.started
        self._write(
            f"\r[{bar}] {fraction * 100:5.1f}%  {candles:,} candle{'s' if candles != 1 else ''}"
            f"  {elapsed:5.1f}s"
        )
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self._write("\n")

    def _write(self, text: str) -> None:
        if isinstance(self.stream, OutputWrapper):
            self.stream.write(text, ending="")
        else:
            self.stream.write(text)
        self.stream.flush()


class Command(BaseCommand):
    help = (
        "Download candles from an exchange (ccxt id, e.g. binance) into the shared catalog. "
        "Incremental: only what is missing is fetched; re-running continues an interrupted run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("exchange", help="ccxt exchange id, e.g. binance")
        parser.add_argument("symbol", help="market, e.g. BTC/USDT")
        parser.add_argument("timeframe", help="e.g. 1m, 15m, 1h, 1d")
        parser.add_argument("--since", required=True, help="first candle, UTC date (2024-01-01)")
        parser.add_argument("--until", help="stop before this UTC date (default: now)")
        parser.add_argument(
            "--url-override",
            action="append",
            default=[],
            metavar="[KEY=]URL",
            help="point the exchange's API at another server (tests, mirrors); a bare URL "
            "replaces the host of every API URL, KEY=URL one entry of ccxt's urls['api']",
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        since = parse_utc(options["since"])
        until = parse_utc(options["until"]) if options.get("until") else None
        bar = None if options["no_progress"] else ProgressBar(self.stderr)
        try:
            result = candles_fetch(
                exchange=options["exchange"],
                symbol=options["symbol"],
                timeframe=options["timeframe"],
                since_ts=since,
                until_ts=until,
                progress=bar,
                url_overrides=options["url_override"] or None,
            )
        except ApplicationError as exc:
            if bar is not None:
                bar.close()
            raise CommandError(exc.message) from None
        except KeyboardInterrupt:
            if bar is not None:
                bar.close()
            raise CommandError(
                "Interrupted. What was downloaded is kept; run the same command to continue."
            ) from None
        if bar is not None:
            bar.close()
        series = result.series
        span = ""
        if series.first_ts is not None and series.last_ts is not None:
            span = f" from {_utc(series.first_ts)} to {_utc(series.last_ts)}"
        self.stdout.write(
            self.style.SUCCESS(
                f"{series.exchange} {series.symbol} {series.timeframe}: "
                f"{result.candles_received:,} candles received in {result.pages} pages, "
                f"{result.candles_added:,} new; the series holds {series.count:,}{span}."
            )
        )
        if result.retries:
            self.stdout.write(f"Retried {len(result.retries)} times (rate limits or errors).")
        if result.gaps:
            self.stdout.write(f"Gaps in the exchange's history ({len(result.gaps)}, not filled):")
            for gap in result.gaps[:20]:
                self.stdout.write(
                    f"  {_utc(gap.start_ms)} .. {_utc(gap.end_ms)}  ({gap.missing_bars} candles)"
                )
            if len(result.gaps) > 20:
                self.stdout.write(f"  ... and {len(result.gaps) - 20} more")


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
