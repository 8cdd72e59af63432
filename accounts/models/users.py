"""Users (email login), plans with their limits, and each user's subscription."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

from django.conf import settings
from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.utils import timezone

from config.modelfields import created_field, optional_time, updated_field


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create(self, email: str, password: str | None, **extra: Any) -> User:
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.update(is_staff=True, is_superuser=True)
        return self._create(email, password, **extra)


class User(AbstractUser):
    """A person who signs in with an email address; there is no username."""

    username = None  # type: ignore[assignment]  # AbstractUser declares a CharField; removed here
    email = models.EmailField("email address", unique=True)
    # When the account's one Pro trial ends (set when it starts; never cleared, so a trial is
    # given once). Null: no trial was ever given.
    pro_trial_ends_at = optional_time()

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    # Email as the username: our manager is a BaseUserManager, not the stubs' UserManager of
    # AbstractUser (whose create_user takes a username).
    objects: ClassVar[UserManager] = UserManager()  # type: ignore[assignment]

    class Meta:
        ordering = ("email",)

    def __str__(self) -> str:
        return self.email

    @property
    def plan(self) -> Plan:
        """The plan whose limits apply now: the subscription's while it grants access, else Free."""
        sub = getattr(self, "subscription", None)
        if sub is not None and sub.grants_access():
            return sub.plan
        return Plan.objects.get(code=Plan.FREE)

    @property
    def is_pro(self) -> bool:
        return self.plan.code == Plan.PRO


class Plan(models.Model):
    """A plan and its limits. Limits are data so operators can change them without a deploy."""

    FREE = "free"
    PRO = "pro"

    code = models.SlugField(unique=True)
    name = models.CharField(max_length=50)
    price_cents = models.PositiveIntegerField(default=0)
    currency = models.CharField(max_length=3, default="usd")
    interval = models.CharField(max_length=10, default="month")
    stripe_price_id = models.CharField(max_length=100, blank=True)
    max_concurrent_backtests = models.PositiveIntegerField(default=0)
    max_candles_per_backtest = models.PositiveIntegerField(default=0)
    max_optimization_combinations = models.PositiveIntegerField(default=0)
    max_exchange_accounts = models.PositiveIntegerField(default=0)
    max_followers = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ("price_cents",)

    def __str__(self) -> str:
        return self.name

    @property
    def price_display(self) -> str:
        return f"${self.price_cents / 100:,.2f}/{self.interval}"

    @property
    def checkout_price_id(self) -> str:
        """The Stripe price to sell this plan with: the row's own, else (Pro) STRIPE_PRICE_ID."""
        if self.stripe_price_id:
            return self.stripe_price_id
        return settings.STRIPE_PRICE_ID if self.code == self.PRO else ""


class Subscription(models.Model):
    """A user's subscription to a plan, mirrored from Stripe or granted by an operator."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        TRIALING = "trialing", "Trialing"
        PAST_DUE = "past_due", "Past due"
        CANCELED = "canceled", "Canceled"
        UNPAID = "unpaid", "Unpaid"
        INCOMPLETE = "incomplete", "Incomplete"
        INCOMPLETE_EXPIRED = "incomplete_expired", "Incomplete, expired"
        PAUSED = "paused", "Paused"

    class Source(models.TextChoices):
        STRIPE = "stripe", "Stripe"
        MANUAL = "manual", "Granted by an operator"
        TRIAL = "trial", "Free trial"

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="subscription")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.MANUAL)
    # For a Stripe subscription: the paid period as Stripe last reported it (re-read, never
    # taken from a webhook body) and whether it stops at the period's end.
    current_period_start = optional_time()
    current_period_end = optional_time()
    cancel_at_period_end = models.BooleanField(default=False)
    stripe_synced_at = optional_time()
    stripe_customer_id = models.CharField(max_length=100, blank=True, db_index=True)
    stripe_subscription_id = models.CharField(max_length=100, blank=True, db_index=True)
    created_at = created_field()
    updated_at = updated_field()

    class Meta:
        indexes: ClassVar[list[models.Index]] = [models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"{self.user} · {self.plan} ({self.status})"

    def grants_access(self, *, now: datetime | None = None) -> bool:
        """The one access rule: does this subscription give its plan right now?

        active / trialing: yes, until current_period_end when it is set (exactly then if it is
        cancelled at the period's end; a renewing Stripe subscription gets RENEWAL_LEEWAY on top,
        while the webhook or the re-sync task confirms the renewal). past_due: yes for
        BILLING_GRACE_DAYS after the period whose payment failed ended; Stripe moves the period
        on when it tries to renew, so that moment is current_period_start. Anything else
        (canceled, unpaid, incomplete, incomplete_expired, paused): no.
        """
        now = now or timezone.now()
        if self.status in {self.Status.ACTIVE, self.Status.TRIALING}:
            if self.current_period_end is None:
                return True
            end = self.current_period_end
            if self.source == self.Source.STRIPE and not self.cancel_at_period_end:
                end += RENEWAL_LEEWAY
            return now < end
        if self.status == self.Status.PAST_DUE:
            failed_at = self.current_period_start or self.current_period_end
            if failed_at is None:
                return False
            return now < failed_at + timedelta(days=settings.BILLING_GRACE_DAYS)
        return False

    @property
    def access_ends_at(self) -> datetime | None:
        """When access stops if nothing changes (None: open-ended, or no access now)."""
        if not self.grants_access():
            return None
        if self.status == self.Status.PAST_DUE:
            failed_at = self.current_period_start or self.current_period_end
            return failed_at + timedelta(days=settings.BILLING_GRACE_DAYS) if failed_at else None
        if self.cancel_at_period_end or self.source in (self.Source.MANUAL, self.Source.TRIAL):
            return self.current_period_end
        return None


# Stripe renews at the period's end and says so by webhook (the re-sync task catches a lost
# one); a paying user should not drop to Free in the minutes in between.
RENEWAL_LEEWAY = timedelta(hours=1)
