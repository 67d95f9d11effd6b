"""Websocket routes, gathered from the apps that own each stream."""

websocket_urlpatterns = []
