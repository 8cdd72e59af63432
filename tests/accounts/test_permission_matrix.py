"""The permission matrix: every route of accounts, backtester and the API, tried by each persona.

Personas (healthchecks' alice/bob/charlie): the owner of the objects (Pro), another Pro user, a
Free user, an anonymous visitor, and the owner again after losing Pro. Expected:

* owner: the route's success code;
* another user on an object: 404 (the object does not exist for them);
* anonymous: a redirect to the login page (web) or 401 (API);
* Free user on a Pro feature: 403 with the upgrade message (the page's text, or the API error
  code "plan_required"); the owner who lost Pro gets the same on their own objects;
* the read-only samples (presets, shared demo data, the sample result): every signed-in
  persona, Pro or not, gets the page; anonymous goes to login; they take GET only and show
  shared demo objects only (``test_samples_are_read_only_and_show_only_shared_demo_data``).

The URLconf is walked, not listed: a route added under accounts/, backtester/ or /api/ without
an entry in MATRIX fails ``test_every_route_has_a_matrix_entry``; an API view method without a
case fails too. Websocket routes are walked the same way (``WS_MATRIX``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from django.shortcuts import resolve_url
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from rest_framework.views import APIView

from accounts.gating import UPGRADE_MESSAGE
from accounts.models import Subscription, User
from accounts.services.apikeys import api_key_create
from backtester.models import (
    Alert,
    Backtest,
    FetchJob,
    GridSearch,
    MarketSeries,
    MonteCarloRun,
    OptimizationJob,
    OptimizationRow,
    ScanRun,
    StressRun,
    UploadJob,
    WalkForwardJob,
    Watchlist,
)
from backtester.services.backtests import backtest_create, backtest_execute
from backtester.services.grid_bots import grid_bot_create
from backtester.services.live_bots import bot_create, bot_pause
from backtester.services.strategies import spec_to_dict, strategy_spec
from config.asgi import application
from config.routing import websocket_urlpatterns
from copytrading.models import Leader
from copytrading.models import Subscription as CopySubscription
from exchanges import vault
from exchanges.models import AccountSecret, ExchangeAccount
from exchanges.services_paper import paper_account_create
from risk.services import trading_state_set
from tests.backtester.backtest_factories import (
    candles,
    make_series,
    make_strategy,
    make_user,
    span,
)
from tests.conftest import arun
from tests.fakes.binance import FakeBinance
from tests.fakes.binance_private import FakeBinancePrivate

PRO, LOGIN, PUBLIC, READ_ONLY = "pro", "login", "public", "read_only"
GRID_BODY = {"symbol": "BTC/USDT", "lower": "90", "upper": "110", "levels": 5, "investment": "400"}
GRID_SEARCH_BODY = {"investment": "400", "lowers": ["90"], "uppers": ["110"], "levels": [5, 9]}
GRID_SEARCH_FORM = {
    "investment": "400", "lowers": "90", "uppers": "110", "levels": "5, 9",
    "spacings": "arithmetic", "trailing": "off", "objective": "total_return",
}  # fmt: skip
# A grid on the shared BTC/USDT series (prices near 100); "{pk}" is the series' id.
GRID_QUERY = {
    "series": "{pk}",
    "symbol": "BTC/USDT",
    "lower": "90",
    "upper": "110",
    "levels": "5",
    "spacing": "arithmetic",
    "investment": "400",
}
HOUR = 3_600_000
# Routes whose view lives in one of these packages, and every route under /api/, are covered.
SCOPE_MODULES = ("accounts.", "backtester.", "config.runs.", "exchanges.", "copytrading.", "risk.")
API_PREFIX = "api/"
_addresses = itertools.count(1)


@dataclass(frozen=True)
class Case:
    """One request of the matrix. ``obj`` names the world object whose id fills ``<pk>``;
    ``ok`` is the owner's status; ``anon`` is the anonymous visitor's on a public route."""

    access: str
    method: str = "get"
    obj: str | None = None
    ok: int = 200
    data: Callable[[Any], dict[str, Any]] | None = None
    kwargs: dict[str, Any] | Callable[[Any], dict[str, Any]] = field(default_factory=dict)
    query: dict[str, str] | None = None
    multipart: bool = False
    anon: int | None = None
    needs: tuple[str, ...] = ()
    # Another Pro user's status on ``obj``: 404 unless the object is published to every Pro
    # user (a copy-trading leader's profile).
    other: int = 404


def _csv_upload(world: Any) -> dict[str, Any]:
    c = candles(30, seed=7)
    frame = pd.DataFrame(
        {
            "timestamp": c.timestamp,
            "open": c.open,
            "high": c.high,
            "low": c.low,
            "close": c.close,
            "volume": c.volume,
        }
    )
    data = frame.to_csv(index=False).encode()
    return {"file": SimpleUploadedFile("mine.csv", data), "symbol": "NEW/USDT"}


def _backtest_body(world: Any) -> dict[str, Any]:
    start, end = span(world.shared)
    return {
        "strategy": world.strategy.pk,
        "series": [world.shared.pk],
        "start": start + 48 * HOUR,
        "end": end,
    }


def _validate_body(world: Any) -> dict[str, Any]:
    return {"expression": "close > 1", "field": "entry_long", "params": "[]"}


def _optimization_body(world: Any) -> dict[str, Any]:
    return {
        "strategy": world.strategy.pk,
        "series": world.shared.pk,
        "ranges": {"fast": [5, 10], "slow": [30, 40]},
    }


# The fake exchange's key for the exchange-account routes (a test-only value of the fake).
MATRIX_KEY, MATRIX_SECRET = "matrixkey0001", "matrixsecret0001"


def _key_body(world: Any) -> dict[str, Any]:
    return {"api_key": MATRIX_KEY, "secret": MATRIX_SECRET}


def _link_body(world: Any) -> dict[str, Any]:
    return {"exchange": "binance", "label": "Added", **_key_body(world)}


def _exchange_account(w: Any) -> ExchangeAccount:
    account = ExchangeAccount.objects.create(
        owner=w.owner, kind="api_key", exchange="binance", label="Main", key_last4="0001"
    )
    for name, value in (("api_key", MATRIX_KEY), ("api_secret", MATRIX_SECRET)):
        sealed = vault.seal(value)
        AccountSecret.objects.create(
            account=account,
            name=name,
            ciphertext=sealed.token,
            key_fingerprint=sealed.key_fingerprint,
        )
    return account


def _risk_form() -> dict[str, Any]:
    from risk.forms import RiskProfileForm
    from risk.models import RiskProfile

    form = RiskProfileForm(profile=RiskProfile())
    data = {name: field.initial for name, field in form.fields.items()}
    return {k: ("on" if v is True else v) for k, v in data.items() if v is not False}


def _walkforward_body(world: Any) -> dict[str, Any]:
    return {**_optimization_body(world), "train": 200, "test": 100}


# Every kind of background run and the world object that is one (config/runs).
RUN_KINDS = {
    "backtest": "backtest",
    "fetch": "fetch_job",
    "optimization": "optimization_job",
    "walkforward": "walkforward_job",
    "montecarlo": "montecarlo_run",
    "stress": "stress_run",
    "scan": "scan",
    "upload": "upload_job",
    "gridsearch": "grid_search",
}

MATRIX: dict[str, list[Case]] = {
    # --- the shared run lifecycle: the polling fallback of live progress --------------------
    "run_state": [Case(PRO, obj=obj, kwargs={"kind": kind}) for kind, obj in RUN_KINDS.items()],
    # --- accounts: open to every signed-in user -------------------------------------------
    "home": [Case(PUBLIC, anon=200, ok=302)],
    "dashboard": [Case(LOGIN)],
    "accounts:profile": [Case(LOGIN)],
    "accounts:selftest": [Case(LOGIN, "post", ok=302)],
    "accounts:mydata_export": [Case(LOGIN)],
    "accounts:account_delete": [Case(LOGIN)],
    "accounts:apikey_create": [Case(LOGIN)],
    "accounts:apikey_revoke": [Case(LOGIN, "post", obj="apikey", ok=302)],
    # Billing: open to Free users (that is how they upgrade). Stripe is unreachable here
    # (STRIPE_API_BASE points at a closed port), so Checkout and the portal come back to our
    # pages with a message; tests/accounts/test_billing*.py drive them against localstripe.
    "accounts:billing": [Case(LOGIN)],
    "accounts:upgrade": [Case(LOGIN)],
    "accounts:checkout": [Case(LOGIN, "post", ok=302)],
    "accounts:checkout_success": [Case(LOGIN)],
    "accounts:checkout_cancel": [Case(LOGIN, ok=302)],
    "accounts:portal": [Case(LOGIN, "post", ok=302)],
    # Stripe's deliveries: public, and refused without a valid signature.
    "accounts:stripe_webhook": [Case(PUBLIC, "post", anon=400, ok=400)],
    # --- read-only samples: every signed-in user, Pro or not -------------------------------
    "backtester:samples": [Case(READ_ONLY)],
    "backtester:sample_series": [Case(READ_ONLY, obj="demo_series")],
    "backtester:sample_result": [Case(READ_ONLY)],
    # --- backtester pages: Pro ------------------------------------------------------------
    "backtester:strategy_list": [Case(PRO)],
    "backtester:strategy_create": [Case(PRO)],
    "backtester:strategy_validate": [Case(PRO, "post", data=_validate_body)],
    "backtester:strategy_edit": [Case(PRO, obj="strategy")],
    "backtester:strategy_delete": [
        Case(PRO, obj="strategy"),
        Case(PRO, "post", obj="strategy", ok=302),
    ],
    "backtester:backtest_list": [Case(PRO)],
    "backtester:backtest_create": [Case(PRO)],
    "backtester:backtest_status_panel": [Case(PRO)],
    "backtester:backtest_detail": [Case(PRO, obj="backtest")],
    "backtester:backtest_cancel": [Case(PRO, "post", obj="active_backtest", ok=302)],
    "backtester:backtest_trades": [Case(PRO, obj="backtest")],
    "backtester:backtest_export": [Case(PRO, obj="backtest", kwargs={"fmt": "json"})],
    "backtester:backtest_compare": [
        Case(PRO),
        Case(PRO, obj="backtest", query={"ids": "{pk}"}),
    ],
    "backtester:data_list": [Case(PRO)],
    "backtester:data_detail": [Case(PRO, obj="upload")],
    "backtester:data_delete": [Case(PRO, "post", obj="upload", ok=302)],
    "backtester:data_upload": [Case(PRO)],
    "backtester:data_upload_job": [Case(PRO, obj="upload_job")],
    "backtester:data_fetch": [Case(PRO)],
    "backtester:data_fetch_job": [Case(PRO, obj="fetch_job")],
    # --- research and scanner pages (issue 6): Pro ---------------------------------------------
    "backtester:research": [Case(PRO)],
    "backtester:optimization_create": [Case(PRO)],
    "backtester:optimization_detail": [Case(PRO, obj="optimization_job")],
    "backtester:optimization_cancel": [Case(PRO, "post", obj="optimization_job", ok=302)],
    "backtester:optimization_backtest": [
        Case(
            PRO,
            "post",
            obj="optimization_job",
            kwargs=lambda w: {"row": w.optimization_row.pk},
            ok=302,
        )
    ],
    "backtester:walkforward_create": [Case(PRO)],
    "backtester:walkforward_detail": [Case(PRO, obj="walkforward_job")],
    "backtester:walkforward_cancel": [Case(PRO, "post", obj="walkforward_job", ok=302)],
    "backtester:montecarlo_list": [Case(PRO)],
    "backtester:montecarlo_create": [Case(PRO, obj="backtest")],
    "backtester:montecarlo_detail": [Case(PRO, obj="montecarlo_run")],
    "backtester:stress_list": [Case(PRO)],
    "backtester:stress_create": [Case(PRO, obj="backtest")],
    "backtester:stress_detail": [Case(PRO, obj="stress_run")],
    # --- live bots: Pro, owner only -----------------------------------------------------------
    "backtester:bot_list": [Case(PRO)],
    "backtester:bot_detail": [Case(PRO, obj="live_bot")],
    "backtester:bot_deploy": [
        Case(PRO, obj="backtest"),
        Case(PRO, "post", obj="backtest", ok=302, data=lambda w: {"account": w.paper_account.pk}),
    ],
    "backtester:bot_pause": [Case(PRO, "post", obj="live_bot", ok=302)],
    "backtester:bot_resume": [Case(PRO, "post", obj="live_bot", ok=302)],
    "backtester:bot_stop": [
        Case(PRO, "post", obj="live_bot", ok=302),
        Case(
            PRO,
            "post",
            obj="live_bot",
            ok=302,
            data=lambda w: {"cancel_orders": "on", "close_position": "on"},
        ),
    ],
    "backtester:bot_state": [Case(PRO, obj="live_bot")],
    # --- grid bots: Pro, owner only (the backtest runs on shared market data) ---------------
    "backtester:grid_bot_list": [Case(PRO)],
    "backtester:grid_backtest": [
        Case(PRO),
        Case(PRO, obj="shared", query=GRID_QUERY, other=200),
    ],
    "backtester:grid_bot_new": [
        Case(PRO),
        Case(PRO, "post", ok=302, data=lambda w: {"account": w.paper_account.pk, **GRID_QUERY}),
    ],
    "backtester:grid_bot_detail": [Case(PRO, obj="grid_bot")],
    "backtester:grid_bot_pause": [Case(PRO, "post", obj="grid_bot", ok=302)],
    "backtester:grid_bot_resume": [Case(PRO, "post", obj="grid_bot", ok=302)],
    "backtester:grid_bot_stop": [Case(PRO, "post", obj="grid_bot", ok=302)],
    "api_grid_bots": [
        Case(PRO),
        Case(PRO, "post", ok=201, data=lambda w: {"account": w.paper_account.pk, **GRID_BODY}),
    ],
    "api_grid_bot": [Case(PRO, obj="grid_bot")],
    "api_grid_bot_pause": [Case(PRO, "post", obj="grid_bot")],
    "api_grid_bot_resume": [Case(PRO, "post", obj="grid_bot", ok=400)],  # running: 400
    "api_grid_bot_stop": [Case(PRO, "post", obj="grid_bot", data=lambda w: {"sell": False})],
    "backtester:grid_search_new": [
        Case(PRO),
        Case(PRO, "post", ok=302, data=lambda w: {"series": w.shared.pk, **GRID_SEARCH_FORM}),
    ],
    "backtester:grid_search_detail": [Case(PRO, obj="grid_search")],
    "backtester:grid_search_cancel": [Case(PRO, "post", obj="grid_search", ok=302)],
    "api_grid_searches": [
        Case(PRO),
        Case(PRO, "post", ok=201, data=lambda w: {"series": w.shared.pk, **GRID_SEARCH_BODY}),
    ],
    "api_grid_search": [Case(PRO, obj="grid_search")],
    "api_grid_search_cancel": [Case(PRO, "post", obj="grid_search")],
    "backtester:scanner": [Case(PRO)],
    "backtester:scanner_watchlist_create": [Case(PRO)],
    "backtester:scanner_watchlist_edit": [Case(PRO, obj="watchlist")],
    "backtester:scanner_watchlist_delete": [Case(PRO, "post", obj="watchlist", ok=302)],
    "backtester:scanner_scan_start": [Case(PRO, "post", obj="watchlist", ok=302)],
    "backtester:scanner_scan": [Case(PRO, obj="scan")],
    "backtester:scanner_alerts": [Case(PRO)],
    "backtester:scanner_alert": [Case(PRO, obj="alert")],
    "backtester:scanner_alert_backtest": [Case(PRO, "post", obj="alert", ok=302)],
    # --- exchanges: paper accounts and Coinbase OAuth linking (issue 11): Pro ----------------
    # OAuth is not configured in the test environment: start, callback and check come back to
    # the Coinbase page with a message (tests/exchanges/test_coinbase_oauth.py drives the flow
    # against the loopback stand-in).
    "exchanges:paper_new": [
        Case(PRO),
        Case(
            PRO,
            "post",
            ok=302,
            data=lambda w: {"label": "Paper", "quote": "USDT", "starting_balance": "1000"},
        ),
    ],
    "exchanges:coinbase": [Case(PRO)],
    "exchanges:coinbase_start": [Case(PRO, "post", ok=302)],
    "exchanges:coinbase_callback": [Case(PRO, ok=302)],
    "exchanges:coinbase_check": [Case(PRO, "post", obj="oauth_account", ok=302)],
    "exchanges:coinbase_unlink": [Case(PRO, "post", obj="oauth_account", ok=302)],
    # --- API: Pro by default ---------------------------------------------------------------
    "api_strategy_list": [
        Case(PRO),
        Case(PRO, "post", ok=201, data=lambda w: {"preset": "rsi_reversion"}),
    ],
    "api_strategy_detail": [
        Case(PRO, obj="strategy"),
        Case(PRO, "patch", obj="strategy", data=lambda w: {"description": "tuned"}),
        Case(
            PRO,
            "put",
            obj="strategy",
            data=lambda w: {
                "name": "Replaced",
                "entry_long": "close > open",
                "exit_long": "close < open",
            },
        ),
        Case(PRO, "delete", obj="strategy", ok=204),
    ],
    "api_backtest_list": [Case(PRO), Case(PRO, "post", ok=202, data=_backtest_body)],
    "api_backtest_detail": [Case(PRO, obj="backtest")],
    "api_backtest_result": [Case(PRO, obj="backtest")],
    # The result's links.exports: downloads that a personal API key opens too.
    "api_backtest_export": [
        Case(PRO, obj="backtest", kwargs={"fmt": fmt})
        for fmt in ("trades-csv", "equity-csv", "json", "html")
    ],
    "api_backtest_trades": [Case(PRO, obj="backtest")],
    "api_backtest_equity": [Case(PRO, obj="backtest")],
    "api_backtest_cancel": [Case(PRO, "post", obj="active_backtest")],
    "api_md_series_list": [Case(PRO)],
    "api_md_series_upload": [Case(PRO, "post", ok=202, data=_csv_upload, multipart=True)],
    "api_md_upload_job_detail": [Case(PRO, obj="upload_job")],
    "api_md_series_detail": [
        Case(PRO, obj="upload"),
        Case(PRO, "delete", obj="upload", ok=204),
    ],
    "api_md_fetch_create": [
        Case(
            PRO,
            "post",
            ok=202,
            data=lambda w: {
                "exchange": "binance",
                "symbol": "ETH/USDT",
                "timeframe": "1h",
                "since": "2024-02-01",
            },
            needs=("fake_exchange",),
        )
    ],
    "api_md_fetch_detail": [Case(PRO, obj="fetch_job")],
    "api_backtest_montecarlo": [
        Case(PRO, obj="backtest"),
        Case(
            PRO,
            "post",
            obj="backtest",
            ok=202,
            data=lambda w: {"method": "shuffle", "iterations": 1000, "seed": 7},
        ),
    ],
    "api_montecarlo_detail": [Case(PRO, obj="montecarlo_run")],
    "api_backtest_stress": [
        Case(PRO, obj="backtest"),
        Case(
            PRO,
            "post",
            obj="backtest",
            ok=202,
            data=lambda w: {
                "shocks": [{"kind": "gap", "at": "2024-01-10T00:00:00Z", "change": -0.2}]
            },
        ),
    ],
    "api_stress_detail": [Case(PRO, obj="stress_run")],
    "api_optimization_list": [Case(PRO), Case(PRO, "post", ok=202, data=_optimization_body)],
    "api_optimization_detail": [Case(PRO, obj="optimization_job")],
    "api_optimization_rows": [Case(PRO, obj="optimization_job")],
    "api_optimization_row_backtest": [
        Case(
            PRO,
            "post",
            obj="optimization_job",
            kwargs=lambda w: {"row": w.optimization_row.pk},
            ok=202,
        )
    ],
    "api_optimization_cancel": [Case(PRO, "post", obj="optimization_job")],
    "api_walkforward_list": [Case(PRO), Case(PRO, "post", ok=202, data=_walkforward_body)],
    "api_walkforward_detail": [Case(PRO, obj="walkforward_job")],
    "api_walkforward_equity": [Case(PRO, obj="completed_walkforward")],
    "api_walkforward_cancel": [Case(PRO, "post", obj="walkforward_job")],
    "api_scanner_watchlists": [
        Case(PRO),
        Case(
            PRO,
            "post",
            ok=201,
            data=lambda w: {
                "name": "api list",
                "exchange": "demo",
                "timeframe": "1h",
                "symbols": ["BTC/USDT"],
            },
        ),
    ],
    "api_scanner_watchlist_detail": [
        Case(PRO, obj="watchlist"),
        Case(PRO, "patch", obj="watchlist", data=lambda w: {"k": 2.5}),
        Case(
            PRO,
            "put",
            obj="watchlist",
            data=lambda w: {
                "name": "renamed",
                "exchange": "demo",
                "timeframe": "1h",
                "symbols": ["BTC/USDT"],
            },
        ),
        Case(PRO, "delete", obj="watchlist", ok=204),
    ],
    "api_scanner_scan_start": [Case(PRO, "post", obj="watchlist", ok=202)],
    "api_scanner_scans": [Case(PRO)],
    "api_scanner_scan_detail": [Case(PRO, obj="scan")],
    "api_scanner_alerts": [Case(PRO)],
    "api_scanner_alert_summary": [Case(PRO)],
    "api_scanner_top_buy": [Case(PRO)],
    "api_scanner_top_sell": [Case(PRO)],
    "api_scanner_alert_detail": [Case(PRO, obj="alert")],
    "api_scanner_alert_backtest": [Case(PRO, "post", obj="alert", ok=202)],
    # --- exchange accounts (issue 11): Pro; deleting needs only the owner's sign-in --------
    "exchanges:list": [Case(PRO)],
    "exchanges:add": [
        Case(PRO),
        Case(PRO, "post", ok=302, data=lambda w: _link_body(w), needs=("private_exchange",)),
    ],
    "exchanges:detail": [Case(PRO, obj="exchange_account")],
    "exchanges:test": [
        Case(PRO, "post", obj="exchange_account", ok=302, needs=("private_exchange",))
    ],
    "exchanges:rename": [
        Case(PRO, obj="exchange_account"),
        Case(PRO, "post", obj="exchange_account", ok=302, data=lambda w: {"label": "Renamed"}),
    ],
    "exchanges:rotate": [
        Case(PRO, obj="exchange_account"),
        Case(
            PRO,
            "post",
            obj="exchange_account",
            ok=302,
            data=lambda w: _key_body(w),
            needs=("private_exchange",),
        ),
    ],
    "exchanges:delete": [
        Case(LOGIN, obj="exchange_account"),
        Case(LOGIN, "post", obj="exchange_account", ok=302),
    ],
    "api_exchange_account_list": [
        Case(PRO),
        Case(PRO, "post", ok=201, data=lambda w: _link_body(w), needs=("private_exchange",)),
    ],
    "api_exchange_account_detail": [
        Case(PRO, obj="exchange_account"),
        Case(PRO, "patch", obj="exchange_account", data=lambda w: {"label": "Renamed"}),
        Case(LOGIN, "delete", obj="exchange_account", ok=204),
    ],
    "api_exchange_account_test": [
        Case(PRO, "post", obj="exchange_account", needs=("private_exchange",))
    ],
    "api_exchange_account_rotate": [
        Case(
            PRO,
            "post",
            obj="exchange_account",
            data=lambda w: _key_body(w),
            needs=("private_exchange",),
        ),
    ],
    # --- risk pages and API (issue 12): Pro ----------------------------------------------------
    "risk:profile": [Case(PRO), Case(PRO, "post", ok=302, data=lambda w: _risk_form())],
    "risk:profile_account": [Case(PRO, obj="exchange_account")],
    "risk:dashboard": [Case(PRO)],
    "risk:kill_switch": [
        Case(PRO),
        Case(PRO, "post", ok=302, data=lambda w: {"confirm": "HALT"}),
    ],
    "risk:state_reset": [Case(PRO, "post", obj="trading_state", ok=302)],
    "risk:position_close": [
        Case(
            PRO,
            "post",
            obj="exchange_account",
            ok=302,
            data=lambda w: {"symbol": "BTC/USDT"},
            needs=("private_exchange",),
        )
    ],
    "api_risk_profile": [
        Case(PRO),
        Case(PRO, "patch", data=lambda w: {"max_heat": 0.05}),
        Case(PRO, "put", data=lambda w: {"max_heat": 0.04, "daily_loss_limit": 0.03}),
    ],
    "api_risk_state": [Case(PRO)],
    "api_risk_state_reset": [Case(PRO, "post", obj="trading_state")],
    "api_risk_kill_switch": [Case(PRO, "post", data=lambda w: {"close_positions": False})],
    "api_risk_denials": [Case(PRO)],
    # The world's account holds no BTC: the owner gets past the gate to the service's 400
    # ("no open BTC/USDT position"); others get 404, Free users 403.
    "api_risk_position_close": [
        Case(
            PRO,
            "post",
            obj="exchange_account",
            ok=400,
            data=lambda w: {"symbol": "BTC/USDT"},
            needs=("private_exchange",),
        )
    ],
    # --- API: open to every signed-in user, or public ---------------------------------------
    # --- copy trading (issue 13): Pro; leaders are published to every Pro user -----------
    "copytrading:home": [Case(PRO)],
    "copytrading:following": [Case(PRO)],
    "copytrading:leader_publish": [Case(PRO)],
    "copytrading:leader_detail": [Case(PRO, obj="leader", other=200)],
    "copytrading:subscribe": [Case(PRO, obj="leader", other=200)],
    "copytrading:leader_action": [
        Case(PRO, "post", obj="leader", kwargs={"action": "pause"}, ok=302)
    ],
    "copytrading:subscription_detail": [Case(PRO, obj="subscription")],
    "copytrading:subscription_action": [
        Case(PRO, "post", obj="subscription", kwargs={"action": "pause"}, ok=302)
    ],
    "copytrading:decisions_export": [Case(PRO, obj="subscription")],
    "api_copy_leaders": [
        Case(PRO),
        Case(
            PRO,
            "post",
            ok=201,
            data=lambda w: {"account": w.paper_account.pk, "name": "Matrix leader"},
        ),
    ],
    "api_copy_leader": [Case(PRO, obj="leader", other=200)],
    "api_copy_leader_fills": [Case(PRO, obj="leader")],
    "api_copy_leader_stops": [
        Case(PRO, obj="leader"),
        Case(PRO, "post", obj="leader", data=lambda w: {"symbol": "BTC/USDT", "stop_price": "1"}),
    ],
    "api_copy_leader_action": [Case(PRO, "post", obj="leader", kwargs={"action": "pause"})],
    "api_copy_subscriptions": [
        Case(PRO),
        Case(
            PRO,
            "post",
            ok=201,
            data=lambda w: {"leader": w.third_leader.pk, "account": w.trading_account.pk},
        ),
    ],
    "api_copy_subscription": [
        Case(PRO, obj="subscription"),
        Case(PRO, "patch", obj="subscription", data=lambda w: {"ratio": "2"}),
    ],
    "api_copy_orders": [Case(PRO, obj="subscription")],
    "api_copy_decisions": [Case(PRO, obj="subscription")],
    "api_copy_subscription_action": [
        Case(PRO, "post", obj="subscription", kwargs={"action": "pause"})
    ],
    # --- live bots API (issue 14): Pro, owner only -----------------------------------------
    "api_bot_list": [
        Case(PRO),
        Case(
            PRO,
            "post",
            ok=201,
            data=lambda w: {
                "strategy": w.strategy.pk,
                "series": w.shared.pk,
                "account": w.paper_account.pk,
            },
        ),
    ],
    "api_bot_detail": [Case(PRO, obj="live_bot")],
    "api_bot_pause": [Case(PRO, "post", obj="live_bot")],
    "api_bot_resume": [Case(PRO, "post", obj="paused_bot")],
    "api_bot_stop": [
        Case(
            PRO,
            "post",
            obj="live_bot",
            data=lambda w: {"cancel_orders": True, "close_position": True},
        )
    ],
    "api_bot_orders": [Case(PRO, obj="live_bot")],
    "api_bot_events": [Case(PRO, obj="live_bot")],
    "api_me": [Case(LOGIN)],
    "api_schema": [Case(PUBLIC, anon=200)],
    "api_docs": [Case(PUBLIC, anon=200)],
    "api_redoc": [Case(PUBLIC, anon=200)],
}


# --- walking the URLconf -----------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str
    route: str
    callback: Callable[..., Any]
    kwargs: tuple[str, ...]

    @property
    def api(self) -> bool:
        return self.route.startswith(API_PREFIX)

    @property
    def view_class(self) -> type | None:
        return getattr(self.callback, "view_class", None) or getattr(self.callback, "cls", None)

    @property
    def module(self) -> str:
        target = self.view_class or self.callback
        return getattr(target, "__module__", "") or ""


def _walk(patterns: list[Any], prefix: str = "", namespace: str = "") -> Iterator[Route]:
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = ":".join(x for x in (namespace, p.namespace or "") if x)
            yield from _walk(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern):
            name = f"{namespace}:{p.name}" if namespace and p.name else (p.name or "")
            converters = getattr(p.pattern, "converters", None) or {}
            kwargs = tuple(converters) or tuple(p.pattern.regex.groupindex)
            yield Route(name, prefix + str(p.pattern), p.callback, kwargs)


def covered_routes() -> dict[str, Route]:
    """Every route the matrix must cover, by URL name."""
    routes: dict[str, Route] = {}
    for r in _walk(get_resolver().url_patterns):
        if r.api or r.module.startswith(SCOPE_MODULES):
            assert r.name, f"route {r.route} ({r.module}) has no name: name it to cover it"
            routes[r.name] = r
    return routes


def _api_methods(route: Route) -> set[str]:
    cls = route.view_class
    if cls is None or not issubclass(cls, APIView):
        return set()
    return {m for m in cls.http_method_names if m not in ("options", "head") and hasattr(cls, m)}


def test_every_route_has_a_matrix_entry():
    routes = covered_routes()
    missing = sorted(set(routes) - set(MATRIX))
    assert not missing, f"routes without a permission-matrix entry: {missing}"
    stale = sorted(set(MATRIX) - set(routes))
    assert not stale, f"matrix entries for routes that no longer exist: {stale}"
    for name, route in routes.items():
        cases = MATRIX[name]
        if route.kwargs:
            assert any(c.obj for c in cases), f"{name} takes {route.kwargs}: name its object"
        if route.api:
            methods = _api_methods(route)
            tried = {c.method for c in cases}
            assert methods <= tried, f"{name}: methods {sorted(methods - tried)} not tried"


def test_the_walk_sees_the_known_object_routes():
    """The walker itself can fail: it must find routes we know carry an object id."""
    routes = covered_routes()
    assert routes["backtester:backtest_detail"].kwargs == ("pk",)
    assert routes["api_backtest_trades"].api
    assert "admin:index" not in routes  # the admin has its own staff-only gate
    assert "account_login" not in routes  # allauth's pages are public by nature


# --- the world -----------------------------------------------------------------------------------


def _completed_backtest(w: Any) -> Backtest:
    start, end = span(w.shared)
    backtest = backtest_create(
        user=w.owner, strategy=w.strategy, series=[w.shared], start=start, end=end, settings={}
    )
    backtest_execute(backtest_id=backtest.pk)  # what the worker does
    backtest.refresh_from_db()
    assert backtest.status == Backtest.Status.COMPLETED, backtest.error
    return backtest


def _queued_backtest(w: Any) -> Backtest:
    start, end = span(w.shared)
    return backtest_create(
        user=w.owner,
        strategy=w.strategy,
        series=[w.shared],
        start=start + 24 * HOUR,
        end=end,
        settings={},
    )


def _research_fields(w: Any) -> dict[str, Any]:
    start, end = span(w.shared)
    return {
        "owner": w.owner,
        "strategy": w.strategy,
        "series": w.shared,
        "timeframe": "1h",
        "start_ts": start,
        "end_ts": end,
        "spec": spec_to_dict(strategy_spec(w.strategy)),
        "ranges": {"fast": [5, 10], "slow": [30, 40]},
    }


def _scan(w: Any) -> ScanRun:
    return ScanRun.objects.create(
        owner=w.owner,
        watchlist=w.watchlist,
        name=w.watchlist.name,
        exchange="demo",
        timeframe="1h",
        universe=Watchlist.Universe.SYMBOLS,
        symbols=["BTC/USDT"],
        lookback=100,
        degree=2,
        k=2.0,
    )


def _third_leader(w: Any) -> Leader:
    """A leader published by a third user, for the owner to follow."""
    third = make_user()
    return Leader.objects.create(
        owner=third,
        account=ExchangeAccount.objects.create(
            owner=third, kind="api_key", exchange="binance", label="third leads"
        ),
        name="Third leads",
        published_at=timezone.now(),
    )


def _subscription(w: Any) -> CopySubscription:
    """The owner follows the third user's leader with one of the owner's accounts."""
    return CopySubscription.objects.create(
        follower=w.owner, leader=w.third_leader, account=w.trading_account
    )


# The objects a case can name, built the first time one is asked for (on the owner's account).
BUILDERS: dict[str, Callable[[Any], Any]] = {
    "demo_series": lambda w: w.shared,  # shared demo candles (owner None, source demo)
    "strategy": lambda w: make_strategy(w.owner),
    "backtest": _completed_backtest,
    "active_backtest": _queued_backtest,
    "upload": lambda w: make_series(owner=w.owner, symbol="MINE/USDT", n=300, seed=2),
    "fetch_job": lambda w: FetchJob.objects.create(
        owner=w.owner, series=w.shared, since_ts=span(w.shared)[0]
    ),
    "apikey": lambda w: api_key_create(user=w.owner, name="to revoke").api_key,
    "optimization_job": lambda w: OptimizationJob.objects.create(**_research_fields(w)),
    "optimization_row": lambda w: OptimizationRow.objects.create(
        job=w.optimization_job, index=0, params={"fast": 10, "slow": 30}, objective=1.0
    ),
    "walkforward_job": lambda w: WalkForwardJob.objects.create(
        **_research_fields(w), train=200, test=100, step=100
    ),
    "completed_walkforward": lambda w: WalkForwardJob.objects.create(
        **_research_fields(w),
        train=200,
        test=100,
        step=100,
        status=WalkForwardJob.Status.COMPLETED,
        curve={"x": [span(w.shared)[0] + i * HOUR for i in range(3)], "y": [1e4, 1.01e4, 1.02e4]},
    ),
    "montecarlo_run": lambda w: MonteCarloRun.objects.create(
        owner=w.owner,
        backtest=w.backtest,
        method="shuffle",
        iterations=100,
        ruin_threshold=0.5,
        seed=1,
    ),
    "stress_run": lambda w: StressRun.objects.create(owner=w.owner, backtest=w.backtest),
    "watchlist": lambda w: Watchlist.objects.create(
        owner=w.owner, name="majors", exchange="demo", timeframe="1h", symbols=["BTC/USDT"]
    ),
    "scan": _scan,
    "exchange_account": _exchange_account,
    "trading_state": lambda w: trading_state_set(
        user=w.owner, to_state="halted", code="manual", reason="matrix", actor="test"
    ),
    "leader": lambda w: Leader.objects.create(
        owner=w.owner,
        account=ExchangeAccount.objects.create(
            owner=w.owner, kind="api_key", exchange="binance", label="leads"
        ),
        name="Owner leads",
        published_at=timezone.now(),
    ),
    "third_leader": _third_leader,
    "trading_account": lambda w: ExchangeAccount.objects.create(
        owner=w.owner, kind="api_key", exchange="binance", label="follows", can_trade=True
    ),
    "subscription": _subscription,
    "upload_job": lambda w: UploadJob.objects.create(
        owner=w.owner, filename="mine.csv", file_format="csv", symbol="MINE/USDT", data=b"x"
    ),
    "alert": lambda w: Alert.objects.create(
        scan=w.scan,
        owner=w.owner,
        series=w.shared,
        exchange="demo",
        symbol="BTC/USDT",
        timeframe="1h",
        signal=Alert.Signal.BUY,
        is_alert=True,
        created_at=timezone.now(),
        candle_ts=span(w.shared)[1],
        price=100.0,
    ),
    "paper_account": lambda w: paper_account_create(
        owner=w.owner, label="Paper bots", quote="USDT", starting_balance="10000"
    ),
    "live_bot": lambda w: bot_create(
        user=w.owner, account=w.paper_account, series=w.shared, strategy=w.strategy
    ),
    "paused_bot": lambda w: bot_pause(
        user=w.owner,
        bot=bot_create(user=w.owner, account=w.paper_account, series=w.shared, strategy=w.strategy),
    ),
    "grid_search": lambda w: GridSearch.objects.create(
        owner=w.owner,
        series=w.shared,
        investment=400,
        space={
            "lower": ["90"],
            "upper": ["110"],
            "levels": [5],
            "spacing": ["arithmetic"],
            "trailing": [False],
        },
        combinations=1,
        bars=w.shared.count,
    ),
    "grid_bot": lambda w: grid_bot_create(
        user=w.owner,
        account=w.paper_account,
        symbol="BTC/USDT",
        lower="90",
        upper="110",
        levels=5,
        investment="400",
    ),
    "oauth_account": lambda w: ExchangeAccount.objects.create(
        owner=w.owner, kind=ExchangeAccount.Kind.OAUTH, exchange="coinbase", label="Coinbase"
    ),
}


class World:
    """The personas, shared market data, and the owner's objects, made on first use."""

    def __init__(self) -> None:
        self.owner, self.other, self.free = make_user(), make_user(), make_user(pro=False)
        self.shared = make_series(n=600)
        self.keys = {
            u.pk: api_key_create(user=u, name="matrix").key
            for u in (self.owner, self.other, self.free)
        }

    def __getattr__(self, name: str) -> Any:
        if name not in BUILDERS:
            raise AttributeError(name)
        value = BUILDERS[name](self)
        setattr(self, name, value)
        return value


