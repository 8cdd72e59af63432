"""Reads of the signal scanner: a user's watchlists, scans and alerts (always the owner's own;
anything else is a 404), the filters of the alert list, and the latest completed scan."""

from __future__ import annotations

from datetime import datetime

from django.db.models import OuterRef, QuerySet, Subquery

from accounts.models import User
from backtester.models import Alert, ScanRun, Watchlist
from config.selectors import first_or_404


def watchlists_for(user: User) -> QuerySet[Watchlist]:
    """``user``'s watchlists by name."""
    return Watchlist.objects.filter(owner=user).order_by("name", "pk")


def watchlist_get(*, user: User, pk: int) -> Watchlist:
    """``user``'s watchlist ``pk``; Http404 for a missing one or someone else's."""
    return first_or_404(Watchlist.objects.filter(owner=user, pk=pk), "Watchlist not found.")


def scans_for(user: User, *, watchlist: Watchlist | None = None) -> QuerySet[ScanRun]:
    """``user``'s scans, newest first (of one watchlist when given)."""
    scans = ScanRun.objects.filter(owner=user)
    if watchlist is not None:
        scans = scans.filter(watchlist=watchlist)
    return scans.order_by("-created_at", "-pk")


def scan_get(*, user: User, pk: int) -> ScanRun:
    """``user``'s scan ``pk``; Http404 otherwise."""
    return first_or_404(
        ScanRun.objects.filter(owner=user, pk=pk).select_related("watchlist"), "Scan not found."
    )


def last_completed_scan(user: User, *, watchlist: Watchlist | None = None) -> ScanRun | None:
    """The newest completed scan of ``user`` (of one watchlist when given), or None."""
    return scans_for(user, watchlist=watchlist).filter(status=ScanRun.Status.COMPLETED).first()


def latest_scans(user: User, watchlists: list[Watchlist]) -> list[ScanRun]:
    """The newest scan of each of ``watchlists`` (those never scanned are absent), two queries
    whatever their number."""
    newest = ScanRun.objects.filter(watchlist=OuterRef("pk")).order_by("-created_at", "-pk")
    ids = (
        Watchlist.objects.filter(owner=user, pk__in=[w.pk for w in watchlists])
        .annotate(last_scan_id=Subquery(newest.values("pk")[:1]))
        .values_list("last_scan_id", flat=True)
    )
    return list(ScanRun.objects.filter(owner=user, pk__in=[pk for pk in ids if pk]))


def alerts_for(
    user: User,
    *,
    signals: list[str] | None = None,
    symbol: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    scan: ScanRun | None = None,
    watchlist: Watchlist | None = None,
) -> QuerySet[Alert]:
    """``user``'s symbol outcomes, newest first, filtered: ``signals`` (BUY/SELL/HOLD; None
    means all), ``symbol`` (exact, case-insensitive; "BTC" alone matches every BTC market),
    ``since <= created_at < until``, one scan or one watchlist's scans."""
    alerts = Alert.objects.filter(owner=user).select_related("scan")
    if signals:
        alerts = alerts.filter(signal__in=signals)
    text = symbol.strip().upper()
    if text:
        alerts = (
            alerts.filter(symbol__iexact=text)
            if "/" in text
            else alerts.filter(symbol__istartswith=text + "/")
        )
    if since is not None:
        alerts = alerts.filter(created_at__gte=since)
    if until is not None:
        alerts = alerts.filter(created_at__lt=until)
    if scan is not None:
        alerts = alerts.filter(scan=scan)
    if watchlist is not None:
        alerts = alerts.filter(scan__watchlist=watchlist)
    return alerts.order_by("-created_at", "-scan_id", "symbol", "pk")


def alert_get(*, user: User, pk: int) -> Alert:
    """``user``'s alert ``pk`` with its scan; Http404 otherwise."""
    return first_or_404(
        Alert.objects.filter(owner=user, pk=pk).select_related("scan", "series"), "Alert not found."
    )
