"""The backtester's kinds of background run, registered with the shared lifecycle
(config/runs) when the app starts: model, the task that runs one, the state a page draws and
the wording of errors. Services enqueue through the lifecycle, which finds the task here by
name, so no service imports a task module."""

from __future__ import annotations

from django.conf import settings

from config.runs.registry import RunKind, register


def _research_queue() -> str:
    """``RESEARCH_TASK_QUEUE`` (optional) gives research its own workers."""
    return str(getattr(settings, "RESEARCH_TASK_QUEUE", "") or "")


def register_kinds() -> None:
    from backtester.services import (
        backtests,
        marketdata,
        montecarlo,
        optimization,
        scanner,
        walkforward,
    )

    describe = backtests.user_message
    register(
        RunKind(
            kind="backtest",
            model="backtester.Backtest",
            noun="backtest",
            task="backtester.run_backtest",
            state=backtests.state_extra,
            describe=describe,
        )
    )
    register(
        RunKind(
            kind="optimization",
            model="backtester.OptimizationJob",
            noun="optimization",
            task="",  # a chord, sent by services/optimization.py
            state=optimization.state_extra,
            describe=describe,
            queue=_research_queue,
        )
    )
    register(
        RunKind(
            kind="walkforward",
            model="backtester.WalkForwardJob",
            noun="walk-forward",
            task="backtester.walkforward",
            state=walkforward.state_extra,
            describe=describe,
            queue=_research_queue,
        )
    )
    register(
        RunKind(
            kind="montecarlo",
            model="backtester.MonteCarloRun",
            noun="Monte Carlo run",
            task="backtester.run_montecarlo",
            state=montecarlo.state_extra,
            describe=describe,
        )
    )
    register(
        RunKind(
            kind="stress",
            model="backtester.StressRun",
            noun="stress test",
            task="backtester.run_stress",
            state=montecarlo.state_extra,
            describe=describe,
        )
    )
    register(
        RunKind(
            kind="scan",
            model="backtester.ScanRun",
            noun="scan",
            task="backtester.scan_run",
            state=scanner.state_extra,
            describe=scanner.user_message,
        )
    )
    register(
        RunKind(
            kind="fetch",
            model="backtester.FetchJob",
            noun="download",
            task="backtester.fetch_candles",
            state=marketdata.fetch_state_extra,
            describe=marketdata.fetch_user_message,
        )
    )
    register(
        RunKind(
            kind="upload",
            model="backtester.UploadJob",
            noun="upload",
            task="backtester.parse_upload",
            state=marketdata.upload_state_extra,
            describe=marketdata.fetch_user_message,
        )
    )
