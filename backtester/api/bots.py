"""/api/v1/ live strategy bots.

    GET    bots/                 my bots (paginated, newest first)
    POST   bots/                 start one: {"strategy": id, "series": id} or {"backtest": id}
                                 (a completed single-market backtest), plus "account": id and
                                 optional settings, param_values, name -> 201
    GET    bots/<id>/            status (with the reason), ledger (cash, position), links
    POST   bots/<id>/pause/      pause a running bot
    POST   bots/<id>/resume/     start a paused or failed bot again
    POST   bots/<id>/stop/       stop; {"cancel_orders": true, "close_position": true} also
                                 cancels its open orders and closes its position at market
                                 (through the risk check, exactly once)
    GET    bots/<id>/orders/     its orders, newest first (paginated)
    GET    bots/<id>/events/     its log, newest first (paginated)

Authentication, Pro and throttling come from the API defaults; another user's bot, strategy or
backtest is a 404; refusals use the project's error format with the field at fault and change
nothing. Money is given as decimal strings.
"""

from __future__ import annotations

from typing import Any

from django.urls import path, reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.gating import AuthenticatedRequest
from backtester.api.parsing import validated
from backtester.models import LiveBot, MarketSeries
from backtester.models.live import BotEvent
from backtester.selectors.backtests import backtest_get, series_by_ids
from backtester.selectors.live_bots import bot_get, bots_for
from backtester.selectors.strategies import strategy_get
from backtester.services.live_bots import (
    bot_create,
    bot_pause,
    bot_resume,
    bot_stop,
    event_json,
    order_json,
)
from config.api_schema import error_response
from config.exceptions import ApplicationError
from exchanges.models import ExchangeAccount

TAGS = ["bots"]
REFUSED = error_response("The bot cannot do that in its present state (or the input is wrong).")


# --- input ----------------------------------------------------------------------------------


class BotCreateSerializer(serializers.Serializer):
    strategy = serializers.IntegerField(
        min_value=1, required=False, help_text="A strategy of yours (give series too)."
    )
    backtest = serializers.IntegerField(
        min_value=1,
        required=False,
        help_text="A completed single-market backtest of yours: its rules, values, settings.",
    )
    series = serializers.IntegerField(
        min_value=1, required=False, help_text="The market data the bot reads (with strategy)."
    )
    account = serializers.IntegerField(min_value=1, help_text="One of your exchange accounts.")
    settings = serializers.DictField(
        required=False, default=dict, help_text="Engine settings over the source's."
    )
    param_values = serializers.DictField(required=False, default=dict)
    name = serializers.CharField(required=False, allow_blank=True, default="", max_length=160)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        has_strategy, has_backtest = "strategy" in attrs, "backtest" in attrs
        if has_strategy == has_backtest:
            raise serializers.ValidationError(
                {"strategy": ["Give either a strategy (with series) or a backtest."]}
            )
        if has_strategy and "series" not in attrs:
            raise serializers.ValidationError({"series": ["Required with a strategy."]})
        return attrs


class BotStopSerializer(serializers.Serializer):
    cancel_orders = serializers.BooleanField(required=False, default=False)
    close_position = serializers.BooleanField(required=False, default=False)


# --- output (documents the dicts below) -----------------------------------------------------


class BotLinksSerializer(serializers.Serializer):
    self = serializers.URLField()
    orders = serializers.URLField()
    events = serializers.URLField()
    pause = serializers.URLField()
    resume = serializers.URLField()
    stop = serializers.URLField()
    page = serializers.URLField(help_text="The bot's page in the web app.")
    websocket = serializers.CharField(help_text="Live updates of the bot (same-site session).")


class BotSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=LiveBot.Status.choices)
    status_reason = serializers.CharField(allow_blank=True)
    strategy = serializers.IntegerField(allow_null=True)
    backtest = serializers.IntegerField(allow_null=True)
    account = serializers.IntegerField(allow_null=True)
    series = serializers.IntegerField()
    symbol = serializers.CharField()
    timeframe = serializers.CharField()
    settings = serializers.DictField()
    param_values = serializers.DictField()
    capital = serializers.CharField()
    cash = serializers.CharField()
    position = serializers.CharField()
    entry_price = serializers.CharField(allow_null=True)
    start_ts = serializers.IntegerField(help_text="The first candle (open time, ms) it acts on.")
    cursor_ts = serializers.IntegerField(allow_null=True, help_text="The last candle processed.")
    last_step_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    links = BotLinksSerializer()


class BotOrderSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    client_order_id = serializers.CharField()
    bar_ts = serializers.IntegerField()
    bar = serializers.CharField()
    action = serializers.CharField(
        help_text="enter, exit, protect (a watched level), close, or a resting order on the "
        "exchange: stop / target (stop-r / target-r: placed again once after it was lost)."
    )
    resting = serializers.BooleanField(
        help_text="A resting stop-loss / take-profit order the exchange holds."
    )
    trigger_price = serializers.CharField(
        allow_null=True, help_text="The resting order's trigger (rounded to the tick)."
    )
    reason = serializers.CharField(allow_blank=True)
    side = serializers.CharField()
    amount = serializers.CharField()
    state = serializers.CharField()
    state_display = serializers.CharField()
    filled = serializers.CharField()
    average_price = serializers.CharField(allow_null=True)
    fee = serializers.CharField()
    fee_currency = serializers.CharField(help_text="The currency the exchange took the fee in")
    fee_quote = serializers.CharField(help_text="The fee valued in the quote currency")
    error = serializers.CharField(allow_blank=True)
    exchange_order_id = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField(allow_null=True)


class BotEventSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    at = serializers.DateTimeField()
    level = serializers.ChoiceField(choices=BotEvent.Level.choices)
    kind = serializers.CharField(allow_blank=True)
    message = serializers.CharField()
    # DRF's metaclass takes declared fields off the class: "data" shadows no Serializer.data.
    data = serializers.DictField()  # type: ignore[assignment]


def _num(value: Any) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def bot_json(request: Request, bot: LiveBot) -> dict[str, Any]:
    def api(name: str) -> str:
        return request.build_absolute_uri(reverse(f"api_bot_{name}", kwargs={"pk": bot.pk}))

    return {
        "id": bot.pk,
        "name": bot.name,
        "status": bot.status,
        "status_reason": bot.status_reason,
        "strategy": bot.strategy_id,
        "backtest": bot.source_backtest_id,
        "account": bot.account_id,
        "series": bot.series_id,
        "symbol": bot.symbol,
        "timeframe": bot.timeframe,
        "settings": bot.settings,
        "param_values": bot.param_values,
        "capital": _num(bot.capital),
        "cash": _num(bot.cash),
        "position": _num(bot.position),
        "entry_price": _num(bot.entry_price),
        "start_ts": bot.start_ts,
        "cursor_ts": bot.cursor_ts,
        "last_step_at": bot.last_step_at,
        "created_at": bot.created_at,
        "links": {
            "self": api("detail"),
            "orders": api("orders"),
            "events": api("events"),
            "pause": api("pause"),
            "resume": api("resume"),
            "stop": api("stop"),
            "page": request.build_absolute_uri(
                reverse("backtester:bot_detail", kwargs={"pk": bot.pk})
            ),
            "websocket": f"/ws/bots/{bot.pk}/",
        },
    }


# --- views ----------------------------------------------------------------------------------


