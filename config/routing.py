"""Websocket routes, gathered from the apps that own each stream."""

from django.urls import path

from telemetry.consumers import FacilityLiveConsumer
from telemetry.stream import IngestStreamConsumer

# Sources authenticate with their own tokens, not cookies: no origin check (they are not browsers).
token_websocket_urlpatterns = [
    path("ws/telemetry/ingest", IngestStreamConsumer.as_asgi()),
]
# Browser streams: session-authenticated, so only from this site's origins.
websocket_urlpatterns = [
    path("ws/facilities/<slug:site_slug>/live", FacilityLiveConsumer.as_asgi()),
]
