"""Risk profiles, latched trading states with their history, denied orders, equity snapshots
and kill-switch runs. The rules themselves are pure (``risk/rules.py``); these rows hold what
the rules read and what they decided."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models
from django.db.models import Q

from accounts.fields import owner_field
from config.modelfields import created_field, optional_time, updated_field
from exchanges.fields import account_field
from risk import rules

_DEFAULTS = rules.Limits()


def _pct_help(text: str) -> str:
    return f"{text} A fraction: 0.02 = 2 %. 0 = off."


class RiskProfile(models.Model):
    """A user's limits (``account`` null) or one account's override of them (a whole set,
    started from the user's)."""

    class Sizing(models.TextChoices):
        FRACTION = "fraction", "Fraction of equity"
        NOTIONAL = "notional", "Fixed amount"
        RISK = "risk", "Fixed risk per trade (from the stop)"
        VOL_TARGET = "vol_target", "Volatility target"
        KELLY = "kelly", "Kelly fraction (capped)"

    class CorrelationMode(models.TextChoices):
        REFUSE = "refuse", "Refuse the order"
        SHRINK = "shrink", "Shrink the order"

    owner = owner_field("risk_profiles")
    account = account_field(
        "risk_profiles", help_text="Empty: the user's default for every account."
    )
    sizing = models.CharField(max_length=12, choices=Sizing.choices, default=_DEFAULTS.sizing)
    risk_per_trade = models.FloatField(
        default=_DEFAULTS.risk_per_trade,
        help_text="Share of equity lost at the stop (risk sizing) or put in (fraction sizing).",
    )
    fixed_notional = models.FloatField(default=0.0)
    vol_target = models.FloatField(default=0.0)
    kelly_win_rate = models.FloatField(default=0.0)
    kelly_payoff = models.FloatField(default=0.0)
    kelly_multiplier = models.FloatField(default=_DEFAULTS.kelly_multiplier)
    kelly_cap = models.FloatField(default=_DEFAULTS.kelly_cap)
    max_position_fraction = models.FloatField(default=_DEFAULTS.max_position_fraction)
    max_heat = models.FloatField(
        default=_DEFAULTS.max_heat, help_text=_pct_help("Sum of the losses to the stops.")
    )
    max_open_positions = models.PositiveIntegerField(default=_DEFAULTS.max_open_positions)
    max_leverage = models.FloatField(default=_DEFAULTS.max_leverage)
    min_order_notional = models.FloatField(default=0.0)
    max_order_notional = models.FloatField(default=0.0)
    max_orders_per_minute = models.PositiveIntegerField(default=_DEFAULTS.max_orders_per_minute)
    drawdown_limit = models.FloatField(default=_DEFAULTS.drawdown_limit)
    daily_loss_limit = models.FloatField(default=_DEFAULTS.daily_loss_limit)
    weekly_loss_limit = models.FloatField(default=0.0)
    monthly_loss_limit = models.FloatField(default=0.0)
    cooldown_minutes = models.PositiveIntegerField(default=0)
    stoploss_guard_count = models.PositiveIntegerField(default=0)
    stoploss_guard_lookback_minutes = models.PositiveIntegerField(default=0)
    stoploss_guard_lock_minutes = models.PositiveIntegerField(default=0)
    stoploss_guard_all = models.BooleanField(default=False)
    low_profit_lookback_minutes = models.PositiveIntegerField(default=0)
    low_profit_min = models.FloatField(default=0.0)
    low_profit_lock_minutes = models.PositiveIntegerField(default=0)
    correlation_threshold = models.FloatField(default=0.0)
    correlation_lookback = models.PositiveIntegerField(default=0)
    correlation_mode = models.CharField(
        max_length=8, choices=CorrelationMode.choices, default=CorrelationMode.REFUSE
    )
    updated_at = updated_field()

    LIMIT_FIELDS: ClassVar[tuple[str, ...]] = tuple(rules.Limits.__slots__)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(
                fields=["owner"], condition=Q(account=None), name="risk_profile_one_default"
            ),
            models.UniqueConstraint(fields=["owner", "account"], name="risk_profile_per_account"),
        ]

    def __str__(self) -> str:
        return f"Risk profile of {self.owner_id}" + (
            f" for account {self.account_id}" if self.account_id else ""
        )

    def limit_values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.LIMIT_FIELDS}

    def limits(self) -> rules.Limits:
        return rules.Limits(**self.limit_values())


