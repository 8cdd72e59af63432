"""Copy-trading fan-out benchmark: one leader fill to N followers through a real live worker.

Target (issue 13): from the fill reaching the product to the last follower order acknowledged,
p95 <= 250 ms for 100 followers; the product's own share p95 <= 35 ms per order.

    .venv/bin/python bench/copy_bench.py
    .venv/bin/python bench/copy_bench.py --followers 100 --fills 10 --concurrency 16

What is timed, per leader fill: ``leader_fill_record`` is called (the moment a stream event
or a poll hands the fill to the product; the row's ``detected_at``) → fan-out task on the live
queue → one task per follower (plan: fresh balances + planner + risk stand-in, a committed
``planned`` row; then claim and send) → the last follower's ``acknowledged_at``. Per order the
stages come from the row's own timestamps: detected → planned (includes reading the follower's
balances from the exchange), planned → submitted (claim), submitted → acknowledged (the
exchange's round trip). The product's own share is not separated from the exchange's
handling yet: the planned stage includes the balance reads from the exchange.

The exchange is the Redis-backed exchange test double of tests/copytrading by default (the
loopback fake exchange lives on another branch): ``--adapter`` names another factory, e.g.
``exchanges.adapters.adapter_for`` once the fake exchange and the ccxt adapter are merged.
DATABASE_URL names the server; a database of its own is created and dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/quantfold")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/1")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-not-secret")
os.environ.setdefault("DJANGO_SECURE", "0")
TAG = f"copybench-{os.getpid()}"
os.environ["CELERY_TASK_DEFAULT_QUEUE"] = f"{TAG}-default"
os.environ["CELERY_LIVE_QUEUE"] = TAG
os.environ["CACHE_KEY_PREFIX"] = TAG
os.environ["CHANNELS_PREFIX"] = TAG
os.environ["EXCHANGE_DOUBLE_PREFIX"] = TAG

TARGET_FANOUT_MS = 250.0


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _line(name: str, values: list[float]) -> str:
    return (
        f"  {name:<38} p50 {_pct(values, 0.5):8.1f}  p95 {_pct(values, 0.95):8.1f}  "
        f"max {max(values):8.1f} ms  (n={len(values)})"
    )


def _start_worker(db_url: str, log: Path, concurrency: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, DATABASE_URL=db_url, PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", TAG,
        "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", "WARNING",
        "--without-gossip", "--without-mingle", "-n", f"{TAG}@%h",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    from config.celery import app

    deadline = time.monotonic() + 120
    while not app.control.ping(destination=[f"{TAG}@{os.uname().nodename}"], timeout=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the worker did not start:\n{log.read_text()[-3000:]}")
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--followers", type=int, default=100)
    parser.add_argument("--fills", type=int, default=10, help="timed leader fills")
    parser.add_argument("--concurrency", type=int, default=16, help="live worker threads")
    parser.add_argument("--adapter", default="tests.copytrading.exchange_double.adapter_for")
    parser.add_argument("--risk", default="tests.copytrading.exchange_double.approve_all")
    args = parser.parse_args()
    os.environ["COPYTRADING_ADAPTER_FACTORY"] = args.adapter
    os.environ["COPYTRADING_ORDER_CHECK"] = args.risk

    import django

    django.setup()
    from django.db import connection
    from django.utils import timezone

    from accounts.models import Plan, User
    from accounts.services import plans_ensure, subscription_grant
    from copytrading.models import CopyOrder, Leader, Subscription
    from copytrading.services import leader_fill_record
    from exchanges.models import ExchangeAccount
    from exchanges.trading import Fill

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
    log = Path(os.environ.get("VAR_DIR", "/tmp")) / f"{TAG}-worker.log"  # noqa: S108
    log.parent.mkdir(parents=True, exist_ok=True)
    worker = None
    try:
        from tests.copytrading.exchange_double import ExchangeDouble, namespace_for

        plans_ensure()

        def user(n: int) -> User:
            u = User.objects.create_user(email=f"copybench{n}@example.com", password=None)
            subscription_grant(user=u, plan_code=Plan.PRO)
            return u

        def account(owner: User, label: str) -> ExchangeAccount:
            acct = ExchangeAccount.objects.create(
                owner=owner, kind="api_key", exchange="binance", label=label, can_trade=True
            )
            if "exchange_double" in args.adapter:
                x = ExchangeDouble(namespace_for(acct.pk))
                x.fund(USDT="1000000")
                x.set_price("BTC/USDT", "60000")
            return acct

        leader_user = user(0)
        leader = Leader.objects.create(
            owner=leader_user,
            account=account(leader_user, "leader"),
            name="Bench leader",
            published_at=timezone.now(),
            equity=Decimal(100000),
        )
        for i in range(1, args.followers + 1):
            follower = user(i)
            Subscription.objects.create(
                follower=follower,
                leader=leader,
                account=account(follower, "follower"),
                sizing_mode="fixed_notional",
                notional=Decimal(100),
            )
        print(
            f"copy bench: 1 leader, {args.followers} followers, {args.fills} fills, live worker "
            f"with {args.concurrency} threads, exchange: {args.adapter}"
        )
        with contextlib.suppress(OSError):
            print(f"machine load: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
        worker = _start_worker(db_url, log, args.concurrency)

        def one_fill(n: int) -> tuple[float, list[CopyOrder]]:
            fill = Fill(
                fill_id=f"B{n}",
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
            row, _ = leader_fill_record(leader=leader, fill=fill, source="stream")
            deadline = time.monotonic() + 120
            while True:
                done = CopyOrder.objects.filter(
                    leader_fill=row, acknowledged_at__isnull=False
                ).count()
                if done >= args.followers:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {done} of {args.followers} copies acknowledged")
                time.sleep(0.01)
            orders = list(CopyOrder.objects.filter(leader_fill=row))
            last = max(o.acknowledged_at for o in orders)
            return (last - row.detected_at).total_seconds() * 1000, orders

        cold, _ = one_fill(0)
        print(f"  first fill (untimed; the worker's first tasks): {cold:.1f} ms")
        fanouts: list[float] = []
        per_order: list[float] = []
        plan: list[float] = []
        claim: list[float] = []
        exchange: list[float] = []
        for n in range(1, args.fills + 1):
            total, orders = one_fill(n)
            fanouts.append(total)
            for o in orders:
                detected = o.detected_at
                per_order.append((o.acknowledged_at - detected).total_seconds() * 1000)
                plan.append((o.planned_at - detected).total_seconds() * 1000)
                claim.append((o.submitted_at - o.planned_at).total_seconds() * 1000)
                exchange.append((o.acknowledged_at - o.submitted_at).total_seconds() * 1000)
            print(f"  fill {n}: last of {len(orders)} acknowledged {total:.1f} ms after detection")
        orders_count = CopyOrder.objects.count()
        expected = args.followers * (args.fills + 1)
        print()
        print(_line("fill detected -> last follower ack", fanouts))
        print(_line("per order: detected -> acknowledged", per_order))
        print(_line("  detected -> planned (incl. balances)", plan))
        print(_line("  planned -> submitted (claim)", claim))
        print(_line("  submitted -> acknowledged (exchange)", exchange))
        print(
            f"orders: {orders_count} rows for {expected} (fill, follower) pairs; "
            f"duplicates on the exchange: "
            f"{_duplicates(args) if 'exchange_double' in args.adapter else 'not checked'}"
        )
        p95 = _pct(fanouts, 0.95)
        print(
            f"fan-out p95 {p95:.1f} ms (target <= {TARGET_FANOUT_MS:.0f} ms): "
            f"{'met' if p95 <= TARGET_FANOUT_MS else 'MISSED'}"
        )
        ok = orders_count == expected and p95 <= TARGET_FANOUT_MS
        return 0 if ok else 1
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
        connection.creation.destroy_test_db(old_name, verbosity=0)


def _duplicates(args: argparse.Namespace) -> int:
    """Orders on the double beyond one per client order id, over every follower account."""
    import redis

    r = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
    import json

    seen: dict[str, int] = {}
    for key in r.scan_iter(f"{TAG}:acct:*:orders"):
        for raw in r.lrange(key, 0, -1):
            cid = json.loads(raw)["client_order_id"]
            seen[cid] = seen.get(cid, 0) + 1
    extra = sum(n - 1 for n in seen.values())
    for key in r.scan_iter(f"{TAG}:*"):
        r.delete(key)
    return extra


if __name__ == "__main__":
    raise SystemExit(main())
