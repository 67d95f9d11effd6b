from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination


class IdCursorPagination(CursorPagination):
    """Stable pages over growing tables: a cursor on the primary key, `?limit=` up to 1,000."""

    ordering = "id"
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000

    def decode_cursor(self, request):
        # DRF answers a cursor it cannot decode with 404; it is a bad query parameter (400 naming it).
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ValidationError({"cursor": ["Invalid cursor: pass back a `next` or `previous` link as given."]}) \
                from None
