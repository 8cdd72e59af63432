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
        grid_search,
        marketdata,
        montecarlo,
        optimization,
        scanner,
        walkforward,
    )

    strategy_errors = backtests.user_message
    # kind, model, noun, task ("" = a chord sent by its service), state, describe, queue
    table = (
        ("backtest", "Backtest", "backtest", "backtester.run_backtest",
         backtests.state_extra, strategy_errors, None),
        ("optimization", "OptimizationJob", "optimization", "",
         optimization.state_extra, strategy_errors, _research_queue),
        ("walkforward", "WalkForwardJob", "walk-forward", "backtester.walkforward",
         walkforward.state_extra, strategy_errors, _research_queue),
        ("montecarlo", "MonteCarloRun", "Monte Carlo run", "backtester.run_montecarlo",
         montecarlo.state_extra, strategy_errors, None),
        ("stress", "StressRun", "stress test", "backtester.run_stress",
         montecarlo.state_extra, strategy_errors, None),
        ("scan", "ScanRun", "scan", "backtester.scan_run",
         scanner.state_extra, scanner.user_message, None),
        ("fetch", "FetchJob", "download", "backtester.fetch_candles",
         marketdata.fetch_state_extra, marketdata.fetch_user_message, None),
        ("upload", "UploadJob", "upload", "backtester.parse_upload",
         marketdata.upload_state_extra, marketdata.fetch_user_message, None),
        ("gridsearch", "GridSearch", "grid search", "backtester.search_grids",
         grid_search.state_extra, grid_search.describe, _research_queue),
    )  # fmt: skip
    for kind, model, noun, task, state, describe, queue in table:
        register(
            RunKind(
                kind=kind,
                model=f"backtester.{model}",
                noun=noun,
                task=task,
                state=state,
                describe=describe,
                queue=queue,
            )
        )
