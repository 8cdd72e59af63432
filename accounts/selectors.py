"""Reads about users' plans and subscriptions (writes live in accounts/services/)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from django.utils import timezone

from accounts.models import Subscription, User


def trial_days_left(*, user: User, now: datetime | None = None) -> int:
    """Whole days (rounded up) left of ``user``'s running Pro trial; 0 when none is running.
    A Checkout started during the trial carries this many trial days, so buying Pro never
    costs the free days left: the first charge comes when the trial would have ended."""
    sub = Subscription.objects.filter(user=user, source=Subscription.Source.TRIAL).first()
    now = now or timezone.now()
    if sub is None or not sub.grants_access(now=now) or sub.current_period_end is None:
        return 0
    return max(1, math.ceil((sub.current_period_end - now) / timedelta(days=1)))
