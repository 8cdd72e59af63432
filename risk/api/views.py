"""/api/v1/risk/: the risk profile, trading states, the kill switch and denied orders.

    GET    risk/profile/                 my limits (?account=<id>: that account's, or the default)
    PATCH  risk/profile/                 change some limits (?account=<id>: the account's override)
    PUT    risk/profile/                 every limit
    GET    risk/state/                   the effective state and every stored state
    POST   risk/states/<id>/reset/       reset a latched state to active
    POST   risk/kill-switch/             halt everything {"close_positions": bool}
    GET    risk/denials/                 denied orders, newest first (paginated)
    POST   risk/accounts/<id>/close/     close one position at market {"symbol": "BTC/USDT"}

Limits are fractions (0.02 = 2 %). Authentication and Pro come from the API defaults; another
user's state or account is a 404; invalid limits are a 400 naming every field; nothing saved.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from risk import selectors, services
from risk.models import DeniedOrder, KillSwitchRun, ManualClose, RiskProfile, TradingState

TAG = ["risk"]
ACCOUNT_PARAM = OpenApiParameter(
    "account", int, description="An exchange account's id: its override (default: the user's)."
)


class ProfileSerializer(serializers.ModelSerializer):
    account = serializers.IntegerField(source="account_id", allow_null=True, read_only=True)
    stored = serializers.SerializerMethodField(help_text="False: the product's defaults apply.")

    class Meta:
        model = RiskProfile
        fields = ("account", "stored", *RiskProfile.LIMIT_FIELDS)

    def get_stored(self, obj: RiskProfile) -> bool:
        return obj.pk is not None


class ProfileWriteSerializer(serializers.ModelSerializer):
    """Input shape only; the rules check ranges and maxima below minima."""

    class Meta:
        model = RiskProfile
        fields = RiskProfile.LIMIT_FIELDS


class StateSerializer(serializers.ModelSerializer):
    account = serializers.IntegerField(source="account_id", allow_null=True)
    reset_url = serializers.SerializerMethodField()

    class Meta:
        model = TradingState
        fields = ("id", "account", "state", "code", "reason", "figures", "latched_until",
                  "changed_at", "reset_url")  # fmt: skip

    def get_reset_url(self, obj: TradingState) -> str:
        from django.urls import reverse

        return reverse("api_risk_state_reset", kwargs={"pk": obj.pk})


class StatesSerializer(serializers.Serializer):
    effective = serializers.CharField(
        help_text="The user-wide state: active, reducing (only reducing orders) or halted."
    )
    reason = serializers.CharField(allow_blank=True)
    states = StateSerializer(many=True)


class KillSwitchInput(serializers.Serializer):
    close_positions = serializers.BooleanField(default=False)


class KillSwitchSerializer(serializers.ModelSerializer):
    report = serializers.DictField(help_text="Per account id: what was cancelled/closed, errors.")

    class Meta:
        model = KillSwitchRun
        fields = ("id", "status", "close_positions", "attempts", "report", "created_at",
                  "finished_at")  # fmt: skip


class DeniedOrderSerializer(serializers.ModelSerializer):
    account = serializers.IntegerField(source="account_id", allow_null=True)

    class Meta:
        model = DeniedOrder
        fields = ("id", "account", "source", "symbol", "side", "amount", "price", "code",
                  "reason", "figures", "created_at")  # fmt: skip


class AccountQuery(serializers.Serializer):
    account = serializers.IntegerField(min_value=1, required=False)


def _account(request: Request) -> Any:
    query = AccountQuery(data={k: v for k, v in request.query_params.items() if k == "account"})
    query.is_valid(raise_exception=True)
    return selectors.account_get(request.user, query.validated_data.get("account"))


_profile_write_schema = partial(
    extend_schema,
    parameters=[ACCOUNT_PARAM],
    request=ProfileWriteSerializer,
    responses=ProfileSerializer,
)


@extend_schema(tags=TAG)
class ProfileView(APIView):
    @extend_schema(parameters=[ACCOUNT_PARAM], responses=ProfileSerializer, summary="My limits")
    def get(self, request: Request) -> Response:
        account = _account(request)
        return Response(ProfileSerializer(selectors.profile_for(request.user, account)).data)

    def _write(self, request: Request, *, partial: bool) -> Response:
        account = _account(request)
        data = ProfileWriteSerializer(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        try:
            profile = services.risk_profile_update(
                user=request.user, account=account, values=dict(data.validated_data)
            )
        except services.LimitsInvalid as exc:
            raise ValidationError({k: [v] for k, v in (exc.extra or {}).items()}) from None
        return Response(ProfileSerializer(profile).data)

    @_profile_write_schema(summary="Change some limits")
    def patch(self, request: Request) -> Response:
        return self._write(request, partial=True)

    @_profile_write_schema(summary="Replace every limit")
    def put(self, request: Request) -> Response:
        return self._write(request, partial=False)


@extend_schema(tags=TAG)
class StateView(APIView):
    @extend_schema(responses=StatesSerializer, summary="My trading states")
    def get(self, request: Request) -> Response:
        services.trading_state_expire_latches(user=request.user)
        effective = selectors.effective_state(request.user, None)
        return Response(
            {
                "effective": effective.state if effective else TradingState.State.ACTIVE,
                "reason": effective.reason if effective else "",
                "states": StateSerializer(
                    selectors.trading_states_for(request.user), many=True
                ).data,
            }
        )


@extend_schema(tags=TAG)
class StateResetView(APIView):
    @extend_schema(request=None, responses=StateSerializer, summary="Reset a state to active")
    def post(self, request: Request, pk: int) -> Response:
        state = selectors.trading_state_get(request.user, pk)
        state = services.trading_state_reset(user=request.user, state=state)
        return Response(StateSerializer(state).data)


@extend_schema(tags=TAG)
class KillSwitchView(APIView):
    @extend_schema(
        request=KillSwitchInput, responses=KillSwitchSerializer, summary="Halt all my trading"
    )
    def post(self, request: Request) -> Response:
        data = KillSwitchInput(data=request.data)
        data.is_valid(raise_exception=True)
        run = services.kill_switch_engage(
            user=request.user, close_positions=data.validated_data["close_positions"]
        )
        return Response(KillSwitchSerializer(run).data)


class CloseInput(serializers.Serializer):
    symbol = serializers.RegexField(
        r"^[A-Za-z0-9]{1,20}/[A-Za-z0-9]{1,20}$",
        max_length=41,
        help_text="The market of the position, as the exchange names it (BTC/USDT).",
    )


class ManualCloseSerializer(serializers.ModelSerializer):
    account = serializers.IntegerField(source="account_id")

    class Meta:
        model = ManualClose
        fields = (
            "id", "account", "symbol", "side", "amount", "client_order_id", "status",
            "order_status", "exchange_order_id", "code", "message", "created_at",
        )  # fmt: skip


@extend_schema(tags=TAG)
class PositionCloseView(APIView):
    @extend_schema(
        request=CloseInput,
        responses=ManualCloseSerializer,
        summary="Close one position at market",
        description=(
            "The close passes the pre-trade check first (a reducing order passes even when "
            "trading is halted). The answer is the stored close: `status` is `sent`, "
            "`unknown` (timed out; looked up by its client order id, never resent), `denied` "
            "(with the check's `code`; nothing sent) or `failed` (the exchange's message). "
            "No position in that symbol: 400. Another user's account: 404."
        ),
    )
    def post(self, request: Request, pk: int) -> Response:
        account = selectors.account_get(request.user, pk)
        data = CloseInput(data=request.data)
        data.is_valid(raise_exception=True)
        row = services.position_close(
            user=request.user, account=account, symbol=data.validated_data["symbol"].upper()
        )
        return Response(ManualCloseSerializer(row).data)


@extend_schema(tags=TAG)
@extend_schema_view(get=extend_schema(summary="My denied orders"))
class DenialListView(ListAPIView):
    serializer_class = DeniedOrderSerializer

    def get_queryset(self) -> Any:
        return selectors.denials_for(self.request.user, limit=None)


urlpatterns = [
    path("risk/profile/", ProfileView.as_view(), name="api_risk_profile"),
    path("risk/state/", StateView.as_view(), name="api_risk_state"),
    path("risk/states/<int:pk>/reset/", StateResetView.as_view(), name="api_risk_state_reset"),
    path("risk/kill-switch/", KillSwitchView.as_view(), name="api_risk_kill_switch"),
    path("risk/denials/", DenialListView.as_view(), name="api_risk_denials"),
    path(
        "risk/accounts/<int:pk>/close/",
        PositionCloseView.as_view(),
        name="api_risk_position_close",
    ),
]
