"""Operators' admin of copy trading: copies filter by state and by the skip reason of their
decisions, subscriptions and decisions by status and reason; nothing secret on the pages."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from tests.copytrading.test_dashboards import decide, make_fill, make_order

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    ops = User.objects.create_superuser(email="ops-copy@example.com", password="x-unused-123")
    client.force_login(ops)
    return client


def test_copies_filter_by_state_and_skip_reason(operator, copy_setup):
    s = copy_setup
    t = timezone.now()
    filled = make_order(s.subscription, make_fill(s.leader, at=t), filled="0.1", avg="100")
    rejected = make_order(s.subscription, make_fill(s.leader, at=t), state="rejected")
    decide(s.subscription, rejected.leader_fill, "failed", "order_rejected", order=rejected)
    decide(s.subscription, make_fill(s.leader, at=t), "skipped", "below_min_notional")
    url = reverse("admin:copytrading_copyorder_changelist")

    def listed(query: dict) -> str:
        page = operator.get(url, query).content.decode()
        return page.split('id="result_list"')[1].split("</table>")[0]

    assert filled.client_order_id in listed({"state": "filled"})
    assert rejected.client_order_id not in listed({"state": "filled"})
    assert rejected.client_order_id in listed({"decisions__reason": "order_rejected"})
    assert filled.client_order_id not in listed({"decisions__reason": "order_rejected"})
    assert "By state" in operator.get(url).content.decode()

    decisions = reverse("admin:copytrading_copydecision_changelist")
    page = operator.get(decisions, {"reason": "below_min_notional"}).content.decode()
    assert "below_min_notional" in page
    rows = page.split('id="result_list"')[1].split("</table>")[0]
    assert "below_min_notional" in rows
    assert "order_rejected" not in rows
    subs = reverse("admin:copytrading_subscription_changelist")
    assert operator.get(subs, {"status": "active"}).status_code == 200
    assert operator.get(subs, {"decisions__reason": "below_min_notional"}).status_code == 200
    leaders = reverse("admin:copytrading_leader_changelist")
    assert operator.get(leaders, {"status": "active"}).status_code == 200
    for page_url in (url, decisions, subs, leaders):
        body = operator.get(page_url).content.decode().lower()
        assert "api_key" not in body
        assert "secret" not in body
