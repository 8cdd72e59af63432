"""/api/v1/grid-bots/: live grid bots.

    GET    grid-bots/                  my grid bots, newest first (paginated)
    POST   grid-bots/                  start one on an account -> 201
    GET    grid-bots/<id>/             one bot with its levels
    POST   grid-bots/<id>/pause/       cancel the resting buys, keep the sells
    POST   grid-bots/<id>/start/       run again (a paused or failed bot)
    POST   grid-bots/<id>/stop/        cancel every order; {"sell": true} also sells the holdings

    GET    grid-searches/              my grid searches, newest first (paginated)
    POST   grid-searches/              search grid settings in the background -> 201 (queued)
    GET    grid-searches/<id>/         its state; once completed, its rows best first
    POST   grid-searches/<id>/cancel/  cancel a queued or running search

Prices and money are decimal strings. Authentication and Pro come from the API defaults;
another user's bot or account is a 404; a refused setting is a 400 naming the field (too many
levels: the message names the most that fit), and nothing is created.
"""

from __future__ import annotations

from typing import Any

from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from backtester.api.parsing import validated
from backtester.models import GridBot, GridLevel, GridSearch, MarketSeries
from backtester.selectors.marketdata import series_visible_to
from backtester.services.grid_bots import (
    grid_bot_create,
    grid_bot_get,
    grid_bot_pause,
    grid_bot_resume,
    grid_bot_stop,
    grid_bots_for,
)
from backtester.services.grid_search import (
    OBJECTIVES,
    grid_search_cancel,
    grid_search_create,
    grid_search_get,
    grid_searches_for,
)
from config.api_schema import error_response
from config.exceptions import NotFound
from config.fields import DecimalDigits
from exchanges.models import ExchangeAccount

TAG = ["grid bots"]
MONEY: DecimalDigits = {"max_digits": 28, "decimal_places": 8}


class GridLevelSerializer(serializers.ModelSerializer):
    class Meta:
        model = GridLevel
        fields = (
            "index",
            "price",
            "sell_price",
            "quantity",
            "state",
            "held",
            "client_order_id",
            "exchange_order_id",
            "order_status",
            "order_side",
            "realized_pnl",
            "buys",
            "sells",
            "note",
        )


class GridBotSerializer(serializers.ModelSerializer):
    class Meta:
        model = GridBot
        fields: tuple[str, ...] = (
            "id",
            "name",
            "account",
            "symbol",
            "lower",
            "upper",
            "levels",
            "spacing",
            "investment",
            "stop_loss",
            "take_profit",
            "trailing",
            "trail_shifts",
            "status",
            "status_reason",
            "grid_profit",
            "exit_pnl",
            "fees_paid",
            "exit_reason",
            "exit_state",
            "exit_trigger_price",
            "exit_trigger_ts",
            "created_at",
            "last_step_at",
        )


class GridBotDetailSerializer(GridBotSerializer):
    grid_levels = GridLevelSerializer(many=True, read_only=True)

    class Meta(GridBotSerializer.Meta):
        fields = (*GridBotSerializer.Meta.fields, "grid_levels")


class GridBotCreateSerializer(serializers.Serializer):
    account = serializers.IntegerField(help_text="One of my exchange accounts (able to trade)")
    symbol = serializers.CharField(max_length=40, help_text="A spot market like SOL/USDT")
    name = serializers.CharField(max_length=160, required=False, default="")
    lower = serializers.DecimalField(**MONEY)
    upper = serializers.DecimalField(**MONEY)
    levels = serializers.IntegerField(min_value=0, max_value=1_000_000, help_text="Price lines")
    spacing = serializers.ChoiceField(choices=GridBot.Spacing.choices, default="arithmetic")
    investment = serializers.DecimalField(**MONEY)
    stop_loss = serializers.DecimalField(required=False, allow_null=True, default=None, **MONEY)
    take_profit = serializers.DecimalField(required=False, allow_null=True, default=None, **MONEY)
    trailing = serializers.BooleanField(
        default=False, help_text="Trail the range up when the price passes one spacing above it"
    )


class GridStopSerializer(serializers.Serializer):
    sell = serializers.BooleanField(default=False, help_text="Also sell the holdings at market")


def _account(user: Any, pk: int) -> ExchangeAccount:
    account = ExchangeAccount.objects.filter(owner=user, pk=pk).first()
    if account is None:
        raise NotFound("No such exchange account", field="account")
    return account


@extend_schema(tags=TAG)
class GridBotListView(ListAPIView):
    serializer_class = GridBotSerializer

    def get_queryset(self) -> Any:
        return grid_bots_for(user=self.request.user)

    @extend_schema(summary="My grid bots")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=GridBotCreateSerializer,
        responses={201: GridBotDetailSerializer},
        summary="Start a grid bot",
    )
    def post(self, request: Request) -> Response:
        data = validated(GridBotCreateSerializer, request.data)
        bot = grid_bot_create(
            user=request.user,
            account=_account(request.user, data.pop("account")),
            **data,
        )
        return Response(GridBotDetailSerializer(bot).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=TAG)
class GridBotDetailView(APIView):
    @extend_schema(responses=GridBotDetailSerializer, summary="One grid bot with its levels")
    def get(self, request: Request, pk: int) -> Response:
        return Response(GridBotDetailSerializer(grid_bot_get(user=request.user, pk=pk)).data)


