"""Input parsing shared by the API modules: a serializer's validated data, or a 400."""

from __future__ import annotations

from typing import Any

from django.core.validators import MaxValueValidator, MinValueValidator
from rest_framework import serializers
from rest_framework.request import Request

from config.exceptions import ApplicationError

# Every whole number the API takes fits a signed 64-bit integer (database ids, seeds, counts):
# a larger one is a 400 on its field, never an overflow further down.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def optional_int(help_text: str, *, low: int = 1, high: int | None = None) -> Any:
    """A whole number from ``low`` the client may leave out or send as null (then None)."""
    absent: dict[str, Any] = {"required": False, "allow_null": True, "default": None}
    return serializers.IntegerField(min_value=low, max_value=high, help_text=help_text, **absent)


def optional_seed(help_text: str) -> Any:
    """A random seed: a non-negative 64-bit number, or null for a random one."""
    return optional_int(help_text, low=0, high=INT64_MAX)


def bound_integers(field: serializers.Field) -> None:
    """Give every IntegerField under ``field`` (a serializer, list or dict field) the signed
    64-bit bounds it does not already have."""
    if isinstance(field, serializers.IntegerField):
        if field.max_value is None or field.max_value > INT64_MAX:
            field.max_value = INT64_MAX
            message = field.error_messages["max_value"].format(max_value=INT64_MAX)
            field.validators.append(MaxValueValidator(INT64_MAX, message=message))
        if field.min_value is None or field.min_value < INT64_MIN:
            field.min_value = INT64_MIN
            message = field.error_messages["min_value"].format(min_value=INT64_MIN)
            field.validators.append(MinValueValidator(INT64_MIN, message=message))
    elif isinstance(field, serializers.Serializer):
        for child in field.fields.values():
            bound_integers(child)
    elif (
        isinstance(
            field, serializers.ListField | serializers.DictField | serializers.ListSerializer
        )
        and field.child is not None
    ):
        bound_integers(field.child)


def checked(serializer: serializers.Serializer) -> dict[str, Any]:
    """``serializer``'s validated data (integers bounded, see ``bound_integers``) or a 400."""
    bound_integers(serializer)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    """Validate ``data`` with ``serializer_class``; field errors become the API's 400."""
    return checked(serializer_class(data=data))


def validated_query(
    serializer_class: type[serializers.Serializer], request: Request
) -> dict[str, Any]:
    """The query parameters ``serializer_class`` declares, validated; others are ignored."""
    given = {k: v for k, v in request.query_params.items() if k in serializer_class().fields}
    return validated(serializer_class, given)


def require_fields(data: dict[str, Any], *names: str) -> None:
    """A 400 on the first of ``names`` the validated ``data`` lacks (for a create or a PUT)."""
    for name in names:
        if name not in data:
            raise ApplicationError("This field is required.", field=name)
