"""Reads of live bots: the owner's bots, one bot (404 for anyone else), its orders."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from backtester.models import BotOrder, LiveBot
from config.selectors import first_or_404


def bots_for(*, user: Any) -> QuerySet[LiveBot]:
    return LiveBot.objects.filter(owner=user).select_related("account").order_by("-created_at")


def bot_get(*, user: Any, pk: int) -> LiveBot:
    """``user``'s bot ``pk``; Http404 for a missing one or someone else's."""
    return first_or_404(
        LiveBot.objects.filter(owner=user, pk=pk).select_related("account", "series"),
        "Bot not found.",
    )


def bot_orders(*, bot: LiveBot, limit: int = 200) -> list[BotOrder]:
    return list(bot.orders.order_by("-bar_ts", "-pk")[:limit])
