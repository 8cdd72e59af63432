"""The password-reset form answers the same whether an address has an account or not
(issue 10, item 5); sign-up's "already registered" stays (deliberate, see the README)."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from accounts.models import User

pytestmark = pytest.mark.django_db


def _without_tokens(page: bytes) -> str:
    # Each client gets its own CSRF token; everything else must match byte for byte.
    return re.sub(r'(value|content)="[A-Za-z0-9]{64}"', "", page.decode())


def _reset(email: str):
    client = Client(REMOTE_ADDR="198.51.100.7")
    response = client.post(reverse("account_reset_password"), {"email": email})
    follow = client.get(response["Location"]) if response.status_code == 302 else response
    return response, follow


def test_known_and_unknown_addresses_get_the_same_answer():
    User.objects.create_user(email="known@example.com", password="c0rrect-Horse-battery")
    known, known_page = _reset("known@example.com")
    unknown, unknown_page = _reset("nobody-here@example.com")
    assert known.status_code == unknown.status_code == 302
    assert known["Location"] == unknown["Location"]
    assert known_page.status_code == unknown_page.status_code == 200
    assert _without_tokens(known_page.content) == _without_tokens(unknown_page.content)
    assert "not assigned" not in unknown_page.content.decode()
    # Only the account holder gets a reset link.
    links = [m for m in mail.outbox if "/accounts/password/reset/key/" in m.body]
    assert [m.to for m in links] == [["known@example.com"]]


def test_sign_up_still_says_an_address_is_registered():
    User.objects.create_user(email="taken@example.com", password="c0rrect-Horse-battery")
    response = Client().post(
        reverse("account_signup"),
        {
            "email": "taken@example.com",
            "password1": "an0ther-Horse-battery",
            "password2": "an0ther-Horse-battery",
        },
    )
    assert response.status_code == 200
    assert "already registered" in response.content.decode().lower()
