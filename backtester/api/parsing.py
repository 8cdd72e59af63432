"""Input parsing shared by the API modules: a serializer's validated data, or a 400."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.request import Request


def validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    """Validate ``data`` with ``serializer_class``; field errors become the API's 400."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def validated_query(
    serializer_class: type[serializers.Serializer], request: Request
) -> dict[str, Any]:
    """The query parameters ``serializer_class`` declares, validated; others are ignored."""
    given = {k: v for k, v in request.query_params.items() if k in serializer_class().fields}
    return validated(serializer_class, given)