@pytest.fixture
def world(django_capture_on_commit_callbacks) -> Iterator[World]:
    # Side effects after commit (task sends) are kept back: nothing runs outside this test.
    with django_capture_on_commit_callbacks(execute=False):
        yield World()


@pytest.fixture
def fake_exchange(monkeypatch) -> Iterator[FakeBinance]:
    server = FakeBinance()
    server.serve()
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", json.dumps({"binance": server.base_url}))
    try:
        yield server
    finally:
        server.release.set()
        server.stop()


@pytest.fixture
def private_exchange(monkeypatch) -> Iterator[FakeBinancePrivate]:
    server = FakeBinancePrivate()
    server.serve()
    server.add_account(api_key=MATRIX_KEY, secret=MATRIX_SECRET, balances={"USDT": "100"})
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", json.dumps({"binance": server.url_overrides()}))
    try:
        yield server
    finally:
        server.stop()


def _client(user: User | None = None, *, key: str | None = None) -> Client:
    # Each client its own address: the anonymous API throttle counts per address.
    n = next(_addresses)
    extra: dict[str, Any] = {"REMOTE_ADDR": f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"}
    if key is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    client = Client(**extra)
    if user is not None and key is None:
        client.force_login(user)
    return client


def _url(name: str, case: Case, world: Any) -> str:
    kwargs = dict(case.kwargs(world) if callable(case.kwargs) else case.kwargs)
    if case.obj and not case.query:
        kwargs["pk"] = getattr(world, case.obj).pk
    return reverse(name, kwargs=kwargs or None)


def _send(client: Client, route: Route, case: Case, url: str, world: Any) -> Any:
    data = case.data(world) if case.data else {}
    if case.method == "get":
        query = None
        if case.query:
            pk = str(getattr(world, case.obj).pk) if case.obj else ""
            query = {k: v.replace("{pk}", pk) for k, v in case.query.items()}
        return client.get(url, query)
    if case.multipart or not route.api:
        return getattr(client, case.method)(url, data)
    return client.generic(
        case.method.upper(), url, json.dumps(data), content_type="application/json"
    )


def _assert_login_required(response: Any, route: Route) -> None:
    if route.api:
        assert response.status_code == 401, response.content[:300]
        assert response.json()["error"]["code"] == "not_authenticated"
    else:
        assert response.status_code == 302
        assert response["Location"].startswith(resolve_url(settings.LOGIN_URL) + "?next=")


def _assert_not_found(response: Any, route: Route) -> None:
    assert response.status_code == 404, response.content[:300]
    if route.api:
        assert response.json()["error"]["code"] == "not_found"


def _assert_upgrade(response: Any, route: Route) -> None:
    assert response.status_code == 403, response.content[:300]
    if route.api:
        error = response.json()["error"]
        assert error["code"] == "plan_required"
        assert error["message"] == UPGRADE_MESSAGE
    else:
        assert UPGRADE_MESSAGE in response.content.decode()


def _set_pro(user: User, on: bool) -> None:
    status = Subscription.Status.ACTIVE if on else Subscription.Status.CANCELED
    Subscription.objects.filter(user=user).update(status=status)


CASES = [(name, case) for name, cases in MATRIX.items() for case in cases]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "case"),
    CASES,
    ids=[f"{name}-{case.method}{'-' + case.obj if case.obj else ''}" for name, case in CASES],
)
def test_route_by_persona(name, case, world, request):
    for fixture in case.needs:
        request.getfixturevalue(fixture)
    route = covered_routes()[name]
    url = _url(name, case, world)

    def send(user: User | None, *, by_key: bool = False) -> Any:
        key = world.keys[user.pk] if (user is not None and by_key) else None
        return _send(_client(user, key=key), route, case, url, world)

    if case.access == PUBLIC:
        assert send(None).status_code == case.anon
        assert send(world.owner).status_code == case.ok
        return
    if case.access == READ_ONLY:
        _assert_login_required(send(None), route)
        for persona in (world.other, world.free, world.owner):
            response = send(persona)
            assert response.status_code == case.ok, response.content[:300]
            assert UPGRADE_MESSAGE not in response.content.decode()
        _set_pro(world.owner, False)  # and after Pro (or the trial) ends
        assert send(world.owner).status_code == case.ok
        _set_pro(world.owner, True)
        return

    _assert_login_required(send(None), route)
    # Each signed-in persona by session, and on the API by personal API key as well.
    ways = (False, True) if route.api else (False,)
    for by_key in ways:
        if case.obj and case.other == 404:
            _assert_not_found(send(world.other, by_key=by_key), route)
        elif case.obj:
            assert send(world.other, by_key=by_key).status_code == case.other
        free = send(world.free, by_key=by_key)
        if case.access == PRO:
            _assert_upgrade(free, route)
        elif case.obj:
            _assert_not_found(free, route)
        else:
            assert free.status_code == case.ok
    if case.access == PRO:
        _set_pro(world.owner, False)
        for by_key in ways:
            _assert_upgrade(send(world.owner, by_key=by_key), route)
        _set_pro(world.owner, True)
    else:
        _set_pro(world.owner, False)  # login-level routes stay open after Pro ends
    response = send(world.owner, by_key=route.api)
    assert response.status_code == case.ok, response.content[:500]


