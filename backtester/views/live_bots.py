"""Live bot pages: my bots, one bot (candles with entries and exits, position, P&L, orders,
fills, the event log and the drift against the backtest, updated over ``ws/bots/<id>/``),
its state as JSON for the page's script, Deploy from a backtest, and pause / start / stop
(stop can cancel the bot's orders and close its position). Pro only; another user's bot or
backtest is a 404."""

from __future__ import annotations

from decimal import Decimal

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_http_methods, require_POST

from accounts.gating import AuthenticatedHttpRequest, pro_required
from backtester.engine.candles import timeframe_ms
from backtester.forms.bots import DeployForm
from backtester.models import LiveBot
from backtester.models.live import BotEvent, BotOrder
from backtester.results.charts import _layout, int_list, ms_iso, num_list
from backtester.selectors.backtests import backtest_get
from backtester.selectors.live_bots import bot_get, bot_orders, bots_for
from backtester.services.live_bots import (
    bot_deploy,
    bot_drift,
    bot_equity,
    bot_pause,
    bot_resume,
    bot_stop,
    event_json,
    order_json,
)
from config.exceptions import ApplicationError


def _mark_price(bot: LiveBot) -> Decimal | None:
    from backtester.marketdata.store import load_candles

    last = bot.series.last_ts
    if last is None:
        return None
    tail = load_candles(bot.series, start_ts=int(last) - timeframe_ms(bot.timeframe) + 1)
    return Decimal(repr(float(tail.close[-1]))) if len(tail) else None


@pro_required
def bot_list(request: HttpRequest) -> HttpResponse:
    return render(request, "backtester/bots/list.html", {"bots": bots_for(user=request.user)})


CHART_BARS = 300  # candles on the bot page's chart (the latest ones)
LIST_ROWS = 100  # orders and events on the page


def _candles_figure(bot: LiveBot) -> dict | None:
    from backtester.marketdata.store import load_candles

    tf = timeframe_ms(bot.timeframe)
    end = (bot.cursor_ts if bot.cursor_ts is not None else bot.start_ts - tf) + 1
    candles = load_candles(bot.series, start_ts=max(bot.data_start_ts, end - CHART_BARS * tf))
    candles = candles.slice(0, int(candles.timestamp.searchsorted(end)))
    if not len(candles):
        return None
    data: list[dict] = [
        {
            "type": "candlestick",
            "name": bot.symbol,
            "x": int_list(candles.timestamp),
            "open": num_list(candles.open),
            "high": num_list(candles.high),
            "low": num_list(candles.low),
            "close": num_list(candles.close),
            "meta": {"role": "candles"},
            "showlegend": False,
        }
    ]
    first = int(candles.timestamp[0])
    fills = list(bot.orders.filter(filled__gt=0, bar_ts__gte=first).order_by("bar_ts"))
    for role, label, symbol, group in (
        ("entry", "Entry", "triangle-up", [o for o in fills if o.side == "buy"]),
        ("exit", "Exit", "triangle-down-open", [o for o in fills if o.side == "sell"]),
    ):
        if not group:
            continue
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": label,
                "x": [o.bar_ts for o in group],
                "y": [float(o.average_price or 0) for o in group],
                "text": [f"{o.action} {o.reason} {o.filled.normalize()}" for o in group],
                "marker": {"symbol": symbol, "size": 10},
                "hovertemplate": f"{label} %{{y}} · %{{text}}<extra></extra>",
                "meta": {"role": role, "side": 1},
            }
        )
    return {
        "data": data,
        "layout": _layout(
            title={"text": f"{bot.symbol} · {bot.timeframe} candles"},
            hovermode="closest",
            xaxis={"rangeslider": {"visible": False}},
            yaxis={"title": {"text": "Price"}, "tickformat": ",.6~g"},
            height=420,
        ),
    }


def _drift_figure(bot: LiveBot) -> tuple[dict | None, float | None]:
    drift = bot_drift(bot)
    if drift is None:
        return None, None
    figure = {
        "data": [
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Bot (live)",
                "x": drift.timestamps,
                "y": num_list(drift.live),
                "meta": {"role": "equity"},
                "hovertemplate": "%{y:,.2f}<extra>Bot</extra>",
            },
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Backtest expectation",
                "x": drift.timestamps,
                "y": num_list(drift.expected),
                "line": {"dash": "dot"},
                "meta": {"role": "benchmark"},
                "hovertemplate": "%{y:,.2f}<extra>Backtest</extra>",
            },
        ],
        "layout": _layout(
            title={"text": "Equity: live against the backtest"},
            yaxis={"title": {"text": "Equity"}, "tickformat": ",.2f"},
            height=320,
        ),
    }
    return figure, drift.gap_pct


