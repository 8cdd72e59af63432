"""The one domain error type. Services raise it; views, the API and tasks turn it into a
message, a 4xx response or a failed status in one place each."""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """A request that cannot be carried out as asked. Nothing was changed.

    ``field`` names the form/API field at fault (None for the whole request); ``status`` is the
    HTTP status the API answers with (400 unless a subclass says otherwise).
    """

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None, extra: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra


class PermissionDenied(ApplicationError):
    status = 403
    code = "permission_denied"


class PlanRequired(ApplicationError):
    """The user's plan does not include this feature (or this much of it)."""

    status = 403
    code = "plan_required"


class NotFound(ApplicationError):
    status = 404
    code = "not_found"


class Conflict(ApplicationError):
    status = 409
    code = "conflict"