# --- websockets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WsCase:
    access: str
    obj: str | None = None
    kind: str = ""


WS_MATRIX: dict[str, list[WsCase]] = {
    "ws/notifications/": [WsCase(LOGIN)],
    "ws/runs/<slug:kind>/<int:pk>/": [
        WsCase(PRO, obj=obj, kind=kind) for kind, obj in RUN_KINDS.items()
    ],
    "ws/risk/": [WsCase(PRO)],
    "ws/bots/<int:pk>/": [WsCase(PRO, obj="live_bot")],
    "ws/grid-bots/<int:pk>/": [WsCase(PRO, obj="grid_bot")],
    "ws/copy/subscriptions/<int:pk>/": [WsCase(PRO, obj="subscription")],
    "ws/copy/leaders/<int:pk>/": [WsCase(PRO, obj="leader")],
}


def test_every_websocket_route_has_a_matrix_entry():
    routes = {str(p.pattern) for p in websocket_urlpatterns}
    assert routes == set(WS_MATRIX), f"uncovered: {routes ^ set(WS_MATRIX)}"


def _ws(path: str, user: User | None) -> tuple[bool, int | None]:
    async def scenario() -> tuple[bool, int | None]:
        comm = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://localhost")])
        if user is not None:
            comm.scope["user"] = user
        connected, code = await comm.connect(timeout=10)
        await comm.disconnect()
        # The consumer's queries ran on asgiref's thread: close its connection so the test
        # database can be dropped at the end.
        await database_sync_to_async(connections.close_all)()
        return connected, code

    return arun(scenario())


