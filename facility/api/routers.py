"""Routers for every app's API: object ids in paths are integers (slugs where a viewset says so).

DRF's default lookup pattern takes anything up to the next slash, so `/setpoint-changes/null,null/approve/`
reached a view and failed converting 'null,null' to an id (a 500). With ids matched as digits such a path is
a 404 from the URL resolver, answered in the API's error body (config.urls.handler404)."""

from rest_framework import routers


class IdLookupMixin:
    def get_lookup_regex(self, viewset, lookup_prefix=""):
        if getattr(viewset, "lookup_field", "pk") in ("pk", "id") and not hasattr(viewset, "lookup_value_regex"):
            lookup_url_kwarg = getattr(viewset, "lookup_url_kwarg", None) or "pk"
            return f"(?P<{lookup_prefix}{lookup_url_kwarg}>[0-9]+)"
        return super().get_lookup_regex(viewset, lookup_prefix)


class DefaultRouter(IdLookupMixin, routers.DefaultRouter):
    pass


class SimpleRouter(IdLookupMixin, routers.SimpleRouter):
    pass
