"""Copy-trading pages: the leaders directory, a leader's profile, publishing a leader, the
subscribe form, the follower's dashboard, one subscription with its copies and audit trail.

Views parse forms and call ``copytrading.services``; an ApplicationError becomes a form error
on its field or a message. Every page is ``pro_required``. Leaders are public to Pro users
(that is what publishing means) unless retired; subscriptions, copies and decisions are their
follower's alone: another user's id is a 404.
"""

from __future__ import annotations

import csv
from decimal import Decimal
from typing import Any, cast

from django import forms
from django.contrib import messages
from django.db.models import Count, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.gating import AuthenticatedHttpRequest, pro_required
from config.exceptions import ApplicationError
from config.pages import render_form
from copytrading import selectors, services
from copytrading.models import CopyDecision, CopyOrder, Leader, Subscription
from exchanges.models import ExchangeAccount

RECENT = 50
SPOT_NOTE = (
    "Spot markets only for now: leaders on perpetual-futures (derivatives) accounts cannot be "
    "copied yet."
)


def _leader_visible(request: HttpRequest, pk: int) -> Leader:
    return selectors.leader_get_visible(user=request.user, pk=pk)


def _own_subscription(request: HttpRequest, pk: int) -> Subscription:
    return selectors.subscription_get(user=request.user, pk=pk)


def _form_error(form: forms.Form, exc: ApplicationError) -> None:
    form.add_error(exc.field if exc.field in form.fields else None, exc.message)


# --- directory and profile -------------------------------------------------------------------


@pro_required
def leader_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    leaders = selectors.leaders_directory()
    mine = Leader.objects.filter(owner=request.user).order_by("-published_at")
    return render(
        request,
        "copytrading/leader_list.html",
        {"leaders": leaders, "mine": mine, "spot_note": SPOT_NOTE},
    )


def _line_figure(xs: list[Any], series: dict[str, list[float]], *, y_title: str) -> dict[str, Any]:
    return {
        "data": [
            {"type": "scatter", "mode": "lines+markers", "name": name, "x": xs, "y": ys}
            for name, ys in series.items()
        ],
        "layout": {"yaxis": {"title": {"text": y_title}}, "xaxis": {"type": "date"}},
    }


def _bar_figure(
    labels: list[str], series: dict[str, list[int]], *, x_title: str, y_title: str = "copies"
) -> dict[str, Any]:
    return {
        "data": [
            {"type": "bar", "name": name, "x": labels, "y": counts}
            for name, counts in series.items()
        ],
        "layout": {
            "barmode": "group",
            "xaxis": {"title": {"text": x_title}, "type": "category"},
            "yaxis": {"title": {"text": y_title}},
        },
    }


@pro_required
def leader_detail(request: HttpRequest, pk: int) -> HttpResponse:
    leader = _leader_visible(request, pk)
    is_owner = leader.owner_id == request.user.pk
    data = selectors.leader_profile(leader, viewer_is_owner=is_owner, recent=RECENT)
    curve = data["curve"]
    context: dict[str, Any] = {
        **data,
        "leader": leader,
        "is_owner": is_owner,
        "equity_figure": (
            _line_figure(
                [at.isoformat() for at, _v in curve],
                {"Equity": [float(v) for _at, v in curve]},
                y_title=leader.quote,
            )
            if curve
            else None
        ),
        "my_subscriptions": selectors.subscriptions_for_user(request.user).filter(leader=leader),
        "spot_note": SPOT_NOTE,
    }
    for key, name in (("total_return", "return_pct"), ("max_drawdown", "drawdown_pct")):
        value = data["stats"][key]
        context[name] = value * 100 if value is not None else None
    if is_owner:
        # The leader's own dashboard: who follows, and what each of its fills produced.
        context["follower_rows"] = selectors.leader_followers(leader)
        context["fill_rows"] = selectors.leader_fills_with_copies(leader, limit=RECENT)
        context["ws_path"] = f"/ws/copy/leaders/{leader.pk}/"
    return render(request, "copytrading/leader_detail.html", context)


