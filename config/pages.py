"""Small pieces the apps' HTML views share."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def render_form(request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
    """A form page: 400 when a POST comes back to it (invalid or refused), else 200."""
    return render(request, template, context, status=400 if request.method == "POST" else 200)
