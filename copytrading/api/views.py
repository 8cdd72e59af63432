"""/api/v1/copy/: leaders, subscriptions, copies and the audit trail.

    GET    copy/leaders/                            published leaders, newest first
    POST   copy/leaders/                            publish one of my accounts -> 201
    GET    copy/leaders/<id>/                       one leader's profile (open to Pro users):
                                                    equity curve, return, drawdown, followers,
                                                    open positions (unless hidden), recent trades
    GET    copy/leaders/<id>/fills/                 the owner's dashboard: each fill's copies
    GET    copy/leaders/<id>/stops/                 the owner's declared stops {"BTC/USDT": "58500"}
    POST   copy/leaders/<id>/stops/                 declare one: {"symbol", "stop_price"} (an
                                                    empty or null stop_price clears it)
    POST   copy/leaders/<id>/<pause|resume|retire>/ the owner changes the leader's status
    GET    copy/subscriptions/                      what I follow
    POST   copy/subscriptions/                      follow a leader -> 201
    GET    copy/subscriptions/<id>/                 one subscription
    PATCH  copy/subscriptions/<id>/                 change settings
    POST   copy/subscriptions/<id>/<pause|resume|stop>/   (stop: {"close_positions": true}
                                                    where the service offers it)
    GET    copy/subscriptions/<id>/copies/          its copy orders (?state= ?since= ?until=)
    GET    copy/subscriptions/<id>/decisions/       its audit trail (?outcome= ?reason= ?since=
                                                    ?until=; dates are UTC days, inclusive)

Publishing reads the account through its exchange (equity and positions). Authentication and
Pro come from the API defaults; another user's subscription, or a leader's owner-only parts,
are a 404; errors use the project's format.
"""

from __future__ import annotations

from typing import Any

from django.urls import path
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.gating import AuthenticatedRequest
from backtester.api.parsing import validated, validated_query
from config.exceptions import NotFound
from copytrading import selectors, services
from copytrading.models import CopyDecision, CopyOrder, Leader, LeaderFill, Subscription
from copytrading.services.subscriptions import SETTING_FIELDS

TAG = ["copy trading"]


class LeaderSerializer(serializers.ModelSerializer):
    followers = serializers.IntegerField(read_only=True, required=False)

    class Meta:
        model = Leader
        fields: tuple[str, ...] = (
            "id",
            "name",
            "description",
            "status",
            "quote",
            "equity",
            "published_at",
            "followers",
        )


class PublishSerializer(serializers.Serializer):
    account = serializers.IntegerField(help_text="one of my exchange or paper accounts")
    name = serializers.CharField(max_length=80)
    description = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    hide_positions = serializers.BooleanField(required=False, default=False)


class LeaderFillSerializer(serializers.ModelSerializer):
    class Meta:
        model = LeaderFill
        fields: tuple[str, ...] = (
            "id",
            "fill_id",
            "symbol",
            "side",
            "amount",
            "price",
            "fee",
            "exchange_time",
        )


class LeaderFillCopiesSerializer(LeaderFillSerializer):
    copies = serializers.IntegerField(read_only=True)
    copies_filled = serializers.IntegerField(read_only=True)
    not_copied = serializers.IntegerField(read_only=True)

    class Meta(LeaderFillSerializer.Meta):
        fields = (*LeaderFillSerializer.Meta.fields, "copies", "copies_filled", "not_copied")


class EquityPointSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    equity = serializers.DecimalField(max_digits=36, decimal_places=18)


class LeaderProfileSerializer(LeaderSerializer):
    """A leader's public profile; ``positions`` is null when the leader hides them from
    others."""

    total_return = serializers.FloatField(allow_null=True, help_text="0.05 = +5 %")
    max_drawdown = serializers.FloatField(allow_null=True, help_text="0.1 = 10 % off a peak")
    positions = serializers.DictField(
        child=serializers.DecimalField(max_digits=36, decimal_places=18), allow_null=True
    )
    recent_fills = LeaderFillSerializer(many=True)
    equity_curve = EquityPointSerializer(many=True)

    class Meta(LeaderSerializer.Meta):
        fields = (
            *LeaderSerializer.Meta.fields,
            "hide_positions",
            "total_return",
            "max_drawdown",
            "positions",
            "recent_fills",
            "equity_curve",
        )


class SubscriptionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Subscription
        fields = (
            "id",
            "leader",
            "account",
            "status",
            "status_message",
            "created_at",
            *SETTING_FIELDS,
        )