@pytest.mark.django_db(transaction=True)
def test_websockets_by_persona():
    world = World()
    owner, other, free = world.owner, world.other, world.free
    # A plain row is enough for the consumers, and sends no task to a worker.
    world.backtest = Backtest.objects.create(
        owner=owner, timeframe="1h", start_ts=0, end_ts=HOUR, series_order=[world.shared.pk]
    )
    cases = [(route, case) for route, cases in WS_MATRIX.items() for case in cases]
    for route, case in cases:
        path = "/" + route
        if case.obj:
            pk = str(getattr(world, case.obj).pk)
            path = "/" + route.replace("<slug:kind>", case.kind).replace("<int:pk>", pk)
        fresh = User.objects.get(pk=owner.pk)
        assert _ws(path, fresh) == (True, None), route
        assert _ws(path, None) == (False, 4401), route
        if case.obj:
            assert _ws(path, other) == (False, 4404), route
        if case.access == PRO:
            assert _ws(path, free) == (False, 4403), route
            _set_pro(owner, False)
            assert _ws(path, User.objects.get(pk=owner.pk)) == (False, 4403), route
            _set_pro(owner, True)
        else:
            assert _ws(path, free)[0] is True, route


@pytest.mark.django_db
def test_samples_are_read_only_and_show_only_shared_demo_data(world, settings):
    """The sample rules: GET only; an upload or another shared series is not a sample; the
    sample result shows the demo user's sample backtest without a way into Pro pages."""
    from backtester.services.samples import SAMPLE_NAME

    urls = [
        reverse("backtester:samples"),
        reverse("backtester:sample_series", kwargs={"pk": world.shared.pk}),
        reverse("backtester:sample_result"),
    ]
    for url in urls:
        assert _client(world.free).post(url).status_code == 405
    upload = reverse("backtester:sample_series", kwargs={"pk": world.upload.pk})
    assert _client(world.owner).get(upload).status_code == 404  # even the owner's own upload
    assert _client(world.free).get(upload).status_code == 404
    fetched = make_series(symbol="ETH/USDT", exchange="binance", n=50)
    MarketSeries.objects.filter(pk=fetched.pk).update(source=MarketSeries.Source.CCXT)
    fetched_url = reverse("backtester:sample_series", kwargs={"pk": fetched.pk})
    assert _client(world.free).get(fetched_url).status_code == 404

    # The sample result: the demo user's sample backtest, read-only.
    demo = make_user(email=settings.DEMO_USER_EMAIL)
    start, end = span(world.shared)
    sample = backtest_create(
        user=demo,
        strategy=make_strategy(demo),
        series=[world.shared],
        start=start,
        end=end,
        settings={},
        name=SAMPLE_NAME,
    )
    backtest_execute(backtest_id=sample.pk)
    page = _client(world.free).get(reverse("backtester:sample_result"))
    assert page.status_code == 200
    html = page.content.decode()
    assert SAMPLE_NAME in html
    assert 'data-metric="total_return"' in html
    assert f"/backtests/{sample.pk}/export/" not in html
    assert f"/backtests/{sample.pk}/trades/" not in html
    assert "/backtests/compare/" not in html
    # The sample's own pages stay the demo user's: another Pro user gets a 404.
    detail = reverse("backtester:backtest_detail", kwargs={"pk": sample.pk})
    assert _client(world.other).get(detail).status_code == 404
