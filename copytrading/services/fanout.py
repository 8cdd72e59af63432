"""One leader fill to all its followers in one task: read, plan, store, then send at once.

The per-follower path (``replication.copy_replicate``: one task, ~7 exchange round trips and
~30 queries per copy) stays for single copies (retries, the sweeper, joins). The fan-out does
the same steps for every subscription together:

1. **Read** (no lock held). Subscriptions with their accounts, users and stored secrets in one
   query. For key/OAuth accounts (when the async path is on, see ``wiring.async_fanout``) the
   balances of every account and the price of every market needed are fetched concurrently
   through async ccxt (``exchanges.async_trading``: one instance per account kept across
   fills, market metadata shared); each account's figures become a ``BookView``, which the
   planner's snapshot and the risk check read instead of the exchange.
2. **Plan and store** (one transaction, the subscriptions' rows locked in id order, as
   ``copy_plan`` locks one): what is already stored for (subscription, fill) is left as it is;
   for the rest the pure planner and the risk check run, and the ``planned`` CopyOrders (with
   their deterministic client order ids) and the decisions are bulk-inserted and committed
   *before anything is sent*. The unique (subscription, fill) constraint backs this up.
3. **Claim and send**. The planned rows are claimed in one statement under row locks
   (planned → submitted); only claimed rows are sent, all at once on the hub's loop. A
   second delivery of the task, or a worker racing it, finds the rows claimed and sends none.
   Steps 2 and 3 go in parts of ``COPYTRADING_FANOUT_PART`` subscriptions: a part's orders are
   on their way while the next part is planned (copies a dead try stored are claimed first).
4. **Record** the answers in one transaction, once all are in; each copy's acknowledgement
   time is when its answer arrived. A request that may have reached the exchange
   without an answer is looked up once by client order id; still not found, the row is
   ``unknown`` and a resolve task looks again (never a resend). A worker killed after sending
   leaves ``submitted`` rows that the sweeper resolves the same way.

Accounts on sync adapters (paper accounts, test doubles, a replaced adapter factory) go
through the same plan/claim/record steps; their snapshot and send use the adapter directly,
one after another on this thread (paper fills are database work on this connection).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, TypeVar

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Field, Sum, When
from django.utils import timezone

from config.exceptions import ApplicationError
from copytrading import live
from copytrading.models import CopyAdjustment, CopyDecision, CopyOrder, LeaderFill, Subscription
from copytrading.planner import PlannedOrder, Skip, follower_symbol
from copytrading.selectors import PENDING_STATES, subscriptions_to_copy
from copytrading.services.replication import (
    CopyOrderPending,
    Outcome,
    State,
    _decide_row,
    _pause_reason,
    _record_values,
    _request,
    _send,
    approve,
    copy_settings,
    follower_snapshot,
    order_row,
    plan_request,
    plan_with_figures,
)
from copytrading.services.wiring import (
    AdapterFor,
    OrderCheck,
    async_fanout,
    async_timeout_ms,
    default_adapter_for,
    default_order_check,
    max_in_flight,
)
from exchanges.models import ExchangeAccount
from exchanges.trading import Balance, MarketRules, OrderStatusUnknown, Position

logger = logging.getLogger(__name__)
V = TypeVar("V")
ASYNC_KINDS = frozenset({ExchangeAccount.Kind.API_KEY, ExchangeAccount.Kind.OAUTH})
SPOT_QUOTES = ("USDT", "USD", "USDC")  # where a spot holding is valued (as the sync adapter)


# --- balances kept between fills ------------------------------------------------------------
# Why a kept balance is safe to size from: it was read from the exchange at ``taken_ms`` and
# is reused only while younger than half of ``COPYTRADING_MAX_BALANCE_AGE_MS`` (the planner
# refuses a snapshot older than the whole: ``stale_balance``; the other half is the time a busy
# worker may take between reading and planning, and a book still too old by then is read again,
# see ``_refresh_stale``). Our own copies move it: a copy that settled (IOC:
# filled, partly filled or cancelled) has its exact effect applied (base += filled, quote -=
# filled x average + fee), and an account with a copy whose outcome is not settled is read
# again. So the only thing the figures can miss is what the follower did elsewhere within
# those few seconds, which is the same staleness a fresh read has by the time it is used.


@dataclass
class _KeptBalance:
    taken_ms: int
    balances: dict[str, Balance]


_balances: dict[int, _KeptBalance] = {}
_balances_lock = threading.Lock()


def _kept_balance(account_id: int, now_ms: int) -> _KeptBalance | None:
    with _balances_lock:
        kept = _balances.get(account_id)
    if kept is None or now_ms - kept.taken_ms >= settings.COPYTRADING_MAX_BALANCE_AGE_MS // 2:
        return None
    return kept


def _keep_balance(account_id: int, taken_ms: int, balances: dict[str, Balance]) -> None:
    with _balances_lock:
        _balances[account_id] = _KeptBalance(taken_ms, dict(balances))


def _forget_balance(account_id: int) -> None:
    with _balances_lock:
        _balances.pop(account_id, None)


def _apply_settled(account_id: int, row: CopyOrder, market: MarketRules | None) -> None:
    """Our own settled copy's effect on the kept balance (see the note above)."""
    if market is None or row.state not in CopyOrder.FINAL:
        _forget_balance(account_id)
        return
    with _balances_lock:
        kept = _balances.get(account_id)
        if kept is None:
            return
        filled = row.filled_amount
        cost = filled * (row.average_price or Decimal(0))
        sign = 1 if row.side == "buy" else -1
        zero = Balance(asset="", free=Decimal(0), used=Decimal(0))
        base = kept.balances.get(market.base, zero)
        quote = kept.balances.get(market.quote, zero)
        base_free = base.free + sign * filled
        quote_free = quote.free - sign * cost
        if row.fee_currency == market.base:
            base_free -= row.fee
        elif row.fee_currency == market.quote:
            quote_free -= row.fee
        elif row.fee:
            _balances.pop(account_id, None)  # a fee in a third asset: read it again
            return
        kept.balances[market.base] = Balance(market.base, base_free, base.used)
        kept.balances[market.quote] = Balance(market.quote, quote_free, quote.used)


