from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from accounts.models import Plan, Subscription, User


class SubscriptionInline(admin.StackedInline):
    model = Subscription
    extra = 0
    readonly_fields = ("stripe_customer_id", "stripe_subscription_id", "created_at", "updated_at")


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ("email",)
    list_display = ("email", "plan_name", "is_active", "is_staff", "date_joined", "last_login")
    list_filter = ("is_active", "is_staff", "is_superuser", "subscription__plan")
    search_fields = ("email", "first_name", "last_name")
    inlines = (SubscriptionInline,)
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Personal info", {"fields": ("first_name", "last_name")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)

    @admin.display(description="Plan")
    def plan_name(self, obj: User) -> str:
        return obj.plan.name


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "code",
        "price_cents",
        "max_concurrent_backtests",
        "max_candles_per_backtest",
        "max_exchange_accounts",
    )
    search_fields = ("name", "code")


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ("user", "plan", "status", "source", "current_period_end", "updated_at")
    list_filter = ("status", "source", "plan")
    search_fields = ("user__email", "stripe_customer_id", "stripe_subscription_id")
    raw_id_fields = ("user",)
