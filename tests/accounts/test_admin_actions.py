"""Operators grant and revoke Pro by hand from the users list; every change goes through the
services and leaves an audit row saying who did it, to whom and when."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.gating import user_has_pro
from accounts.models import AuditLog, Plan, Subscription, User
from accounts.services import plans_ensure, subscription_grant, subscription_revoke_manual
from config.exceptions import ApplicationError, Conflict

pytestmark = pytest.mark.django_db

USERS = reverse("admin:accounts_user_changelist")


@pytest.fixture
def operator() -> User:
    plans_ensure()
    return User.objects.create_superuser(email="ops@example.com", password="x-unused-123")


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _act(client: Client, action: str, *users: User):
    return client.post(
        USERS, {"action": action, "_selected_action": [u.pk for u in users]}, follow=True
    )


def _fresh(user: User) -> User:
    return User.objects.get(pk=user.pk)


def _stripe_customer(email: str, *, status: str, period_end_in: timedelta) -> User:
    user = User.objects.create_user(email=email, password="x-unused-123")
    Subscription.objects.create(
        user=user,
        plan=Plan.objects.get(code=Plan.PRO),
        status=status,
        source=Subscription.Source.STRIPE,
        current_period_end=timezone.now() + period_end_in,
        stripe_customer_id="cus_1",
        stripe_subscription_id="sub_1",
    )
    return user


def test_grant_pro_gives_pro_and_records_who_and_when(operator):
    alice = User.objects.create_user(email="alice@example.com", password="x-unused-123")
    bob = User.objects.create_user(email="bob@example.com", password="x-unused-123")
    before = timezone.now()
    page = _act(_client(operator), "grant_pro", alice, bob)
    assert page.status_code == 200
    assert "Pro granted: alice@example.com, bob@example.com" in page.content.decode()
    for user in (alice, bob):
        assert user_has_pro(_fresh(user))
        sub = Subscription.objects.get(user=user)
        assert (sub.source, sub.status, sub.current_period_end) == ("manual", "active", None)
        entry = AuditLog.objects.get(target_user=user)
        assert entry.action == AuditLog.Action.PRO_GRANTED
        assert entry.actor == operator
        assert entry.actor_email == "ops@example.com"
        assert entry.created_at >= before
        assert entry.detail["plan"] == "pro"
        assert entry.detail["before"] == {"plan": None, "status": None, "source": None}


def test_revoke_pro_ends_a_hand_grant_and_records_it(operator):
    carol = User.objects.create_user(email="carol@example.com", password="x-unused-123")
    subscription_grant(user=carol)
    page = _act(_client(operator), "revoke_pro", carol)
    assert "Pro revoked: carol@example.com" in page.content.decode()
    assert not user_has_pro(_fresh(carol))
    assert _fresh(carol).plan.code == Plan.FREE
    entry = AuditLog.objects.get(target_user=carol)
    assert entry.action == AuditLog.Action.PRO_REVOKED
    assert entry.actor == operator
    assert entry.detail["before"] == {"plan": "pro", "status": "active", "source": "manual"}


def test_a_paying_stripe_customer_is_neither_revoked_nor_granted_over(operator):
    payer = _stripe_customer("payer@example.com", status="active", period_end_in=timedelta(days=9))
    client = _client(operator)
    page = _act(client, "revoke_pro", payer).content.decode()
    assert "pays through Stripe" in page
    page = _act(client, "grant_pro", payer).content.decode()
    assert "already pays for Pro through Stripe" in page
    sub = Subscription.objects.get(user=payer)
    assert (sub.source, sub.status, sub.stripe_subscription_id) == ("stripe", "active", "sub_1")
    assert not AuditLog.objects.exists()


def test_granting_over_a_lapsed_stripe_subscription_makes_it_a_manual_one(operator):
    lapsed = _stripe_customer(
        "lapsed@example.com", status="canceled", period_end_in=timedelta(days=-3)
    )
    assert not user_has_pro(lapsed)
    subscription_grant(user=lapsed, actor=operator)
    sub = Subscription.objects.get(user=lapsed)
    assert sub.source == Subscription.Source.MANUAL
    assert sub.stripe_subscription_id == ""  # a late event about it cannot undo the grant
    assert sub.stripe_customer_id == "cus_1"  # kept for a later checkout
    assert user_has_pro(_fresh(lapsed))
    assert AuditLog.objects.get(target_user=lapsed).detail["before"]["source"] == "stripe"


def test_revoking_someone_without_pro_is_refused_and_changes_nothing(operator):
    free = User.objects.create_user(email="free@example.com", password="x-unused-123")
    with pytest.raises(ApplicationError, match="no paid plan to revoke"):
        subscription_revoke_manual(user=free, actor=operator)
    assert not Subscription.objects.filter(user=free).exists()
    assert not AuditLog.objects.exists()
    payer = _stripe_customer("p2@example.com", status="trialing", period_end_in=timedelta(days=1))
    with pytest.raises(Conflict):
        subscription_grant(user=payer, actor=operator)


def test_people_who_are_not_operators_cannot_run_the_actions(operator):
    target = User.objects.create_user(email="target@example.com", password="x-unused-123")
    customer = User.objects.create_user(email="customer@example.com", password="x-unused-123")
    response = _client(customer).post(
        USERS, {"action": "grant_pro", "_selected_action": [target.pk, customer.pk]}
    )
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    # Staff without the permission to change users cannot either.
    staff = User.objects.create_user(email="staff@example.com", password="x", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_user"))
    page = _act(_client(staff), "grant_pro", target)
    assert page.status_code == 200
    assert not Subscription.objects.filter(user__in=[target, customer]).exists()
    assert not AuditLog.objects.exists()


def test_the_audit_log_lists_who_did_what_and_cannot_be_edited(operator):
    dave = User.objects.create_user(email="dave@example.com", password="x-unused-123")
    User.objects.create_user(email="erin@example.com", password="x-unused-123")
    client = _client(operator)
    _act(client, "grant_pro", dave)
    page = client.get(reverse("admin:accounts_auditlog_changelist")).content.decode()
    assert "ops@example.com" in page
    assert "Pro granted by an operator" in page
    assert client.get(reverse("admin:accounts_auditlog_add")).status_code == 403
    entry = AuditLog.objects.get()
    change = reverse("admin:accounts_auditlog_change", args=[entry.pk])
    client.post(change, {"action": "pro_revoked", "actor_email": "someone@else.com"})
    entry.refresh_from_db()
    assert (entry.action, entry.actor_email) == ("pro_granted", "ops@example.com")
    filtered = client.get(reverse("admin:accounts_user_changelist"), {"access": "pro"})
    assert "dave@example.com" in filtered.content.decode()
    assert "erin@example.com" not in filtered.content.decode()
