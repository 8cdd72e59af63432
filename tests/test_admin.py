"""Operators' admin: every registered model's list page works with its search and filters."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from accounts.models import Plan, User
from accounts.services import demo_user_ensure

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client):
    operator = User.objects.create_superuser(email="ops@example.com", password="x-unused-123")
    client.force_login(operator)
    return client


def test_every_registered_model_has_a_working_changelist_with_search(operator_client):
    demo_user_ensure(email="demo@example.com")
    for model, model_admin in admin.site._registry.items():
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        response = operator_client.get(url)
        assert response.status_code == 200, url
        if model_admin.search_fields:
            assert operator_client.get(url, {"q": "demo"}).status_code == 200, url


def test_user_list_shows_each_users_plan_and_filters_by_it(operator_client):
    demo_user_ensure(email="demo@example.com")
    User.objects.create_user(email="free@example.com", password="x-unused-123")
    url = reverse("admin:accounts_user_changelist")
    page = operator_client.get(url).content.decode()
    assert "demo@example.com" in page
    assert "Pro" in page
    assert "Free" in page
    pro = Plan.objects.get(code=Plan.PRO)
    filtered = operator_client.get(url, {"subscription__plan__id__exact": pro.pk}).content.decode()
    assert "free@example.com" not in filtered


def test_admin_is_closed_to_regular_users(client):
    user, _ = demo_user_ensure(email="demo@example.com")
    client.force_login(user)
    response = client.get(reverse("admin:index"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
