"""Everything of mine, as one JSON document (the "Export my data" download).

The document is streamed: backtests and their trades are written one at a time, so a user with
many long backtests does not hold the whole export in memory. It holds what the user made or
the service keeps about them, never a secret: no password hash, no API key secret or hash, no
two-factor seed or recovery code.

Contents and the choices made:
* profile, email addresses, two-factor methods (type and dates only), the subscription;
* API keys: name, prefix and dates;
* strategies in full;
* backtests with their settings, strategy snapshot, metrics, open positions and every closed
  trade (trades are the result a trader acts on; the per-bar equity curve is not included, it
  is one download away on each backtest's page);
* uploaded market data: the catalog (symbol, timeframe, range, count, hash), not the candles,
  which are the user's own file; downloads from exchanges: the fetch jobs (the candles are
  shared data, not the user's);
* research and scanner objects (optimizations, walk-forward, Monte Carlo and stress runs,
  watchlists, scans, alerts): every column but binary ones, under "more";
* not included: the operators' audit log and the admin's change history.

``COVERAGE`` names every model that has a link to a user and what the export does with it;
``GENERIC`` the models exported column by column; tests/accounts/test_mydata.py fails when a
model linking to users is added without an entry in one of them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from django.apps import apps
from django.db import models
from django.utils import timezone

from accounts.models import ApiKey, Subscription, User

EXPORT_FORMAT = "quantfold-export"
EXPORT_VERSION = 1

# "<app_label>.<model_name>" of every model with a foreign key to the user: where it goes.
COVERAGE: dict[str, str] = {
    "accounts.subscription": "subscription",
    "accounts.apikey": "api_keys (name, prefix and dates; never the secret or its hash)",
    "accounts.auditlog": "left out: the operators' record of their actions",
    "account.emailaddress": "profile.email_addresses",
    "mfa.authenticator": "profile.two_factor (type and dates; never the seed or codes)",
    "admin.logentry": "left out: the admin's change history (operators' actions)",
    "backtester.strategy": "strategies",
    "backtester.backtest": "backtests (with result summary and trades)",
    "backtester.marketseries": "market_data.uploads (catalog; the candles are not included)",
    "backtester.fetchjob": "market_data.fetch_jobs",
}

# Models exported column by column under "more" (binary columns and anything that looks like a
# credential left out), for features whose export has no hand-made shape yet.
GENERIC: dict[str, str] = {
    "backtester.optimizationjob": "optimization_jobs",
    "backtester.walkforwardjob": "walk_forward_jobs",
    "backtester.montecarlorun": "monte_carlo_runs",
    "backtester.stressrun": "stress_runs",
    "backtester.watchlist": "watchlists",
    "backtester.scanrun": "scan_runs",
    "backtester.alert": "alerts",
    # Linked exchange accounts: status, permissions, balances, last 4 of the key; the secrets
    # live in exchanges.AccountSecret (no link to the user) and are never exported.
    "exchanges.exchangeaccount": "exchange_accounts",
    "exchanges.accountevent": "exchange_account_events",
    "risk.riskprofile": "risk_profiles",
    "risk.tradingstate": "trading_states",
    "risk.statetransition": "trading_state_transitions",
    "risk.deniedorder": "denied_orders",
    "risk.equitysnapshot": "equity_snapshots",
    "risk.killswitchrun": "kill_switch_runs",
    "copytrading.leader": "copy_leaders",
    "copytrading.subscription": "copy_subscriptions",
    "backtester.uploadjob": "upload_jobs",
    "backtester.livebot": "live_bots",
    "backtester.gridbot": "grid_bots",
    "backtester.gridsearch": "grid_searches",
    "risk.manualclose": "manual_closes",
}
_SECRET_WORDS = ("secret", "password", "token", "hash", "credential", "encrypted", "api_key")


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return _iso(datetime.fromtimestamp(ms / 1000, tz=UTC))


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such numbers become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    return json.dumps(_finite(value), ensure_ascii=False, allow_nan=False, default=str)


def _profile(user: User) -> dict[str, Any]:
    return {
        "id": user.pk,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "date_joined": _iso(user.date_joined),
        "last_login": _iso(user.last_login),
        "plan_now": user.plan.code,
        "email_addresses": [
            {"email": e.email, "verified": e.verified, "primary": e.primary}
            for e in EmailAddress.objects.filter(user=user).order_by("email")
        ],
        "two_factor": [
            {
                "type": a.type,
                "created_at": _iso(a.created_at),
                "last_used_at": _iso(a.last_used_at),
            }
            for a in Authenticator.objects.filter(user=user).order_by("created_at")
        ],
    }


def _subscription(user: User) -> dict[str, Any] | None:
    sub = Subscription.objects.select_related("plan").filter(user=user).first()
    if sub is None:
        return None
    return {
        "plan": sub.plan.code,
        "plan_name": sub.plan.name,
        "status": sub.status,
        "source": sub.source,
        "grants_access_now": sub.grants_access(),
        "current_period_end": _iso(sub.current_period_end),
        "stripe_customer_id": sub.stripe_customer_id,
        "stripe_subscription_id": sub.stripe_subscription_id,
        "created_at": _iso(sub.created_at),
        "updated_at": _iso(sub.updated_at),
    }


def _api_keys(user: User) -> list[dict[str, Any]]:
    # An explicit list of columns: the hash column is never read.
    rows = ApiKey.objects.filter(user=user).order_by("created_at")
    return [
        {
            "name": name,
            "prefix": prefix,
            "created_at": _iso(created),
            "last_used_at": _iso(used),
            "revoked_at": _iso(revoked),
        }
        for name, prefix, created, used, revoked in rows.values_list(
            "name", "prefix", "created_at", "last_used_at", "revoked_at"
        )
    ]


def _strategies(user: User) -> list[dict[str, Any]]:
    from backtester.models import Strategy

    return [
        {
            "id": s.pk,
            "name": s.name,
            "description": s.description,
            "preset": s.preset,
            "entry_long": s.entry_long,
            "exit_long": s.exit_long,
            "entry_short": s.entry_short,
            "exit_short": s.exit_short,
            "params": s.params,
            "param_values": s.param_values,
            "created_at": _iso(s.created_at),
            "updated_at": _iso(s.updated_at),
        }
        for s in Strategy.objects.filter(owner=user).order_by("pk")
    ]


def _market_data(user: User) -> dict[str, Any]:
    from backtester.models import FetchJob, MarketSeries

    uploads = [
        {
            "id": s.pk,
            "exchange": s.exchange,
            "symbol": s.symbol,
            "timeframe": s.timeframe,
            "name": s.name,
            "source": s.source,
            "first": _iso_ms(s.first_ts),
            "last": _iso_ms(s.last_ts),
            "count": s.count,
            "extra_columns": s.extra_columns,
            "data_hash": s.data_hash,
            "created_at": _iso(s.created_at),
            "updated_at": _iso(s.updated_at),
        }
        for s in MarketSeries.objects.filter(owner=user).order_by("pk")
    ]
    jobs = [
        {
            "id": j.pk,
            "exchange": j.series.exchange,
            "symbol": j.series.symbol,
            "timeframe": j.series.timeframe,
            "since": _iso_ms(j.since_ts),
            "until": _iso_ms(j.until_ts),
            "status": j.status,
            "progress": j.progress,
            "candles_fetched": j.candles_fetched,
            "error": j.error,
            "created_at": _iso(j.created_at),
            "started_at": _iso(j.started_at),
            "finished_at": _iso(j.finished_at),
        }
        for j in FetchJob.objects.filter(owner=user).select_related("series").order_by("pk")
    ]
    return {"uploads": uploads, "fetch_jobs": jobs}


def _backtests(user: User) -> Iterator[str]:
    """The backtests array, one backtest (with its trades) at a time."""
    from backtester.models import Backtest, BacktestResult, BacktestTrade, MarketSeries

    yield "["
    first = True
    qs = Backtest.objects.filter(owner=user).order_by("pk")
    for b in qs.iterator(chunk_size=200):
        names = {
            pk: (exchange, symbol)
            for pk, exchange, symbol in MarketSeries.objects.filter(
                pk__in=b.series_order
            ).values_list("pk", "exchange", "symbol")
        }
        result = (
            BacktestResult.objects.filter(backtest_id=b.pk)
            .values("metrics", "open_positions", "trade_count")
            .first()
        )
        head = {
            "id": b.pk,
            "name": str(b),
            "status": b.status,
            "error": b.error,
            "strategy_id": b.strategy_id,
            "strategy": b.spec,
            "param_values": b.param_values,
            "settings": b.settings,
            "timeframe": b.timeframe,
            "start": _iso_ms(b.start_ts),
            "end": _iso_ms(b.end_ts),
            "markets": [
                {
                    "series_id": pk,
                    "exchange": names.get(pk, ("?", "?"))[0],
                    "symbol": names.get(pk, ("?", "?"))[1],
                }
                for pk in b.series_order
            ],
            "cached_from": b.cached_from_id,
            "candle_count": b.candle_count,
            "engine_seconds": b.engine_seconds,
            "created_at": _iso(b.created_at),
            "started_at": _iso(b.started_at),
            "finished_at": _iso(b.finished_at),
            "result": result,
        }
        text = _dumps(head)
        yield ("" if first else ",") + text[:-1] + ',"trades":['
        first = False
        chunk: list[str] = []
        trades = BacktestTrade.objects.filter(backtest_id=b.pk).order_by("seq")
        for i, t in enumerate(trades.iterator(chunk_size=2000)):
            row = t.as_json()
            chunk.append(("," if i else "") + _dumps(row))
            if len(chunk) >= 2000:
                yield "".join(chunk)
                chunk = []
        yield "".join(chunk) + "]}"
    yield "]"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date | Decimal | UUID):
        return str(value)
    return value


def _generic(user: User) -> dict[str, list[dict[str, Any]]]:
    """The GENERIC models' rows of ``user``: every column except binary ones and any whose
    name suggests a credential."""
    out: dict[str, list[dict[str, Any]]] = {}
    for label, key in GENERIC.items():
        try:
            model = apps.get_model(label)
        except LookupError:
            continue  # the coverage test reports a stale entry
        columns = [
            f
            for f in model._meta.concrete_fields
            if not isinstance(f, models.BinaryField)
            and not any(word in f.name.lower() for word in _SECRET_WORDS)
        ]
        binary = [f.name for f in model._meta.concrete_fields if f not in columns]
        links = [
            f.name for f in model._meta.concrete_fields if f.is_relation and f.related_model is User
        ]
        if not links:
            continue
        rows = model._default_manager.filter(**{links[0]: user}).defer(*binary).order_by("pk")
        out[key] = [
            {f.attname: _plain(getattr(obj, f.attname)) for f in columns}
            for obj in rows.iterator(chunk_size=500)
        ]
    return out


def user_data_export(*, user: User) -> Iterator[str]:
    """The user's data as pieces of one JSON object (join them, or stream them as they come).
    Only rows owned by ``user`` are read; see the module docstring for what is in it."""
    head = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": _iso(timezone.now()),
        "profile": _profile(user),
        "subscription": _subscription(user),
        "api_keys": _api_keys(user),
        "strategies": _strategies(user),
        "market_data": _market_data(user),
        "more": _generic(user),
    }
    text = _dumps(head)
    yield text[:-1] + ',"backtests":'
    yield from _backtests(user)
    yield "}"
