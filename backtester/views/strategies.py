"""Strategy pages: list, create (from a preset or blank), edit, delete, and the JSON endpoint
the editor calls as the user types to check one rule."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.forms import formset_factory
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_http_methods, require_POST

from accounts.gating import AuthenticatedHttpRequest, pro_required
from backtester.engine.errors import StrategyError
from backtester.engine.language import BUILTIN_COLUMNS, FUNCTIONS, PRESETS, RULES, Param
from backtester.forms.strategies import ParamForm, StrategyForm
from backtester.models import Strategy
from backtester.selectors.strategies import strategies_for, strategy_get
from backtester.services.strategies import (
    PARAMS_MAX,
    param_to_dict,
    preset_label,
    rule_check,
    strategy_create,
    strategy_delete,
    strategy_update,
    user_columns,
)
from config.exceptions import ApplicationError

ParamFormSet = formset_factory(ParamForm, extra=0, can_delete=True, max_num=PARAMS_MAX)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _param_initial(params: list[dict[str, Any]], values: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {
            "name": p["name"],
            "kind": p["kind"],
            "default": _text(p.get("default")),
            "low": _text(p.get("low")),
            "high": _text(p.get("high")),
            "step": _text(p.get("step")),
            "value": _text(values.get(p["name"], p.get("default"))),
            "description": p.get("description") or "",
        }
        for p in params
    ]


def _initial_for_preset(name: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    spec = PRESETS[name]
    initial = {"name": preset_label(name), "description": spec.description, **spec.rules}
    params = [param_to_dict(p) for p in spec.params]
    return initial, _param_initial(params, spec.defaults())


def _collect(formset: Any) -> tuple[list[dict[str, str]], dict[str, str]]:
    params: list[dict[str, str]] = []
    values: dict[str, str] = {}
    for form in formset.forms:
        data = form.cleaned_data
        if not data or data.get("DELETE") or form.is_blank():
            continue
        row = {k: str(data.get(k) or "").strip() for k in ParamForm.base_fields if k != "value"}
        params.append(row)
        value = str(data.get("value") or "").strip()
        if value and row["name"]:
            values[row["name"]] = value
    return params, values


def _show_error(form: StrategyForm, formset: Any, exc: ApplicationError) -> None:
    if exc.field in form.fields:
        form.add_error(exc.field, exc.message)
    elif exc.field in ("params", "param_values"):
        # Shown above the parameter table; the message names the parameter.
        formset.non_form_errors().append(exc.message)
    else:
        form.add_error(None, exc.message)


def _help_context(request: AuthenticatedHttpRequest) -> dict[str, Any]:
    functions = sorted(FUNCTIONS.values(), key=lambda f: f.name)
    return {
        "functions": [{"name": f.name, "signature": f.signature, "doc": f.doc} for f in functions],
        "columns": list(BUILTIN_COLUMNS),
        "extra_columns": list(user_columns(request.user)),
    }


def _editor(
    request: AuthenticatedHttpRequest, *, strategy: Strategy | None, preset: str = ""
) -> HttpResponse:
    if request.method == "POST":
        form = StrategyForm(request.POST)
        formset = ParamFormSet(request.POST, prefix="param")
        if form.is_valid() and formset.is_valid():
            params, values = _collect(formset)
            fields = {k: form.cleaned_data[k] for k in ("name", "description", *RULES)}
            given = {"user": request.user, "params": params, "param_values": values, **fields}
            try:
                if strategy is None:
                    saved, done = strategy_create(preset=preset, **given), "created"
                else:
                    saved, done = strategy_update(strategy=strategy, **given), "saved"
                messages.success(request, f"Strategy “{saved.name}” {done}.")
                return redirect("backtester:strategy_edit", pk=saved.pk)
            except ApplicationError as exc:
                _show_error(form, formset, exc)
        status = 400
    else:
        status = 200
        if strategy is not None:
            form = StrategyForm(
                initial={
                    "name": strategy.name,
                    "description": strategy.description,
                    **{rule: getattr(strategy, rule) for rule in RULES},
                }
            )
            rows = _param_initial(strategy.params or [], strategy.param_values or {})
        elif preset:
            initial, rows = _initial_for_preset(preset)
            form = StrategyForm(initial=initial)
        else:
            form = StrategyForm(initial={"name": "My strategy"})
            rows = []
        formset = ParamFormSet(initial=rows, prefix="param")
    context = {
        "form": form,
        "formset": formset,
        "strategy": strategy,
        "preset": preset or (strategy.preset if strategy else ""),
        "preset_label": preset_label(preset) if preset else "",
        "rules": [form[rule] for rule in RULES],
        **_help_context(request),
    }
    return render(request, "backtester/strategies/form.html", context, status=status)


@pro_required
def strategy_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    return render(
        request,
        "backtester/strategies/list.html",
        {"strategies": strategies_for(request.user)},
    )


@pro_required
@require_http_methods(["GET", "POST"])
def strategy_create_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    preset = request.POST.get("preset") or request.GET.get("preset") or ""
    if preset and preset not in PRESETS:
        messages.error(request, f"There is no preset called “{preset}”.")
        return redirect("backtester:strategy_create")
    if request.method == "GET" and not preset and "blank" not in request.GET:
        presets = [
            {"name": name, "label": preset_label(name), "spec": spec}
            for name, spec in PRESETS.items()
        ]
        return render(request, "backtester/strategies/choose.html", {"presets": presets})
    return _editor(request, strategy=None, preset=preset)


@pro_required
@require_http_methods(["GET", "POST"])
def strategy_edit(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    return _editor(request, strategy=strategy_get(user=request.user, pk=pk))


@pro_required
@require_http_methods(["GET", "POST"])
def strategy_delete_view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    strategy = strategy_get(user=request.user, pk=pk)
    if request.method == "POST":
        name = strategy.name
        strategy_delete(user=request.user, strategy=strategy)
        messages.success(request, f"Strategy “{name}” deleted. Its backtests are kept.")
        return redirect("backtester:strategy_list")
    return render(
        request,
        "backtester/strategies/delete.html",
        {"strategy": strategy, "backtest_count": strategy.backtests.count()},
    )


def _declared(raw: Any) -> list[Param | str]:
    """The editor's parameter rows as the language sees them. Rows that are not valid
    declarations yet still count as names (as ints), so a half-typed parameter table does not
    turn every rule red."""
    out: list[Param | str] = []
    if not isinstance(raw, list):
        return out
    for row in raw[:PARAMS_MAX]:
        if isinstance(row, str):
            out.append(row)
            continue
        if not isinstance(row, dict):
            continue
        name = str(row.get("name") or "").strip()
        kind = str(row.get("kind") or "int")
        if not name:
            continue
        default: Any = {"int": 1, "float": 1.0, "bool": False}.get(kind, 1)
        try:
            # (type: ignore below) an unknown kind is refused by Param (StrategyError below)
            out.append(Param(name, kind, default))  # type: ignore[arg-type]
        except StrategyError:
            out.append(name)
    return out


@pro_required
@require_POST
def strategy_validate(request: AuthenticatedHttpRequest) -> JsonResponse:
    """Check one rule as the user types: POST ``expression``, ``field`` (the rule) and
    ``params`` (JSON list of {name, kind}); answers ``{ok, message, col, field}``."""
    payload: dict[str, Any]  # JSON values, or the form's strings plus the parsed params
    if request.content_type == "application/json":
        try:
            payload = json.loads(request.body or b"{}")
        except ValueError:
            return JsonResponse({"ok": False, "message": "The request is not JSON."}, status=400)
        if not isinstance(payload, dict):
            payload = {}
    else:
        payload = {**request.POST.dict()}
        try:
            payload["params"] = json.loads(payload.get("params") or "[]")
        except ValueError:
            payload["params"] = []
    expression = str(payload.get("expression") or "")
    field = str(payload.get("field") or "")
    if field not in RULES:
        return JsonResponse(
            {"ok": False, "message": "field must be one of " + ", ".join(RULES), "col": None},
            status=400,
        )
    try:
        rule_check(
            expression=expression,
            field=field,
            params=_declared(payload.get("params")),
            columns=user_columns(request.user),
        )
    except ApplicationError as exc:
        col = (exc.extra or {}).get("col") if isinstance(exc.extra, dict) else None
        return JsonResponse({"ok": False, "message": exc.message, "col": col, "field": field})
    return JsonResponse({"ok": True, "message": "", "col": None, "field": field})


urlpatterns = [
    path("strategies/", strategy_list, name="strategy_list"),
    path("strategies/new/", strategy_create_view, name="strategy_create"),
    path("strategies/validate/", strategy_validate, name="strategy_validate"),
    path("strategies/<int:pk>/", strategy_edit, name="strategy_edit"),
    path("strategies/<int:pk>/delete/", strategy_delete_view, name="strategy_delete"),
]
