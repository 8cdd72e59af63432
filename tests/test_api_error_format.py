"""The one API error format, including nested serializer errors."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError

from config.api import exception_handler
from config.exceptions import PlanRequired


def test_nested_field_errors_are_flattened_to_dotted_paths_with_plain_text():
    exc = ValidationError({"shocks": [{}, {"size": ["Must be below 100."]}], "name": ["Required."]})
    response = exception_handler(exc, {})
    assert response.status_code == 400
    error = response.data["error"]
    assert error["code"] == "invalid"
    assert error["fields"] == {"shocks.1.size": ["Must be below 100."], "name": ["Required."]}
    assert "ErrorDetail" not in str(response.data)
    assert error["message"] == "Must be below 100."


def test_application_errors_keep_their_status_code_and_field():
    response = exception_handler(PlanRequired("Upgrade to Pro."), {})
    assert response.status_code == 403
    assert response.data == {
        "error": {"code": "plan_required", "message": "Upgrade to Pro.", "fields": {}}
    }
