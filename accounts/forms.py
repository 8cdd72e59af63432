"""The accounts app's forms: allauth's adjusted to the product's rules, API keys, deleting
an account."""

from __future__ import annotations

from allauth.account.adapter import get_adapter
from allauth.account.forms import ResetPasswordForm as AllauthResetPasswordForm
from allauth.account.internal.userkit import filter_users_by_email
from django import forms

from accounts.services.apikeys import NAME_MAX_LENGTH


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


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        max_length=NAME_MAX_LENGTH,
        help_text="Say where it is used, e.g. “research notebook” or “CI job”.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": "research notebook"}),
    )


class DeleteAccountForm(forms.Form):
    password = forms.CharField(
        label="Your password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )
    confirm = forms.BooleanField(
        label="I understand that my strategies, backtests, uploads and API keys are deleted "
        "for good, and that this cannot be undone.",
        error_messages={"required": "Tick the box to confirm."},
    )
