"""Shared fixtures: real worker, real daphne, real browser, spare Redis servers.

Subprocesses get the same settings as the test process, pointed at the test database that
pytest-django created, so what they write is what the tests read.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection
from pytest_django import DjangoDbBlocker

ROOT = Path(__file__).resolve().parent.parent
# The `localstripe` fixture (Stripe's API on loopback for the billing tests).
pytest_plugins = ["tests.accounts.localstripe"]
T = TypeVar("T")
# Playwright's sync API keeps an event loop on the main thread; the ORM calls the tests make
# around it are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def pytest_report_header(config: pytest.Config) -> list[str]:
    db = settings.DATABASES["default"]
    return [
        f"database: {db['ENGINE'].rsplit('.', 1)[-1]} {db.get('HOST') or ''}"
        f":{db.get('PORT') or ''}/{db['NAME']} (tests use the test_ prefixed copy)",
        f"celery broker: {_redact(settings.CELERY_BROKER_URL)}",
        f"channel layer: {settings.CHANNEL_LAYERS['default']['BACKEND']}",
        f"cache: {settings.CACHES['default']['BACKEND']}",
    ]


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def subprocess_env() -> dict[str, str]:
    """The test process's environment, with DATABASE_URL naming the test database."""
    env = dict(os.environ)
    db = connection.settings_dict
    if db["ENGINE"].endswith("postgresql"):
        user = db.get("USER") or "postgres"
        auth = user if not db.get("PASSWORD") else f"{user}:{db['PASSWORD']}"
        host = f"{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}"
        env["DATABASE_URL"] = f"postgres://{auth}@{host}/{db['NAME']}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def celery_worker_process(
    django_db_setup: None, django_db_blocker: DjangoDbBlocker, tmp_path_factory
) -> Iterator[subprocess.Popen[bytes]]:
    """A real `celery worker` process consuming this session's own queue."""
    with django_db_blocker.unblock():
        env = subprocess_env()
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "-Q",
        queue,
        "--pool",
        "threads",
        "--concurrency",
        "2",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        "-n",
        f"test-{os.getpid()}@%h",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180  # a loaded 2-core CI machine can take a minute
        while b"ready." not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        # (type: ignore below) where the worker logs, for the fixture's users
        proc.log_path = log  # type: ignore[attr-defined]
        _WORKER.update(name=f"test-{os.getpid()}@{socket.gethostname()}", consuming=True)
        yield proc
    finally:
        _WORKER.clear()
        _stop(proc)


# The session's worker stays up once started, but it must only serve the tests that ask for
# it: a test that runs a job in-process would otherwise race the worker for the same task.
_WORKER: dict[str, Any] = {}


def _worker_consumes(on: bool) -> None:
    from config.celery import app

    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    if on:
        # Tasks that tests without a worker enqueued are stale: drop them first.
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge(queue)
        replies = app.control.add_consumer(
            queue, destination=[_WORKER["name"]], reply=True, timeout=10
        )
    else:
        replies = app.control.cancel_consumer(
            queue, destination=[_WORKER["name"]], reply=True, timeout=10
        )
    if not replies:
        raise RuntimeError("the test worker did not answer a consumer change")
    _WORKER["consuming"] = on


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing() -> None:
    """Test users' passwords are hashed with few PBKDF2 rounds (tests/fast_hasher.py): the
    production count costs about 0.4 s a user on this machine, and the suite makes hundreds of
    users (the permission matrix alone three per case). Servers started in other processes
    still verify them. Only this test process is affected; the settings module keeps
    Django's default for every deployment."""
    settings.PASSWORD_HASHERS = ["tests.fast_hasher.FewRoundsPBKDF2"]


@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> None:
    """Each test gets its own channel layer object. The Redis layer keeps receive state (a
    count, a lock bound to one event loop) on the object; a receive a test left behind on its
    loop would otherwise fail the next test's receive on a new loop ("bound to a different
    event loop"). The messages themselves live in Redis, so nothing else changes."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def _nothing_frozen_past_a_test() -> Iterator[None]:
    """A fan-out that builds account instances freezes the process's objects out of the
    garbage collector (``AsyncHub.settle_memory``): in a worker those live on; in this test
    process they are another test's leftovers, given back to the collector after each test."""
    yield
    import gc

    gc.unfreeze()


@pytest.fixture(autouse=True)
def _session_worker_serves_only_tests_that_ask(request: pytest.FixtureRequest) -> None:
    if _WORKER.get("name"):
        wants = "celery_worker_process" in request.fixturenames
        if wants != _WORKER["consuming"]:
            _worker_consumes(wants)


@pytest.fixture(scope="session")
def daphne_server(
    django_db_setup: None, django_db_blocker: DjangoDbBlocker, tmp_path_factory
) -> Iterator[str]:
    """The ASGI app served by a real daphne process; yields its base URL."""
    with django_db_blocker.unblock():
        env = subprocess_env()
    port = free_port()
    log = tmp_path_factory.mktemp("daphne") / "daphne.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "config.asgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port)
        yield ServerURL(f"http://127.0.0.1:{port}", pid=proc.pid)
    finally:
        _stop(proc)


class ServerURL(str):
    """A server's base URL that also carries the server process's id (to read its memory)."""

    pid: int

    def __new__(cls, url: str, *, pid: int) -> ServerURL:
        obj = super().__new__(cls, url)
        obj.pid = pid
        return obj


@pytest.fixture
def spare_redis(tmp_path: Path) -> Iterator[dict[str, object]]:
    """A private redis-server on a free port that a test may stop (the shared one stays up)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    info: dict[str, object] = {"url": f"redis://127.0.0.1:{port}/0", "proc": proc}
    try:
        yield info
    finally:
        _stop(proc)


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Headless Debian Chromium driven by Playwright (no downloaded browser builds)."""
    from playwright.sync_api import sync_playwright

    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("Chromium is not installed: run `make chromium` (apt-get install chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def clear_run_cache() -> None:
    """Delete this run's keys from the shared cache, and only those.

    ``cache.clear()`` on the shared Redis would FLUSHDB every other run's keys too (rate-limit
    counters, throttles, results of overlapping test runs); each run has its own
    CACHE_KEY_PREFIX (the Makefile sets ``test-<pid>``), so delete under that prefix alone.
    A process-local cache (the embedded shape) is this run's own and is simply cleared.
    """
    from django.core.cache import caches
    from django.core.cache.backends.redis import RedisCache

    cache = caches["default"]
    if not isinstance(cache, RedisCache):
        cache.clear()
        return
    client = cache._cache.get_client(write=True)
    pattern = _glob_escape(cache.key_prefix) + ":*"
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def arun(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a fresh loop in its own thread.

    Playwright's sync API keeps an event loop running on the main thread for the whole
    session, so asyncio.run() cannot be called there directly.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
