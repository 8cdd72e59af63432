"""Users (email login), plans with their limits, and each user's subscription."""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.utils import timezone


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

    username = None  # type: ignore[assignment]
    email = models.EmailField("email address", unique=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    objects = UserManager()  # type: ignore[misc]

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


class Subscription(models.Model):
    """A user's subscription to a plan, mirrored from Stripe or granted by an operator."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        TRIALING = "trialing", "Trialing"
        PAST_DUE = "past_due", "Past due"
        CANCELED = "canceled", "Canceled"
        UNPAID = "unpaid", "Unpaid"
        INCOMPLETE = "incomplete", "Incomplete"

    class Source(models.TextChoices):
        STRIPE = "stripe", "Stripe"
        MANUAL = "manual", "Granted by an operator"

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="subscription")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.MANUAL)
    current_period_end = models.DateTimeField(null=True, blank=True)
    stripe_customer_id = models.CharField(max_length=100, blank=True)
    stripe_subscription_id = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes: ClassVar[list[models.Index]] = [models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"{self.user} · {self.plan} ({self.status})"

    def grants_access(self) -> bool:
        """Active and trialing subscriptions grant their plan, while the paid period lasts."""
        if self.status not in {self.Status.ACTIVE, self.Status.TRIALING}:
            return False
        return self.current_period_end is None or self.current_period_end > timezone.now()