class TradingState(models.Model):
    """The latched state of a user's trading (``account`` null) or of one account."""

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        REDUCING = "reducing", "Reducing only"
        HALTED = "halted", "Halted"

    owner = owner_field("trading_states")
    account = account_field("trading_states")
    state = models.CharField(max_length=10, choices=State.choices, default=State.ACTIVE)
    code = models.CharField(max_length=32, blank=True, help_text="What latched it.")
    reason = models.CharField(max_length=500, blank=True)
    figures = models.JSONField(default=dict, blank=True)
    # The latch opens by itself at this time (daily loss: next UTC day); null = user reset only.
    latched_until = optional_time()
    changed_at = created_field()
    updated_at = updated_field()

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(
                fields=["owner"], condition=Q(account=None), name="trading_state_one_user"
            ),
            models.UniqueConstraint(fields=["owner", "account"], name="trading_state_account"),
        ]

    def __str__(self) -> str:
        return f"{self.get_state_display()} ({self.owner_id}/{self.account_id or '-'})"


class StateTransition(models.Model):
    """One change of a trading state: from, to, why, the figures, and who or what did it."""

    state = models.ForeignKey(TradingState, on_delete=models.CASCADE, related_name="transitions")
    owner = owner_field("state_transitions")
    from_state = models.CharField(max_length=10, choices=TradingState.State.choices)
    to_state = models.CharField(max_length=10, choices=TradingState.State.choices)
    code = models.CharField(max_length=32, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    figures = models.JSONField(default=dict, blank=True)
    # "user:<id>", "breaker:daily_loss", "kill_switch", "latch_expired", ...
    actor = models.CharField(max_length=64)
    created_at = created_field(index=True)

    class Meta:
        ordering = ("-created_at", "-pk")

    def __str__(self) -> str:
        return f"{self.from_state} → {self.to_state} ({self.code or self.actor})"


class DeniedOrder(models.Model):
    """An order ``check_order`` refused: never sent. Shown with its reason."""

    owner = owner_field("denied_orders")
    account = account_field("denied_orders", keep=True)
    source = models.CharField(max_length=32, blank=True, help_text="copy, bot, manual, api ...")
    symbol = models.CharField(max_length=40)
    side = models.CharField(max_length=4)
    amount = models.DecimalField(max_digits=28, decimal_places=12, null=True, blank=True)
    price = models.DecimalField(max_digits=28, decimal_places=12, null=True, blank=True)
    code = models.CharField(max_length=32, db_index=True)
    reason = models.CharField(max_length=500)
    figures = models.JSONField(default=dict, blank=True)
    created_at = created_field(index=True)

    class Meta:
        ordering = ("-created_at", "-pk")

    def __str__(self) -> str:
        return f"{self.side} {self.symbol}: {self.code}"


class EquitySnapshot(models.Model):
    """Equity of a user's account (or all of them, ``account`` null) at a time: the breakers'
    peak and period openings, and the dashboard's curve."""

    owner = owner_field("equity_snapshots")
    account = account_field("equity_snapshots")
    at = models.DateTimeField(db_index=True)
    equity = models.DecimalField(max_digits=28, decimal_places=8)

    class Meta:
        ordering = ("at", "pk")
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["owner", "account", "at"], name="risk_equity_owner_at")
        ]

    def __str__(self) -> str:
        return f"{self.equity} at {self.at:%Y-%m-%d %H:%M}"


class KillSwitchRun(models.Model):
    """One press of the kill switch and what it did on each account."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        PARTIAL = "partial", "Some accounts failed (retrying)"
        FAILED = "failed", "Failed after retries"

    owner = owner_field("kill_switch_runs")
    close_positions = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    # {"<account id>": {"label", "ok", "cancelled": [...], "closed": [...], "errors": [...]}}
    report = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = created_field()
    finished_at = optional_time()

    class Meta:
        ordering = ("-created_at", "-pk")

    def __str__(self) -> str:
        return f"Kill switch {self.pk} ({self.status})"

    @property
    def failed_account_ids(self) -> list[int]:
        return [int(k) for k, v in self.report.items() if not v.get("ok")]


class ManualClose(models.Model):
    """A position the user closed from the dashboard. Stored with its client order id before
    the order is sent; a denial by the pre-trade check is kept here too (nothing sent)."""

    class Status(models.TextChoices):
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        UNKNOWN = "unknown", "Unknown (timed out; being looked up)"
        DENIED = "denied", "Denied"
        FAILED = "failed", "Failed"

    owner = owner_field("manual_closes")
    account = models.ForeignKey(
        "exchanges.ExchangeAccount", on_delete=models.CASCADE, related_name="manual_closes"
    )
    symbol = models.CharField(max_length=40)
    side = models.CharField(max_length=4)
    amount = models.DecimalField(max_digits=28, decimal_places=12, null=True, blank=True)
    client_order_id = models.CharField(max_length=64, unique=True, null=True, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.SENDING)
    order_status = models.CharField(max_length=16, blank=True)
    exchange_order_id = models.CharField(max_length=64, blank=True)
    code = models.CharField(max_length=32, blank=True)
    message = models.CharField(max_length=500, blank=True)
    created_at = created_field(index=True)
    updated_at = updated_field()

    class Meta:
        ordering = ("-created_at", "-pk")

    def __str__(self) -> str:
        return f"close {self.symbol}: {self.status}"