class SettingsSerializer(serializers.Serializer):
    """The settings a subscription takes (for the schema; the service validates them)."""

    sizing_mode = serializers.ChoiceField(choices=Subscription.Sizing.choices, required=False)
    ratio = serializers.CharField(required=False, help_text="fixed_ratio: x leader quantity")
    notional = serializers.CharField(required=False, help_text="fixed_notional: quote per trade")
    risk_fraction = serializers.CharField(required=False, help_text="fixed_risk: 0.01 = 1 %")
    max_notional = serializers.CharField(required=False, allow_null=True)
    max_positions = serializers.IntegerField(required=False, allow_null=True)
    allowed_symbols = serializers.ListField(child=serializers.CharField(), required=False)
    excluded_symbols = serializers.ListField(child=serializers.CharField(), required=False)
    allowed_sides = serializers.ListField(child=serializers.CharField(), required=False)
    symbol_map = serializers.DictField(child=serializers.CharField(), required=False)
    slippage_guard = serializers.CharField(
        required=False, allow_null=True, help_text="fraction; null: 0.005 BTC/ETH, 0.015 others"
    )
    expiry_seconds = serializers.IntegerField(required=False)
    drift_tolerance = serializers.CharField(required=False)
    drift_repair = serializers.ChoiceField(choices=Subscription.DriftRepair.choices, required=False)


class SubscriptionCreateSerializer(serializers.Serializer):
    leader = serializers.IntegerField()
    account = serializers.IntegerField()
    settings = serializers.DictField(required=False, default=dict)


class CopyOrderSerializer(serializers.ModelSerializer):
    leader_fill = serializers.CharField(source="leader_fill.fill_id")

    class Meta:
        model = CopyOrder
        fields = (
            "id",
            "leader_fill",
            "client_order_id",
            "symbol",
            "side",
            "order_type",
            "closing",
            "amount",
            "limit_price",
            "reference_price",
            "state",
            "filled_amount",
            "average_price",
            "fee",
            "fee_currency",
            "slippage_bps",
            "error_text",
            "leader_filled_at",
            "detected_at",
            "planned_at",
            "submitted_at",
            "acknowledged_at",
            "filled_at",
        )


class DecisionSerializer(serializers.ModelSerializer):
    leader_fill = serializers.CharField(source="leader_fill.fill_id")

    class Meta:
        model = CopyDecision
        fields = (
            "id",
            "created_at",
            "leader_fill",
            "copy_order",
            "outcome",
            "reason",
            "detail",
            "figures",
        )


class DateSpan(serializers.Serializer):
    since = serializers.DateField(required=False, help_text="UTC day, inclusive")
    until = serializers.DateField(required=False, help_text="UTC day, inclusive")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "since" in attrs and "until" in attrs and attrs["since"] > attrs["until"]:
            raise serializers.ValidationError({"until": ["The end date is before the start."]})
        return attrs


class DecisionFilter(DateSpan):
    outcome = serializers.ChoiceField(choices=CopyDecision.Outcome.choices, required=False)
    reason = serializers.CharField(required=False, max_length=60)


class CopyFilter(DateSpan):
    state = serializers.ChoiceField(choices=CopyOrder.State.choices, required=False)


class SubscriptionStopSerializer(serializers.Serializer):
    close_positions = serializers.BooleanField(
        required=False,
        default=False,
        help_text="stop only: also close the positions the copies opened",
    )


class LeaderStopSetSerializer(serializers.Serializer):
    symbol = serializers.CharField(max_length=40, help_text="the leader's market, e.g. BTC/USDT")
    stop_price = serializers.CharField(
        max_length=40,
        required=False,
        allow_blank=True,
        allow_null=True,
        default=None,
        help_text="the stop price; empty or null clears the market's stop",
    )


class LeaderStopsSerializer(serializers.Serializer):
    leader = serializers.IntegerField()
    stops = serializers.DictField(
        child=serializers.CharField(), help_text="market -> declared stop price"
    )


def _stops_body(leader: Leader) -> dict[str, Any]:
    return {"leader": leader.pk, "stops": dict(leader.stops or {})}


def _date_span(qs: Any, field: str, p: dict[str, Any]) -> Any:
    if "since" in p:
        qs = qs.filter(**{f"{field}__date__gte": p["since"]})
    if "until" in p:
        qs = qs.filter(**{f"{field}__date__lte": p["until"]})
    return qs


