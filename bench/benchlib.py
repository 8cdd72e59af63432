"""Shared steps of the app benchmarks: environment, a database of their own, workers, polling.

The scripts run as ``python bench/<name>.py``, so this directory is first on ``sys.path`` and
they import this module as ``benchlib``. Nothing here imports Django at module level: the
environment has to be set before ``django.setup()``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Production settings insist on billing credentials; the benches never talk to Stripe.
STRIPE_PLACEHOLDERS = {
    "STRIPE_SECRET_KEY": "sk_test_not_a_real_key",
    "STRIPE_WEBHOOK_SECRET": "whsec_test_not_a_real_secret",
    "STRIPE_PRICE_ID": "price_test_pro",
    "STRIPE_API_BASE": "http://127.0.0.1:9",
}


# What every bench assumes unless the environment says otherwise.
BASE_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/quantfold",
    "REDIS_URL": "redis://127.0.0.1:6379/1",
    "DJANGO_SECRET_KEY": "bench-only-not-secret",
    "DJANGO_SECURE": "0",
}

YEAR_OF_MINUTES = 525_600


def django_env(*defaults: dict[str, str]) -> None:
    """Put the project on sys.path and default the settings a bench needs (env wins)."""
    sys.path.insert(0, str(ROOT))
    for extra in (BASE_ENV, *defaults):
        for key, value in extra.items():
            os.environ.setdefault(key, value)


def own_queue(prefix: str) -> str:
    """A queue, cache prefix and channel prefix of this process's own; returns the tag.

    Other workers on the same Redis must not take these tasks, and ours must not take theirs.
    """
    tag = f"{prefix}-{os.getpid()}"
    os.environ["CELERY_TASK_DEFAULT_QUEUE"] = tag
    os.environ["CACHE_KEY_PREFIX"] = tag
    os.environ["CHANNELS_PREFIX"] = tag
    return tag


def parse_and_setup(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Add ``--keep-db``, parse the command line, then set Django up."""
    parser.add_argument("--keep-db", action="store_true", help="keep the bench database")
    args = parser.parse_args()
    import django

    django.setup()
    return args


def parse_repeat(doc: str | None, *, default: int, help_text: str) -> argparse.Namespace:
    """Parse a timing bench's command line (``--repeat`` and ``--keep-db``; described by the
    first paragraph of ``doc``), then set Django up."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=default, help=help_text)
    return parse_and_setup(parser)


def bench_database(bench: str, *, fresh: bool = False) -> tuple[str, str, str]:
    """Create (or reuse; always anew when ``fresh``) ``test_<server db>_<bench>bench``: the
    server db, the bench db and its URL. Exits with status 2 unless DATABASE_URL names a
    PostgreSQL server."""
    from django.db import connection

    if connection.vendor != "postgresql":
        print(f"{bench} bench: DATABASE_URL must name a PostgreSQL server", file=sys.stderr)
        raise SystemExit(2)
    settings = connection.settings_dict
    old_name = settings["NAME"]
    settings.setdefault("TEST", {})["NAME"] = f"test_{old_name}_{bench}bench"
    db_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=not fresh)
    return old_name, db_name, _server_url(connection.settings_dict, db_name)


def year_of_minutes() -> Any:
    """A year (525,600) of the first demo asset's one-minute candles."""
    from backtester.marketdata.demo import DEMO_ASSETS, generate_minutes

    return generate_minutes(DEMO_ASSETS[0]).slice(0, YEAR_OF_MINUTES)


def bench_series(timeframe: str, candles: Any = None) -> Any:
    """A fresh synthetic BTC/USDT series of ``timeframe`` on the "bench" exchange (earlier
    bench series removed); ``candles``, when given, are stored in it and its summary reloaded."""
    from backtester.marketdata import store
    from backtester.models import MarketSeries

    MarketSeries.objects.filter(exchange="bench").delete()
    series = MarketSeries.objects.create(
        exchange="bench", symbol="BTC/USDT", timeframe=timeframe, source="demo", synthetic=True
    )
    if candles is not None:
        store.write_candles(series=series, candles=candles)
        series.refresh_from_db()
    return series


def series_span(series: Any) -> tuple[int, int]:
    """The first and last candle times (ms) of a stored, non-empty series."""
    assert series.first_ts is not None
    assert series.last_ts is not None
    return int(series.first_ts), int(series.last_ts)


def _server_url(db: dict[str, Any], name: str) -> str:
    """A postgres:// URL for database ``name`` on the server the settings point at."""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    user, host = db.get("USER") or "postgres", db.get("HOST") or "127.0.0.1"
    return f"postgres://{user}{password}@{host}:{db.get('PORT') or 5432}/{name}"


def drop_database(old_name: str, *, keep: bool) -> None:
    """Drop the bench database (unless kept) and point the connection back at the server db."""
    from django.db import connection

    connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=keep)


def log_dir() -> Path:
    """Where worker logs go (VAR_DIR, else /tmp), created if missing."""
    path = Path(os.environ.get("VAR_DIR", "/tmp"))  # noqa: S108
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_workers(
    tag: str,
    db_url: str,
    workers: list[tuple[str, Path]],
    pool: list[str],
    *,
    timeout: float,
    who: str = "a worker",
) -> list[subprocess.Popen[bytes]]:
    """Start one ``celery worker`` per (node name, log) on the tag's queue; wait until ready."""
    env = dict(os.environ, DATABASE_URL=db_url, PYTHONUNBUFFERED="1")
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    for node, log in workers:
        cmd = [
            sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", tag,
            "--pool", *pool, "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "-n", f"{node}@%h",
        ]  # fmt: skip
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        procs.append((proc, log))
    deadline = time.monotonic() + timeout
    for proc, log in procs:
        while b"ready." not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_workers([p for p, _ in procs])
                raise RuntimeError(f"{who} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
    return [p for p, _ in procs]


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    """Terminate the workers, killing any that has not exited within 20 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_completed(row: Any, what: str, start: float) -> float:
    """Poll a run's row until it is no longer active; seconds since start, or raise if failed."""
    while True:
        row.refresh_from_db(fields=["status", "error"])
        if not row.is_active:
            break
        time.sleep(0.005)
    elapsed = time.perf_counter() - start
    row.refresh_from_db()
    if row.status != row.Status.COMPLETED:
        raise RuntimeError(f"{what} {row.pk} {row.status}: {row.error}")
    return elapsed
