"""Page views the backtester's run kinds share: the cancel button's endpoint, and sending the
user on after a service call that may be refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from accounts.gating import AuthenticatedHttpRequest, pro_required
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


def run_settings_form(
    request: HttpRequest,
    form_class: type[_Form],
    *,
    initial: Callable[[], dict[str, Any]],
    create: Callable[[_Form], Any],
    detail: str,
    error_field: Callable[[str | None], str | None] = lambda field: field,
) -> tuple[_Form, HttpResponse | None]:
    """A run's settings form: a GET fills it with ``initial()``; a valid POST makes the run with
    ``create(form)`` and answers with a redirect to its ``detail`` page, or puts the service's
    refusal on the form (on ``error_field(exc.field)`` when the form has that field)."""
    if request.method != "POST":
        return form_class(initial=initial()), None
    form = form_class(request.POST)
    if form.is_valid():
        try:
            run = create(form)
        except ApplicationError as exc:
            name = error_field(exc.field)
            form.add_error(name if name in form.fields else None, exc.message)
        else:
            return form, redirect(detail, pk=run.pk)
    return form, None
