"""The leader profile and the follower dashboard: the figures against hand-computed small cases
(latency buckets, slippage, P&L of follower vs leader, return and drawdown), the pages for the
owner, another Pro user, an anonymous visitor and a Free user, the audit filters and the CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from decimal import Decimal as D

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from copytrading import selectors
from copytrading.models import CopyDecision, CopyOrder, Leader, LeaderFill, Subscription
from copytrading.services import leader_publish
from risk.models import EquitySnapshot
from risk.services import equity_snapshots_record_all
from tests.backtester.backtest_factories import make_user
from tests.copytrading.conftest import double, make_account
from tests.copytrading.exchange_double import adapter_for as double_adapter_for

pytestmark = pytest.mark.django_db
MS = timedelta(milliseconds=1)


def client_for(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def make_fill(leader, *, at, side="buy", amount="1", price="100", fill_id=None, fee="0"):
    n = LeaderFill.objects.count() + 1
    return LeaderFill.objects.create(
        leader=leader,
        fill_id=fill_id or f"H{n}",
        symbol="BTC/USDT",
        side=side,
        amount=D(amount),
        price=D(price),
        fee=D(fee),
        fee_currency="USDT",
        timestamp_ms=int(at.timestamp() * 1000),
        exchange_time=at,
        detected_at=at,
        source="poll",
        position_before=D(0),
        position_after=D(amount) if side == "buy" else -D(amount),
    )


def make_order(sub, fill, *, at=None, side="buy", filled="0", avg=None, state="filled", **kw):
    at = at or fill.exchange_time
    n = CopyOrder.objects.count() + 1
    values = {
        "subscription": sub,
        "leader_fill": fill,
        "client_order_id": f"qf-test-{n}-{sub.pk}",
        "symbol": fill.symbol,
        "side": side,
        "order_type": "limit",
        "amount": D(filled) if D(filled) else D("0.1"),
        "reference_price": fill.price,
        "state": state,
        "filled_amount": D(filled),
        "average_price": D(avg) if avg is not None else None,
        "leader_filled_at": fill.exchange_time,
        "detected_at": at,
        "planned_at": at,
        "submitted_at": at,
        "acknowledged_at": at,
        "filled_at": at if D(filled) else None,
    }
    values.update(kw)
    return CopyOrder.objects.create(**values)


def decide(sub, fill, outcome, reason="", order=None, detail=""):
    return CopyDecision.objects.create(
        subscription=sub,
        leader_fill=fill,
        copy_order=order,
        outcome=outcome,
        reason=reason,
        detail=detail,
    )


# --- the figures, by hand ----------------------------------------------------------------------


def test_latency_buckets_per_stage(copy_setup):
    s = copy_setup
    t = timezone.now()
    fill = make_fill(s.leader, at=t)
    fill2 = make_fill(s.leader, at=t)
    make_order(
        s.subscription, fill,
        detected_at=t + 20 * MS, planned_at=t + 50 * MS, submitted_at=t + 60 * MS,
        acknowledged_at=t + 160 * MS, filled_at=t + 160 * MS, filled="0.1", avg="100",
    )  # fmt: skip
    make_order(
        s.subscription, fill2, state="acknowledged",
        detected_at=t + 300 * MS, planned_at=t + 320 * MS, submitted_at=t + 321 * MS,
        acknowledged_at=t + 1321 * MS, filled_at=None,
    )  # fmt: skip
    stages = {st["stage"]: st for st in selectors.latency_stages(list(CopyOrder.objects.all()))}

    # Buckets: <10, 10-25, 25-50, 50-100, 100-250, 250-500, 500-1000, 1000-2500, ... ≥10000.
    def at(*indexes: int) -> list[int]:
        counts = [0] * 11
        for i in indexes:
            counts[i] += 1
        return counts

    assert stages["leader fill → detected"]["counts"] == at(1, 5)  # 20 ms, 300 ms
    assert stages["detected → planned"]["counts"] == at(2, 1)  # 30 ms, 20 ms
    assert stages["planned → submitted"]["counts"] == at(1, 0)  # 10 ms (edge: upper bucket), 1
    assert stages["submitted → acknowledged"]["counts"] == at(4, 7)  # 100 ms, 1000 ms
    assert stages["acknowledged → filled"]["counts"] == at(0)  # only the filled one: 0 ms
    total = stages["leader fill → acknowledged (total)"]
    assert total["counts"] == at(4, 7)  # 160 ms, 1321 ms
    assert sorted(round(v) for v in total["values_ms"]) == [160, 1321]
    assert selectors.bucket_labels(selectors.LATENCY_EDGES_MS, "ms")[4] == "100 to 250 ms"


def test_slippage_distribution(copy_setup):
    s = copy_setup
    t = timezone.now()
    for bps in ("2.5", "-3", "12", None):
        make_order(s.subscription, make_fill(s.leader, at=t), slippage_bps=bps)
    dist = selectors.slippage_distribution(list(CopyOrder.objects.all()))
    # Edges -50 -20 -10 -5 -1 1 5 10 20 50: -3 in "-5 to -1", 2.5 in "1 to 5", 12 in "10 to 20".
    assert dist["counts"] == [0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 0]
    assert dist["mean_bps"] == pytest.approx(11.5 / 3)
    assert dist["p50_bps"] == 2.5
    assert sorted(dist["values_bps"]) == [-3.0, 2.5, 12.0]


def test_pnl_comparison_of_follower_and_leader(copy_setup):
    s = copy_setup
    start = timezone.now() - timedelta(minutes=10)
    Subscription.objects.filter(pk=s.subscription.pk).update(created_at=start)
    s.subscription.refresh_from_db()
    sec = timedelta(seconds=1)
    make_fill(s.leader, at=start - 10 * sec, amount="2", price="90")  # before: left out
    l1 = make_fill(s.leader, at=start + sec, amount="1", price="100")
    l2 = make_fill(s.leader, at=start + 3 * sec, side="sell", amount="0.5", price="120")
    make_order(s.subscription, l1, at=start + 2 * sec, filled="0.1", avg="101", fee="0.01",
               fee_currency="USDT")  # fmt: skip
    make_order(s.subscription, l2, at=start + 4 * sec, side="sell", filled="0.05", avg="119")
    # An order that never filled changes nothing.
    make_order(s.subscription, make_fill(s.leader, at=start + 5 * sec), state="cancelled")
    pnl = selectors.pnl_comparison(s.subscription)
    # Leader buy 1@100 · follower buy 0.1@101 (fee 0.01) · leader sell 0.5@120 · follower sell
    # 0.05@119; marks follow the newest price. Worked by hand in the module's terms:
    assert pnl["leader"][:4] == pytest.approx([0, 1, 20, 19.5])
    assert pnl["follower"][:4] == pytest.approx([0, -0.01, 1.89, 1.79])
    assert pnl["times"][0] == l1.exchange_time.isoformat()
    # The last leader fill (a buy of 1 at 100, its copy never filled): the leader holds 1.5
    # at an average 100, marked at 100: only the 10 realised remain; the follower's 0.05 held
    # at 101 is marked at 100 now: 0.89 - 0.05.
    assert len(pnl["times"]) == 5
    assert pnl["leader"][-1] == pytest.approx(10)
    assert pnl["follower"][-1] == pytest.approx(0.84)


def test_curve_return_and_drawdown():
    t = timezone.now()
    points = [(t + timedelta(minutes=i), D(v)) for i, v in enumerate([100, 110, 88, 120, 108])]
    stats = selectors.curve_stats(points)
    assert stats["total_return"] == pytest.approx(0.08)
    assert stats["max_drawdown"] == pytest.approx(0.2)  # 110 → 88
    assert selectors.curve_stats([]) == {"total_return": None, "max_drawdown": None}


def test_decision_counts_by_reason(copy_setup):
    s = copy_setup
    t = timezone.now()
    for outcome, reason in [
        ("copied", ""), ("copied", ""), ("skipped", "below_min_notional"),
        ("skipped", "below_min_notional"), ("expired", "expired"), ("skipped", "paused"),
    ]:  # fmt: skip
        decide(s.subscription, make_fill(s.leader, at=t), outcome, reason)
    counts = selectors.decision_counts(s.subscription)
    assert counts["copied"] == 2
    assert counts["not_copied"] == 4
    assert counts["by_reason"][0] == {
        "outcome": "skipped",
        "reason": "below_min_notional",
        "n": 2,
    }
    assert {(r["outcome"], r["reason"], r["n"]) for r in counts["by_reason"][1:]} == {
        ("expired", "expired", 1),
        ("skipped", "paused", 1),
    }


# --- the leader's equity curve ------------------------------------------------------------------


def test_the_leader_curve_starts_at_publication_and_follows_the_snapshots(
    django_capture_on_commit_callbacks,
):
    user = make_user()
    account = make_account(user)
    x = double(account)
    x.clear()
    x.fund(USDT="50000")
    x.set_price("BTC/USDT", "60000")
    EquitySnapshot.objects.create(
        owner=user, account=account, equity=D(1), at=timezone.now() - timedelta(days=1)
    )  # before publication: not on the curve
    with django_capture_on_commit_callbacks(execute=True):
        leader = leader_publish(user=user, account_id=account.pk, name="Curvy")
    assert [v for _at, v in selectors.leader_equity_curve(leader)] == [D(50000)]

    # The risk app's scheduled snapshot covers the leader's account (an owner with Pro).
    x.fund(USDT="55000")
    with django_capture_on_commit_callbacks(execute=True):
        counts = equity_snapshots_record_all(adapter_for=double_adapter_for)
    assert counts["recorded"] >= 1
    curve = selectors.leader_equity_curve(leader)
    assert [v for _at, v in curve] == [D(50000), D(55000)]
    assert selectors.curve_stats(curve)["total_return"] == pytest.approx(0.1)

    # A newer valuation by the leader's own poll ends the curve.
    Leader.objects.filter(pk=leader.pk).update(
        equity=D(49500), equity_at=timezone.now() + timedelta(minutes=1)
    )
    leader.refresh_from_db()
    curve = selectors.leader_equity_curve(leader)
    assert [v for _at, v in curve] == [D(50000), D(55000), D(49500)]
    assert selectors.curve_stats(curve)["max_drawdown"] == pytest.approx(0.1)

    page = client_for(make_user()).get(reverse("copytrading:leader_detail", args=[leader.pk]))
    html = page.content.decode()
    assert 'id="chart-leader-equity-data"' in html
    assert "-1.00 %" in html  # 49 500 / 50 000 - 1
    assert "10.00 %" in html  # drawdown 55 000 → 49 500


# --- pages: who sees what -----------------------------------------------------------------------


def test_the_subscription_dashboard_for_its_owner_and_nobody_else(copy_setup):
    s = copy_setup
    t = timezone.now()
    fill = make_fill(s.leader, at=t)
    order = make_order(s.subscription, fill, filled="0.05", avg="100.1", slippage_bps="10")
    decide(s.subscription, fill, "copied", order=order)
    decide(s.subscription, make_fill(s.leader, at=t), "skipped", "below_min_notional")
    url = reverse("copytrading:subscription_detail", args=[s.subscription.pk])

    owner = client_for(s.follower).get(url)
    assert owner.status_code == 200
    html = owner.content.decode()
    for chart in ("latency", "slippage", "decisions", "pnl"):
        assert f'id="chart-{chart}-data"' in html
    assert f'data-socket="/ws/copy/subscriptions/{s.subscription.pk}/"' in html
    assert "How this is computed" in html
    script = html.split('id="chart-decisions-data" type="application/json">')[1]
    figure = json.loads(script.split("</script>")[0])
    assert figure["data"][0]["x"] == ["copied", "skipped: below_min_notional"]
    assert figure["data"][0]["y"] == [1, 1]

    assert client_for(make_user()).get(url).status_code == 404  # another Pro user
    anon = Client().get(url)
    assert anon.status_code == 302
    assert "/login" in anon["Location"]
    free = client_for(make_user(pro=False)).get(url)
    assert free.status_code == 403
    assert "chart-latency" not in free.content.decode()


def test_the_leader_page_shows_the_owner_dashboard_only_to_the_owner(copy_setup):
    s = copy_setup
    t = timezone.now()
    fill = make_fill(s.leader, at=t, amount="0.5", price="60000")
    make_order(s.subscription, fill, filled="0.05", avg="60010")
    decide(s.subscription, fill, "copied")
    url = reverse("copytrading:leader_detail", args=[s.leader.pk])

    mine = client_for(s.leader_user).get(url).content.decode()
    assert "Your followers" in mine
    assert f'data-socket="/ws/copy/leaders/{s.leader.pk}/"' in mine
    row = mine.split(f'data-fill="{fill.pk}"')[1].split("</tr>")[0]
    assert '<td class="copies">1</td>' in row
    assert '<td class="filled">1</td>' in row
    assert s.follower.email not in mine  # followers are shown by number only

    theirs = client_for(s.follower).get(url).content.decode()
    assert "Your followers" not in theirs
    assert "data-socket" not in theirs
    assert 'id="followers">1<' in theirs
    assert "BTC/USDT: 0.5" in theirs  # open positions, not hidden
    Leader.objects.filter(pk=s.leader.pk).update(hide_positions=True)
    assert "BTC/USDT: 0.5" not in client_for(s.follower).get(url).content.decode()
    assert "BTC/USDT: 0.5" in client_for(s.leader_user).get(url).content.decode()
    assert client_for(make_user(pro=False)).get(url).status_code == 403


# --- the audit trail: filters and CSV -----------------------------------------------------------


def _audit_world(s):
    t = timezone.now()
    fill = make_fill(s.leader, at=t, fill_id="L-1")
    order = make_order(
        s.subscription, fill, filled="0.05", avg="60030", slippage_bps="5",
        fee="0.003", fee_currency="USDT", exchange_order_id="X9",
    )  # fmt: skip
    decide(s.subscription, fill, "copied", order=order)
    old = make_fill(s.leader, at=t, fill_id="=HYPERLINK(1)")
    skipped = decide(s.subscription, old, "skipped", "symbol_filtered", detail="not allowed")
    CopyDecision.objects.filter(pk=skipped.pk).update(created_at=t - timedelta(days=3))
    return order


def test_the_audit_trail_filters_by_outcome_reason_and_date(copy_setup):
    s = copy_setup
    _audit_world(s)
    url = reverse("copytrading:subscription_detail", args=[s.subscription.pk])
    c = client_for(s.follower)

    def outcomes(query: dict) -> list[str]:
        html = c.get(url, query).content.decode()
        table = html.split('id="decisions"')[1] if 'id="decisions"' in html else ""
        return [p.split('"')[0] for p in table.split('data-outcome="')[1:]]

    assert sorted(outcomes({})) == ["copied", "skipped"]
    assert outcomes({"outcome": "skipped"}) == ["skipped"]
    assert outcomes({"reason": "symbol_filtered"}) == ["skipped"]
    today = timezone.now().date()
    assert outcomes({"since": today.isoformat()}) == ["copied"]
    assert outcomes({"until": (today - timedelta(days=1)).isoformat()}) == ["skipped"]
    bad = c.get(url, {"since": "yesterday"})
    assert bad.status_code == 400
    assert "Enter a valid date" in bad.content.decode()
    backwards = c.get(url, {"since": today.isoformat(), "until": "2000-01-01"})
    assert backwards.status_code == 400


def test_the_csv_export_has_the_copy_and_the_skip_and_no_secrets(copy_setup):
    s = copy_setup
    order = _audit_world(s)
    url = reverse("copytrading:decisions_export", args=[s.subscription.pk])
    response = client_for(s.follower).get(url)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [r["outcome"] for r in rows] == ["copied", "skipped"]  # newest first
    copied, skipped = rows
    assert copied["client_order_id"] == order.client_order_id
    assert (copied["order_state"], copied["exchange_order_id"]) == ("filled", "X9")
    assert D(copied["filled_amount"]) == D("0.05")
    assert D(copied["average_price"]) == D("60030")
    assert D(copied["slippage_bps"]) == D(5)
    assert D(copied["fee"]) == D("0.003")
    assert copied["acknowledged_at"] == order.acknowledged_at.isoformat()
    assert (skipped["reason"], skipped["detail"], skipped["client_order_id"]) == (
        "symbol_filtered",
        "not allowed",
        "",
    )
    assert skipped["leader_fill"] == "'=HYPERLINK(1)"  # never a formula in a spreadsheet
    body = response.content.decode().lower()
    for secret_word in ("api_key", "secret", "password"):
        assert secret_word not in body
    only = client_for(s.follower).get(url, {"outcome": "skipped"})
    assert len(list(csv.DictReader(io.StringIO(only.content.decode())))) == 1
    assert client_for(s.follower).get(url, {"until": "not-a-date"}).status_code == 400
    assert client_for(make_user()).get(url).status_code == 404
    assert client_for(make_user(pro=False)).get(url).status_code == 403