# --- the follower's book as read for this fill ------------------------------------------------


@dataclass
class BookView:
    """A follower account's balances and the prices needed, read for this fill: the
    ``TradingAdapter`` read methods the planner's snapshot and the risk check use, with no
    round trip. ``error`` is raised by every read when the account could not be read."""

    rules: dict[str, MarketRules] = field(default_factory=dict)
    market_symbols: frozenset[str] = frozenset()
    balance_rows: dict[str, Balance] = field(default_factory=dict)
    prices: dict[str, Decimal] = field(default_factory=dict)
    taken_ms: int = 0
    error: Exception | None = None

    def _ok(self) -> None:
        if self.error is not None:
            raise self.error

    def reader(self) -> Any:
        """An adapter factory that reads this book whatever the account."""
        return lambda _account: self

    def markets(self) -> dict[str, MarketRules]:
        self._ok()
        return dict(self.rules)

    def _entry(self, table: Mapping[str, V], symbol: str, missing: str) -> V:
        """The book's ``symbol`` entry of ``table``; ``missing`` names it in the error."""
        self._ok()
        if symbol not in table:
            raise ApplicationError(f"no {missing} {symbol}", field="symbol")
        return table[symbol]

    def market(self, symbol: str) -> MarketRules:
        return self._entry(self.rules, symbol, "market")

    def balances(self) -> dict[str, Balance]:
        self._ok()
        return dict(self.balance_rows)

    def last_price(self, symbol: str) -> Decimal:
        return self._entry(self.prices, symbol, "price for")

    def positions(self) -> list[Position]:
        """As the ccxt adapter reports a spot account: each holding valued against its USDT
        (else USD, USDC) market."""
        self._ok()
        out = []
        for asset, balance in self.balance_rows.items():
            for quote in SPOT_QUOTES:
                if f"{asset}/{quote}" in self.market_symbols:
                    out.append(Position(symbol=f"{asset}/{quote}", amount=balance.total))
                    break
        return out


def _held_symbols(book: BookView, quote: str) -> set[str]:
    """Markets whose price the snapshot (equity in ``quote``) and the risk check (positions'
    marks) will ask for, given the balances."""
    wanted = set()
    for asset, bal in book.balance_rows.items():
        if bal.total == 0 or asset == quote:
            continue
        wanted.add(f"{asset}/{quote}")
        for q in SPOT_QUOTES:
            if f"{asset}/{q}" in book.market_symbols:
                wanted.add(f"{asset}/{q}")
                break
    return wanted


def _account_ref(account: ExchangeAccount) -> Any:
    """The hub's reference to the account's instance. Worked out once per account object (a
    fan-out asks twice per account, and kept subscriptions keep their account objects, which
    are built again whenever a column or a secret of theirs changes)."""
    import os

    from exchanges.adapters import credentials_for
    from exchanges.async_trading import AccountRef, secrets_fingerprint

    overrides = os.environ.get("EXCHANGE_URL_OVERRIDES", "")
    kept = account.__dict__.get("_async_ref")
    if kept is not None and kept[0] == overrides:
        return kept[1]
    sealed = sorted(f"{s.name}:{s.sealed}" for s in account.secrets.all())
    fingerprint = secrets_fingerprint(account.exchange, str(account.sandbox), overrides, *sealed)
    ref = AccountRef(
        key=account.pk,
        fingerprint=fingerprint,
        exchange_id=account.exchange,
        sandbox=account.sandbox,
        credentials=lambda: credentials_for(account),
    )
    account.__dict__["_async_ref"] = (overrides, ref)
    return ref


