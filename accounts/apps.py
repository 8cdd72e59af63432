from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _trial_on_signup(*, user: Any, **kwargs: Any) -> None:
    from accounts.services import trial_start

    trial_start(user=user)


def _site_sync(**kwargs: Any) -> None:
    from accounts.services import site_sync

    site_sync(using=kwargs.get("using") or "default")


class AccountsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "accounts"
    verbose_name = "Accounts and billing"

    def ready(self) -> None:
        # After every migrate (and test-database flush): the Site row that allauth's mails
        # name ("Hello from ...") follows SITE_NAME / SITE_DOMAIN instead of "example.com".
        post_migrate.connect(_site_sync, sender=self, dispatch_uid="accounts-site-sync")
        # Every account made through sign-up starts with its Pro trial (PRO_TRIAL_DAYS).
        from allauth.account.signals import user_signed_up

        user_signed_up.connect(_trial_on_signup, dispatch_uid="accounts-trial-on-signup")
