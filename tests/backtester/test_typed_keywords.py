"""Services that take ``**args: Unpack[<TypedDict>]`` refuse an unknown keyword at run time, as
a named parameter would, before anything is read or written (mypy catches it in typed code;
this is for the rest)."""

from __future__ import annotations

import pytest

from backtester.services.marketdata import series_upload, upload_job_create
from backtester.services.optimization import optimization_create, research_request
from backtester.services.scan_watchlists import watchlist_update
from config.kwargs import only_known

RESEARCH = {"user": None, "strategy": None, "series": None}
UPLOAD = {"owner": None, "file": None, "filename": "x.csv", "symbol": "BTC/USDT"}


@pytest.mark.parametrize(
    ("service", "given", "name"),
    [
        (research_request, {**RESEARCH, "sead": 1}, "research_request"),
        (optimization_create, {**RESEARCH, "sead": 1}, "research_request"),
        (series_upload, {**UPLOAD, "exchnge": "x"}, "upload"),
        (upload_job_create, {**UPLOAD, "exchnge": "x"}, "upload"),
        (watchlist_update, {"user": None, "watchlist": None, "nmae": "x"}, "watchlist_update"),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
@pytest.mark.django_db
def test_an_unknown_keyword_is_refused_by_name(service, given, name):
    with pytest.raises(TypeError, match=rf"{name}\(\) got unexpected keyword argument\(s\): "):
        service(**given)


def test_only_known_names_every_unknown_keyword_and_accepts_optional_ones():
    from typing import NotRequired, TypedDict

    class Spec(TypedDict):
        a: int
        b: NotRequired[int]

    only_known({"a": 1, "b": 2}, Spec, where="f")
    only_known({}, Spec, where="f")  # missing keys are the type checker's business
    with pytest.raises(TypeError, match=r"f\(\) got unexpected keyword argument\(s\): c, d$"):
        only_known({"a": 1, "d": 0, "c": 0}, Spec, where="f")
