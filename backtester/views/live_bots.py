"""Live bot pages: my bots, one bot (position, P&L, orders), Deploy from a backtest, and
pause / start / stop. Pro only; another user's bot or backtest is a 404."""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_http_methods, require_POST

from accounts.gating import pro_required
from backtester.engine.candles import timeframe_ms
from backtester.models import LiveBot
from backtester.selectors.backtests import backtest_get
from backtester.selectors.live_bots import bot_get, bot_orders, bots_for
from backtester.services.live_bots import bot_deploy, bot_equity, bot_pause, bot_resume, bot_stop
from config.exceptions import ApplicationError
from exchanges.models import ExchangeAccount


class DeployForm(forms.Form):
    account = forms.ModelChoiceField(
        queryset=ExchangeAccount.objects.none(),
        label="Account",
        help_text="Paper or real; the account must be able to trade.",
    )

    def __init__(self, *args, user, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.fields["account"].queryset = ExchangeAccount.objects.filter(owner=user)  # type: ignore[attr-defined]


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


@pro_required
def bot_detail(request: HttpRequest, pk: int) -> HttpResponse:
    bot = bot_get(user=request.user, pk=pk)
    mark = _mark_price(bot)
    equity = bot_equity(bot, mark) if mark is not None else None
    pnl = equity - bot.capital if equity is not None else None
    return render(
        request,
        "backtester/bots/detail.html",
        {
            "bot": bot,
            "orders": bot_orders(bot=bot),
            "mark": mark,
            "equity": equity,
            "pnl": pnl,
        },
    )


@pro_required
@require_http_methods(["GET", "POST"])
def bot_deploy_view(request: HttpRequest, pk: int) -> HttpResponse:
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


def _lifecycle(action):  # type: ignore[no-untyped-def]
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
bot_stop_view = _lifecycle(bot_stop)

urlpatterns = [
    path("bots/", bot_list, name="bot_list"),
    path("bots/<int:pk>/", bot_detail, name="bot_detail"),
    path("bots/<int:pk>/pause/", bot_pause_view, name="bot_pause"),
    path("bots/<int:pk>/start/", bot_resume_view, name="bot_resume"),
    path("bots/<int:pk>/stop/", bot_stop_view, name="bot_stop"),
    path("backtests/<int:pk>/deploy/", bot_deploy_view, name="bot_deploy"),
]
