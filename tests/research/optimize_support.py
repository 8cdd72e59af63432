"""Builders shared by the optimization and walk-forward tests: users, series and strategies come
from the backtest factories; these add the request a form would send and the chunk plan a
chord would carry."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from backtester.engine.optimize import plan_combinations, search_space
from backtester.models import OptimizationJob
from backtester.services.optimization import chunk_bounds
from backtester.services.strategies import spec_from_dict

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"initial_cash": 10_000.0, "taker_fee": 0.001, "slippage_bps": 1.0}


def request_args(user, strategy, series, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of ``optimization_create`` for a small SMA grid over all the data."""
    args: dict[str, Any] = {
        "user": user,
        "strategy": strategy,
        "series": series,
        "start": int(series.first_ts),
        "end": int(series.last_ts),
        "settings": SETTINGS,
        "ranges": {"fast": {"low": 5, "high": 20, "step": 5}, "slow": [20, 40, 60]},
        "objective": "sharpe",
        "constraint": "fast < slow",
        "min_trades": 1,
    }
    args.update(overrides)
    return args


def chunks_of(job: OptimizationJob) -> list[tuple[int, int, list[dict[str, Any]]]]:
    """(chunk index, first, combinations) as ``optimization_create`` sends them: the plan is
    rebuilt from what the job saved (ranges, method, samples, seed, constraint)."""
    spec = spec_from_dict(job.spec)
    plan = plan_combinations(
        spec,
        search_space(spec, job.ranges),
        method=job.method,
        samples=job.samples,
        seed=job.seed,
        constraint=job.constraint or None,
    )
    combos = [dict(c) for c in plan.combinations]
    assert len(combos) == job.combinations
    return [
        (index, first, combos[first : first + size])
        for index, (first, size) in enumerate(chunk_bounds(len(combos)))
    ]


# --- real worker processes on a private queue -----------------------------------------------


def start_workers(
    *, queue: str, names: list[str], env: dict[str, str], log_dir: Path
) -> list[dict[str, Any]]:
    """One ``celery worker`` process per name, each consuming only ``queue`` with the solo pool
    (one task at a time, run in the worker's own process, so its pid is the process's).
    Returns ``[{"proc", "name", "log"}]`` once every worker says it is ready."""
    workers: list[dict[str, Any]] = []
    for name in names:
        log = log_dir / f"{name.split('@')[0]}.log"
        cmd = [
            sys.executable, "-m", "celery", "-A", "config", "worker",
            "-Q", queue, "--pool", "solo", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "-n", name,
        ]  # fmt: skip
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        workers.append({"proc": proc, "name": name.replace("%h", socket.gethostname()), "log": log})
    deadline = time.monotonic() + 120
    for w in workers:
        while b"ready." not in w["log"].read_bytes():
            if w["proc"].poll() is not None or time.monotonic() > deadline:
                stop_workers(workers)
                raise RuntimeError(f"worker did not start:\n{w['log'].read_text()[-3000:]}")
            time.sleep(0.2)
    return workers


def stop_workers(workers: list[dict[str, Any]]) -> None:
    for w in workers:
        if w["proc"].poll() is None:
            w["proc"].terminate()
    for w in workers:
        try:
            w["proc"].wait(timeout=20)
        except subprocess.TimeoutExpired:
            w["proc"].kill()
            w["proc"].wait()


def set_consuming(workers: list[dict[str, Any]], queue: str, on: bool) -> None:
    """Make the workers stop or resume taking tasks from ``queue`` (so a test can join a
    websocket group before the first chunk runs: deterministic, no sleeps)."""
    from config.celery import app

    method = app.control.add_consumer if on else app.control.cancel_consumer
    names = [w["name"] for w in workers]
    replies = method(queue, destination=names, reply=True, timeout=10)
    answered = {name for reply in replies or () for name in reply}
    assert answered == set(names), f"workers did not answer the consumer command: {replies}"
