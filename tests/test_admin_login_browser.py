"""The admin has no sign-in of its own (issue 10, item 1): /admin/login/ leads to the site's
allauth login, so a staff user with two-factor on cannot get into the admin with the password
alone, and the failed-login lockout applies there too. Driven in the real browser on daphne."""

from __future__ import annotations

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import (
    format_hotp_value,
    hotp_value,
    yield_hotp_counters_from_time,
)

from accounts.models import User
from tests.conftest import clear_run_cache

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "st4ff-Operator-pass"
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DQ"


def _forget_rate_limits() -> None:
    # allauth counts failed logins in the cache; drop only this run's keys (other runs may
    # share the Redis database).
    clear_run_cache()


@pytest.fixture
def operator():
    _forget_rate_limits()
    user = User.objects.create_superuser(email="operator@example.com", password=PASSWORD)
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    Authenticator.objects.create(
        user=user, type=Authenticator.Type.TOTP, data={"secret": TOTP_SECRET}
    )
    yield user
    _forget_rate_limits()


def _code() -> str:
    return format_hotp_value(hotp_value(TOTP_SECRET, next(yield_hotp_counters_from_time())))


def _sign_in(page, email: str, password: str) -> None:
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", password)
    page.click("form button[type=submit]")
    page.wait_for_load_state()


def test_a_staff_user_with_two_factor_needs_the_code_to_enter_the_admin(
    browser, daphne_server, operator
):
    context = browser.new_context()
    page = context.new_page()
    page.goto(daphne_server + "/admin/")
    # The admin's own login form is gone: the site's login page asks instead.
    assert "/accounts/login/" in page.url
    assert page.locator("input[name=login]").count() == 1
    _sign_in(page, operator.email, PASSWORD)
    assert "/accounts/2fa/authenticate/" in page.url

    # With only the password, the admin (and its old login URL) stays closed.
    for path in ("/admin/", "/admin/login/?next=/admin/", "/admin/accounts/user/"):
        page.goto(daphne_server + path)
        assert "Quantfold operations" not in page.content(), path
        assert "/admin/" not in page.url.split("?")[0], path
    # A password posted straight at the admin's old login URL does not sign in either.
    response = page.request.post(
        daphne_server + "/admin/login/",
        form={"username": operator.email, "password": PASSWORD, "next": "/admin/"},
        max_redirects=0,
    )
    assert response.status in (302, 303, 403)
    page.goto(daphne_server + "/admin/")
    assert "Quantfold operations" not in page.content()

    # The code completes the sign-in and the admin opens.
    page.goto(daphne_server + "/admin/")
    if page.locator("input[name=login]").count():
        _sign_in(page, operator.email, PASSWORD)
    if "/accounts/2fa/authenticate/" not in page.url:
        page.goto(daphne_server + "/accounts/2fa/authenticate/")
    page.fill("input[name=code]", _code())
    page.click("form button[type=submit]")
    page.wait_for_url(daphne_server + "/admin/")
    assert "Quantfold operations" in page.content()
    context.close()


def test_the_admin_login_shares_the_failed_login_lockout(browser, daphne_server, operator):
    Authenticator.objects.filter(user=operator).delete()  # password alone would suffice
    context = browser.new_context()
    page = context.new_page()
    page.goto(daphne_server + "/accounts/login/")
    locked = False
    for _ in range(20):
        _sign_in(page, operator.email, "wrong-password-123")
        if "Too many failed login attempts" in page.content():
            locked = True
            break
    assert locked, "the site's login never locked this client out"

    # The correct password through the admin's login URL is refused while locked out.
    page.goto(daphne_server + "/admin/login/?next=/admin/")
    _sign_in(page, operator.email, PASSWORD)
    assert "Too many failed login attempts" in page.content()
    page.goto(daphne_server + "/admin/")
    assert "Quantfold operations" not in page.content()
    context.close()
