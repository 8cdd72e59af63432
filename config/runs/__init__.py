"""One lifecycle for every background run the user waits for.

A run (backtest, optimization, walk-forward, Monte Carlo, stress test, scan, candle download,
upload parsing) is a row whose model inherits ``config.runs.models.Run``: one status enum, a
progress fraction and stage, the error the user reads, and a heartbeat. ``config.runs.lifecycle``
is the only code that moves a run between statuses:

    create (queued) ── enqueue after commit ──▶ claim (running, idempotent)
        ── progress / heartbeat to ``run-<kind>-<id>`` ──▶ complete | fail(message) | cancel
    and a beat task, ``runs.sweep``, that fails a running run whose heartbeat stopped.

Services name their tasks through ``config.runs.registry`` (a kind, a model, a task name), so
no service imports a task module. ``config.runs.consumers.RunConsumer`` is the one websocket
consumer (``ws/runs/<kind>/<id>/``) and ``config.runs.views.run_state`` the one polling
fallback; ``static/js/run_live.js`` with ``templates/runs/_progress.html`` draws them.
"""
