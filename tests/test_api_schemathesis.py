"""The whole API, fuzzed from its own OpenAPI schema by schemathesis (issue 10): against a live
daphne process, as a Pro user with an API key and some data, a bounded number of generated
requests per operation (valid and invalid ones). No answer may be a 5xx, and every answer must
match the schema (status code, content type, body).

Operations that reach an exchange over the internet are left out (candle downloads, scans and
watchlist saves that check symbols on the exchange).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.services.apikeys import api_key_create
from tests.backtester.backtest_factories import make_series, make_strategy, make_user, span
from tests.conftest import ROOT, _stop, free_port, subprocess_env, wait_for_port

pytestmark = pytest.mark.django_db(transaction=True)

# Examples per operation and generation mode: ~50 operations x 2 modes, about two minutes.
EXAMPLES = 8
ASGI_APP = "config.asgi:application"
INTERNET = {
    ("POST", "/api/v1/market-data/fetch-jobs/"),
    ("POST", "/api/v1/scanner/watchlists/"),
    ("PUT", "/api/v1/scanner/watchlists/{id}/"),
    ("PATCH", "/api/v1/scanner/watchlists/{id}/"),
    ("POST", "/api/v1/scanner/watchlists/{id}/scan/"),
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_server(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[str]:
    """A daphne process like the session's, with the Pro request rate raised so the fuzzer
    measures answers rather than the throttle."""
    with django_db_blocker.unblock():
        env = subprocess_env()
    env["API_THROTTLE_PRO"] = "100000/min"
    port = free_port()
    log = tmp_path_factory.mktemp("fuzz") / "daphne.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), ASGI_APP],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


def _fuzzer(
    operation: Any,
    mode: GenerationMode,
    call: Callable[[Any], Any],
    failures: list[str],
) -> Callable[[], None]:
    """A hypothesis test that sends ``operation``'s generated cases and records the first
    failed check (with the curl command that repeats it)."""
    label = f"{operation.label} [{mode.value}]"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        if failures:
            return
        response = call(case)
        try:
            case.validate_response(response, checks=CHECKS)
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{label}: {exc}"[:3000])

    return fuzz


def _run_operation(
    operation: Any, base: str, headers: dict[str, str], sent: list[str]
) -> str | None:
    """Fuzz one operation with valid and invalid input; the first failure as text, or None."""
    session = requests.Session()
    failures: list[str] = []

    def call(case: Any) -> Any:
        sent.append(operation.label)
        return case.call(base_url=base, session=session, headers=headers)

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        _fuzzer(operation, mode, call, failures)()
    return failures[0] if failures else None


def test_the_whole_api_answers_without_server_errors_and_as_documented(fuzz_server):
    user = make_user(pro=True)
    series = make_series(n=400, owner=None)
    make_strategy(user)
    assert span(series)[0] > 0
    key = api_key_create(user=user, name="schemathesis").key
    headers = {"Authorization": f"Bearer {key}"}

    raw = requests.get(f"{fuzz_server}/api/v1/schema/?format=json", timeout=30)
    assert raw.status_code == 200
    schema = schemathesis.openapi.from_dict(raw.json())
    operations = [result.ok() for result in schema.get_all_operations()]
    fuzzed = [op for op in operations if (op.method.upper(), op.path) not in INTERNET]
    assert len(fuzzed) >= 40, [op.label for op in fuzzed]

    sent: list[str] = []
    failures = [f for op in fuzzed if (f := _run_operation(op, fuzz_server, headers, sent))]
    assert failures == [], "\n\n".join(failures)
    # Every operation was really exercised, several times.
    assert {op.label for op in fuzzed} <= set(sent)
    assert len(sent) >= 4 * len(fuzzed)
