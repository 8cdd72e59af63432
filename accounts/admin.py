"""The operators' side of accounts: users with their plan and subscription state, hand grants
and revocations of Pro (through the services, each one audited), and read-only logs.

Nothing here shows a secret: API keys show their name and prefix only, two-factor
authenticators never show their data, password hashes stay masked by Django's widget.
Subscriptions are read-only: a plan changes through Stripe or through the audited actions.
"""

from __future__ import annotations

from typing import Any

from allauth.mfa.models import Authenticator
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.gating import AuthenticatedHttpRequest
from accounts.models import ApiKey, AuditLog, Plan, Subscription, User, WebhookEvent
from accounts.services import subscription_grant, subscription_revoke_manual
from config.admin_base import ReadOnlyAdminMixin
from config.exceptions import ApplicationError


class SubscriptionInline(ReadOnlyAdminMixin, admin.StackedInline):
    model = Subscription
    extra = 0
    can_delete = False
    fields = (
        "plan",
        "status",
        "source",
        "current_period_end",
        "stripe_customer_id",
        "stripe_subscription_id",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields


class ApiKeyInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ApiKey
    extra = 0
    can_delete = False
    fields = ("name", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields


class AccessFilter(admin.SimpleListFilter):
    """Who has Pro right now, by the one access rule (Subscription.grants_access)."""

    title = "access now"
    parameter_name = "access"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("pro", "Pro"), ("free", "Free")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> QuerySet[User] | None:
        if self.value() not in ("pro", "free"):
            return None
        paid = Subscription.objects.exclude(plan__code=Plan.FREE).select_related("plan")
        pro_ids = [s.user_id for s in paid.iterator() if s.grants_access()]
        if self.value() == "pro":
            return queryset.filter(pk__in=pro_ids)
        return queryset.exclude(pk__in=pro_ids)


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ("email",)
    list_display = (
        "email",
        "plan_name",
        "subscription_status",
        "subscription_source",
        "period_end",
        "is_active",
        "is_staff",
        "date_joined",
        "last_login",
    )
    list_select_related = ("subscription__plan",)
    list_filter = (
        AccessFilter,
        "subscription__plan",
        "subscription__status",
        "subscription__source",
        "is_active",
        "is_staff",
        "is_superuser",
    )
    search_fields = ("email", "first_name", "last_name", "subscription__stripe_customer_id")
    inlines = (SubscriptionInline, ApiKeyInline)
    actions = ("grant_pro", "revoke_pro")
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Personal info", {"fields": ("first_name", "last_name")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)

    @staticmethod
    def _sub(obj: User) -> Subscription | None:
        return getattr(obj, "subscription", None)

    @admin.display(description="Plan now")
    def plan_name(self, obj: User) -> str:
        sub = self._sub(obj)
        return sub.plan.name if sub is not None and sub.grants_access() else "Free"

    @admin.display(description="Subscription", ordering="subscription__status")
    def subscription_status(self, obj: User) -> str:
        sub = self._sub(obj)
        return f"{sub.plan.name}: {sub.get_status_display()}" if sub else "—"

    @admin.display(description="Source", ordering="subscription__source")
    def subscription_source(self, obj: User) -> str:
        sub = self._sub(obj)
        return sub.get_source_display() if sub else "—"

    @admin.display(description="Period ends", ordering="subscription__current_period_end")
    def period_end(self, obj: User) -> Any:
        sub = self._sub(obj)
        return sub.current_period_end if sub and sub.current_period_end else "—"

    def _each(self, request: HttpRequest, queryset: QuerySet[User], verb: str, fn: Any) -> None:
        done: list[str] = []
        for user in queryset:
            try:
                fn(user)
            except ApplicationError as exc:
                self.message_user(request, exc.message, level=messages.WARNING)
            else:
                done.append(user.email)
        if done:
            self.message_user(
                request, f"{verb}: {', '.join(done)} (recorded in the audit log).", messages.SUCCESS
            )

    @admin.action(description="Grant Pro (by hand, no end date)", permissions=("change",))
    def grant_pro(self, request: AuthenticatedHttpRequest, queryset: QuerySet[User]) -> None:
        self._each(
            request,
            queryset,
            "Pro granted",
            lambda user: subscription_grant(user=user, plan_code=Plan.PRO, actor=request.user),
        )

    @admin.action(description="Revoke Pro granted by hand", permissions=("change",))
    def revoke_pro(self, request: AuthenticatedHttpRequest, queryset: QuerySet[User]) -> None:
        self._each(
            request,
            queryset,
            "Pro revoked",
            lambda user: subscription_revoke_manual(user=user, actor=request.user),
        )


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "code",
        "price_cents",
        "max_concurrent_backtests",
        "max_candles_per_backtest",
        "max_optimization_combinations",
        "max_exchange_accounts",
        "max_followers",
    )
    search_fields = ("name", "code")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # subscriptions point at plans; limits are edited, plans never removed


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("user", "plan", "status", "source", "current_period_end", "updated_at")
    list_filter = ("status", "source", "plan")
    list_select_related = ("user", "plan")
    search_fields = ("user__email", "stripe_customer_id", "stripe_subscription_id")


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "actor_email", "action", "target_user")
    list_filter = ("action", "created_at")
    list_select_related = ("target_user",)
    search_fields = ("actor_email", "target_user__email")
    date_hierarchy = "created_at"
    fields = ("created_at", "actor", "actor_email", "action", "target_user", "detail")
    readonly_fields = fields


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Stripe's deliveries as stored, with their outcome: the place to look when a customer's
    plan does not match what Stripe says."""

    list_display = (
        "received_at",
        "type",
        "stripe_event_id",
        "object_id",
        "status",
        "attempts",
        "processed_at",
    )
    list_filter = ("status", "type", "livemode", "received_at")
    search_fields = ("=stripe_event_id", "=object_id", "type", "error")
    date_hierarchy = "received_at"
    fields = (
        "stripe_event_id",
        "type",
        "livemode",
        "object_id",
        "status",
        "error",
        "attempts",
        "stripe_created_at",
        "received_at",
        "processed_at",
        "payload",
    )
    readonly_fields = fields


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Names and prefixes only: the hashed secret is not a field here."""

    list_display = ("name", "prefix", "user", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    list_select_related = ("user",)
    search_fields = ("name", "prefix", "user__email")
    fields = ("name", "prefix", "user", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields


# allauth's own admin would show (and let one edit) an authenticator's data: TOTP seeds and
# recovery codes. Operators see that one exists, never its content.
if admin.site.is_registered(Authenticator):
    admin.site.unregister(Authenticator)


@admin.register(Authenticator)
class AuthenticatorAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("user", "type", "created_at", "last_used_at")
    list_filter = ("type",)
    list_select_related = ("user",)
    search_fields = ("user__email",)
    fields = ("user", "type", "created_at", "last_used_at")
    readonly_fields = fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Removing a lost authenticator is how support lets a locked-out user back in.
        return bool(request.user.is_superuser)
