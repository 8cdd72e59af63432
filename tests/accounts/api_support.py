"""Helpers of the API tests: users on each plan, keys, a client that sends a key."""

from __future__ import annotations

from typing import Any

from django.test import Client

from accounts.models import User
from accounts.services.apikeys import api_key_create
from tests.backtester.backtest_factories import make_user

__all__ = ["bearer", "error_of", "key_for", "make_user"]


def key_for(user: User, name: str = "script") -> str:
    """A fresh key of ``user`` (the one-time secret)."""
    return api_key_create(user=user, name=name).key


def bearer(key: str, **defaults: Any) -> Client:
    """A client that sends ``Authorization: Bearer <key>`` on every request and no cookie."""
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}", **defaults)


def error_of(response) -> dict:
    """The ``error`` object of an answer, after checking it has exactly the one format."""
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "fields"}, error
    assert isinstance(error["code"], str)
    assert error["code"]
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["fields"], dict)
    for messages in error["fields"].values():
        assert isinstance(messages, list)
        assert all(isinstance(m, str) for m in messages)
    return error
