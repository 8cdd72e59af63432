"""Keyword arguments typed by a ``TypedDict`` (``**args: Unpack[Spec]``): mypy checks the
callers, and ``only_known`` makes an unknown keyword fail at run time too, as it would for a
named parameter (Python itself accepts any keyword into ``**args``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def only_known(given: Mapping[str, Any], spec: Any, *, where: str) -> None:
    """``TypeError`` naming the keywords in ``given`` that ``spec`` (a TypedDict) does not
    declare: a caller's mistake, never silently ignored."""
    known = spec.__required_keys__ | spec.__optional_keys__
    unknown = sorted(set(given) - known)
    if unknown:
        raise TypeError(f"{where}() got unexpected keyword argument(s): {', '.join(unknown)}")