class PublishForm(forms.Form):
    account = forms.ModelChoiceField(queryset=ExchangeAccount.objects.none())
    name = forms.CharField(max_length=80)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4}))
    hide_positions = forms.BooleanField(required=False, label="Hide my open positions")

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        account = cast(forms.ModelChoiceField, self.fields["account"])
        account.queryset = ExchangeAccount.objects.filter(owner=user)
        self.fields["account"].help_text = "A read-only key is enough to lead."


@pro_required
@require_http_methods(["GET", "POST"])
def leader_publish(request: HttpRequest) -> HttpResponse:
    form = PublishForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            leader = services.leader_publish(
                user=request.user,
                account_id=data["account"].pk,
                name=data["name"],
                description=data["description"],
                hide_positions=data["hide_positions"],
            )
        except ApplicationError as exc:
            _form_error(form, exc)
        else:
            messages.success(request, f"{leader.name} is published.")
            return redirect("copytrading:leader_detail", pk=leader.pk)
    return render_form(
        request, "copytrading/leader_publish.html", {"form": form, "spot_note": SPOT_NOTE}
    )


LEADER_ACTIONS = {
    "pause": services.leader_pause,
    "resume": services.leader_resume,
    "retire": services.leader_retire,
}


@pro_required
@require_POST
def leader_action(request: AuthenticatedHttpRequest, pk: int, action: str) -> HttpResponse:
    act = LEADER_ACTIONS.get(action)
    leader = Leader.objects.filter(pk=pk, owner=request.user).first()
    if (act is None and action != "stop") or leader is None:
        raise Http404("Leader not found.")
    try:
        if action == "stop":  # the dashboard's stop form: declare or clear one market's stop
            symbol = request.POST.get("symbol", "")
            price = request.POST.get("stop_price", "").strip()
            services.leader_stop_set(
                user=request.user, leader_id=pk, symbol=symbol, stop_price=price
            )
            outcome = f"set at {price}" if price else "cleared"
            done = f"stop in {symbol.strip().upper()} {outcome}"
        else:
            act(user=request.user, leader_id=pk)  # type: ignore[misc]
            done = f"{action} done"
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{leader.name}: {done}.")
    return redirect("copytrading:leader_detail", pk=pk)


# --- subscribing -----------------------------------------------------------------------------

SIDE_CHOICES = (("both", "Buys and sells"), ("buy", "Buys only"), ("sell", "Sells only"))