def _read_books(
    subs: list[Subscription],
    symbols: dict[int, str],
    report: FanoutReport,
    *,
    fresh: bool = False,
) -> dict[int, BookView]:
    """Every async account's balances (kept or fetched; ``fresh``: all fetched) and the prices
    it needs, concurrently: one balance request per account not kept, one ticker per
    (exchange, market)."""
    from exchanges.async_trading import clients_for, hub

    accounts = {_account_pk(s): _account_of(s) for s in subs}
    try:
        clients = clients_for(
            [_account_ref(a) for a in accounts.values()], timeout_ms=async_timeout_ms()
        )
    except Exception as exc:  # an account that cannot be opened fails its copies, not all
        logger.warning("async clients could not be built: %s", exc)
        return {pk: BookView(error=exc) for pk in accounts}
    now_ms = int(time.time() * 1000)
    kept = {pk: None if fresh else _kept_balance(pk, now_ms) for pk in accounts}
    wanted_by_account: dict[int, set[str]] = defaultdict(set)
    for s in subs:
        wanted_by_account[_account_pk(s)].add(symbols[s.pk])

    async def read() -> dict[int, BookView]:
        books = {pk: BookView() for pk in accounts}

        async def markets(pk: int) -> None:
            await clients[pk].ensure_markets()

        await asyncio.gather(*(markets(pk) for pk in accounts), return_exceptions=True)

        gate = hub().gate(max_in_flight())

        async def balance(pk: int) -> None:
            book = books[pk]
            client = clients[pk]
            try:
                async with gate:
                    await _read_one(book, client, pk)
            except Exception as exc:
                book.error = exc

        async def _read_one(book: BookView, client: Any, pk: int) -> None:
            await client.ensure_markets()
            book.market_symbols = frozenset(client.exchange.markets or ())
            for symbol in wanted_by_account[pk]:
                book.rules[symbol] = await client.market(symbol)
            kept_balance = kept[pk]
            if kept_balance is not None:
                book.balance_rows, book.taken_ms = kept_balance.balances, kept_balance.taken_ms
            else:
                book.balance_rows = await client.balances()
                book.taken_ms = int(time.time() * 1000)
                _keep_balance(pk, book.taken_ms, book.balance_rows)

        # Prices are the same for every account on one exchange: asked once per market.
        by_exchange: dict[Any, list[int]] = defaultdict(list)
        for pk in accounts:
            by_exchange[clients[pk].endpoints_key()].append(pk)
        prices: dict[tuple[Any, str], Decimal | Exception] = {}

        async def price(ex_key: Any, symbol: str) -> None:
            pk = by_exchange[ex_key][0]
            try:
                prices[(ex_key, symbol)] = await clients[pk].last_price(symbol)
            except Exception as exc:
                prices[(ex_key, symbol)] = exc

        first = {
            (clients[pk].endpoints_key(), sym) for pk in accounts for sym in wanted_by_account[pk]
        }
        await asyncio.gather(
            *(balance(pk) for pk in accounts), *(price(ek, sym) for ek, sym in first)
        )
        more = set()
        for pk, book in books.items():
            if book.error is None:
                quote = next(iter(book.rules.values())).quote if book.rules else "USDT"
                for sym in _held_symbols(book, quote):
                    if (clients[pk].endpoints_key(), sym) not in prices:
                        more.add((clients[pk].endpoints_key(), sym))
        if more:
            await asyncio.gather(*(price(ek, sym) for ek, sym in more))
        for pk, book in books.items():
            ek = clients[pk].endpoints_key()
            for (key, sym), value in prices.items():
                if key == ek and isinstance(value, Decimal):
                    book.prices[sym] = value
            for sym in wanted_by_account[pk]:
                answer = prices.get((ek, sym))
                if isinstance(answer, Exception) and book.error is None:
                    book.error = answer
        return books

    started = time.perf_counter()
    books = hub().run(read())
    report.exchange_read_ms += (time.perf_counter() - started) * 1000
    report.balances_kept = sum(1 for k in kept.values() if k is not None)
    return books


# --- the fan-out ----------------------------------------------------------------------------


@dataclass
class FanoutReport:
    """Where one fan-out's time went (the bench reads it; the log gets a line)."""

    leader_fill_id: int = 0
    subscriptions: int = 0
    planned: int = 0
    sent: int = 0
    balances_kept: int = 0
    balances_reread: int = 0  # books read again because they had aged before planning
    subscriptions_kept: bool = False  # the subscriptions' objects were reused (rows unchanged)
    memory_settled: bool = False  # new account instances were frozen out of the collector
    load_ms: float = 0.0
    exchange_read_ms: float = 0.0  # async: balances and prices, all accounts at once
    sync_read_ms: float = 0.0  # sync adapters' snapshots (inside planning)
    plan_ms: float = 0.0  # planning, risk checks and the stored rows (incl. the two below)
    risk_batch_ms: float = 0.0  # the planned copies' risk checks, in one batch (inside plan)
    risk_batched: int = 0
    claim_ms: float = 0.0
    exchange_send_ms: float = 0.0  # async: all orders at once, until the last answer
    sync_send_ms: float = 0.0
    record_ms: float = 0.0
    total_ms: float = 0.0
    send_ms: dict[int, float] = field(default_factory=dict)  # per row: its own request
    queries: dict[str, int] = field(default_factory=dict)  # per stage: SQL statements run
    queries_ms: dict[str, float] = field(default_factory=dict)  # per stage: their time (wall)


@contextmanager
def _counting(report: FanoutReport, stage: str) -> Iterator[None]:
    """Count the SQL statements this thread runs inside the block as ``stage``'s."""

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        report.queries[stage] = report.queries.get(stage, 0) + 1
        t = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            ms = (time.perf_counter() - t) * 1000
            report.queries_ms[stage] = round(report.queries_ms.get(stage, 0.0) + ms, 2)

    with connection.execute_wrapper(count):
        yield


last_report = threading.local()


def copy_fanout_batch(
    *,
    leader_fill_id: int,
    adapter_for: AdapterFor | None = None,
    order_check: OrderCheck | None = None,
    now_ms: int | None = None,
) -> int:
    """Copy one leader fill to every live subscription of its leader (module docstring).
    Safe to run again for the same fill: nothing stored is planned again and nothing claimed
    is sent again. Returns how many orders this call sent."""
    report = FanoutReport(leader_fill_id=leader_fill_id)
    last_report.value = report
    with live.held():  # the dashboards hear of the copies once they are sent
        return _fanout(
            report,
            leader_fill_id,
            adapter_for or default_adapter_for,
            order_check or default_order_check,
            now_ms,
        )


