"""Request bodies against the real daphne process (issue 10, items 2 and 12).

An oversized body is refused from its Content-Length before anything reads it into memory
(anonymous callers get a small limit, credentialed ones the upload limit), so the server's peak
memory does not grow by the body's size; a malformed multipart body gets the API's error format,
not the server's bare 400.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from accounts.services.apikeys import api_key_create
from tests.backtester.backtest_factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)

MB = 1024 * 1024
BIG = 150 * MB
BOUNDARY = "qfboundary"


def _peak_rss_reset(pid: int) -> None:
    # Writing 5 to clear_refs resets the process's peak resident set size (VmHWM).
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def _multipart_stream(size: int) -> Iterator[bytes]:
    """A multipart/form-data body of exactly ``size`` bytes: one file field full of zeros."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    yield head
    left = size - len(head) - len(tail)
    block = b"0" * MB
    while left > 0:
        piece = block[: min(MB, left)]
        left -= len(piece)
        yield piece
    yield tail


def _post(
    base: str, path: str, body: bytes | Iterator[bytes], size: int, **headers: str
) -> tuple[int, bytes]:
    url = urlsplit(base)
    assert url.hostname is not None
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    try:
        all_headers = {
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Length": str(size),
            **headers,
        }
        conn.request("POST", path, body=body, headers=all_headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _error(body: bytes) -> dict:
    parsed = json.loads(body)
    assert set(parsed) == {"error"}
    assert set(parsed["error"]) == {"code", "message", "fields"}
    assert parsed["error"]["message"]
    return parsed["error"]


@pytest.mark.parametrize(
    "path", ["/accounts/billing/stripe/webhook/", "/accounts/login/", "/api/v1/backtests/"]
)
def test_an_anonymous_large_body_is_refused_without_reading_it(daphne_server, path):
    _peak_rss_reset(daphne_server.pid)
    before = _peak_rss(daphne_server.pid)
    status, body = _post(daphne_server, path, _multipart_stream(BIG), BIG)
    grown = _peak_rss(daphne_server.pid) - before
    assert grown < 40 * MB, f"the server's peak memory grew by {grown / MB:.0f} MB"
    assert status == 413
    assert _error(body)["code"] == "too_large"


def test_an_anonymous_body_over_the_small_limit_is_refused(daphne_server):
    size = settings.REQUEST_MAX_BODY_ANONYMOUS + 1
    status, body = _post(daphne_server, "/accounts/signup/", _multipart_stream(size), size)
    assert status == 413
    _error(body)


def test_an_upload_larger_than_the_limit_is_refused_without_reading_it(daphne_server):
    user = make_user(pro=True)
    key = api_key_create(user=user, name="big").key
    _peak_rss_reset(daphne_server.pid)
    before = _peak_rss(daphne_server.pid)
    status, body = _post(
        daphne_server,
        "/api/v1/market-data/series/upload/",
        _multipart_stream(BIG),
        BIG,
        Authorization=f"Bearer {key}",
    )
    grown = _peak_rss(daphne_server.pid) - before
    assert grown < 40 * MB, f"the server's peak memory grew by {grown / MB:.0f} MB"
    assert status == 413
    assert "MB" in _error(body)["message"]


def test_a_chunked_body_over_the_limit_is_refused(daphne_server):
    url = urlsplit(daphne_server)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    try:
        conn.request(
            "POST",
            "/accounts/login/",
            body=_multipart_stream(8 * MB),
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        assert response.status == 413
        _error(response.read())
    finally:
        conn.close()


def test_a_multipart_body_with_only_the_closing_boundary_gets_the_error_format(daphne_server):
    user = make_user(pro=True)
    key = api_key_create(user=user, name="probe").key
    body = f"--{BOUNDARY}--\r\n".encode()
    status, answer = _post(
        daphne_server,
        "/api/v1/market-data/series/upload/",
        body,
        len(body),
        Authorization=f"Bearer {key}",
    )
    assert status == 400
    _error(answer)
    status, answer = _post(
        daphne_server, "/api/v1/backtests/", body, len(body), Authorization=f"Bearer {key}"
    )
    assert status == 400
    _error(answer)
