"""The OpenAPI schema: it validates with warnings as failures, documents the Bearer key and the
one error format on every operation, and real answers of every endpoint match it."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.test import Client
from jsonschema import Draft202012Validator

from backtester.models import FetchJob
from backtester.services.backtests import backtest_execute
from tests.accounts.api_support import bearer, key_for, make_user
from tests.backtester.backtest_factories import make_series, make_strategy

ROOT = Path(__file__).resolve().parents[2]


def test_spectacular_validates_the_schema_with_warnings_as_failures(tmp_path):
    out = tmp_path / "schema.yaml"
    proc = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "spectacular",
            "--validate",
            "--fail-on-warn",
            "--file",
            str(out),
        ],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    schema = yaml.safe_load(out.read_text())
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/backtests/{id}/cancel/" in schema["paths"]


# --- what the schema says ---------------------------------------------------------------------


@pytest.fixture
def schema(db) -> dict[str, Any]:
    response = Client().get("/api/v1/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def _operations(schema: dict[str, Any]):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_the_schema_lists_every_api_endpoint(schema):
    paths = set(schema["paths"])
    assert {
        "/api/v1/me/",
        "/api/v1/strategies/",
        "/api/v1/strategies/{id}/",
        "/api/v1/market-data/series/",
        "/api/v1/market-data/series/{id}/",
        "/api/v1/market-data/series/upload/",
        "/api/v1/market-data/fetch-jobs/",
        "/api/v1/market-data/fetch-jobs/{id}/",
        "/api/v1/backtests/",
        "/api/v1/backtests/{id}/",
        "/api/v1/backtests/{id}/result/",
        "/api/v1/backtests/{id}/trades/",
        "/api/v1/backtests/{id}/equity/",
        "/api/v1/backtests/{id}/cancel/",
    } <= paths
    assert not any("schema" in p or "docs" in p or "redoc" in p for p in paths)


def test_the_bearer_key_is_the_documented_security_scheme(schema):
    scheme = schema["components"]["securitySchemes"]["apiKey"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    for path, method, operation in _operations(schema):
        assert {"apiKey": []} in operation["security"], (path, method)


def test_every_operation_documents_the_error_format_for_its_errors(schema):
    ref = {"$ref": "#/components/schemas/Error"}
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert error["properties"]["error"]["required"] == ["code", "message", "fields"]
    for path, method, operation in _operations(schema):
        responses = operation["responses"]
        expected = {"401", "403", "429"}
        if method in {"post", "put", "patch"}:
            expected.add("400")
        if "{id}" in path:
            expected.add("404")
        assert expected <= set(responses), (path, method)
        for code, answer in responses.items():
            if code >= "400":
                assert answer["content"]["application/json"]["schema"] == ref, (path, code)
        assert "Retry-After" in responses["429"]["headers"]
    for path in ("/api/v1/backtests/{id}/result/", "/api/v1/backtests/{id}/cancel/"):
        method = "post" if path.endswith("cancel/") else "get"
        assert "409" in schema["paths"][path][method]["responses"]


def test_list_endpoints_document_their_filters(schema):
    def names(path: str) -> set[str]:
        return {p["name"] for p in schema["paths"][path]["get"].get("parameters", [])}

    assert {"status", "strategy", "symbol", "timeframe", "created_after", "created_before"} <= (
        names("/api/v1/backtests/")
    )
    assert {"exchange", "symbol", "timeframe", "source", "mine"} <= names(
        "/api/v1/market-data/series/"
    )
    assert {"page", "page_size"} <= names("/api/v1/strategies/")


# --- real answers against the schema ----------------------------------------------------------


def _json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema 2020-12, strict: objects that list their properties
    allow no others, so an undocumented field in an answer fails."""
    if isinstance(node, list):
        return [_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return {"$ref": node["$ref"]}
    out = {k: _json_schema(v) for k, v in node.items() if k not in {"example", "nullable"}}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


class Contract:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.components = _json_schema(copy.deepcopy(schema["components"]))
        self.checked: set[tuple[str, str, str]] = set()

    def check(self, response, path: str, method: str = "get", *, expect: int = 200) -> Any:
        code = str(response.status_code)
        assert response.status_code == expect, (path, method, response.content[:300])
        responses = self.schema["paths"][path][method]["responses"]
        assert code in responses, f"{method.upper()} {path} answered {code}, not documented"
        self.checked.add((path, method, code))
        content = responses[code].get("content")
        if content is None:
            assert not response.content
            return None
        body = response.json()
        spec = {**_json_schema(content["application/json"]["schema"])}
        validator = Draft202012Validator({**spec, "components": self.components})
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        assert not errors, f"{method.upper()} {path} {code}: " + "; ".join(
            f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]
        )
        return body