@extend_schema(tags=TAGS)
class BotListView(ListAPIView):
    serializer_class = BotSerializer  # documents bot_json's shape

    def get_queryset(self) -> Any:
        return bots_for(user=self.request.user)

    @extend_schema(summary="My bots, newest first")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset()) or []
        return self.get_paginated_response([bot_json(request, bot) for bot in page])

    @extend_schema(
        request=BotCreateSerializer,
        responses={201: BotSerializer, 400: REFUSED},
        summary="Start a bot from a strategy or a completed backtest on one of my accounts",
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        data = validated(BotCreateSerializer, request.data)
        account = ExchangeAccount.objects.filter(owner=request.user, pk=data["account"]).first()
        if account is None:
            raise ApplicationError("No such exchange account.", field="account")
        series: MarketSeries | None = None
        if "series" in data:
            found = series_by_ids(request.user, [data["series"]])
            if not found:
                raise ApplicationError("Market data not found.", field="series")
            series = found[0]
        common: dict[str, Any] = {
            "user": request.user,
            "account": account,
            "settings": data["settings"],
            "param_values": data["param_values"],
            "name": data["name"],
        }
        if "backtest" in data:
            backtest = backtest_get(user=request.user, pk=data["backtest"])
            if series is None:
                order = list(backtest.series_order or [])
                if len(order) != 1:
                    raise ApplicationError(
                        "Only a single-market backtest can be deployed as a bot",
                        field="backtest",
                    )
                series = MarketSeries.objects.get(pk=order[0])
            bot = bot_create(series=series, backtest=backtest, **common)
        else:
            strategy = strategy_get(user=request.user, pk=data["strategy"])
            assert series is not None  # the serializer requires it with a strategy
            bot = bot_create(series=series, strategy=strategy, **common)
        return Response(bot_json(request, bot), status=status.HTTP_201_CREATED)


@extend_schema(tags=TAGS)
class BotDetailView(APIView):
    @extend_schema(responses=BotSerializer, summary="One bot: status, ledger, links")
    def get(self, request: Request, pk: int) -> Response:
        return Response(bot_json(request, bot_get(user=request.user, pk=pk)))


def _action_view(action: Any, name: str, summary: str) -> type[APIView]:
    @extend_schema(tags=TAGS)
    class BotActionView(APIView):
        @extend_schema(request=None, responses={200: BotSerializer, 400: REFUSED}, summary=summary)
        def post(self, request: Request, pk: int) -> Response:
            bot = action(user=request.user, bot=bot_get(user=request.user, pk=pk))
            return Response(bot_json(request, bot))

    BotActionView.__name__ = BotActionView.__qualname__ = name
    return BotActionView


BotPauseView = _action_view(bot_pause, "BotPauseView", "Pause a running bot")
BotResumeView = _action_view(bot_resume, "BotResumeView", "Start a paused or failed bot again")


@extend_schema(tags=TAGS)
class BotStopView(APIView):
    @extend_schema(
        request=BotStopSerializer,
        responses={
            200: OpenApiResponse(
                BotSerializer,
                description="Stopped. With close_position, the close order is in orders/ "
                "(action close): filled, or skipped/rejected with the reason.",
            ),
            400: REFUSED,
            409: error_response("The bot is processing a candle right now: try again."),
        },
        summary="Stop a bot; optionally cancel its open orders and close its position",
    )
    def post(self, request: Request, pk: int) -> Response:
        bot = bot_get(user=request.user, pk=pk)
        data = validated(BotStopSerializer, request.data)
        bot = bot_stop(user=request.user, bot=bot, **data)
        return Response(bot_json(request, bot))


@extend_schema(tags=TAGS)
class BotOrdersView(ListAPIView):
    serializer_class = BotOrderSerializer

    def get_queryset(self) -> Any:
        bot = bot_get(user=self.request.user, pk=int(self.kwargs["pk"]))
        return bot.orders.order_by("-bar_ts", "-pk")

    @extend_schema(summary="A bot's orders, newest first")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset()) or []
        return self.get_paginated_response([order_json(o) for o in page])


@extend_schema(tags=TAGS)
class BotEventsView(ListAPIView):
    serializer_class = BotEventSerializer

    def get_queryset(self) -> Any:
        bot = bot_get(user=self.request.user, pk=int(self.kwargs["pk"]))
        return BotEvent.objects.filter(bot=bot).order_by("-at", "-pk")

    @extend_schema(summary="A bot's log, newest first")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset()) or []
        return self.get_paginated_response([event_json(e) for e in page])


urlpatterns = [
    path("bots/", BotListView.as_view(), name="api_bot_list"),
    path("bots/<int:pk>/", BotDetailView.as_view(), name="api_bot_detail"),
    path("bots/<int:pk>/pause/", BotPauseView.as_view(), name="api_bot_pause"),
    path("bots/<int:pk>/resume/", BotResumeView.as_view(), name="api_bot_resume"),
    path("bots/<int:pk>/stop/", BotStopView.as_view(), name="api_bot_stop"),
    path("bots/<int:pk>/orders/", BotOrdersView.as_view(), name="api_bot_orders"),
    path("bots/<int:pk>/events/", BotEventsView.as_view(), name="api_bot_events"),
]