def _num(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def bot_page_data(bot: LiveBot) -> dict:
    """Everything the bot page shows, as JSON (the page embeds it, then its script fetches it
    again from ``bot_state`` whenever the bot's socket reports a change)."""
    bot.refresh_from_db()
    mark = _mark_price(bot)
    equity = bot_equity(bot, mark) if mark is not None else None
    pnl = equity - bot.capital if equity is not None else None
    candles, (drift, gap) = _candles_figure(bot), _drift_figure(bot)
    orders = list(bot.orders.order_by("-bar_ts", "-pk")[:LIST_ROWS])
    resting = bot.orders.filter(
        action__in=BotOrder.RESTING_ACTIONS, state__in=BotOrder.OPEN_STATES
    ).order_by("pk")
    return {
        "id": bot.pk,
        "status": bot.status,
        "status_display": bot.get_status_display(),
        "reason": bot.status_reason,
        "symbol": bot.symbol,
        "position": _num(bot.position),
        "entry_price": _num(bot.entry_price),
        "cash": _num(bot.cash),
        "capital": _num(bot.capital),
        "mark": _num(mark),
        "equity": None if equity is None else f"{equity:.2f}",
        "pnl": None if pnl is None else f"{pnl:.2f}",
        "pnl_pct": None if pnl is None or not bot.capital else f"{pnl / bot.capital * 100:.2f}",
        "cursor": ms_iso(bot.cursor_ts) if bot.cursor_ts is not None else None,
        "gap_pct": None if gap is None else round(gap, 4),
        "candles_figure": candles,
        "drift_figure": drift,
        "orders": [order_json(o) for o in orders],
        "resting": [order_json(o) for o in resting],
        "fills": [order_json(o) for o in orders if o.filled > 0],
        "events": [event_json(e) for e in BotEvent.objects.filter(bot=bot)[:LIST_ROWS]],
    }


@pro_required
def bot_detail(request: HttpRequest, pk: int) -> HttpResponse:
    bot = bot_get(user=request.user, pk=pk)
    data = bot_page_data(bot)
    return render(
        request,
        "backtester/bots/detail.html",
        {
            "bot": bot,
            "data": data,
            "orders": bot_orders(bot=bot, limit=LIST_ROWS),
            "resting": data["resting"],
            "fills": [o for o in bot_orders(bot=bot, limit=LIST_ROWS) if o.filled > 0],
            "events": list(BotEvent.objects.filter(bot=bot)[:LIST_ROWS]),
            "order_states": BotOrder.State,
        },
    )


@pro_required
def bot_state(request: HttpRequest, pk: int) -> JsonResponse:
    """The bot page's data as JSON (owner only; 404 for anyone else)."""
    return JsonResponse(bot_page_data(bot_get(user=request.user, pk=pk)))


@pro_required
@require_http_methods(["GET", "POST"])
def bot_deploy_view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    backtest = backtest_get(user=request.user, pk=pk)
    status = 200
    if request.method == "POST":
        form = DeployForm(request.POST, user=request.user)
        if form.is_valid():
            try:
                bot = bot_deploy(
                    user=request.user, backtest=backtest, account=form.cleaned_data["account"]
                )
            except ApplicationError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                messages.success(request, "Bot started. It acts on the next closed candle.")
                return redirect("backtester:bot_detail", pk=bot.pk)
        status = 400
    else:
        form = DeployForm(user=request.user)
    return render(
        request, "backtester/bots/deploy.html", {"backtest": backtest, "form": form}, status=status
    )


def _lifecycle(action):
    @pro_required
    @require_POST
    def view(request: HttpRequest, pk: int) -> HttpResponse:
        bot = bot_get(user=request.user, pk=pk)
        try:
            action(user=request.user, bot=bot)
        except ApplicationError as exc:
            messages.error(request, exc.message)
        return redirect("backtester:bot_detail", pk=bot.pk)

    return view


bot_pause_view = _lifecycle(bot_pause)
bot_resume_view = _lifecycle(bot_resume)


@pro_required
@require_POST
def bot_stop_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Stop; the form's checkboxes ``cancel_orders`` and ``close_position`` ask for more."""
    bot = bot_get(user=request.user, pk=pk)
    cancel = request.POST.get("cancel_orders") in ("on", "1", "true")
    close = request.POST.get("close_position") in ("on", "1", "true")
    try:
        bot = bot_stop(user=request.user, bot=bot, cancel_orders=cancel, close_position=close)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        if close:
            last = bot.orders.filter(action="close").order_by("-pk").first()
            if last is not None and last.state == BotOrder.State.SKIPPED:
                messages.error(request, f"Stopped, but the position was not closed: {last.error}")
            elif last is not None and last.state == BotOrder.State.REJECTED:
                messages.error(request, f"Stopped, but the close was rejected: {last.error}")
            else:
                messages.success(request, "Stopped; the position was closed at market.")
        else:
            messages.success(request, "Stopped.")
    return redirect("backtester:bot_detail", pk=bot.pk)


urlpatterns = [
    path("bots/", bot_list, name="bot_list"),
    path("bots/<int:pk>/", bot_detail, name="bot_detail"),
    path("bots/<int:pk>/state/", bot_state, name="bot_state"),
    path("bots/<int:pk>/pause/", bot_pause_view, name="bot_pause"),
    path("bots/<int:pk>/start/", bot_resume_view, name="bot_resume"),
    path("bots/<int:pk>/stop/", bot_stop_view, name="bot_stop"),
    path("backtests/<int:pk>/deploy/", bot_deploy_view, name="bot_deploy"),
]
