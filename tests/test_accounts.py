"""Sign-up, login, rate limits, profile, error pages: the visitor's and the user's paths."""

from __future__ import annotations

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.urls import reverse

from accounts.models import Plan, User
from accounts.services import demo_user_ensure
from tests.conftest import clear_run_cache

pytestmark = pytest.mark.django_db
PASSWORD = "c0rrect-Horse-battery"


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_run_cache()  # allauth keeps its rate-limit counters in the shared cache
    yield
    clear_run_cache()


def _signup(client, email, password1=PASSWORD, password2=None):
    return client.post(
        reverse("account_signup"),
        {"email": email, "password1": password1, "password2": password2 or password1},
    )


def test_signup_creates_a_user_on_the_pro_trial_and_sends_a_verification_email(client):
    response = _signup(client, "new@example.com")
    assert response.status_code == 302
    user = User.objects.get(email="new@example.com")
    assert user.plan.code == Plan.PRO  # the sign-up trial (tests/accounts/test_pro_trial.py)
    assert user.subscription.source == "trial"
    assert not EmailAddress.objects.get(user=user).verified
    assert len(mail.outbox) == 1
    assert "new@example.com" in mail.outbox[0].to
    assert "/accounts/confirm-email/" in mail.outbox[0].body


def test_signup_with_a_taken_email_is_refused_with_a_message(client):
    User.objects.create_user(email="taken@example.com", password=PASSWORD)
    response = _signup(client, "taken@example.com")
    assert response.status_code == 200
    assert "already registered" in response.content.decode()
    assert User.objects.filter(email="taken@example.com").count() == 1


def test_signup_with_a_weak_password_is_refused_with_a_message(client):
    response = _signup(client, "weak@example.com", password1="password")
    assert response.status_code == 200
    page = response.content.decode()
    assert "too common" in page or "too short" in page
    assert not User.objects.filter(email="weak@example.com").exists()


def test_signup_with_a_malformed_email_is_refused_with_a_message(client):
    response = _signup(client, "not-an-email")
    assert response.status_code == 200
    assert "Enter a valid email address" in response.content.decode()
    assert User.objects.count() == 0


def test_demo_user_logs_in_with_the_printed_password_and_is_pro(client):
    user, password = demo_user_ensure(email="demo@example.com")
    assert password
    response = client.post(
        reverse("account_login"), {"login": "demo@example.com", "password": password}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard")
    assert client.get(reverse("dashboard")).status_code == 200
    assert user.is_pro


def test_repeated_bad_logins_for_one_account_are_refused_after_allauths_limit(client):
    User.objects.create_user(email="victim@example.com", password=PASSWORD)
    EmailAddress.objects.create(
        user=User.objects.get(email="victim@example.com"),
        email="victim@example.com",
        verified=True,
        primary=True,
    )
    for _ in range(5):
        bad = client.post(
            reverse("account_login"), {"login": "victim@example.com", "password": "wrong-pass"}
        )
        assert bad.status_code == 200
        assert "not correct" in bad.content.decode()
    # Now even the right password is refused until the window passes.
    refused = client.post(
        reverse("account_login"), {"login": "victim@example.com", "password": PASSWORD}
    )
    assert "Too many failed login attempts" in refused.content.decode()
    assert "_auth_user_id" not in client.session


def test_profile_requires_login_and_shows_plan_and_security_links(client):
    anonymous = client.get(reverse("accounts:profile"))
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("account_login"))

    user, _ = demo_user_ensure(email="demo@example.com")
    client.force_login(user)
    page = client.get(reverse("accounts:profile")).content.decode()
    assert "demo@example.com" in page
    assert "Pro" in page
    assert reverse("account_change_password") in page
    assert reverse("mfa_index") in page


def test_user_turns_on_totp_two_factor_and_is_then_asked_for_a_code_at_login(client):
    from allauth.mfa.models import Authenticator
    from allauth.mfa.totp.internal.auth import (
        format_hotp_value,
        hotp_value,
        yield_hotp_counters_from_time,
    )

    user = User.objects.create_user(email="mfa@example.com", password=PASSWORD)
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    login = client.post(reverse("account_login"), {"login": user.email, "password": PASSWORD})
    assert login.status_code == 302, login.content.decode()[-2000:]
    # Turning on 2FA asks for the password again, even right after signing in.
    first = client.get(reverse("mfa_activate_totp"))
    assert first["Location"].startswith(reverse("account_reauthenticate"))
    client.post(reverse("account_reauthenticate"), {"password": PASSWORD})
    page = client.get(reverse("mfa_activate_totp"))
    assert page.status_code == 200
    secret = client.session["mfa.totp.secret"]
    assert secret in page.content.decode()  # shown for apps that cannot scan the QR code
    code = format_hotp_value(hotp_value(secret, next(yield_hotp_counters_from_time())))
    done = client.post(reverse("mfa_activate_totp"), {"code": code})
    assert done.status_code == 302
    assert Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()

    client.logout()
    step = client.post(reverse("account_login"), {"login": user.email, "password": PASSWORD})
    assert step["Location"] == reverse("mfa_authenticate")
    assert "_auth_user_id" not in client.session


def test_password_reset_sends_a_mail_with_a_link(client):
    User.objects.create_user(email="forgot@example.com", password=PASSWORD)
    response = client.post(reverse("account_reset_password"), {"email": "forgot@example.com"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    assert "/accounts/password/reset/key/" in mail.outbox[0].body


def test_missing_page_gets_the_sites_404_page(client):
    response = client.get("/definitely/not/here/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "Page not found" in page
    assert "<nav" in page  # our layout, not Django's bare page


def test_server_error_gets_a_500_page_without_traceback(client, settings):
    from django.urls import path

    def boom(request):
        raise RuntimeError("secret internal detail")

    urlconf = type(
        "urls",
        (),
        {"urlpatterns": [path("boom/", boom)], "handler500": "config.errors.server_error"},
    )
    settings.ROOT_URLCONF = urlconf
    client.raise_request_exception = False
    response = client.get("/boom/")
    assert response.status_code == 500
    page = response.content.decode()
    assert "secret internal detail" not in page
    assert "Traceback" not in page
    assert "Something went wrong" in page
