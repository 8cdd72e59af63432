"""Copy-trading benchmark: leader fills fanned out to followers through real live workers, the
real ccxt adapter and the real risk check, against the loopback fake Binance.

Targets (issue 13): one leader fill to 100 followers, from the fill event reaching the product
to the last follower order acknowledged, p95 <= 250 ms; the product's own share p95 <= 35 ms
per order. And 1,000 followers over 10 leaders: orders per second, nothing dropped or doubled.

    .venv/bin/python bench/copy_bench.py
    .venv/bin/python bench/copy_bench.py --followers 100 --fills 10 --concurrency 4 \\
        --throughput-leaders 10 --throughput-followers 100
    (``make bench`` runs it with the test environment's database and Redis)

Set-up: the fake Binance (tests/fakes/binance_private.py) serves on loopback in this process;
every leader and follower is a real user with Pro, an API-key account linked through
``exchanges.services.account_link`` to its own key on the fake, and a subscription (fixed
amount, 100 USDT per trade; signal expiry 3600 s, so no copy is skipped for being late). Live
workers are ``celery worker`` processes on the live queue (threads pool), wired by
``EXCHANGE_URL_OVERRIDES`` to the fake, with the real risk check.

(a) Fan-out latency, per leader fill: the clock starts when the fill event is handed to the
product (``leader_fill_from_event``, what the stream's receiver calls) and stops at the last
follower's ``acknowledged_at``. The fan-out is one task (copytrading/services/fanout.py) that
reads every follower's balance and the price at once (async ccxt), plans and stores all the
copies, then sends them all at once. Inside the worker the task's ``FanoutReport`` gives its
stages; the *exchange* time is the wall time of the concurrent read and of the concurrent send
as seen from the worker (it includes ccxt's own client work: signing, JSON parsing, the event
loop). Per order, the product's own share is the order's fill-event-to-acknowledgement time
minus the exchange read and minus its own order request's round trip: queue, database,
planning, the risk check and the recording. The product's cost per order, amortized, is the
task's time without the two exchange phases divided by the orders.

(b) Throughput: one fill from each of L leaders at once, F followers in all; orders per second
from the first fill event to the last acknowledgement. Counts are checked on the fake's own
order book: exactly one order per (subscription, fill), every subscription's copy present.

DATABASE_URL names the server; a database of its own is created and dropped. Exit status 0
when the counts are right (the latency targets are reported, met or not).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_FANOUT_MS = 250.0
TARGET_OWN_MS = 35.0
TIMING_KEY = "copybench:timing"  # a Redis hash the workers write per-task timings into


# --- inside the live worker: the fan-out's own timings ---------------------------------------

_hooks_lock = threading.Lock()
_hooks_ready = False


def _acked_s(order: Any) -> float:
    """When the order was acknowledged (epoch seconds); every order counted here settled."""
    assert order.acknowledged_at is not None, order.client_order_id
    return order.acknowledged_at.timestamp()


def install_hooks() -> None:
    """Celery signal on the worker: when a fan-out task ends, store its ``FanoutReport``
    (``copytrading.services.fanout.last_report``, set on the task's thread) with the task's
    start and end in a Redis hash keyed by leader fill id. Called from the worker through
    ``worker_init`` (``COPY_BENCH_HOOKS``)."""
    global _hooks_ready
    with _hooks_lock:
        if _hooks_ready:
            return
        import gc

        from celery.signals import task_postrun, task_prerun

        def _gc_timer(phase: str, info: dict[str, int]) -> None:
            # Collections run on whichever thread allocates; their time is the process's.
            if phase == "start":
                _gc["t"] = time.perf_counter()
            elif "t" in _gc:
                _gc["ms"] = _gc.get("ms", 0.0) + (time.perf_counter() - _gc.pop("t")) * 1000

        gc.callbacks.append(_gc_timer)

        @task_prerun.connect(weak=False)
        def _start(task: Any = None, **kwargs: Any) -> None:
            _local.start = time.time()
            _gc["ms"] = 0.0

        @task_postrun.connect(weak=False)
        def _end(task: Any = None, args: Any = None, **kwargs: Any) -> None:
            if task is None or task.name != "copytrading.fanout" or not args:
                return
            import redis
            from django.conf import settings

            from copytrading.services.fanout import last_report

            report = getattr(last_report, "value", None)
            if report is None or report.leader_fill_id != args[0]:
                return
            record = {"start": getattr(_local, "start", 0.0), "end": time.time(),
                      "gc_ms": _gc.get("ms", 0.0), **dataclasses.asdict(report)}  # fmt: skip
            r = redis.Redis.from_url(settings.REDIS_URL)
            r.hset(_timing_key(), str(args[0]), json.dumps(record, default=str))

        _hooks_ready = True


_local = threading.local()
_gc: dict[str, float] = {}  # the worker's garbage-collection time during the current task


def _timing_key() -> str:
    return f"{os.environ.get('COPY_BENCH_TAG', 'copybench')}:{TIMING_KEY}"


# --- the driver ----------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _line(name: str, values: list[float], unit: str = "ms") -> str:
    if not values:
        return f"  {name:<46} (no values)"
    return (
        f"  {name:<46} p50 {_pct(values, 0.5):8.1f}  p95 {_pct(values, 0.95):8.1f}  "
        f"max {max(values):8.1f} {unit}  (n={len(values)})"
    )


def _start_worker(
    env: dict[str, str], queue: str, log: Path, concurrency: int, n: int
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queue,
        "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", "WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "-n", f"{queue}-{n}@%h", "--include", "bench.copy_bench",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    from config.celery import app

    name = f"{queue}-{n}@{os.uname().nodename}"
    deadline = time.monotonic() + 300  # a loaded 2-core machine starts workers slowly
    while not app.control.ping(destination=[name], timeout=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the worker did not start:\n{log.read_text()[-3000:]}")
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--followers", type=int, default=100, help="(a) followers of one leader")
    parser.add_argument("--fills", type=int, default=10, help="(a) timed leader fills")
    parser.add_argument("--workers", type=int, default=1, help="live worker processes")
    parser.add_argument("--concurrency", type=int, default=4, help="threads per worker")
    parser.add_argument("--gap", type=float, default=0.5, help="(a) seconds between fills")
    parser.add_argument("--throughput-leaders", type=int, default=10, help="(b) leaders")
    parser.add_argument("--throughput-followers", type=int, default=1000, help="(b) followers")
    parser.add_argument(
        "--sequential",
        type=int,
        default=1,
        help="(c) fan-outs of one fill run in this process with no worker, profiled (0: skip)",
    )
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from benchlib import stop_workers  # bench/ is on the path when run as a script

    tag = f"copybench-{os.getpid()}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/quantfold")
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/1")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-not-secret")
    os.environ.setdefault("DJANGO_SECURE", "0")
    os.environ.setdefault(
        "EXCHANGE_ENCRYPTION_KEYS", "1U5WxBIJuD4XMNNxopYVoQgVJuUiR2Wbaln7EMB2KJI="
    )
    os.environ["CELERY_TASK_DEFAULT_QUEUE"] = f"{tag}-default"
    os.environ["CELERY_LIVE_QUEUE"] = tag
    os.environ["CACHE_KEY_PREFIX"] = tag
    os.environ["CHANNELS_PREFIX"] = tag
    os.environ["COPY_BENCH_TAG"] = tag
    # The product's own adapter factory, so the fan-out takes its async path.
    os.environ["COPYTRADING_ADAPTER_FACTORY"] = "exchanges.adapters.adapter_for"
    os.environ["COPYTRADING_ORDER_CHECK"] = "risk.services.order_request_check"

    from tests.fakes.binance_private import FakeBinancePrivate

    fake = FakeBinancePrivate()
    fake.serve()
    fake.now_ms = int(time.time() * 1000)
    fake.set_price("BTCUSDT", "60000")
    os.environ["EXCHANGE_URL_OVERRIDES"] = json.dumps({"binance": fake.url_overrides()})

    import django

    django.setup()
    import redis
    from django.db import connection

    from accounts.models import Plan, User
    from accounts.services import plans_ensure, subscription_grant
    from copytrading.models import CopyDecision, CopyOrder, Leader, LeaderFill, Subscription
    from copytrading.services import leader_fill_from_event, leader_publish, subscription_create
    from exchanges.services import account_link
    from exchanges.trading import Fill
    from risk.services import risk_profile_update

    if connection.vendor != "postgresql":
        print("copy bench: DATABASE_URL must name a PostgreSQL server", file=sys.stderr)
        return 2
    test_settings = connection.settings_dict.setdefault("TEST", {})
    test_settings["NAME"] = f"test_{connection.settings_dict['NAME']}_copybench"
    old_name = connection.settings_dict["NAME"]
    db_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    db = connection.settings_dict
    db_url = (
        f"postgres://{db.get('USER') or 'postgres'}"
        f"{':' + db['PASSWORD'] if db.get('PASSWORD') else ''}"
        f"@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db_name}"
    )
    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    log_dir = Path(os.environ.get("VAR_DIR", "/tmp"))  # noqa: S108
    log_dir.mkdir(parents=True, exist_ok=True)
    workers: list[subprocess.Popen[bytes]] = []
    counter = iter(range(1, 10**9))
    follower_keys: dict[int, Any] = {}  # account pk -> the fake's key of that account
    try:
        plans_ensure()

        def linked(balances: dict[str, str], label: str) -> tuple[User, Any]:
            n = next(counter)
            user = User.objects.create_user(email=f"copybench{n}@example.com", password=None)
            subscription_grant(user=user, plan_code=Plan.PRO)
            key = fake.add_account(balances=balances)
            account = account_link(
                user=user, exchange="binance", label=label, api_key=key.api_key, secret=key.secret
            )
            follower_keys[account.pk] = key
            return user, account

        def leader_with_followers(name: str, followers: int) -> Leader:
            user, account = linked({"USDT": "1000000"}, "leader")
            leader = leader_publish(user=user, account_id=account.pk, name=name)
            for _ in range(followers):
                fuser, faccount = linked({"USDT": "100000"}, "follower")
                # Sized by the subscription, not cut by the default risk limits.
                risk_profile_update(
                    user=fuser, values={"max_heat": 0.0, "max_position_fraction": 1.0}
                )
                subscription_create(
                    user=fuser,
                    leader_id=leader.pk,
                    account_id=faccount.pk,
                    # Speed is measured here, not the signal expiry: no copy may expire
                    # because the queue is long (the default 60 s would skip late ones).
                    settings={
                        "sizing_mode": "fixed_notional",
                        "notional": "100",
                        "expiry_seconds": 3600,
                    },
                )
            return leader

        fill_numbers = iter(range(1, 10**9))

        def fire(leader: Leader) -> tuple[float, LeaderFill]:
            n = next(fill_numbers)
            fill = Fill(
                fill_id=f"BF{n}",
                exchange_order_id=f"BO{n}",
                client_order_id=None,
                symbol="BTC/USDT",
                side="buy",
                amount=Decimal("0.01"),
                price=Decimal(60000),
                fee=Decimal(0),
                fee_currency="USDT",
                timestamp_ms=int(time.time() * 1000),
            )
            t0 = time.time()
            assert leader.account_id is not None  # the bench's leaders keep their accounts
            leader_fill_from_event(account_id=leader.account_id, fill=fill)
            return t0, LeaderFill.objects.get(leader=leader, fill_id=fill.fill_id)

        def settled(fill_ids: list[int], expected: int, timeout: float = 300) -> None:
            deadline = time.monotonic() + timeout
            while True:
                # Settled: acknowledged, or decided without an order (a skip says why; the
                # counts below report them, so a skipped copy does not hang the bench).
                done = (
                    CopyOrder.objects.filter(
                        leader_fill_id__in=fill_ids, acknowledged_at__isnull=False
                    ).count()
                    + CopyDecision.objects.filter(
                        leader_fill_id__in=fill_ids, outcome__in=("skipped", "expired")
                    ).count()
                )
                if done >= expected:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {done} of {expected} copies acknowledged")
                time.sleep(0.005)

        print(
            f"copy bench: fake Binance on loopback, real ccxt adapter, real risk check, "
            f"{args.workers} live worker(s) x {args.concurrency} threads, one task per fill "
            "(async ccxt fan-out)"
        )
        with contextlib.suppress(OSError):
            print(f"machine: load {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
        started = time.monotonic()
        leader = leader_with_followers("Bench leader", args.followers)
        print(f"set-up (a): 1 leader, {args.followers} followers linked in "
              f"{time.monotonic() - started:.1f} s")  # fmt: skip

        env = dict(os.environ, DATABASE_URL=db_url, PYTHONUNBUFFERED="1", COPY_BENCH_WORKER="1")
        for n in range(args.workers):
            workers.append(
                _start_worker(env, tag, log_dir / f"{tag}-worker-{n}.log", args.concurrency, n)
            )

        # --- (a) one fill to N followers, timed --------------------------------------------
        t0, cold = fire(leader)
        settled([cold.pk], args.followers)
        print("  first fill (untimed: the worker's first task loads ccxt, the markets and builds")
        print("  each account's async client, which later fills reuse)")
        ok = True
        if args.fills:
            r.delete(_timing_key())
            fanouts: list[float] = []
            per_order: list[float] = []
            own: list[float] = []
            amortized: list[float] = []
            request_ms: list[float] = []
            stage_names = ("queue", "load_ms", "exchange_read_ms", "plan_ms", "risk_batch_ms",
                           "claim_ms", "exchange_send_ms", "record_ms", "total_ms")  # fmt: skip
            stages: dict[str, list[float]] = {name: [] for name in stage_names}
            kept: list[float] = []
            gc_ms: list[float] = []
            timed: list[tuple[float, Any]] = []
            for _ in range(args.fills):
                time.sleep(args.gap)
                t0, row = fire(leader)
                settled([row.pk], args.followers)
                timed.append((t0, row))
            time.sleep(1)  # the task stores its report just after the last acknowledgement
            for t0, row in timed:
                orders = list(CopyOrder.objects.filter(leader_fill=row))
                last = max(_acked_s(o) for o in orders)
                fanouts.append((last - t0) * 1000)
                raw = r.hget(_timing_key(), str(row.pk))
                rep = json.loads(raw) if raw is not None else None
                if rep is not None:
                    stages["queue"].append((rep["start"] - t0) * 1000)
                    for name in stage_names[1:]:
                        stages[name].append(float(rep[name]))
                    kept.append(float(rep["balances_kept"]))
                    gc_ms.append(float(rep["gc_ms"]))
                    exchange = rep["exchange_read_ms"] + rep["exchange_send_ms"]
                    amortized.append((rep["total_ms"] - exchange) / max(1, rep["sent"]))
                for o in orders:
                    latency = (_acked_s(o) - t0) * 1000
                    per_order.append(latency)
                    if rep is None or str(o.pk) not in rep["send_ms"]:
                        continue
                    mine = float(rep["send_ms"][str(o.pk)])
                    request_ms.append(mine)
                    own.append(latency - rep["exchange_read_ms"] - mine)
                print(f"  fill: last of {len(orders)} acknowledged {fanouts[-1]:.1f} ms after it")
            print()
            print(f"(a) one leader fill to {args.followers} followers, {args.fills} fills:")
            print(_line("fill event -> last follower acknowledged", fanouts))
            print(_line("fill event -> each order acknowledged", per_order))
            print(_line("per order: product's own share", own))
            print(_line("per order: its order request (exchange)", request_ms))
            print(_line("product's cost per order, amortized", amortized))
            print("  the fan-out task's stages:")
            for name in stage_names:
                print(_line(f"  {name.removesuffix('_ms')}", stages[name]))
            print(_line("  accounts sized from a kept balance", kept, unit="accts"))
            print(_line("  garbage collection in the worker meanwhile", gc_ms))
            p95, own95 = _pct(fanouts, 0.95), _pct(own, 0.95) if own else float("nan")
            fan_ok = "met" if p95 <= TARGET_FANOUT_MS else "MISSED"
            own_ok = "met" if own95 <= TARGET_OWN_MS else "MISSED"
            print(
                f"  fan-out p95 {p95:.1f} ms (target <= {TARGET_FANOUT_MS:.0f}): {fan_ok}; "
                f"own share p95 {own95:.1f} ms (target <= {TARGET_OWN_MS:.0f}): {own_ok}"
            )
            ok = _check_counts(
                fake, follower_keys, [leader], LeaderFill, CopyOrder, Subscription, label="(a)"
            )

        # --- (b) throughput: F followers over L leaders, one fill each at once ---------------
        if args.throughput_leaders and args.throughput_followers:
            per = args.throughput_followers // args.throughput_leaders
            started = time.monotonic()
            leaders = [
                leader_with_followers(f"Bench leader {i}", per)
                for i in range(args.throughput_leaders)
            ]
            print()
            print(f"set-up (b): {len(leaders)} leaders x {per} followers linked in "
                  f"{time.monotonic() - started:.1f} s")  # fmt: skip
            Leader.objects.filter(pk=leader.pk).update(status="retired")  # (a)'s leader rests
            # Two rounds, one fill per leader each: the first finds every account new to the
            # worker (its async client built, its balance read: a worker's first minutes), the
            # second is the steady state.
            for round_name in ("cold", "warm"):
                time.sleep(1)
                fired = [fire(x) for x in leaders]
                first = fired[0][0]
                settled([row.pk for _t, row in fired], per * len(leaders), timeout=900)
                orders = list(CopyOrder.objects.filter(leader_fill__in=[row for _t, row in fired]))
                last = max(o.acknowledged_at.timestamp() for o in orders if o.acknowledged_at)
                span = last - first
                print(f"(b) {round_name}: {len(orders)} copies of {len(leaders)} fills: last "
                      f"acknowledged {span * 1000:.0f} ms after the first fill event: "
                      f"{len(orders) / span:.1f} orders/s")  # fmt: skip
            ok = (
                _check_counts(
                    fake, follower_keys, leaders, LeaderFill, CopyOrder, Subscription, label="(b)"
                )
                and ok
            )
        # --- (c) where the time goes: the fan-out run in this process, profiled ------------
        if args.sequential:
            stop_workers(workers)  # nothing else runs now
            workers.clear()
            _profiled(args.sequential, leader, fire)
        return 0 if ok else 1
    finally:
        stop_workers(workers)
        with contextlib.suppress(Exception):
            r.delete(_timing_key())
        connection.close()
        # (c)'s risk-check threads keep their own connections open (as in a worker): end them.
        with contextlib.suppress(Exception):
            import psycopg

            with psycopg.connect(db_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as pg:
                pg.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity "
                    "where datname = %s and pid <> pg_backend_pid()",
                    (db_name,),
                )
        connection.creation.destroy_test_db(old_name, verbosity=0)
        fake.stop()


def _profiled(n: int, leader: Any, fire: Any) -> None:
    """Fan out ``n`` fills of the (a) leader in this process (no queue, no other work),
    profiled; print the stages and the heaviest functions by their own time."""
    import cProfile
    import pstats

    from copytrading.models import Leader
    from copytrading.services import copy_fanout, detection
    from copytrading.services.fanout import last_report

    Leader.objects.filter(pk=leader.pk).update(status="active")
    detection.enqueue_fanout = lambda **kw: None  # this process makes the copies itself
    _t0, warm = fire(leader)
    copy_fanout(leader_fill_id=warm.pk)  # this process's clients built, caches warm
    profile = cProfile.Profile()
    print()
    print(f"(c) {n} fan-out(s) run in this process (no queue, no contention), profiled:")
    for _ in range(n):
        time.sleep(0.5)
        _t0, row = fire(leader)
        profile.enable()
        copy_fanout(leader_fill_id=row.pk)
        profile.disable()
        rep = last_report.value
        print(f"  {rep.sent} orders: total {rep.total_ms:.1f} ms = load {rep.load_ms:.1f}, "
              f"exchange read {rep.exchange_read_ms:.1f}, plan+risk+store {rep.plan_ms:.1f}, "
              f"claim {rep.claim_ms:.1f}, exchange send {rep.exchange_send_ms:.1f}, "
              f"record {rep.record_ms:.1f}")  # fmt: skip
        print(f"    SQL statements by stage: {rep.queries}")
        print(f"    SQL time by stage (ms, executing and fetching): {rep.queries_ms}")
    stats = pstats.Stats(profile)
    if os.environ.get("COPY_BENCH_PROFILE"):  # the raw profile, for pstats
        stats.dump_stats(os.environ["COPY_BENCH_PROFILE"])
    width = 8
    print("  heaviest functions by own time (profiled, so slower than unprofiled):")
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:15]  # type: ignore[attr-defined]
    for (path, line, func), (_cc, calls, tottime, cumtime, _callers) in rows:
        where = f"{Path(path).name}:{line}({func})"
        print(f"    {tottime * 1000:{width}.1f} ms own {cumtime * 1000:{width}.1f} ms cum "
              f"{calls:6d} calls  {where}")  # fmt: skip
    by_package: dict[str, float] = {}
    for (path, _line_no, _func), (_cc, _calls, tottime, _cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        key = _package(path)
        by_package[key] = by_package.get(key, 0.0) + tottime
    total = sum(by_package.values()) or 1.0
    print("  own time by package (this thread; the async loop's thread is not profiled):")
    for key, value in sorted(by_package.items(), key=lambda kv: kv[1], reverse=True)[:10]:
        print(f"    {value * 1000:9.1f} ms  {100 * value / total:5.1f} %  {key}")


def _package(path: str) -> str:
    """A profile entry's home: the site-package, our app, or the standard library."""
    if "site-packages/" in path:
        return path.split("site-packages/")[1].split("/")[0]
    if str(ROOT) in path:
        rel = Path(path).relative_to(ROOT)
        return "our code: " + (rel.parts[0] if len(rel.parts) > 1 else rel.name)
    if path.startswith("<") or path == "~":
        return "builtins (C)"
    return "python stdlib"


def _check_counts(
    fake: Any,
    keys: dict[int, Any],
    leaders: list[Any],
    LeaderFill: Any,
    CopyOrder: Any,
    Subscription: Any,
    *,
    label: str,
) -> bool:
    """Exactly one order on the fake per (subscription, fill), and one per pair expected."""
    fills = list(LeaderFill.objects.filter(leader__in=leaders))
    subs = list(Subscription.objects.filter(leader__in=leaders))
    expected = {(s.pk, f.pk) for f in fills for s in subs if s.leader_id == f.leader_id}
    rows = list(CopyOrder.objects.filter(leader_fill__in=fills))
    by_cid = {o.client_order_id: (o.subscription_id, o.leader_fill_id) for o in rows}
    follower_api_keys = {keys[s.account_id].api_key for s in subs}
    with fake._lock:
        booked = Counter(o.client_id for o in fake.orders if o.account.api_key in follower_api_keys)
    doubled = sum(n - 1 for n in booked.values() if n > 1)
    stray = [cid for cid in booked if cid not in by_cid]
    pairs_on_exchange = {by_cid[cid] for cid in booked if cid in by_cid}
    from copytrading.models import CopyDecision

    skips = Counter(
        CopyDecision.objects.filter(
            leader_fill__in=fills, outcome__in=("skipped", "expired")
        ).values_list("reason", flat=True)
    )
    dropped = expected - pairs_on_exchange
    states = Counter(o.state for o in rows)
    ok = not doubled and not stray and not dropped and len(rows) == len(expected)
    if skips:
        print(f"  skipped {label} (decided, no order): {dict(skips)}")
        for reason, detail in (
            CopyDecision.objects.filter(leader_fill__in=fills, outcome__in=("skipped", "expired"))
            .order_by("reason", "pk")
            .distinct("reason")
            .values_list("reason", "detail")
        ):
            print(f"    e.g. {reason}: {detail}")
    print(
        f"  counts {label}: {len(expected)} (subscription, fill) pairs; {len(rows)} copy rows "
        f"({dict(states)}); {sum(booked.values())} orders on the fake; doubled {doubled}, "
        f"dropped {len(dropped)}, not ours {len(stray)}: {'OK' if ok else 'WRONG'}"
    )
    return ok


if os.environ.get("COPY_BENCH_WORKER") == "1":  # imported by the bench's worker (--include)
    install_hooks()

if __name__ == "__main__":
    raise SystemExit(main())
