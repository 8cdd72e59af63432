"""Reading what a real test worker process logged.

A run's row is saved as finished inside the task, a moment before Celery logs that the task
succeeded, so a test that reads the log as soon as it sees the row can miss the line. Wait for it.
"""

from __future__ import annotations

import subprocess
import time


def wait_for_log(proc: subprocess.Popen[bytes], text: str, timeout: float = 60.0) -> str:
    """The worker's log once it contains `text`; fails with the log's tail after `timeout`."""
    path = proc.log_path  # type: ignore[attr-defined]  # set by the celery_worker_process fixture
    deadline = time.monotonic() + timeout
    while True:
        log: str = path.read_text()
        if text in log:
            return log
        if time.monotonic() > deadline:
            tail = log[-3000:]
            raise AssertionError(f"{text!r} not in the worker log after {timeout} s:\n{tail}")
        time.sleep(0.1)
