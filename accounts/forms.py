"""allauth forms adjusted to the product's rules."""

from __future__ import annotations

from allauth.account.adapter import get_adapter
from allauth.account.forms import ResetPasswordForm as AllauthResetPasswordForm
from allauth.account.internal.userkit import filter_users_by_email


class ResetPasswordForm(AllauthResetPasswordForm):
    """The password-reset request answers the same for every well-formed address, so it cannot
    tell a visitor which addresses have accounts. Only an account holder gets a reset link; an
    unknown address gets allauth's "no account here" mail (if enabled), never a form error.

    (``ACCOUNT_PREVENT_ENUMERATION`` stays off for sign-up's deliberate "already registered".)
    """

    def clean_email(self) -> str:
        email = get_adapter().clean_email(self.cleaned_data["email"].lower())
        self.users = filter_users_by_email(
            email, is_active=True, prefer_verified=True, for_login=True
        )
        return self.cleaned_data["email"]
