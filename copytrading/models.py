"""Leaders, subscriptions, the leader's fills, the copies sent for them, and the audit trail.

The copy path writes rows in this order, each committed before the next step: a
``LeaderFill`` (once per exchange fill id), a ``CopyOrder`` in ``planned`` state carrying its
client order id (or a ``CopyDecision`` saying why nothing is copied), and only then the request
to the follower's exchange. Every step leaves a timestamp, so latency is read off the rows.
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from django.db import models
from django.db.models import Q

from accounts.fields import owner_field
from config.fields import DecimalDigits
from config.modelfields import created_field, optional_time, updated_field
from exchanges.fields import account_field

MONEY: DecimalDigits = {"max_digits": 36, "decimal_places": 18}


class Leader(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        RETIRED = "retired", "Retired"

    owner = owner_field("copy_leaders")
    # Null once the account is deleted (the leader is retired first; its history stays).
    account = account_field("leaders", keep=True)
    name = models.CharField(max_length=80)
    description = models.TextField(blank=True, max_length=2000)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    hide_positions = models.BooleanField(default=False)
    published_at = models.DateTimeField()
    paused_at = optional_time()
    retired_at = optional_time()
    # The account's value in ``quote`` (proportional sizing divides by it), refreshed by the
    # poll task and at publication.
    quote = models.CharField(max_length=10, default="USDT")
    equity = models.DecimalField(**MONEY, default=Decimal(0))
    equity_at = optional_time()
    # Signed positions held when published {"BTC/USDT": "0.5"}: the base closes are measured
    # against until fills arrive.
    initial_positions = models.JSONField(default=dict, blank=True)
    # Epoch ms of the newest fill seen: the REST poll asks for fills since here, so a restart
    # resumes where it stopped.
    fill_cursor_ms = models.BigIntegerField(default=0)
    # The leader's declared stop per market {"BTC/USDT": "58500"} (web or API): stamped on
    # its opening fills, it is what fixed-risk followers size from and "copy the leader's
    # stop" closes at.
    stops = models.JSONField(default=dict, blank=True)
    polled_at = optional_time()
    poll_error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ("-published_at", "pk")
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(
                fields=["account"],
                condition=~Q(status="retired"),
                name="copy_one_live_leader_per_account",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def opens_copies(self) -> bool:
        return self.status == self.Status.ACTIVE


class Subscription(models.Model):
    class Sizing(models.TextChoices):
        PROPORTIONAL = "proportional", "Proportional to equity"
        FIXED_RATIO = "fixed_ratio", "Fixed ratio of the leader's quantity"
        FIXED_NOTIONAL = "fixed_notional", "Fixed amount per trade"
        FIXED_RISK = "fixed_risk", "Fixed risk per trade (from the leader's stop)"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused (closes still copied)"
        STOPPED = "stopped", "Stopped"

    class JoinPolicy(models.TextChoices):
        NEW_ONLY = "new_only", "Copy new trades only"
        OPEN_CURRENT = "open_current", "Also open the leader's current positions"

    class StopMode(models.TextChoices):
        NONE = "none", "No stop-loss / take-profit"
        COPY = "copy", "Copy the leader's"
        OWN = "own", "My own percentages"

    class DriftRepair(models.TextChoices):
        FLAG = "flag", "Flag it for me"
        REPAIR = "repair", "Repair with an order"

    class DriftStatus(models.TextChoices):
        UNCHECKED = "unchecked", "Not checked yet"
        OK = "ok", "In line with the copies"
        FLAGGED = "flagged", "Drift beyond the tolerance (flagged)"
        REPAIRING = "repairing", "Drift beyond the tolerance (repair order sent)"
        ERROR = "error", "Could not be checked"

    follower = owner_field("copy_subscriptions")
    leader = models.ForeignKey(Leader, on_delete=models.PROTECT, related_name="subscriptions")
    # Null once the account is deleted (the subscription is stopped first; its copies stay).
    account = account_field("copy_subscriptions", keep=True)
    sizing_mode = models.CharField(
        max_length=16, choices=Sizing.choices, default=Sizing.PROPORTIONAL
    )
    ratio = models.DecimalField(**MONEY, default=Decimal(1))
    notional = models.DecimalField(**MONEY, default=Decimal(0))
    risk_fraction = models.DecimalField(**MONEY, default=Decimal(0))  # 0.01 = 1 % of equity
    max_notional = models.DecimalField(**MONEY, null=True, blank=True)
    max_positions = models.PositiveIntegerField(null=True, blank=True)
    allowed_symbols = models.JSONField(default=list, blank=True)
    excluded_symbols = models.JSONField(default=list, blank=True)
    allowed_sides = models.JSONField(default=list, blank=True)  # empty: both
    symbol_map = models.JSONField(default=dict, blank=True)  # leader symbol → follower symbol
    slippage_guard = models.DecimalField(**MONEY, null=True, blank=True)  # fraction; None: default
    expiry_seconds = models.PositiveIntegerField(default=60)
    join_policy = models.CharField(
        max_length=16, choices=JoinPolicy.choices, default=JoinPolicy.NEW_ONLY
    )
    stop_mode = models.CharField(max_length=8, choices=StopMode.choices, default=StopMode.NONE)
    stop_loss_pct = models.DecimalField(**MONEY, null=True, blank=True)
    take_profit_pct = models.DecimalField(**MONEY, null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    status_message = models.CharField(max_length=300, blank=True)
    drift_tolerance = models.DecimalField(**MONEY, default=Decimal("0.02"))
    drift_repair = models.CharField(
        max_length=8, choices=DriftRepair.choices, default=DriftRepair.FLAG
    )
    # Reconciliation (``copytrading.services.reconcile``). ``baseline`` is what the account
    # held of a market's base asset just before the subscription's first copy in it
    # {"BTC/USDT": "0.1"}; the copies should account for everything above it.
    baseline = models.JSONField(default=dict, blank=True)
    drift_status = models.CharField(
        max_length=10, choices=DriftStatus.choices, default=DriftStatus.UNCHECKED
    )
    drift = models.JSONField(default=dict, blank=True)  # per market: expected/actual/drift/value
    drift_value = models.DecimalField(**MONEY, null=True, blank=True)  # sum of |drift| x price
    drift_message = models.CharField(max_length=500, blank=True)
    drift_checked_at = optional_time()
    # Orders and fills on the account the product did not send: left alone, listed here.
    foreign_activity = models.JSONField(default=list, blank=True)
    created_at = created_field()
    updated_at = updated_field()
    paused_at = optional_time()
    stopped_at = optional_time()

    class Meta:
        ordering = ("-created_at", "pk")
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(
                fields=["leader", "account"],
                condition=~Q(status="stopped"),
                name="copy_one_live_subscription_per_leader_account",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.follower_id} → {self.leader_id}"


class LeaderFill(models.Model):
    class Source(models.TextChoices):
        STREAM = "stream", "Stream"
        POLL = "poll", "REST poll"

    leader = models.ForeignKey(Leader, on_delete=models.CASCADE, related_name="fills")
    fill_id = models.CharField(max_length=100)  # the exchange's id, unique per account
    exchange_order_id = models.CharField(max_length=100, blank=True)
    symbol = models.CharField(max_length=40)
    side = models.CharField(max_length=4)
    amount = models.DecimalField(**MONEY)
    price = models.DecimalField(**MONEY)
    fee = models.DecimalField(**MONEY, default=Decimal(0))
    fee_currency = models.CharField(max_length=16, blank=True)
    timestamp_ms = models.BigIntegerField()  # exchange time
    exchange_time = models.DateTimeField()
    detected_at = models.DateTimeField()
    source = models.CharField(max_length=8, choices=Source.choices)
    # The leader's signed position in ``symbol`` around this fill (closes are fractions of it).
    position_before = models.DecimalField(**MONEY)
    position_after = models.DecimalField(**MONEY)
    stop_price = models.DecimalField(**MONEY, null=True, blank=True)
    order_amount = models.DecimalField(**MONEY, null=True, blank=True)
    fanned_out_at = optional_time()

    class Meta:
        ordering = ("timestamp_ms", "pk")
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["leader", "fill_id"], name="copy_leader_fill_once"),
        ]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["leader", "symbol", "timestamp_ms"], name="copy_fill_pos_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.side} {self.amount} {self.symbol} @ {self.price}"

    @property
    def closing(self) -> bool:
        pos = self.position_before
        return (pos > 0 and self.side == "sell") or (pos < 0 and self.side == "buy")


class CopyOrder(models.Model):
    class State(models.TextChoices):
        PLANNED = "planned", "Planned"
        SUBMITTED = "submitted", "Submitted"
        UNKNOWN = "unknown", "Unknown (timed out, being looked up)"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        PARTIALLY_FILLED = "partially_filled", "Partially filled"
        FILLED = "filled", "Filled"
        REJECTED = "rejected", "Rejected"
        CANCELLED = "cancelled", "Cancelled"

    IN_FLIGHT: ClassVar[frozenset[str]] = frozenset({"submitted", "unknown"})
    FINAL: ClassVar[frozenset[str]] = frozenset(
        {"filled", "partially_filled", "rejected", "cancelled"}
    )

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="copy_orders"
    )
    leader_fill = models.ForeignKey(
        LeaderFill, on_delete=models.CASCADE, related_name="copy_orders"
    )
    client_order_id = models.CharField(max_length=36, unique=True)
    symbol = models.CharField(max_length=40)
    side = models.CharField(max_length=4)
    order_type = models.CharField(max_length=8)
    time_in_force = models.CharField(max_length=4, default="IOC")
    closing = models.BooleanField(default=False)
    reduce_only = models.BooleanField(default=False)
    amount = models.DecimalField(**MONEY)
    limit_price = models.DecimalField(**MONEY, null=True, blank=True)
    reference_price = models.DecimalField(**MONEY)  # the leader's fill price
    state = models.CharField(max_length=18, choices=State.choices, default=State.PLANNED)
    exchange_order_id = models.CharField(max_length=100, blank=True)
    filled_amount = models.DecimalField(**MONEY, default=Decimal(0))
    average_price = models.DecimalField(**MONEY, null=True, blank=True)
    fee = models.DecimalField(**MONEY, default=Decimal(0))
    fee_currency = models.CharField(max_length=16, blank=True)
    slippage_bps = models.DecimalField(max_digits=20, decimal_places=4, null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)  # create_order calls made (0 or 1, or a
    # second one only after a lookup proved the first never reached the exchange)
    error_text = models.TextField(blank=True)
    note = models.CharField(max_length=300, blank=True)
    # Latency: leader fill on the exchange → seen → planned → sent → answered → filled.
    leader_filled_at = models.DateTimeField()
    detected_at = models.DateTimeField()
    planned_at = models.DateTimeField()
    submitted_at = optional_time()
    acknowledged_at = optional_time()
    filled_at = optional_time()
    updated_at = updated_field()

    class Meta:
        ordering = ("-planned_at", "pk")
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(
                fields=["subscription", "leader_fill"], name="copy_order_once_per_fill"
            ),
        ]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["state", "planned_at"], name="copy_order_state_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.client_order_id} {self.side} {self.amount} {self.symbol} ({self.state})"


class CopyDecision(models.Model):
    """The audit trail: one row per decision taken for a (subscription, leader fill)."""

    class Outcome(models.TextChoices):
        COPIED = "copied", "Copied"
        SKIPPED = "skipped", "Skipped"
        EXPIRED = "expired", "Expired"
        FAILED = "failed", "Failed"

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="decisions"
    )
    leader_fill = models.ForeignKey(LeaderFill, on_delete=models.CASCADE, related_name="decisions")
    copy_order = models.ForeignKey(
        CopyOrder, on_delete=models.SET_NULL, null=True, blank=True, related_name="decisions"
    )
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    reason = models.CharField(max_length=60, blank=True)  # skip reason or risk_denied:<code>
    detail = models.TextField(blank=True)
    figures = models.JSONField(default=dict, blank=True)
    created_at = created_field()

    class Meta:
        ordering = ("-created_at", "-pk")
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["subscription", "outcome", "reason"], name="copy_decision_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.outcome} {self.reason}".strip()


class CopyAdjustment(models.Model):
    """An order sent for a subscription that no single leader fill caused: opening the leader's
    current positions on joining, closing the copies when the subscription stops, a copy's own
    stop-loss or take-profit, or a drift repair. Like a ``CopyOrder`` it is stored with its
    deterministic client order id (from the subscription and ``key``) before anything is
    sent, passes the risk check, and an ambiguous answer is looked up, never resent."""

    class Kind(models.TextChoices):
        JOIN = "join", "Join: open the leader's current position"
        STOP_CLOSE = "stop_close", "Close on stop"
        STOP_LOSS = "stop_loss", "Stop-loss"
        TAKE_PROFIT = "take_profit", "Take-profit"
        REPAIR = "repair", "Drift repair"

    class State(models.TextChoices):
        PLANNED = "planned", "Planned"
        SUBMITTED = "submitted", "Submitted"
        UNKNOWN = "unknown", "Unknown (timed out, being looked up)"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        PARTIALLY_FILLED = "partially_filled", "Partially filled"
        FILLED = "filled", "Filled"
        REJECTED = "rejected", "Rejected"
        CANCELLED = "cancelled", "Cancelled (nothing matched)"
        DENIED = "denied", "Denied by the risk check"
        SKIPPED = "skipped", "Skipped"

    OPEN_STATES: ClassVar[tuple[str, ...]] = ("planned", "submitted", "unknown", "acknowledged")

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="adjustments"
    )
    kind = models.CharField(max_length=12, choices=Kind.choices)
    # Unique per subscription: one order per (kind, occasion), e.g. "stop_close:BTC/USDT",
    # "sl:BTC/USDT:3" (the third entry's stop), "repair:BTC/USDT:17" (the 17th check).
    key = models.CharField(max_length=80)
    client_order_id = models.CharField(max_length=36, unique=True)
    symbol = models.CharField(max_length=40)
    side = models.CharField(max_length=4)
    order_type = models.CharField(max_length=8)
    time_in_force = models.CharField(max_length=4, default="GTC")
    amount = models.DecimalField(**MONEY)
    limit_price = models.DecimalField(**MONEY, null=True, blank=True)
    reference_price = models.DecimalField(**MONEY)  # the price the decision was taken at
    state = models.CharField(max_length=18, choices=State.choices, default=State.PLANNED)
    exchange_order_id = models.CharField(max_length=100, blank=True)
    filled_amount = models.DecimalField(**MONEY, default=Decimal(0))
    average_price = models.DecimalField(**MONEY, null=True, blank=True)
    fee = models.DecimalField(**MONEY, default=Decimal(0))
    reason = models.CharField(max_length=300, blank=True)
    error_text = models.TextField(blank=True)
    created_at = created_field()
    submitted_at = optional_time()
    updated_at = updated_field()

    class Meta:
        ordering = ("-created_at", "-pk")
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["subscription", "key"], name="copy_adjustment_once"),
        ]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["state", "created_at"], name="copy_adjustment_state_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.side} {self.amount} {self.symbol} ({self.state})"
