"""Page views the backtester's run kinds share: the cancel button's endpoint, sending the user
on after a service call that may be refused, and the settings form of a run made from a
backtest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django import forms
from django.contrib import messages
from django.http import HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.gating import AuthenticatedHttpRequest, pro_required
from backtester.models import Backtest
from backtester.selectors.backtests import backtest_symbols
from config.exceptions import ApplicationError
from config.runs.views import cancel_response

_Form = TypeVar("_Form", bound=forms.Form)


def run_cancel_view(
    load: Callable[..., Any],
    cancel: Callable[..., Any],
    state: Callable[[Any], dict[str, Any]],
    *,
    label: str,
    noun: str = "job",
) -> Callable[..., HttpResponseBase]:
    """POST <pk>/cancel/ of a run kind: ``load(user=, pk=)`` finds my run (or a 404), the
    kind's ``cancel(user=, <noun>=)`` service cancels it and ``cancel_response`` answers. The
    run's page is named after ``label`` ("Walk-forward": ``backtester:walkforward_detail``)."""

    def view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
        run = load(user=request.user, pk=pk)
        return cancel_response(
            request,
            cancel=lambda: cancel(user=request.user, **{noun: run}),
            state=state,
            detail=f"backtester:{label.lower().replace('-', '')}_detail",
            pk=run.pk,
            label=label,
        )

    return pro_required(require_POST(view))


def redirect_after(
    request: AuthenticatedHttpRequest,
    call: Callable[[], Any],
    to: str,
    back: str,
    **back_kwargs: Any,
) -> HttpResponse:
    """Run ``call()`` (a service that makes something) and show what it made at ``to``; a
    refusal becomes an error message on the ``back`` page."""
    try:
        made = call()
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect(back, **back_kwargs)
    return redirect(to, pk=made.pk)


def backtest_run_form_page(
    request: AuthenticatedHttpRequest,
    backtest: Backtest,
    form_class: type[_Form],
    *,
    initial: Callable[[], dict[str, Any]],
    create: Callable[[_Form], Any],
    detail: str,
    template: str,
    runs: Callable[[Any, Backtest], Any],
    context: Callable[[], dict[str, Any]],
    error_field: Callable[[str | None], str | None] = lambda field: field,
) -> HttpResponse:
    """The page that makes a run of ``backtest`` from a settings form: a GET fills the form with
    ``initial()``; a valid POST makes the run with ``create(form)`` and answers with a redirect
    to its ``detail`` page, or puts the service's refusal on the form (on
    ``error_field(exc.field)`` when the form has that field). Otherwise ``template`` shows the
    form (a 400 after a POST) with the backtest, its latest twenty ``runs(user, backtest)`` and
    the kind's own ``context()``."""
    if request.method != "POST":
        form = form_class(initial=initial())
    else:
        form = form_class(request.POST)
        if form.is_valid():
            try:
                run = create(form)
            except ApplicationError as exc:
                name = error_field(exc.field)
                form.add_error(name if name in form.fields else None, exc.message)
            else:
                return redirect(detail, pk=run.pk)
    return render(
        request,
        template,
        {
            "backtest": backtest,
            "symbols": backtest_symbols(backtest),
            "form": form,
            "completed": backtest.status == Backtest.Status.COMPLETED,
            **context(),
            "runs": list(runs(request.user, backtest)[:20]),
        },
        status=400 if request.method == "POST" else 200,
    )