@extend_schema(tags=TAG)
class GridBotPauseView(APIView):
    @extend_schema(request=None, responses=GridBotSerializer, summary="Pause (buys canceled)")
    def post(self, request: Request, pk: int) -> Response:
        bot = grid_bot_pause(user=request.user, bot=grid_bot_get(user=request.user, pk=pk))
        return Response(GridBotSerializer(grid_bot_get(user=request.user, pk=bot.pk)).data)


@extend_schema(tags=TAG)
class GridBotResumeView(APIView):
    @extend_schema(request=None, responses=GridBotSerializer, summary="Start again")
    def post(self, request: Request, pk: int) -> Response:
        bot = grid_bot_resume(user=request.user, bot=grid_bot_get(user=request.user, pk=pk))
        return Response(GridBotSerializer(bot).data)


@extend_schema(tags=TAG)
class GridBotStopView(APIView):
    @extend_schema(request=GridStopSerializer, responses=GridBotSerializer, summary="Stop for good")
    def post(self, request: Request, pk: int) -> Response:
        data = validated(GridStopSerializer, request.data)
        bot = grid_bot_get(user=request.user, pk=pk)
        grid_bot_stop(user=request.user, bot=bot, sell=data["sell"])
        return Response(GridBotSerializer(grid_bot_get(user=request.user, pk=pk)).data)


# --- grid searches ----------------------------------------------------------------------------


class GridSearchSerializer(serializers.ModelSerializer):
    symbol = serializers.CharField(source="series.symbol", read_only=True)
    timeframe = serializers.CharField(source="series.timeframe", read_only=True)

    class Meta:
        model = GridSearch
        fields: tuple[str, ...] = (
            "id", "status", "progress", "stage", "error", "series", "symbol", "timeframe",
            "investment", "space", "objective", "combinations", "evaluated", "bars",
            "created_at", "started_at", "finished_at",
        )  # fmt: skip


class GridSearchDetailSerializer(GridSearchSerializer):
    class Meta(GridSearchSerializer.Meta):
        fields = (*GridSearchSerializer.Meta.fields, "market", "rows")


class GridSearchCreateSerializer(serializers.Serializer):
    series = serializers.IntegerField(help_text="A market series with candles")
    investment = serializers.DecimalField(**MONEY)
    lowers = serializers.ListField(child=serializers.DecimalField(**MONEY), min_length=1)
    uppers = serializers.ListField(child=serializers.DecimalField(**MONEY), min_length=1)
    levels = serializers.ListField(
        child=serializers.IntegerField(min_value=2, max_value=10_000), min_length=1
    )
    # Plain strings checked by the service (a second enum of the same choices, or another
    # "objective" enum, would make the schema's component names collide).
    spacings = serializers.ListField(
        child=serializers.CharField(max_length=10),
        min_length=1,
        default=["arithmetic"],
        help_text="arithmetic and/or geometric",
    )
    trailing = serializers.ListField(
        child=serializers.BooleanField(), min_length=1, default=[False]
    )
    objective = serializers.CharField(
        max_length=20, default="total_return", help_text="One of: " + ", ".join(OBJECTIVES)
    )


def _series(user: Any, pk: int) -> MarketSeries:
    series = series_visible_to(user).filter(pk=pk).first()
    if series is None:
        raise NotFound("No such market", field="series")
    return series


@extend_schema(tags=TAG)
class GridSearchListView(ListAPIView):
    serializer_class = GridSearchSerializer

    def get_queryset(self) -> Any:
        return grid_searches_for(user=self.request.user)

    @extend_schema(summary="My grid searches")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=GridSearchCreateSerializer,
        responses={
            201: GridSearchSerializer,
            409: error_response("Two searches are already queued or running: wait for one"),
        },
        summary="Search grid settings (queued)",
    )
    def post(self, request: Request) -> Response:
        data = validated(GridSearchCreateSerializer, request.data)
        search = grid_search_create(
            user=request.user, series=_series(request.user, data.pop("series")), **data
        )
        return Response(GridSearchSerializer(search).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=TAG)
class GridSearchDetailView(APIView):
    @extend_schema(responses=GridSearchDetailSerializer, summary="One grid search")
    def get(self, request: Request, pk: int) -> Response:
        return Response(GridSearchDetailSerializer(grid_search_get(user=request.user, pk=pk)).data)


@extend_schema(tags=TAG)
class GridSearchCancelView(APIView):
    @extend_schema(
        request=None,
        responses={200: GridSearchSerializer, 409: error_response("The search already ended")},
        summary="Cancel a grid search",
    )
    def post(self, request: Request, pk: int) -> Response:
        search = grid_search_cancel(
            user=request.user, search=grid_search_get(user=request.user, pk=pk)
        )
        return Response(GridSearchSerializer(search).data)


_SEARCH = "grid-searches/<int:pk>/"
urlpatterns = [
    path("grid-searches/", GridSearchListView.as_view(), name="api_grid_searches"),
    path(_SEARCH, GridSearchDetailView.as_view(), name="api_grid_search"),
    path(f"{_SEARCH}cancel/", GridSearchCancelView.as_view(), name="api_grid_search_cancel"),
    path("grid-bots/", GridBotListView.as_view(), name="api_grid_bots"),
    path("grid-bots/<int:pk>/", GridBotDetailView.as_view(), name="api_grid_bot"),
    path("grid-bots/<int:pk>/pause/", GridBotPauseView.as_view(), name="api_grid_bot_pause"),
    path("grid-bots/<int:pk>/start/", GridBotResumeView.as_view(), name="api_grid_bot_resume"),
    path("grid-bots/<int:pk>/stop/", GridBotStopView.as_view(), name="api_grid_bot_stop"),
]
