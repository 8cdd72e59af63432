"""Errors raised by the pure engine. The web app maps them onto its own ApplicationError."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on bad input."""


class CandleError(EngineError):
    """Candles that break a validation rule. ``row`` is the 0-based index of the first bad row."""

    def __init__(self, reason: str, *, row: int | None = None) -> None:
        self.reason = reason
        self.row = row
        super().__init__(reason if row is None else f"row {row}: {reason}")


class StrategyError(EngineError):
    """A strategy expression or parameter that cannot be compiled.

    ``col`` is the 0-based character offset in ``expression`` where the problem is, when known;
    ``field`` names which rule (entry_long, exit_long, ...) or parameter it belongs to.
    """

    def __init__(
        self,
        message: str,
        *,
        col: int | None = None,
        expression: str | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.col = col
        self.expression = expression
        self.field = field
        where = "" if col is None else f" (column {col + 1})"
        prefix = "" if field is None else f"{field}: "
        super().__init__(f"{prefix}{message}{where}")


class ConfigError(EngineError):
    """A simulation setting that is out of range or inconsistent."""
