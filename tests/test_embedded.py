"""The embedded shape (what `make run` serves) end to end: SQLite, the file-system broker, the
SQLite channel layer, daphne and a worker as separate processes, driven from a real browser."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.channel_layers import SQLiteChannelLayer
from tests.conftest import arun, free_port, wait_for_port
from tests.test_settings_shapes import PROD_ONLY

ROOT = Path(__file__).resolve().parent.parent


def test_sqlite_channel_layer_carries_a_group_message_between_processes(tmp_path):
    path = str(tmp_path / "layer.sqlite3")
    layer = SQLiteChannelLayer(path=path)

    async def scenario() -> dict:
        channel = await layer.new_channel()
        await layer.group_add("job-1", channel)
        sender = (
            "import asyncio; from config.channel_layers import SQLiteChannelLayer as L;"
            f"asyncio.run(L(path={path!r}).group_send('job-1', {{'type': 'p', 'pct': 42}}))"
        )
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", sender, cwd=ROOT)
        assert await proc.wait() == 0
        return await asyncio.wait_for(layer.receive(channel), 10)

    assert arun(scenario()) == {"type": "p", "pct": 42}


def test_sqlite_channel_layer_drops_members_that_left(tmp_path):
    layer = SQLiteChannelLayer(path=str(tmp_path / "l.sqlite3"))

    async def scenario() -> bool:
        channel = await layer.new_channel()
        await layer.group_add("g", channel)
        await layer.group_discard("g", channel)
        await layer.group_send("g", {"type": "x"})
        try:
            await asyncio.wait_for(layer.receive(channel), 0.5)
        except TimeoutError:
            return True
        return False

    assert arun(scenario())


@pytest.mark.browser
def test_embedded_site_runs_background_jobs_and_streams_the_answer(browser, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in PROD_ONLY}
    # The source files by plain names: no collectstatic here (tests/test_static_files.py does it).
    env.update(
        VAR_DIR=str(tmp_path), PYTHONUNBUFFERED="1", WHITENOISE_USE_FINDERS="1", STATIC_MANIFEST="0"
    )
    env.pop("CELERY_TASK_DEFAULT_QUEUE", None)

    def manage(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        )
        return out.stdout

    manage("migrate", "--noinput")
    manage("seed_demo", "--password", "demo-pass-for-test-1")
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "config.embedded", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=60)
        page = browser.new_page()
        base = f"http://127.0.0.1:{port}"
        page.goto(f"{base}/accounts/login/")
        page.fill("input[name=login]", "demo@example.com")
        page.fill("input[name=password]", "demo-pass-for-test-1")
        page.click("form button[type=submit]")
        page.wait_for_url(f"{base}/dashboard/")
        page.goto(f"{base}/accounts/profile/")
        page.wait_for_timeout(500)  # the page's websocket joins the user's group
        page.click("#selftest-form button")
        result = page.wait_for_selector("#selftest-result[data-state=ok]", timeout=60_000)
        assert "ms" in result.inner_text()
        # seed_demo linked the demo user's paper account (issue 11).
        page.goto(f"{base}/exchanges/paper/new/")
        assert "Paper USDT" in page.inner_text("#paper-accounts")
        assert "10000 USDT" in page.inner_text("#paper-accounts")
        page.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
    assert "Serving on" in (tmp_path / "serve.log").read_text()


def _children(pid: int) -> dict[int, str]:
    """Live child processes of ``pid`` (from /proc) with their command lines."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_killing_the_embedded_worker_leaves_no_beat_behind(tmp_path):
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if k not in PROD_ONLY}
    env.update(VAR_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    env.pop("CELERY_TASK_DEFAULT_QUEUE", None)
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "config.embedded", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        children: dict[int, str] = {}
        while time.monotonic() < deadline:
            children = _children(server.pid)
            if len(children) == 3 and (tmp_path / "celerybeat.pid").exists():
                break
            time.sleep(0.2)
        roles = {
            ("beat" if " beat " in cmd else "worker" if " worker " in cmd else "web"): pid
            for pid, cmd in children.items()
        }
        assert set(roles) == {"web", "worker", "beat"}, children
        os.kill(roles["worker"], signal.SIGKILL)
        server.wait(timeout=30)  # the supervisor notices and stops the rest
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(p) for p in roles.values()):
            time.sleep(0.2)
        assert not any(_alive(p) for p in roles.values()), "a child outlived the worker"
        assert not (tmp_path / "celerybeat.pid").exists()  # beat stopped cleanly
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()
    assert "worker stopped; stopping the rest" in (tmp_path / "serve.log").read_text()
