"""Static files as `make run` and production serve them: content-hashed names, gzip (and brotli
when installed) copies, a far-future immutable cache header (plotly.js is 4.8 MB raw)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request

import pytest

from tests.conftest import ROOT, free_port, wait_for_port
from tests.test_settings_shapes import PROD_ONLY

PLOTLY = "vendor/plotly/plotly.min.js"
YEAR = 365 * 24 * 3600


def _get(url: str, encoding: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Accept-Encoding": encoding})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, dict(response.headers), response.read()


@pytest.mark.slow
def test_plotly_is_served_compressed_under_a_hashed_name_with_a_far_future_cache(tmp_path):
    # The embedded shape with its defaults (what `make run` serves): no STATIC_MANIFEST given.
    env = {k: v for k, v in os.environ.items() if k not in PROD_ONLY}
    env.update(
        VAR_DIR=str(tmp_path / "var"), STATIC_ROOT=str(tmp_path / "static"), PYTHONUNBUFFERED="1"
    )
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )
    manifest = json.loads((tmp_path / "static" / "staticfiles.json").read_text())["paths"]
    hashed = manifest[PLOTLY]
    assert re.fullmatch(r"vendor/plotly/plotly\.min\.[0-9a-f]{12}\.js", hashed), hashed
    url_of = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            f"from django.templatetags.static import static; print(static({PLOTLY!r}))",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()[-1]
    assert url_of == f"/static/{hashed}"  # pages link the hashed name

    port = free_port()
    server = subprocess.Popen(
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
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        base = f"http://127.0.0.1:{port}"
        raw_size = (ROOT / "static" / PLOTLY).stat().st_size
        for accept in ("gzip", "br, gzip"):
            status, headers, body = _get(base + url_of, accept)
            assert status == 200
            assert headers.get("Content-Encoding") in ("gzip", "br")
            assert len(body) < raw_size / 3, (accept, len(body), raw_size)
            cache = headers["Cache-Control"]
            max_age = int(re.search(r"max-age=(\d+)", cache).group(1))
            assert max_age >= YEAR
            assert "immutable" in cache
            assert "public" in cache
            assert "Accept-Encoding" in headers.get("Vary", "")
    finally:
        server.terminate()
        server.wait(timeout=20)