class SubscriptionForm(forms.Form):
    """Input shape of a subscription; ``services.subscriptions.clean_settings`` decides what is
    valid (percentages here become fractions there)."""

    account = forms.ModelChoiceField(
        queryset=ExchangeAccount.objects.none(), label="Copy into account"
    )
    sizing_mode = forms.ChoiceField(choices=Subscription.Sizing.choices, label="Sizing")
    ratio = forms.CharField(
        required=False, initial="1", help_text="Fixed ratio: x the leader's quantity."
    )
    notional = forms.CharField(
        required=False, label="Amount per trade", help_text="Fixed amount: in the quote currency."
    )
    risk_pct = forms.CharField(
        required=False,
        label="Risk per trade (%)",
        help_text="Fixed risk: share of equity lost if the leader's stop is hit (at most 10).",
    )
    max_notional = forms.CharField(required=False, label="Max amount per trade")
    max_positions = forms.CharField(required=False, label="Max open positions")
    allowed_symbols = forms.CharField(required=False, help_text="Empty: every market.")
    excluded_symbols = forms.CharField(required=False)
    sides = forms.ChoiceField(choices=SIDE_CHOICES, initial="both", label="Copy entries on")
    symbol_map = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "BTC/USDT=BTC/USD"}),
        help_text="One per line, leader's market = yours, when your exchange names it differently.",
    )
    slippage_pct = forms.CharField(
        required=False,
        label="Slippage guard (%)",
        help_text="Empty: 0.5 for BTC and ETH, 1.5 for others. Closes are never blocked.",
    )
    expiry_seconds = forms.CharField(
        initial="60", label="Signal expiry (s)", help_text="Entries older than this are not copied."
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        account = cast(forms.ModelChoiceField, self.fields["account"])
        account.queryset = ExchangeAccount.objects.filter(owner=user, can_trade=True)

    def add_error(self, field: str | None, error: Any) -> None:
        # Service field names → the form's (percent fields are fractions in the service).
        alias = {
            "risk_fraction": "risk_pct",
            "slippage_guard": "slippage_pct",
            "allowed_sides": "sides",
        }
        super().add_error(alias.get(field or "", field), error)

    def settings(self) -> dict[str, Any]:
        d = self.cleaned_data

        def pct(value: str) -> str | None:
            value = (value or "").strip()
            if not value:
                return None
            try:
                return str(Decimal(value) / 100)
            except ArithmeticError:
                return value  # the service names it as not a number

        out: dict[str, Any] = {
            "sizing_mode": d["sizing_mode"],
            "ratio": d["ratio"] or "1",
            "notional": d["notional"] or "0",
            "risk_fraction": pct(d["risk_pct"]) or "0",
            "max_notional": d["max_notional"] or None,
            "max_positions": d["max_positions"] or None,
            "allowed_symbols": d["allowed_symbols"],
            "excluded_symbols": d["excluded_symbols"],
            "allowed_sides": ["buy", "sell"] if d["sides"] == "both" else [d["sides"]],
            "slippage_guard": pct(d["slippage_pct"]),
            "expiry_seconds": d["expiry_seconds"],
        }
        mapping: dict[str, str] = {}
        for line in (d["symbol_map"] or "").splitlines():
            if line.strip():
                src, _, dst = line.partition("=")
                mapping[src.strip()] = dst.strip()
        out["symbol_map"] = mapping
        return out


def _initial(sub: Subscription) -> dict[str, Any]:
    sides = sub.allowed_sides or ["buy", "sell"]
    return {
        "account": sub.account_id,
        "sizing_mode": sub.sizing_mode,
        "ratio": sub.ratio.normalize(),
        "notional": sub.notional.normalize(),
        "risk_pct": (sub.risk_fraction * 100).normalize(),
        "max_notional": sub.max_notional.normalize() if sub.max_notional else "",
        "max_positions": sub.max_positions or "",
        "allowed_symbols": ", ".join(sub.allowed_symbols),
        "excluded_symbols": ", ".join(sub.excluded_symbols),
        "sides": "both" if len(sides) == 2 else sides[0],
        "symbol_map": "\n".join(f"{k}={v}" for k, v in sub.symbol_map.items()),
        "slippage_pct": (sub.slippage_guard * 100).normalize() if sub.slippage_guard else "",
        "expiry_seconds": sub.expiry_seconds,
    }


@pro_required
@require_http_methods(["GET", "POST"])
def subscribe(request: HttpRequest, pk: int) -> HttpResponse:
    leader = _leader_visible(request, pk)
    if leader.status == Leader.Status.RETIRED:
        raise Http404("Leader not found.")
    form = SubscriptionForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            sub = services.subscription_create(
                user=request.user,
                leader_id=leader.pk,
                account_id=form.cleaned_data["account"].pk,
                settings=form.settings(),
            )
        except ApplicationError as exc:
            _form_error(form, exc)
        else:
            messages.success(request, f"You now follow {leader.name}.")
            return redirect("copytrading:subscription_detail", pk=sub.pk)
    return render_form(
        request,
        "copytrading/subscribe.html",
        {"leader": leader, "form": form, "spot_note": SPOT_NOTE},
    )


# --- the follower's side ---------------------------------------------------------------------


@pro_required
def following(request: HttpRequest) -> HttpResponse:
    subs = selectors.subscriptions_for_user(request.user).annotate(
        copies=Count("copy_orders", distinct=True),
        skipped=Count(
            "decisions",
            filter=Q(decisions__outcome__in=["skipped", "expired"]),
            distinct=True,
        ),
    )
    recent = selectors.copy_orders_for_user(request.user).order_by("-planned_at")[:RECENT]
    return render(request, "copytrading/following.html", {"subs": subs, "recent": recent})


def _latency_ms(order: CopyOrder) -> int | None:
    end = order.acknowledged_at
    return int((end - order.leader_filled_at).total_seconds() * 1000) if end else None


class AuditFilter(forms.Form):
    """Filters of the audit trail (the page and the CSV export): outcome, reason, date span
    (UTC days, inclusive)."""

    outcome = forms.ChoiceField(
        required=False, choices=[("", "every outcome"), *CopyDecision.Outcome.choices]
    )
    reason = forms.CharField(required=False, max_length=60)
    since = forms.DateField(required=False, label="From")
    until = forms.DateField(required=False, label="To")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            self.add_error("until", "The end date is before the start date.")
        return data

    def apply(self, decisions: QuerySet[CopyDecision]) -> QuerySet[CopyDecision]:
        d = self.cleaned_data
        if d.get("outcome"):
            decisions = decisions.filter(outcome=d["outcome"])
        if d.get("reason"):
            decisions = decisions.filter(reason=d["reason"].strip())
        if d.get("since"):
            decisions = decisions.filter(created_at__date__gte=d["since"])
        if d.get("until"):
            decisions = decisions.filter(created_at__date__lte=d["until"])
        return decisions


def _audit_rows(sub: Subscription) -> QuerySet[CopyDecision]:
    return sub.decisions.select_related("leader_fill", "copy_order").order_by("-created_at", "-pk")


def subscription_figures(sub: Subscription) -> dict[str, Any]:
    """The follower dashboard's charts (Plotly figures) and the numbers behind them."""
    orders = list(sub.copy_orders.all())
    stages = selectors.latency_stages(orders)
    slippage = selectors.slippage_distribution(orders)
    counts = selectors.decision_counts(sub)
    pnl = selectors.pnl_comparison(sub)
    latency_labels = selectors.bucket_labels(selectors.LATENCY_EDGES_MS, "ms")
    slippage_labels = selectors.bucket_labels(selectors.SLIPPAGE_EDGES_BPS, "bps")
    reason_labels = ["copied"] + [
        f"{r['outcome']}: {r['reason'] or '-'}" for r in counts["by_reason"]
    ]
    return {
        "stages": stages,
        "slippage": slippage,
        "counts": counts,
        "pnl": pnl,
        "latency_figure": (
            _bar_figure(
                latency_labels,
                {st["stage"]: st["counts"] for st in stages},
                x_title="time taken by the stage",
            )
            if orders
            else None
        ),
        "slippage_figure": (
            _bar_figure(
                slippage_labels,
                {"Slippage": slippage["counts"]},
                x_title="fill price against the leader's (positive: worse)",
            )
            if slippage["values_bps"]
            else None
        ),
        "decisions_figure": (
            _bar_figure(
                reason_labels,
                {"Decisions": [counts["copied"]] + [r["n"] for r in counts["by_reason"]]},
                x_title="outcome and reason",
                y_title="leader trades",
            )
            if counts["copied"] or counts["by_reason"]
            else None
        ),
        "pnl_figure": (
            _line_figure(
                pnl["times"],
                {"You (copies)": pnl["follower"], "Leader": pnl["leader"]},
                y_title="P&L (quote)",
            )
            if pnl["times"]
            else None
        ),
    }


@pro_required
@require_http_methods(["GET", "POST"])
def subscription_detail(request: HttpRequest, pk: int) -> HttpResponse:
    sub = _own_subscription(request, pk)
    form = SubscriptionForm(request.POST or None, user=request.user, initial=_initial(sub))
    form.fields["account"].disabled = True
    form.fields["account"].required = False
    if request.method == "POST" and form.is_valid():
        try:
            services.subscription_update(
                user=request.user, subscription_id=sub.pk, settings=form.settings()
            )
        except ApplicationError as exc:
            _form_error(form, exc)
        else:
            messages.success(request, "Settings saved: they apply from the leader's next trade.")
            return redirect("copytrading:subscription_detail", pk=sub.pk)
    orders = list(sub.copy_orders.select_related("leader_fill").order_by("-planned_at")[:RECENT])
    for o in orders:
        o.latency_ms = _latency_ms(o)  # type: ignore[attr-defined]  # for the template only
    audit = AuditFilter(request.GET or None)
    decisions = _audit_rows(sub)
    bad_filter = audit.is_bound and not audit.is_valid()
    if audit.is_bound and not bad_filter:
        decisions = audit.apply(decisions)
    reasons = sorted(
        set(sub.decisions.exclude(reason="").values_list("reason", flat=True).distinct())
    )
    export_query = request.GET.urlencode() if audit.is_bound and not bad_filter else ""
    return render(
        request,
        "copytrading/subscription_detail.html",
        {
            "sub": sub,
            "form": form,
            "orders": orders,
            "audit": audit,
            "reasons": reasons,
            "decisions": decisions[:RECENT],
            "export_query": export_query,
            "ws_path": f"/ws/copy/subscriptions/{sub.pk}/",
            "adjustments": list(sub.adjustments.all()[:RECENT]),
            "drift_rows": sorted((sub.drift or {}).items()),
            **subscription_figures(sub),
        },
        status=400 if request.method == "POST" or bad_filter else 200,
    )


SUBSCRIPTION_ACTIONS = {
    "pause": services.subscription_pause,
    "resume": services.subscription_resume,
    "stop": services.subscription_stop,
}


@pro_required
@require_POST
def subscription_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    sub = _own_subscription(request, pk)
    act = SUBSCRIPTION_ACTIONS.get(action)
    if act is None:
        raise Http404("No such action.")
    kwargs: dict[str, Any] = {}
    if action == "stop" and request.POST.get("close_positions"):
        kwargs["close_positions"] = True
    try:
        act(user=request.user, subscription_id=sub.pk, **kwargs)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        done = f"Subscription to {sub.leader.name}: {action} done."
        if kwargs:
            done += " The copied positions are being sold at market."
        messages.success(request, done)
    return redirect("copytrading:subscription_detail", pk=sub.pk)


EXPORT_COLUMNS = (
    "time",
    "outcome",
    "reason",
    "detail",
    "leader_fill",
    "leader_symbol",
    "leader_side",
    "leader_amount",
    "leader_price",
    "leader_filled_at",
    "client_order_id",
    "exchange_order_id",
    "order_state",
    "order_symbol",
    "order_side",
    "order_amount",
    "limit_price",
    "filled_amount",
    "average_price",
    "fee",
    "fee_currency",
    "slippage_bps",
    "detected_at",
    "planned_at",
    "submitted_at",
    "acknowledged_at",
    "filled_at",
)


def _iso(value: Any) -> str:
    return value.isoformat() if value is not None else ""


@pro_required
def decisions_export(request: HttpRequest, pk: int) -> HttpResponse:
    """The subscription's audit trail as CSV, newest first, with the same filters as the page
    (?outcome= &reason= &since= &until=): each decision with its leader trade and, when one
    was placed, the copy order (ids, state, sizes, prices, fee, slippage, timestamps).
    Nothing secret is in these rows: no keys, no account credentials."""
    sub = _own_subscription(request, pk)
    audit = AuditFilter(request.GET)
    if not audit.is_valid():
        problems = "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in audit.errors.items())
        return HttpResponse(f"Bad filter: {problems}", status=400, content_type="text/plain")
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="copy-decisions-{sub.pk}.csv"'
    writer = csv.writer(response)
    writer.writerow(EXPORT_COLUMNS)
    for d in audit.apply(_audit_rows(sub)).iterator(chunk_size=500):
        f = d.leader_fill
        o = d.copy_order
        row: list[Any] = [
            d.created_at.isoformat(), d.outcome, d.reason, d.detail,
            f.fill_id, f.symbol, f.side, f.amount, f.price, f.exchange_time.isoformat(),
        ]  # fmt: skip
        if o is None:
            row += [""] * (len(EXPORT_COLUMNS) - len(row))
        else:
            row += [
                o.client_order_id, o.exchange_order_id, o.state, o.symbol, o.side, o.amount,
                o.limit_price if o.limit_price is not None else "", o.filled_amount,
                o.average_price if o.average_price is not None else "", o.fee, o.fee_currency,
                o.slippage_bps if o.slippage_bps is not None else "",
                _iso(o.detected_at), _iso(o.planned_at), _iso(o.submitted_at),
                _iso(o.acknowledged_at), _iso(o.filled_at),
            ]  # fmt: skip
        writer.writerow([_cell(v) for v in row])
    return response


def _cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not run as a formula (ids come from the exchange)."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return True
