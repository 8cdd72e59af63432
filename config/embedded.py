"""Serve the embedded shape: daphne for HTTP/websockets plus a Celery worker (with beat).

`python -m config.embedded [--port 8000]` starts both as child processes, forwards Ctrl-C and
stops the other when one exits, so `make run` is one command with no external server.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", default=os.environ.get("PORT", "8000"))
    args = parser.parse_args(argv)
    py = sys.executable
    var_dir = os.environ.get("VAR_DIR", "var")
    commands = {
        "web": [
            py,
            "-m",
            "daphne",
            "-b",
            args.host,
            "-p",
            str(args.port),
            "config.asgi:application",
        ],
        "worker": [
            py,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            # the default queue and copy trading's live queue (one process serves both here)
            f"{os.environ.get('CELERY_TASK_DEFAULT_QUEUE', 'celery')},"
            f"{os.environ.get('CELERY_LIVE_QUEUE', 'live')}",
            "--beat",
            "--schedule",
            os.path.join(var_dir, "celerybeat-schedule"),
            "--pool",
            "threads",
            "--concurrency",
            "2",
            "--loglevel",
            "INFO",
        ],
    }
    procs = {
        name: subprocess.Popen(cmd)  # noqa: S603 - our own fixed commands
        for name, cmd in commands.items()
    }
    print(f"Serving on http://{args.host}:{args.port}/  (Ctrl-C stops web and worker)", flush=True)

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
    stop()
    for proc in procs.values():
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return max((p.returncode or 0) for p in procs.values())


if __name__ == "__main__":
    raise SystemExit(main())
