"""Request parsers of the API (a module of its own: DRF reads DEFAULT_PARSER_CLASSES while
``rest_framework.views`` is being imported, so this module must not import views)."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, parsers


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, except that a body nested too deeply for Python's parser (50,000
    levels of ``[``) is a 400 parse error instead of a RecursionError."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(
                "JSON parse error - the body is nested too deeply."
            ) from None
