"""Copy-trading pages: the leaders directory, a leader's profile, publishing a leader, the
subscribe form, the follower's dashboard, one subscription with its copies and audit trail.

Views parse forms and call ``copytrading.services``; an ApplicationError becomes a form error
on its field or a message. Every page is ``pro_required``. Leaders are public to Pro users
(that is what publishing means) unless retired; subscriptions, copies and decisions are their
follower's alone: another user's id is a 404.
"""

from __future__ import annotations

import csv
from collections import Counter
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import messages
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.gating import pro_required
from config.exceptions import ApplicationError
from copytrading import selectors, services
from copytrading.models import CopyDecision, CopyOrder, Leader, LeaderFill, Subscription
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
def leader_list(request: HttpRequest) -> HttpResponse:
    leaders = selectors.leaders_directory()
    mine = Leader.objects.filter(owner=request.user).order_by("-published_at")
    return render(
        request,
        "copytrading/leader_list.html",
        {"leaders": leaders, "mine": mine, "spot_note": SPOT_NOTE},
    )


def _open_positions(leader: Leader) -> dict[str, Decimal]:
    positions = {s: Decimal(str(q)) for s, q in (leader.initial_positions or {}).items()}
    for symbol, after in (
        LeaderFill.objects.filter(leader=leader)
        .order_by("pk")
        .values_list("symbol", "position_after")
    ):
        positions[symbol] = after
    return {s: q for s, q in positions.items() if q != 0}


@pro_required
def leader_detail(request: HttpRequest, pk: int) -> HttpResponse:
    leader = _leader_visible(request, pk)
    is_owner = leader.owner_id == request.user.pk
    followers = selectors.subscriptions_to_copy(leader).count()
    fills = LeaderFill.objects.filter(leader=leader).order_by("-timestamp_ms", "-pk")[:RECENT]
    show_positions = is_owner or not leader.hide_positions
    return render(
        request,
        "copytrading/leader_detail.html",
        {
            "leader": leader,
            "is_owner": is_owner,
            "followers": followers,
            "fills": fills,
            "positions": _open_positions(leader) if show_positions else None,
            "my_subscriptions": selectors.subscriptions_for_user(request.user).filter(
                leader=leader
            ),
            "spot_note": SPOT_NOTE,
        },
    )


class PublishForm(forms.Form):
    account = forms.ModelChoiceField(queryset=ExchangeAccount.objects.none())
    name = forms.CharField(max_length=80)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4}))
    hide_positions = forms.BooleanField(required=False, label="Hide my open positions")

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["account"].queryset = ExchangeAccount.objects.filter(owner=user)
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
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "copytrading/leader_publish.html",
        {"form": form, "spot_note": SPOT_NOTE},
        status=status,
    )


LEADER_ACTIONS = {
    "pause": services.leader_pause,
    "resume": services.leader_resume,
    "retire": services.leader_retire,
}


@pro_required
@require_POST
def leader_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    act = LEADER_ACTIONS.get(action)
    leader = Leader.objects.filter(pk=pk, owner=request.user).first()
    if act is None or leader is None:
        raise Http404("Leader not found.")
    try:
        act(user=request.user, leader_id=pk)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{leader.name}: {action} done.")
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
        self.fields["account"].queryset = ExchangeAccount.objects.filter(owner=user, can_trade=True)

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
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "copytrading/subscribe.html",
        {"leader": leader, "form": form, "spot_note": SPOT_NOTE},
        status=status,
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
        o.latency_ms = _latency_ms(o)
    reasons = Counter(
        sub.decisions.exclude(outcome="copied").values_list("reason", flat=True)
    ).most_common()
    decisions = sub.decisions.select_related("leader_fill").order_by("-created_at", "-pk")
    outcome = request.GET.get("outcome", "")
    if outcome in CopyDecision.Outcome.values:
        decisions = decisions.filter(outcome=outcome)
    return render(
        request,
        "copytrading/subscription_detail.html",
        {
            "sub": sub,
            "form": form,
            "orders": orders,
            "reasons": reasons,
            "decisions": decisions[:RECENT],
            "outcome": outcome,
            "outcomes": CopyDecision.Outcome.choices,
        },
        status=400 if request.method == "POST" else 200,
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
    try:
        act(user=request.user, subscription_id=sub.pk)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Subscription to {sub.leader.name}: {action} done.")
    return redirect("copytrading:subscription_detail", pk=sub.pk)


@pro_required
def decisions_export(request: HttpRequest, pk: int) -> HttpResponse:
    """The subscription's audit trail as CSV (every decision, newest first)."""
    sub = _own_subscription(request, pk)
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="copy-decisions-{sub.pk}.csv"'
    writer = csv.writer(response)
    writer.writerow(
        ["time", "leader_fill", "symbol", "side", "amount", "price", "outcome", "reason", "detail"]
    )
    for d in sub.decisions.select_related("leader_fill").order_by("-created_at", "-pk"):
        f = d.leader_fill
        row = [d.created_at.isoformat(), f.fill_id, f.symbol, f.side, f.amount, f.price]
        writer.writerow([_cell(v) for v in [*row, d.outcome, d.reason, d.detail]])
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
