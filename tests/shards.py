"""Run the test suite as two shards side by side (``make test`` with no PYTEST_ARGS).

Much of the suite waits on real processes (Celery workers, daphne, Chromium, loopback fake
exchanges), so two pytest processes on a 2-core machine finish the whole suite in about half
the wall time of one. Each shard is fully separate: its own PostgreSQL test database, Redis
database, Celery queues, cache and Channels prefixes, and var/ directory, so a shard's workers
never take the other's tasks. Test files are assigned by a greedy balance on their measured
times (``tests/shard_times.json``, written from the last full run's JUnit reports with
``python tests/shards.py --record``); a file not measured yet is costed from its size, more for
files that start workers, servers or a browser, scaled to seconds by the measured files.

With arguments (``make test PYTEST_ARGS="tests/x -k y"``) it runs one plain pytest instead.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARDS = 2
HEAVY = re.compile(rb"live_worker|daphne|playwright|chromium|subprocess\.Popen|schemathesis")
TIMES = ROOT / "tests" / "shard_times.json"
LOGS = ROOT / "var" / "test-shards"


def _size_cost(path: Path) -> float:
    data = path.read_bytes()
    return len(data) + (60_000 if HEAVY.search(data) else 0)


def _costs(files: list[Path], measured: dict[str, float]) -> dict[Path, float]:
    """Each file's expected seconds: measured, else its size cost scaled by the measured files."""
    known = [(measured[str(p.relative_to(ROOT))], _size_cost(p)) for p in files
             if str(p.relative_to(ROOT)) in measured]  # fmt: skip
    scale = sum(t for t, _ in known) / sum(c for _, c in known) if known else 1.0
    return {p: measured.get(str(p.relative_to(ROOT)), _size_cost(p) * scale) for p in files}


def assign(
    files: list[Path], shards: int = SHARDS, measured: dict[str, float] | None = None
) -> list[list[Path]]:
    """Greedy longest-first balance of the files' expected times over ``shards`` groups."""
    costs = _costs(files, measured or {})
    groups: list[list[Path]] = [[] for _ in range(shards)]
    loads = [0.0] * shards
    for path in sorted(files, key=lambda p: (-costs[p], str(p))):
        i = loads.index(min(loads))
        groups[i].append(path)
        loads[i] += costs[path]
    return groups


def _load_times() -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in json.loads(TIMES.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _test_file(classname: str) -> str | None:
    """``tests.a.test_b.TestC`` -> ``tests/a/test_b.py``: the longest prefix that is a file."""
    parts = classname.split(".")
    for end in range(len(parts), 0, -1):
        path = "/".join(parts[:end]) + ".py"
        if (ROOT / path).is_file():
            return path
    return None


def record() -> int:
    """Sum the last run's per-test times by file (JUnit reports) into tests/shard_times.json."""
    times: dict[str, float] = {}
    for report in sorted(LOGS.glob("shard*.xml")):
        for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314 - our own file
            path = _test_file(case.get("classname", ""))
            if path:
                times[path] = times.get(path, 0.0) + float(case.get("time") or 0)
    TIMES.write_text(json.dumps({k: round(v, 1) for k, v in sorted(times.items())}, indent=0))
    print(f"recorded {len(times)} files, {sum(times.values()):.0f} s in all -> {TIMES}")
    return 0


def _suffixed_db(url: str, suffix: str) -> str:
    base, _, name = url.rpartition("/")
    return f"{base}/{name}{suffix}"


def _redis_db(url: str, offset: int) -> str:
    base, _, db = url.rpartition("/")
    number = int(db) if db.isdigit() else 0
    return f"{base}/{(number + offset) % 16}"


def shard_env(i: int) -> dict[str, str]:
    env = dict(os.environ)
    tag = f"-s{i}"
    env["DATABASE_URL"] = _suffixed_db(env["DATABASE_URL"], f"_s{i}")
    env["REDIS_URL"] = _redis_db(env["REDIS_URL"], i)
    for name in ("CELERY_TASK_DEFAULT_QUEUE", "CELERY_LIVE_QUEUE", "CACHE_KEY_PREFIX"):
        env[name] = env.get(name, "test") + tag
    env["CHANNELS_PREFIX"] = env.get("CHANNELS_PREFIX", "test") + tag
    var_dir = env.get("VAR_DIR", str(ROOT / "var" / "test")) + tag
    env["VAR_DIR"] = var_dir
    env["EXCHANGE_URL_OVERRIDES"] = f"@{var_dir}/exchange-url-overrides.json"
    return env


def main(argv: list[str]) -> int:
    python = sys.executable
    if argv == ["--record"]:
        return record()
    if argv:
        return subprocess.call([python, "-m", "pytest", *argv], cwd=ROOT)
    files = sorted((ROOT / "tests").rglob("test_*.py"))
    groups = assign(files, measured=_load_times())
    logs_dir = LOGS
    logs_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    started = time.monotonic()
    for i, group in enumerate(groups):
        log = open(logs_dir / f"shard{i}.log", "wb")  # noqa: SIM115 - closed below
        rel = [str(p.relative_to(ROOT)) for p in group]
        print(f"shard {i}: {len(rel)} test files -> {log.name}", flush=True)
        proc = subprocess.Popen(
            [python, "-m", "pytest", "-p", "no:cacheprovider",
             f"--junitxml={logs_dir / f'shard{i}.xml'}", *rel],
            cwd=ROOT, env=shard_env(i), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append((proc, log, i))
    while any(p.poll() is None for p, _, _ in procs):
        time.sleep(30)
        running = [i for p, _, i in procs if p.poll() is None]
        print(f"  {time.monotonic() - started:5.0f} s: shards still running {running}", flush=True)
    status = 0
    for proc, log, i in procs:
        log.close()
        text = (logs_dir / f"shard{i}.log").read_text(errors="replace")
        tail = text[text.rfind("= FAILURES =") - 200 :] if "= FAILURES =" in text else text
        print(f"\n===== shard {i} (exit {proc.returncode}) =====", flush=True)
        print("\n".join(tail.splitlines()[-400:]), flush=True)
        status = status or proc.returncode
    print(f"\nboth shards done in {time.monotonic() - started:.0f} s; exit {status}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