@pytest.mark.django_db(transaction=True)
def test_real_answers_of_every_endpoint_match_the_schema():
    schema = Client().get("/api/v1/schema/?format=json").json()
    contract = Contract(schema)
    user = make_user()
    api = bearer(key_for(user))
    shared = make_series(n=2000)
    upload = make_series(owner=user, symbol="MINE/USDT", n=300, seed=4)
    strategy = make_strategy(user)

    body = contract.check(api.get("/api/v1/me/"), "/api/v1/me/")
    assert body["pro"] is True
    contract.check(api.get("/api/v1/strategies/"), "/api/v1/strategies/")
    made = api.post(
        "/api/v1/strategies/", {"preset": "rsi_reversion"}, content_type="application/json"
    )
    contract.check(made, "/api/v1/strategies/", "post", expect=201)
    one = f"/api/v1/strategies/{made.json()['id']}/"
    contract.check(api.get(one), "/api/v1/strategies/{id}/")
    patch = api.patch(one, {"description": "x"}, content_type="application/json")
    contract.check(patch, "/api/v1/strategies/{id}/", "patch")
    full = {
        "name": "Replaced",
        "entry_long": "close > sma(close, 20)",
        "exit_long": "close < sma(close, 20)",
    }
    put = api.put(one, full, content_type="application/json")
    contract.check(put, "/api/v1/strategies/{id}/", "put")
    contract.check(api.delete(one), "/api/v1/strategies/{id}/", "delete", expect=204)

    contract.check(api.get("/api/v1/market-data/series/"), "/api/v1/market-data/series/")
    contract.check(
        api.get(f"/api/v1/market-data/series/{shared.pk}/"), "/api/v1/market-data/series/{id}/"
    )
    job = FetchJob.objects.create(owner=user, series=shared, since_ts=shared.first_ts)
    contract.check(
        api.get(f"/api/v1/market-data/fetch-jobs/{job.pk}/"),
        "/api/v1/market-data/fetch-jobs/{id}/",
    )

    submit = {
        "strategy": strategy.pk,
        "series": [shared.pk],
        "start": "2024-01-02",
        "end": "2024-03-20",
        "settings": {"initial_cash": 5000, "stop_loss": 0.02},
    }
    queued = api.post("/api/v1/backtests/", submit, content_type="application/json")
    body = contract.check(queued, "/api/v1/backtests/", "post", expect=202)
    bt = f"/api/v1/backtests/{body['id']}/"
    contract.check(api.get(bt + "result/"), "/api/v1/backtests/{id}/result/", expect=409)
    backtest_execute(backtest_id=body["id"])
    contract.check(api.get("/api/v1/backtests/"), "/api/v1/backtests/")
    contract.check(api.get(bt), "/api/v1/backtests/{id}/")
    contract.check(api.get(bt + "result/"), "/api/v1/backtests/{id}/result/")
    trades = contract.check(api.get(bt + "trades/?page_size=3"), "/api/v1/backtests/{id}/trades/")
    assert len(trades["results"]) == 3
    contract.check(api.get(bt + "equity/?points=50"), "/api/v1/backtests/{id}/equity/")
    contract.check(api.post(bt + "cancel/"), "/api/v1/backtests/{id}/cancel/", "post", expect=409)
    cached = api.post("/api/v1/backtests/", submit, content_type="application/json")
    contract.check(cached, "/api/v1/backtests/", "post", expect=201)

    contract.check(
        api.delete(f"/api/v1/market-data/series/{upload.pk}/"),
        "/api/v1/market-data/series/{id}/",
        "delete",
        expect=204,
    )
    # errors, documented on the operations that give them
    contract.check(api.get("/api/v1/backtests/999999/"), "/api/v1/backtests/{id}/", expect=404)
    contract.check(api.get("/api/v1/backtests/?status=bogus"), "/api/v1/backtests/", expect=400)
    contract.check(Client().get("/api/v1/strategies/"), "/api/v1/strategies/", expect=401)
    free = bearer(key_for(make_user(pro=False)))
    contract.check(free.get("/api/v1/strategies/"), "/api/v1/strategies/", expect=403)
    codes = {code for _, _, code in contract.checked}
    assert {"200", "201", "202", "204", "400", "401", "403", "404", "409"} <= codes
