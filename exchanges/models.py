"""Linked exchange accounts (API key, Coinbase OAuth, or paper) and their encrypted secrets.

Secrets live in their own table (``AccountSecret``) so that no queryset, serializer, admin page
or export that lists accounts can carry them by accident; only ``exchanges.services`` reads
them, through ``exchanges.vault``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from django.db import models

from accounts.fields import owner_field
from config.modelfields import created_field, optional_time, updated_field
from exchanges.vault import Sealed


class ExchangeAccount(models.Model):
    class Kind(models.TextChoices):
        API_KEY = "api_key", "API key"
        OAUTH = "oauth", "OAuth (Coinbase)"
        PAPER = "paper", "Paper"

    class Status(models.TextChoices):
        UNVERIFIED = "unverified", "Not verified yet"
        OK = "ok", "OK"
        FAILING = "failing", "Failing"
        EXPIRED = "expired", "Expired"
        NEEDS_RELINK = "needs_relink", "Needs re-linking"
        DISABLED = "disabled", "Disabled"

    owner = owner_field("exchange_accounts")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # A ccxt exchange id ("binance", "coinbase", ...); "paper" for paper accounts.
    exchange = models.CharField(max_length=40)
    label = models.CharField(max_length=80)
    sandbox = models.BooleanField(default=False, help_text="Exchange testnet/sandbox endpoints.")

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UNVERIFIED)
    status_message = models.CharField(max_length=500, blank=True)
    can_trade = models.BooleanField(default=False)
    can_withdraw = models.BooleanField(default=False)
    # What the exchange said about the key ({"enableWithdrawals": false, ...}), or
    # {"unverifiable": "reason"} where the exchange has no such endpoint.
    permissions = models.JSONField(default=dict, blank=True)
    # Last balance snapshot {"USDT": {"free": "100", "used": "0"}} as strings (Decimal-exact).
    balances = models.JSONField(default=dict, blank=True)
    checked_at = optional_time()
    key_last4 = models.CharField(max_length=4, blank=True)

    # Paper accounts only.
    paper_quote = models.CharField(max_length=10, blank=True, default="")
    paper_starting_balance = models.DecimalField(
        max_digits=28, decimal_places=8, null=True, blank=True
    )

    created_at = created_field()
    updated_at = updated_field()

    class Meta:
        ordering = ("owner", "label", "pk")
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["owner", "label"], name="exchange_label_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.exchange})"

    @property
    def is_paper(self) -> bool:
        return self.kind == self.Kind.PAPER

    @property
    def starting_balance(self) -> Decimal:
        return self.paper_starting_balance or Decimal(0)


class AccountSecret(models.Model):
    """One encrypted secret of an account; plaintext never touches this table."""

    class Name(models.TextChoices):
        API_KEY = "api_key", "API key"
        API_SECRET = "api_secret", "API secret"
        PASSPHRASE = "passphrase", "Passphrase"
        OAUTH_ACCESS = "oauth_access", "OAuth access token"
        OAUTH_REFRESH = "oauth_refresh", "OAuth refresh token"

    account = models.ForeignKey(ExchangeAccount, on_delete=models.CASCADE, related_name="secrets")
    name = models.CharField(max_length=16, choices=Name.choices)
    ciphertext = models.TextField()
    key_fingerprint = models.CharField(max_length=12, db_index=True)
    expires_at = optional_time()  # OAuth access tokens
    updated_at = updated_field()

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["account", "name"], name="account_secret_unique"),
        ]

    def __str__(self) -> str:  # never the value
        return f"{self.get_name_display()} of account {self.account_id}"

    @property
    def sealed(self) -> Sealed:
        return Sealed(token=self.ciphertext, key_fingerprint=self.key_fingerprint)


class AccountEvent(models.Model):
    """The audit trail of linked accounts: every link (refused ones too), connection test, key
    rotation, rename and deletion. Kept after the account is deleted (label and exchange are
    copied); never holds a secret."""

    class Action(models.TextChoices):
        LINK = "link", "Linked"
        LINK_REFUSED = "link_refused", "Link refused"
        TEST = "test", "Connection tested"
        ROTATE = "rotate", "Key rotated"
        ROTATE_REFUSED = "rotate_refused", "Key rotation refused"
        RENAME = "rename", "Renamed"
        DELETE = "delete", "Deleted"
        REENCRYPT = "reencrypt", "Secrets re-encrypted"

    owner = owner_field("exchange_events")
    account = models.ForeignKey(
        ExchangeAccount, on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )
    account_label = models.CharField(max_length=80)
    exchange = models.CharField(max_length=40)
    action = models.CharField(max_length=16, choices=Action.choices)
    ok = models.BooleanField(default=True)
    trigger = models.CharField(max_length=16, blank=True, help_text="web, api, daily, command")
    message = models.CharField(max_length=500, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    created_at = created_field(index=True)

    class Meta:
        ordering = ("-created_at", "-pk")

    def __str__(self) -> str:
        return f"{self.get_action_display()}: {self.account_label} ({self.exchange})"


# The paper exchange keeps its state in its own module (exchanges/paper_models.py).
from exchanges.paper_models import PaperBalance, PaperFill, PaperOrder  # noqa: E402, F401
