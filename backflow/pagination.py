import re

from rest_framework.pagination import PageNumberPagination

from backflow.errors import InvalidInput


def _whole_number(raw):
    return re.fullmatch(r"[0-9]{1,9}", str(raw)) is not None and int(raw) >= 1


class Pagination(PageNumberPagination):
    """DRF's page numbers, but a malformed `page` or `page_size` is a 400 naming it (DRF answers
    404 "Invalid page." for the one and silently ignores the other); a page past the last stays 404."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_number(self, request, paginator):
        number = super().get_page_number(request, paginator)
        if number not in self.last_page_strings and not _whole_number(number):
            raise InvalidInput.single(self.page_query_param, "give a page number from 1 (or \"last\").")
        return number

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is not None and not _whole_number(raw):
            raise InvalidInput.single(self.page_size_query_param, f"give a whole number from 1 to {self.max_page_size}.")
        return super().get_page_size(request)