@extend_schema(tags=TAG)
@extend_schema_view(get=extend_schema(summary="Published leaders"))
class LeaderListView(ListAPIView):
    serializer_class = LeaderSerializer

    def get_queryset(self) -> Any:
        return selectors.leaders_directory()

    @extend_schema(
        request=PublishSerializer,
        responses={201: LeaderSerializer},
        summary="Publish one of my accounts as a leader",
    )
    def post(self, request: Request) -> Response:
        data = validated(PublishSerializer, request.data)
        leader = services.leader_publish(
            user=request.user,
            account_id=data["account"],
            name=data["name"],
            description=data.get("description", ""),
            hide_positions=data["hide_positions"],
        )
        out = LeaderSerializer(leader).data
        out["followers"] = 0
        return Response(out, status=status.HTTP_201_CREATED)


@extend_schema(tags=TAG)
class LeaderDetailView(APIView):
    @extend_schema(responses=LeaderProfileSerializer, summary="One leader's profile")
    def get(self, request: Request, pk: int) -> Response:
        leader = selectors.leader_get_visible(user=request.user, pk=pk)
        profile = selectors.leader_profile(
            leader, viewer_is_owner=leader.owner_id == request.user.pk
        )
        # The serializer reads the profile's figures as attributes of the leader.
        shown = {
            "followers": profile["followers"],
            "total_return": profile["stats"]["total_return"],
            "max_drawdown": profile["stats"]["max_drawdown"],
            "positions": profile["positions"],
            "recent_fills": profile["fills"],
            "equity_curve": [{"at": at, "equity": v} for at, v in profile["curve"]],
        }
        for name, value in shown.items():
            setattr(leader, name, value)
        return Response(LeaderProfileSerializer(leader).data)


@extend_schema(tags=TAG)
@extend_schema_view(get=extend_schema(summary="My leader's fills and the copies sent for them"))
class LeaderFillsView(ListAPIView):
    """The leader's own dashboard: its fills, newest first, with the copies each produced."""

    request: AuthenticatedRequest

    serializer_class = LeaderFillCopiesSerializer

    def get_queryset(self) -> Any:
        leader = Leader.objects.filter(pk=self.kwargs["pk"], owner=self.request.user).first()
        if leader is None:
            raise NotFound("Leader not found.")
        return selectors.leader_fills_with_copies(leader, limit=1000)


@extend_schema(tags=TAG)
class LeaderStopsView(APIView):
    """The stops a leader declares per market: stamped on its next opening fills there, they
    are what fixed-risk followers size from and where "copy the leader's stop" closes."""

    @extend_schema(
        responses=LeaderStopsSerializer,
        summary="My leader's declared stops",
        operation_id="copy_leader_stops_list",
    )
    def get(self, request: AuthenticatedRequest, pk: int) -> Response:
        leader = Leader.objects.filter(pk=pk, owner=request.user).first()
        if leader is None:
            raise NotFound("Leader not found.")
        return Response(_stops_body(leader))

    @extend_schema(
        request=LeaderStopSetSerializer,
        responses=LeaderStopsSerializer,
        summary="Declare (or clear) my leader's stop in one market",
        operation_id="copy_leader_stops_set",
    )
    def post(self, request: Request, pk: int) -> Response:
        data = validated(LeaderStopSetSerializer, request.data)
        leader = services.leader_stop_set(
            user=request.user,
            leader_id=pk,
            symbol=data["symbol"],
            stop_price=data.get("stop_price"),
        )
        return Response(_stops_body(leader))


LEADER_ACTIONS = {
    "pause": services.leader_pause,
    "resume": services.leader_resume,
    "retire": services.leader_retire,
}


@extend_schema(tags=TAG)
class LeaderActionView(APIView):
    @extend_schema(
        request=None,
        responses=LeaderSerializer,
        summary="Pause, resume or retire",
        operation_id="copy_leader_action",
    )
    def post(self, request: Request, pk: int, action: str) -> Response:
        act = LEADER_ACTIONS.get(action)
        if act is None:
            raise NotFound("No such action.")
        return Response(LeaderSerializer(act(user=request.user, leader_id=pk)).data)


@extend_schema(tags=TAG)
@extend_schema_view(get=extend_schema(summary="What I follow"))
class SubscriptionListView(ListAPIView):
    serializer_class = SubscriptionSerializer

    def get_queryset(self) -> Any:
        return selectors.subscriptions_for_user(self.request.user)

    @extend_schema(
        request=SubscriptionCreateSerializer,
        responses={201: SubscriptionSerializer},
        summary="Follow a leader",
    )
    def post(self, request: Request) -> Response:
        data = validated(SubscriptionCreateSerializer, request.data)
        sub = services.subscription_create(
            user=request.user,
            leader_id=data["leader"],
            account_id=data["account"],
            settings=data["settings"],
        )
        return Response(SubscriptionSerializer(sub).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=TAG)
