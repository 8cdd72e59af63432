from django.http import HttpResponse
from django.template import engines
from django.urls import include, path

from backtester.models import Backtest
from backtester.views.results import results_context

TPL = engines["django"].from_string(
    '{% extends "base.html" %}{% block content %}<h1>{{ b }}</h1>{% include "backtester/results/_results.html" %}{% endblock %}'
)


def page(request, pk):
    b = Backtest.objects.get(pk=pk)
    ctx = {"b": b, **results_context(b)}
    return HttpResponse(TPL.render(ctx, request))


urlpatterns = [path("scratch/<int:pk>/", page), path("", include("config.urls"))]
