"""Serve the embedded shape: daphne for HTTP/websockets, a Celery worker and Celery beat.

`python -m config.embedded [--port 8000]` starts the three as child processes of this one and
supervises them: Ctrl-C or SIGTERM stops all three, and when any one exits (or is killed) the
others are stopped too, so `make run` is one command with no external server.

Beat is its own child, not a part of the worker (`worker --beat` forks it from the worker, and
killing the worker then left that beat running, so a restart ran two beats and every scheduled
task twice). It also keeps a pidfile, so a second beat refuses to start while one lives, and on
Linux every child is told to stop if this supervisor itself dies.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that asks Linux to SIGTERM the child when its parent dies (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


def commands(host: str, port: str, var_dir: str) -> dict[str, list[str]]:
    """The three processes of the embedded shape."""
    py = sys.executable
    return {
        "web": [py, "-m", "daphne", "-b", host, "-p", str(port), "config.asgi:application"],
        "worker": [
            py, "-m", "celery", "-A", "config", "worker",
            # The default queue and the live one (exchange work, kill switch, copy orders).
            "-Q", os.environ.get("CELERY_TASK_DEFAULT_QUEUE", "celery") + ","
            + os.environ.get("CELERY_LIVE_QUEUE", "live"),
            "--pool", "threads", "--concurrency", "2", "--loglevel", "INFO",
        ],
        "beat": [
            py, "-m", "celery", "-A", "config", "beat",
            "--schedule", os.path.join(var_dir, "celerybeat-schedule"),
            "--pidfile", os.path.join(var_dir, "celerybeat.pid"),
            "--loglevel", "INFO",
        ],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", default=os.environ.get("PORT", "8000"))
    args = parser.parse_args(argv)
    var_dir = os.environ.get("VAR_DIR", "var")
    os.makedirs(var_dir, exist_ok=True)
    preexec = _die_with_parent()
    procs = {
        name: subprocess.Popen(cmd, preexec_fn=preexec)  # noqa: S603 - our own fixed commands
        for name, cmd in commands(args.host, args.port, var_dir).items()
    }
    print(
        f"Serving on http://{args.host}:{args.port}/  (Ctrl-C stops web, worker and beat)",
        flush=True,
    )

    def stop(*_: object) -> None:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    gone = [name for name, p in procs.items() if p.returncode is not None]
    if gone:
        print(f"{', '.join(gone)} stopped; stopping the rest", flush=True)
    stop()
    for proc in procs.values():
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return max(abs(p.returncode or 0) for p in procs.values())


if __name__ == "__main__":
    raise SystemExit(main())