class SubscriptionDetailView(APIView):
    @extend_schema(responses=SubscriptionSerializer, summary="One subscription")
    def get(self, request: Request, pk: int) -> Response:
        return Response(
            SubscriptionSerializer(selectors.subscription_get(user=request.user, pk=pk)).data
        )

    @extend_schema(
        request=SettingsSerializer, responses=SubscriptionSerializer, summary="Change settings"
    )
    def patch(self, request: Request, pk: int) -> Response:
        if not isinstance(request.data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Send an object of settings."]})
        sub = services.subscription_update(
            user=request.user, subscription_id=pk, settings=dict(request.data)
        )
        return Response(SubscriptionSerializer(sub).data)


SUBSCRIPTION_ACTIONS = {
    "pause": services.subscription_pause,
    "resume": services.subscription_resume,
    "stop": services.subscription_stop,
}


@extend_schema(tags=TAG)
class SubscriptionActionView(APIView):
    @extend_schema(
        request=SubscriptionStopSerializer,
        responses=SubscriptionSerializer,
        summary="Pause, resume or stop",
        operation_id="copy_subscription_action",
    )
    def post(self, request: Request, pk: int, action: str) -> Response:
        act = SUBSCRIPTION_ACTIONS.get(action)
        if act is None:
            raise NotFound("No such action.")
        kwargs: dict[str, Any] = {}
        if action == "stop":
            body = request.data if isinstance(request.data, dict) else {}
            if (
                body.get("close_positions") not in (None, False, "false", "0", "")
                and validated(SubscriptionStopSerializer, body)["close_positions"]
            ):
                kwargs["close_positions"] = True
        sub = act(user=request.user, subscription_id=pk, **kwargs)
        return Response(SubscriptionSerializer(sub).data)


@extend_schema(tags=TAG)
@extend_schema_view(
    get=extend_schema(parameters=[CopyFilter], summary="A subscription's copies, newest first")
)
class CopyOrderListView(ListAPIView):
    serializer_class = CopyOrderSerializer

    def get_queryset(self) -> Any:
        p = validated_query(CopyFilter, self.request)
        sub = selectors.subscription_get(user=self.request.user, pk=self.kwargs["pk"])
        orders = sub.copy_orders.select_related("leader_fill").order_by("-planned_at", "-pk")
        if "state" in p:
            orders = orders.filter(state=p["state"])
        return _date_span(orders, "planned_at", p)


@extend_schema(tags=TAG)
@extend_schema_view(
    get=extend_schema(parameters=[DecisionFilter], summary="A subscription's audit trail")
)
class DecisionListView(ListAPIView):
    serializer_class = DecisionSerializer

    def get_queryset(self) -> Any:
        p = validated_query(DecisionFilter, self.request)
        sub = selectors.subscription_get(user=self.request.user, pk=self.kwargs["pk"])
        decisions = sub.decisions.select_related("leader_fill").order_by("-created_at", "-pk")
        if "outcome" in p:
            decisions = decisions.filter(outcome=p["outcome"])
        if "reason" in p:
            decisions = decisions.filter(reason=p["reason"])
        return _date_span(decisions, "created_at", p)


urlpatterns = [
    path("copy/leaders/", LeaderListView.as_view(), name="api_copy_leaders"),
    path("copy/leaders/<int:pk>/", LeaderDetailView.as_view(), name="api_copy_leader"),
    path("copy/leaders/<int:pk>/fills/", LeaderFillsView.as_view(), name="api_copy_leader_fills"),
    path("copy/leaders/<int:pk>/stops/", LeaderStopsView.as_view(), name="api_copy_leader_stops"),
    path(
        "copy/leaders/<int:pk>/<slug:action>/",
        LeaderActionView.as_view(),
        name="api_copy_leader_action",
    ),
    path("copy/subscriptions/", SubscriptionListView.as_view(), name="api_copy_subscriptions"),
    path(
        "copy/subscriptions/<int:pk>/",
        SubscriptionDetailView.as_view(),
        name="api_copy_subscription",
    ),
    path(
        "copy/subscriptions/<int:pk>/copies/",
        CopyOrderListView.as_view(),
        name="api_copy_orders",
    ),
    path(
        "copy/subscriptions/<int:pk>/decisions/",
        DecisionListView.as_view(),
        name="api_copy_decisions",
    ),
    path(
        "copy/subscriptions/<int:pk>/<slug:action>/",
        SubscriptionActionView.as_view(),
        name="api_copy_subscription_action",
    ),
]