def _fanout(
    report: FanoutReport,
    leader_fill_id: int,
    adapter_for: AdapterFor,
    order_check: OrderCheck,
    now_ms: int | None,
) -> int:
    started = time.perf_counter()
    with _counting(report, "load"):
        fill = LeaderFill.objects.select_related("leader").filter(pk=leader_fill_id).first()
        if fill is None:
            return 0
        subs = _subscriptions_of(fill.leader, report)
        for sub in subs:
            sub.leader = fill.leader  # the same row for all: loaded once, with the fill
        report.subscriptions = len(subs)
        # A fill not fanned out before has nothing settled yet (and what a racing worker
        # settles meanwhile is found under the locks): only a repeated run looks first.
        done = (
            _settled_subscriptions(fill, [s.pk for s in subs])
            if fill.fanned_out_at is not None
            else set()
        )
    todo = [s for s in subs if s.pk not in done]
    use_async = async_fanout()
    async_subs = [s for s in todo if use_async and _account_of(s).kind in ASYNC_KINDS]
    report.load_ms = (time.perf_counter() - started) * 1000

    symbols = {s.pk: follower_symbol(copy_settings(s), fill.symbol) for s in todo}
    books = _read_books(async_subs, symbols, report) if async_subs else {}

    adapters: dict[int, Any] = {}
    loaded = {_account_pk(s): _account_of(s) for s in subs}
    in_flight: list[_InFlight] = []

    def claim_and_send(planned: dict[int, CopyOrder], subscription_ids: list[int] | None) -> None:
        t = time.perf_counter()
        with _counting(report, "claim"):
            claimed = _claim(fill, planned, subscription_ids)
        report.claim_ms += (time.perf_counter() - t) * 1000
        if claimed:
            report.sent += len(claimed)
            sending = _start_send(claimed, adapters, adapter_for, report, loaded)
            if sending is not None:
                in_flight.append(sending)

    claim_and_send({}, None)  # copies stored by an earlier try that died before sending
    # In parts: a part's orders are on their way while the next part is planned.
    size = max(1, settings.COPYTRADING_FANOUT_PART)
    for i in range(0, len(todo), size):
        part = todo[i : i + size]
        _refresh_stale(books, [s for s in part if _account_pk(s) in books], symbols, report)
        t = time.perf_counter()
        planned = _plan_all(fill, part, books, adapters, adapter_for, order_check, report, now_ms)
        report.plan_ms += (time.perf_counter() - t) * 1000
        if planned:  # (a racing worker's rows are its own to claim)
            claim_and_send(planned, [s.pk for s in part])
    LeaderFill.objects.filter(pk=fill.pk, fanned_out_at__isnull=True).update(
        fanned_out_at=timezone.now()
    )
    _finish_sends(in_flight, books, report)
    report.total_ms = (time.perf_counter() - started) * 1000
    if books or in_flight:  # new account instances: out of the next fan-outs' collections
        from exchanges.async_trading import hub

        report.memory_settled = hub().settle_memory()
    logger.info(
        "fan-out of fill %s: %s subscriptions, %s planned, %s sent in %.1f ms",
        fill.pk, report.subscriptions, report.planned, report.sent, report.total_ms,
    )  # fmt: skip
    return report.sent


# --- a leader's subscriptions, kept between fills ------------------------------------------
# Building ~600 model objects (subscriptions with their accounts, followers, plans and the
# accounts' sealed secrets) was the largest part of loading a fill's fan-out. The rows are read
# every time, as plain tuples (every column the objects are built from); while they are the same
# as when the objects were built, copies of those objects are used. Any change to any of those
# columns (a pause, new settings, a key rotation, a plan change, a new follower) builds them
# again. Only the object building is saved: nothing is used that the database does not hold now.


@dataclass
class _KeptSubscriptions:
    rows: tuple[Any, ...]
    subs: list[Subscription]


_kept_subscriptions: dict[int, _KeptSubscriptions] = {}
_kept_subscriptions_lock = threading.Lock()


def _subscriptions_query(leader: Any) -> Any:
    return (
        subscriptions_to_copy(leader)
        .filter(account__isnull=False)
        .select_related("account", "follower__subscription__plan")
        .order_by("pk")
    )


def _subscriptions_of(leader: Any, report: FanoutReport) -> list[Subscription]:
    """The leader's live subscriptions with their accounts (and their secrets), followers and
    plans: the kept objects' copies while every column they were built from is unchanged."""
    from exchanges.models import AccountSecret

    query = _subscriptions_query(leader)
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        sub_rows = tuple(cursor.fetchall())
    secret_fields = [f.attname for f in AccountSecret._meta.concrete_fields]
    account_ids = sorted(set(_account_ids(query, sub_rows)))
    secret_rows = tuple(
        AccountSecret.objects.filter(account_id__in=account_ids)
        .order_by("pk")
        .values_list(*secret_fields)
    )
    rows = (sub_rows, secret_rows)
    with _kept_subscriptions_lock:
        kept = _kept_subscriptions.get(leader.pk)
    if kept is not None and kept.rows == rows:
        report.subscriptions_kept = True
        return [copy.copy(sub) for sub in kept.subs]
    subs = list(query.prefetch_related("account__secrets"))
    with _kept_subscriptions_lock:
        _kept_subscriptions[leader.pk] = _KeptSubscriptions(rows, subs)
    return [copy.copy(sub) for sub in subs]


def _account_ids(query: Any, rows: tuple[Any, ...]) -> list[int]:
    """The subscriptions' account ids, read from the raw rows (the account column's place)."""
    column = [f.attname for f in Subscription._meta.concrete_fields].index("account_id")
    return [row[column] for row in rows]


def _refresh_stale(
    books: dict[int, BookView],
    subs: list[Subscription],
    symbols: dict[int, str],
    report: FanoutReport,
) -> None:
    """Read again, in place, the books that have grown too old to size from by now (a worker
    busy with other fan-outs can take seconds between the read and the plan): a follower is
    never skipped as ``stale_balance`` only because this worker was slow."""
    limit = settings.COPYTRADING_MAX_BALANCE_AGE_MS // 2
    wanted = {_account_pk(s) for s in subs}
    # A read of many accounts returns when its last answer is in; on a busy hub (other
    # fan-outs' requests in the same queue) its first answers can be old by then. The ones
    # too old are read again, fewer each time, so the spread shrinks: up to three rounds.
    for _round in range(3):
        now_ms = int(time.time() * 1000)
        stale = {
            pk
            for pk, b in books.items()
            if pk in wanted and b.error is None and now_ms - b.taken_ms > limit
        }
        if not stale:
            return
        again = _read_books(
            [s for s in subs if _account_pk(s) in stale], symbols, report, fresh=True
        )
        books.update(again)
        report.balances_reread += len(again)


