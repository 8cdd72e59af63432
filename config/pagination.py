"""The one page shape of every API list: {"count", "next", "previous", "results"}.

``?page=`` picks a page (past the end: 404 in the error format); ``?page_size=`` changes its
length up to ``max_page_size``. A list with longer rows or a different default (trades) subclasses
this and changes only the numbers.
"""

from __future__ import annotations

from rest_framework.pagination import PageNumberPagination


class ApiPagination(PageNumberPagination):
    # page_size: REST_FRAMEWORK["PAGE_SIZE"] (50)
    page_size_query_param = "page_size"
    max_page_size = 500
