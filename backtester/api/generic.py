"""View building blocks the backtester's API modules share: a paginated list of JSON rows, and
the one-object endpoints (read one run, cancel one run) that every run kind repeats.

The factories return ordinary DRF views documented with ``extend_schema``; each takes the
run kind's own loader (``*_get(user=, pk=)``), its JSON builder and its schema texts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.gating import AuthenticatedRequest

Loader = Callable[..., Any]
QUEUED = "Queued; poll links.self."
ToJson = Callable[[Request, Any], dict[str, Any]]


class JsonListView(ListAPIView):
    # A list whose page holds ``row_json(request, obj)`` for each object of the queryset (a
    # subclass sets it: a method, or a module's builder as a staticmethod). No docstring: the
    # schema would take it as every subclass's description.

    request: AuthenticatedRequest
    row_json: Callable[..., dict[str, Any]]

    def json_page(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset()) or []
        return self.get_paginated_response([self.row_json(request, obj) for obj in page])


def write_schema(request: Any, responses: Any, summary: str) -> Any:
    """The schema of a write: the body ``request`` takes, the answer it gives."""
    return extend_schema(request=request, responses=responses, summary=summary)


def queue_schema(request: Any, run: Any, refused: Any, summary: str) -> Any:
    """The schema of a POST that queues a run: 202 with the run, or 409 ``refused``."""
    queued = OpenApiResponse(run, description=QUEUED)
    return write_schema(request, {202: queued, 409: refused}, summary)


@dataclass(frozen=True)
class RunKind:
    """How the API finds one of my objects of a kind and shows it."""

    tags: list[str]
    load: Loader  # ``*_get(user=, pk=)``: mine, or a 404
    to_json: ToJson
    noun: str = "job"  # the keyword the kind's services take the object by


def detail_view(kind: RunKind, responses: Any, summary: str) -> type[APIView]:
    """GET <pk>/: one of my objects as the kind shows it."""

    @extend_schema(tags=kind.tags)
    class DetailView(APIView):
        @extend_schema(responses=responses, summary=summary)
        def get(self, request: AuthenticatedRequest, pk: int) -> Response:
            return Response(kind.to_json(request, kind.load(user=request.user, pk=pk)))

    return DetailView


def cancel_view(
    kind: RunKind, cancel: Callable[..., Any], responses: Any, summary: str
) -> type[APIView]:
    """POST <pk>/cancel/: the kind's ``cancel`` service on one of my objects, answered with the
    object as the kind shows it."""

    @extend_schema(tags=kind.tags)
    class CancelView(APIView):
        @extend_schema(request=None, responses=responses, summary=summary)
        def post(self, request: AuthenticatedRequest, pk: int) -> Response:
            found = kind.load(user=request.user, pk=pk)
            done = cancel(user=request.user, **{kind.noun: found})
            return Response(kind.to_json(request, done))

    return CancelView