def _settled_subscriptions(fill: LeaderFill, sub_ids: list[int]) -> set[int]:
    """Subscriptions with a copy or a settled (not failed) decision for ``fill``."""
    have = set(
        CopyOrder.objects.filter(leader_fill=fill, subscription_id__in=sub_ids).values_list(
            "subscription_id", flat=True
        )
    )
    have |= set(
        CopyDecision.objects.filter(leader_fill=fill, subscription_id__in=sub_ids)
        .exclude(outcome=Outcome.FAILED)
        .values_list("subscription_id", flat=True)
    )
    return have


def _copy_positions(sub_ids: list[int]) -> dict[int, dict[str, Decimal]]:
    """``selectors.copy_positions`` for many subscriptions, summed by the database (two
    grouped queries: the cost does not grow with the copies' history)."""
    held: dict[int, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    qty = Case(When(state__in=PENDING_STATES, then=F("amount")), default=F("filled_amount"))
    signed = Sum(Case(When(side="buy", then=qty), default=-qty))
    for rows in (
        CopyOrder.objects.filter(subscription_id__in=sub_ids),
        # As in copy_positions: a drift repair does not move the copies' holding.
        CopyAdjustment.objects.filter(subscription_id__in=sub_ids).exclude(
            kind=CopyAdjustment.Kind.REPAIR
        ),
    ):
        if connection.vendor != "postgresql":  # SQLite sums decimals as floats: add here
            fields = ("subscription_id", "symbol", "side", "state", "amount", "filled_amount")
            for sub_id, symbol, side, state, amount, filled in rows.values_list(*fields):
                q = amount if state in PENDING_STATES else filled
                held[sub_id][symbol] += q if side == "buy" else -q
            continue
        grouped = rows.values("subscription_id", "symbol").annotate(net=signed).order_by()
        for sub_id, symbol, net in grouped.values_list("subscription_id", "symbol", "net"):
            held[sub_id][symbol] += net or Decimal(0)
    return {sid: {s: q for s, q in by_symbol.items() if q != 0} for sid, by_symbol in held.items()}


def _orders_qty_copied(fill: LeaderFill, sub_ids: list[int]) -> dict[int, Decimal]:
    """``replication._order_qty_copied`` for many subscriptions in one query."""
    out: dict[int, Decimal] = defaultdict(Decimal)
    if not fill.exchange_order_id:
        return out
    rows = CopyOrder.objects.filter(
        subscription_id__in=sub_ids,
        closing=False,
        leader_fill__leader_id=fill.leader_id,
        leader_fill__exchange_order_id=fill.exchange_order_id,
    ).values_list("subscription_id", "state", "amount", "filled_amount")
    for sub_id, state, amount, filled in rows:
        out[sub_id] += filled if state in CopyOrder.FINAL else amount
    return out


def _snapshot_and_plan(
    sub: Subscription,
    fill: LeaderFill,
    source: Any,
    held: dict[str, Decimal],
    copied: Decimal,
    now_ms: int,
) -> tuple[Any, Any, dict[str, Any]]:
    """``(plan or Skip, snapshot, figures)`` for one subscription, the account read through
    ``source`` (a ``BookView`` or a sync adapter); the plan is the exception raised when the
    account could not be read."""
    settings_ = copy_settings(sub)
    symbol = follower_symbol(settings_, fill.symbol)
    try:
        snapshot = follower_snapshot(adapter=source, symbol=symbol, positions=held)
    except Exception as exc:  # the account could not be read: an audited failure
        return exc, None, {}
    if isinstance(source, BookView):
        snapshot = replace(snapshot, taken_at_ms=source.taken_ms)
    snapshot = replace(snapshot, order_qty_copied=copied)
    plan, figures = plan_with_figures(sub, fill, settings_, snapshot, now_ms)
    return plan, snapshot, figures


# The risk check is ~10 queries and 2 cache calls per copy (profile, latched states, equity
# peak and period openings, recent orders). Run one after another they dominate a fan-out, so
# the copies of key/OAuth accounts are checked all together once they are planned (under the
# subscriptions' locks): ``risk.services.order_checks_batch`` reads every follower's state in a
# few queries and decides each copy exactly as the one-order check would, in the same order.
# The batch is the risk app's own check, so it runs only while that is the configured one (a
# replaced check, or a batch that fails, checks each copy on its own).
BATCH_CHECK = "risk.services.order_request_check"


def _account_of(sub: Subscription) -> ExchangeAccount:
    account = sub.account
    assert account is not None  # only subscriptions with an account are fanned out
    return account


def _answers_with(source: Any) -> Callable[[ExchangeAccount], Any]:
    """An ``adapter_for`` that answers with the book (or adapter) already read for this copy."""

    def adapter_for(_account: ExchangeAccount) -> Any:
        return source

    return adapter_for


def _account_pk(sub: Subscription) -> int:
    """The subscription's account id (fanned-out subscriptions always have one), without
    loading the account."""
    assert sub.account_id is not None
    return int(sub.account_id)


def _batch_checks(
    fill: LeaderFill,
    planned: list[tuple[Subscription, Any, PlannedOrder, Any, dict[str, Any]]],
    order_check: OrderCheck,
) -> dict[int, Any]:
    """``{subscription id: approve() result}`` for the planned copies of async accounts (read
    into a ``BookView``), checked in one batch (see above); ``planned``: (subscription, its
    source, plan, snapshot, figures)."""
    from risk.services import CheckItem, order_checks_batch, proposal_for_order

    eligible = [x for x in planned if isinstance(x[1], BookView) and x[1].error is None]
    if (
        not eligible
        or order_check is not default_order_check
        or settings.COPYTRADING_ORDER_CHECK != BATCH_CHECK
    ):
        return {}
    items = [
        CheckItem(
            user=sub.follower,
            account=_account_of(sub),
            proposal=proposal_for_order(
                request=plan_request(plan),
                market=snapshot.market,
                price=snapshot.price,
                stop=fill.stop_price,
            ),
            source="copy",
            adapter_for=book.reader(),
        )
        for sub, book, plan, snapshot, _figures in eligible
    ]
    try:
        with transaction.atomic():  # a failure must not poison the planning transaction
            decisions = order_checks_batch(items)
    except Exception:  # every copy is checked on its own instead
        logger.exception("batched risk checks of fill %s failed", fill.pk)
        return {}
    out = {}
    for (sub, book, plan, snapshot, figures), decision in zip(eligible, decisions, strict=True):
        out[sub.pk] = approve(
            sub=sub,
            fill=fill,
            plan=plan,
            snapshot=snapshot,
            order_check=order_check,
            adapter_for=book.reader(),
            figures=figures,
            decision=decision,
        )
    return out


def _plan_all(
    fill: LeaderFill,
    todo: list[Subscription],
    books: dict[int, BookView],
    adapters: dict[int, Any],
    adapter_for: AdapterFor,
    order_check: OrderCheck,
    report: FanoutReport,
    now_ms: int | None,
) -> dict[int, CopyOrder]:
    """Plan, check and store the copies of ``todo``; returns the stored ``planned`` rows by id."""
    orders: list[CopyOrder] = []
    decisions: list[tuple[CopyDecision, CopyOrder | None]] = []
    now = int(time.time() * 1000) if now_ms is None else now_ms
    with _counting(report, "plan_locked"), transaction.atomic():
        # Locked in id order; only what may have changed since the load is read back.
        locked = {
            pk: (status, message, baseline)
            for pk, status, message, baseline in Subscription.objects.select_for_update()
            .filter(pk__in=[s.pk for s in todo])
            .order_by("pk")
            .values_list("pk", "status", "status_message", "baseline")
        }
        ids = [pk for pk in locked if locked[pk][0] != Subscription.Status.STOPPED]
        done = _settled_subscriptions(fill, ids)  # a racing fan-out may have stored some
        ids = [pk for pk in ids if pk not in done]
        positions = _copy_positions(ids)
        qty_copied = _orders_qty_copied(fill, ids)
        by_pk = {s.pk: s for s in todo}
        planned_at = timezone.now()
        # First every plan (a skip is decided at once), then the risk checks of the planned
        # orders in one batch, then the rows, in id order.
        outcomes: dict[int, CopyDecision] = {}
        to_check: list[tuple[Subscription, Any, PlannedOrder, Any, dict[str, Any]]] = []
        for pk in ids:
            sub = by_pk[pk]
            sub.status, sub.status_message, sub.baseline = locked[pk]
            source: Any = books.get(_account_pk(sub))
            t = time.perf_counter()
            if source is None:
                try:
                    source = adapters[pk] = adapter_for(_account_of(sub))
                except Exception as exc:
                    source = BookView(error=exc)
            plan, snapshot, figures = _snapshot_and_plan(
                sub, fill, source, positions.get(pk, {}), qty_copied.get(pk, Decimal(0)), now
            )
            if not isinstance(source, BookView):
                report.sync_read_ms += (time.perf_counter() - t) * 1000
            if isinstance(plan, Exception):
                logger.warning("copy %s/%s: follower account unreadable: %s", pk, fill.pk, plan)
                outcomes[pk] = _decide_row(sub, fill, Outcome.FAILED, "exchange_error",
                                           f"The account could not be read: {plan}")  # fmt: skip
                continue
            _note_baseline(sub, follower_symbol(copy_settings(sub), fill.symbol), snapshot)
            if isinstance(plan, Skip):
                outcome = Outcome.EXPIRED if plan.reason == "expired" else Outcome.SKIPPED
                detail = _pause_reason(sub) if plan.reason == "paused" else plan.detail
                outcomes[pk] = _decide_row(sub, fill, outcome, plan.reason, detail, figures)
                continue
            to_check.append((sub, source, plan, snapshot, figures))
        t = time.perf_counter()
        with _counting(report, "risk_batch"):
            checked = _batch_checks(fill, to_check, order_check)
        report.risk_batch_ms += (time.perf_counter() - t) * 1000
        report.risk_batched += len(checked)
        for sub, source, plan, snapshot, figures in to_check:
            result = checked.get(sub.pk)
            if result is None:
                result = approve(
                    sub=sub,
                    fill=fill,
                    plan=plan,
                    snapshot=snapshot,
                    order_check=order_check,
                    adapter_for=_answers_with(source),
                    figures=figures,
                )
            if isinstance(result, CopyDecision):
                outcomes[sub.pk] = result
                continue
            amount, note = result
            order = order_row(sub, fill, plan, amount, note, planned_at)
            orders.append(order)
            figures.update(amount=amount, limit_price=plan.price or "")
            outcomes[sub.pk] = _decide_row(sub, fill, Outcome.COPIED, "", note, figures)
            outcomes[sub.pk].copy_order = order
        decisions = [(outcomes[pk], outcomes[pk].copy_order) for pk in ids if pk in outcomes]
        CopyOrder.objects.bulk_create(orders)
        for decision, copy_order in decisions:
            decision.copy_order = copy_order
        made = CopyDecision.objects.bulk_create([d for d, _o in decisions])
        report.planned += len(orders)
        # bulk_create sends no post_save: the dashboards are told here, after commit.
        for order in orders:
            live.publish_copy_order(order, created=True)
        for decision in made:
            live.publish_decision(decision, created=True)
    return {order.pk: order for order in orders if order.pk is not None}


def _note_baseline(sub: Subscription, symbol: str, snapshot: Any) -> None:
    from copytrading.services.replication import baseline_note

    baseline_note(sub, symbol, snapshot)


_COPY_TABLE = CopyOrder._meta.db_table


def _claim_sql(postgres: bool, n_subscriptions: int | None) -> str:
    """The claim statement; ``n_subscriptions``: how many ``%(s<i>)s`` subscription ids it is
    limited to (None: every planned copy of the fill)."""
    where = "leader_fill_id = %(fill)s AND state = %(planned)s"
    if n_subscriptions is not None:
        where += (
            f" AND subscription_id IN ({', '.join(f'%(s{i})s' for i in range(n_subscriptions))})"
        )
    if postgres:
        # The rows are locked in id order first (two claimers never deadlock); a row another
        # transaction claimed meanwhile no longer matches once its lock is released.
        return (
            f"WITH todo AS (SELECT id FROM {_COPY_TABLE} WHERE {where} ORDER BY id FOR UPDATE) "  # noqa: S608
            f"UPDATE {_COPY_TABLE} AS c SET state = %(submitted)s, submitted_at = %(now)s, "
            "attempts = c.attempts + 1, updated_at = %(now)s FROM todo "
            "WHERE c.id = todo.id RETURNING c.id"
        )
    # SQLite (the embedded shape): one writer at a time, so the UPDATE alone is the claim.
    return (
        f"UPDATE {_COPY_TABLE} SET state = %(submitted)s, submitted_at = %(now)s, "  # noqa: S608
        f"attempts = attempts + 1, updated_at = %(now)s WHERE {where} RETURNING id"
    )


def _claim(
    fill: LeaderFill, planned: dict[int, CopyOrder], subscription_ids: list[int] | None = None
) -> list[CopyOrder]:
    """The planned copies of ``fill`` (of ``subscription_ids`` only, when given), claimed for
    this caller (planned → submitted) by one UPDATE: PostgreSQL locks each row it changes and a
    second claimer, waiting on those locks, re-reads the state and finds nothing left to
    claim. ``planned``: the rows this call has just stored, reused as they are; a claimed row
    not among them (stored by an earlier try that died before sending) is read back."""
    now = timezone.now()
    params: dict[str, Any] = {
        "fill": fill.pk, "planned": State.PLANNED, "submitted": State.SUBMITTED, "now": now,
    }  # fmt: skip
    if subscription_ids is not None:
        if not subscription_ids:
            return []
        params.update({f"s{i}": pk for i, pk in enumerate(subscription_ids)})
    sql = _claim_sql(
        connection.vendor == "postgresql",
        None if subscription_ids is None else len(subscription_ids),
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        ids = sorted(row[0] for row in cursor.fetchall())
        if not ids:
            return []
        missing = [pk for pk in ids if pk not in planned]
        others = {
            row.pk: row
            for row in CopyOrder.objects.select_related("subscription__account", "leader_fill")
            .prefetch_related("subscription__account__secrets")
            .filter(pk__in=missing)
        }
        rows = []
        for pk in ids:
            row = planned.get(pk) or others[pk]
            if pk in planned:
                row.attempts += 1
            row.state, row.submitted_at, row.updated_at = State.SUBMITTED, now, now
            rows.append(row)
            live.publish_copy_order(row, created=False)  # a raw update sends no signal
    return rows


@dataclass
class _InFlight:
    """Orders handed to the hub's loop, not yet answered."""

    rows: list[CopyOrder]
    future: Any  # concurrent.futures.Future[list[_Answer]]
    started: float  # perf_counter when handed over


def _start_send(
    rows: list[CopyOrder],
    adapters: dict[int, Any],
    adapter_for: AdapterFor,
    report: FanoutReport,
    loaded: dict[int, ExchangeAccount],
) -> _InFlight | None:
    """Async accounts' orders handed to the hub's loop all at once (not waited for: the caller
    plans the next part meanwhile); sync accounts' orders sent one after another here and
    recorded. ``loaded``: the accounts read with their secrets at the start (a claimed row's
    account is read again only if it is not there)."""
    from exchanges.async_trading import clients_for, hub

    use_async = async_fanout()
    on_loop = [r for r in rows if use_async and _account_of(r.subscription).kind in ASYNC_KINDS]
    on_loop_ids = {r.pk for r in on_loop}
    here = [r for r in rows if r.pk not in on_loop_ids]
    future = None
    if on_loop:
        accounts = {
            _account_pk(r.subscription): loaded.get(_account_pk(r.subscription))
            or _account_of(r.subscription)
            for r in on_loop
        }
        clients = clients_for(
            [_account_ref(a) for a in accounts.values()], timeout_ms=async_timeout_ms()
        )

        async def one(row: CopyOrder) -> tuple[str, Any, float]:
            client = clients[_account_pk(row.subscription)]
            t = time.perf_counter()
            try:
                return ("ok", await client.create_order(_request(row)), t)
            except OrderStatusUnknown as exc:
                try:
                    found = await client.fetch_order_by_client_id(row.symbol, row.client_order_id)
                except Exception:
                    found = None
                if found is not None:
                    return ("ok", found, t)
                return ("unknown", f"no answer from the exchange: {exc.message}", t)
            except ApplicationError as exc:
                # A refusal can mean our order is already there: look before calling it one.
                try:
                    found = await client.fetch_order_by_client_id(row.symbol, row.client_order_id)
                except Exception as lookup_exc:
                    return ("unknown", f"refused ({exc.message}); lookup failed: {lookup_exc}", t)
                if found is not None:
                    return ("ok", found, t)
                return ("rejected", exc.message, t)
            except Exception as exc:  # a transport failure may have left the process
                return ("unknown", f"{type(exc).__name__}: {exc}", t)

        gate = hub().gate(max_in_flight())

        async def stamped(row: CopyOrder) -> _Answer:
            async with gate:
                kind, value, t = await one(row)
            # The acknowledgement is the moment the exchange's answer reached us; it is stored
            # with the others once every answer is in.
            arrived = timezone.now()
            return _Answer(kind, value, (time.perf_counter() - t) * 1000, arrived)

        async def everything() -> list[_Answer]:
            return await asyncio.gather(*(stamped(r) for r in on_loop))

        send_started = time.perf_counter()
        future = asyncio.run_coroutine_threadsafe(everything(), hub().loop)
    t = time.perf_counter()
    for row in here:
        adapter = adapters.get(row.subscription_id) or adapter_for(_account_of(row.subscription))
        try:
            _send(row, adapter)
        except CopyOrderPending:
            _resolve_later(row.pk)
        except Exception:
            logger.exception("copy %s: send failed; the sweeper resolves it", row.pk)
    report.sync_send_ms += (time.perf_counter() - t) * 1000
    return None if future is None else _InFlight(on_loop, future, send_started)


def _finish_sends(
    in_flight: list[_InFlight], books: dict[int, BookView], report: FanoutReport
) -> None:
    """Wait for every answer, then record them all in one transaction."""
    if not in_flight:
        return
    rows: list[CopyOrder] = []
    answers: list[_Answer] = []
    for part in in_flight:
        rows.extend(part.rows)
        answers.extend(part.future.result())
    report.exchange_send_ms = (time.perf_counter() - in_flight[0].started) * 1000
    t = time.perf_counter()
    with _counting(report, "record"):
        _record_all(rows, answers, books, report)
    report.record_ms = (time.perf_counter() - t) * 1000


@dataclass(frozen=True)
class _Answer:
    """One order request's outcome on the loop: ``ok`` (value: the exchange's ``OrderState``),
    ``rejected`` or ``unknown`` (value: why), its round trip and when its answer arrived."""

    kind: str
    value: Any
    request_ms: float
    arrived: Any  # datetime


# What recording an answer changes on a copy row (one statement for the whole batch).
ANSWER_FIELDS = ("state", "exchange_order_id", "filled_amount", "average_price", "fee",
                 "fee_currency", "acknowledged_at", "filled_at", "slippage_bps", "error_text",
                 "updated_at")  # fmt: skip


def _record_all(
    rows: list[CopyOrder],
    answers_in_order: list[_Answer],
    books: dict[int, BookView],
    report: FanoutReport,
) -> None:
    """The answers of a batch, in one transaction (rows settled meanwhile are left alone)."""
    answers = {row.pk: answer for row, answer in zip(rows, answers_in_order, strict=True)}
    unknown: list[int] = []
    by_pk = {row.pk: row for row in rows}
    with transaction.atomic():
        # The rows are in memory as claimed; under the locks (id order) only what another
        # process may have moved since (a resolve task, the sweeper) is read back.
        locked = []
        for pk, state, acknowledged_at, filled_at in (
            CopyOrder.objects.select_for_update()
            .filter(pk__in=list(answers))
            .order_by("pk")
            .values_list("pk", "state", "acknowledged_at", "filled_at")
        ):
            row = by_pk[pk]
            row.state, row.acknowledged_at, row.filled_at = state, acknowledged_at, filled_at
            locked.append(row)
        changed: list[CopyOrder] = []
        decisions: list[CopyDecision] = []
        now = timezone.now()
        for row in locked:
            answer = answers[row.pk]
            report.send_ms[row.pk] = answer.request_ms
            if row.state in CopyOrder.FINAL:
                continue
            if answer.kind == "ok":
                decision = _record_values(row, answer.value, answer.arrived)
                if decision is not None:
                    decisions.append(decision)
            elif answer.kind == "rejected":
                row.state = State.REJECTED
                row.error_text = str(answer.value)[:2000]
                decisions.append(
                    _decide_row(row.subscription, row.leader_fill, Outcome.FAILED,
                                "order_rejected", str(answer.value), order=row)
                )  # fmt: skip
            else:
                row.state = State.UNKNOWN
                row.error_text = str(answer.value)[:2000]
                unknown.append(row.pk)
            row.updated_at = now
            changed.append(row)
        _store_answers(changed)
        made = CopyDecision.objects.bulk_create(decisions)
        for row in changed:
            live.publish_copy_order(row, created=False)  # a bulk write sends no signal
            book = books.get(_account_pk(row.subscription))
            rules = book.rules.get(row.symbol) if book is not None else None
            _apply_settled(_account_pk(row.subscription), row, rules)
        for decision in made:
            live.publish_decision(decision, created=True)
    for pk in unknown:
        _resolve_later(pk)


def _concrete(field_: Any) -> Field[Any, Any]:
    """A model field that is a table column (not a reverse relation)."""
    assert isinstance(field_, Field)
    return field_


def _store_answers(rows: list[CopyOrder]) -> None:
    """``ANSWER_FIELDS`` of every row in one batched UPDATE by primary key (Django's
    ``bulk_update`` builds one CASE per field and row, which costs more than the orders)."""
    if not rows:
        return
    fields = [_concrete(CopyOrder._meta.get_field(name)) for name in ANSWER_FIELDS]
    table = connection.ops.quote_name(CopyOrder._meta.db_table)
    sets = ", ".join(f"{connection.ops.quote_name(f.column or f.name)} = %s" for f in fields)
    sql = f"UPDATE {table} SET {sets} WHERE id = %s"  # noqa: S608 - names from the model
    params = [
        [f.get_db_prep_save(getattr(row, f.attname), connection) for f in fields] + [row.pk]
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _resolve_later(pk: int) -> None:
    """Look the copy up again shortly (by task name: services never import task modules)."""
    try:
        current_app.send_task("copytrading.resolve", args=[pk], countdown=1)
    except Exception:  # the sweeper resolves in-flight rows anyway
        logger.exception("could not queue the lookup of copy %s", pk)
