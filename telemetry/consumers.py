"""Websocket consumers of the telemetry app: the live feed of one facility (`ws/facilities/<slug>/live`).

Authentication is the Django session (config/asgi.py wraps routes in AuthMiddlewareStack). The socket is
accepted first and then closed with an application code, so a browser can tell why:
4401 not signed in, 4403 no `telemetry.view_gpusample`, 4404 no such site. The permission is checked again
before every message forwarded, against the database at most every PERMISSION_TTL seconds, so removing a
user's role (or deactivating them) ends their live feed within that time.

Messages come from this process's broadcaster for the site (telemetry/live.py), never one per sample.
"""

from __future__ import annotations

import asyncio
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth import get_user_model

from telemetry import live

PERMISSION = "telemetry.view_gpusample"
PERMISSION_TTL = 5.0
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


@database_sync_to_async
def _still_allowed(user_id: int) -> bool:
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    return bool(user and user.has_perm(PERMISSION))


@database_sync_to_async
def _site(slug: str):
    from facility.models import Site

    return Site.objects.filter(slug=slug).values_list("pk", "slug").first()


class FacilityLiveConsumer(AsyncWebsocketConsumer):
    # Ticks come from this process's broadcaster, not through the channel layer: no layer channel (and no
    # blocking Redis read) per socket.
    channel_layer_alias = "fusedc-live-needs-no-channel-layer"
    broadcaster = None
    subscriber = None
    sender: asyncio.Task | None = None

    async def connect(self):
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user_id = user.pk
        if not await _still_allowed(self.user_id):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.checked_at = time.monotonic()
        site = await _site(self.scope["url_route"]["kwargs"]["site_slug"])
        if site is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.broadcaster, self.subscriber = await live.subscribe(*site)
        self.sender = asyncio.create_task(self._forward())

    async def _allowed(self) -> bool:
        if time.monotonic() - self.checked_at > PERMISSION_TTL:
            if not await _still_allowed(self.user_id):
                return False
            self.checked_at = time.monotonic()
        return True

    async def _forward(self):
        while True:
            text = await self.subscriber.queue.get()
            if not await self._allowed():
                await self.close(code=CLOSE_FORBIDDEN)
                self._leave()
                return
            await self.send(text_data=text)

    def _leave(self):
        if self.broadcaster is not None:
            live.unsubscribe(self.broadcaster, self.subscriber)
            self.broadcaster = None

    async def receive(self, text_data=None, bytes_data=None):
        """The feed is one-way; clients resync over REST (or by reconnecting for a fresh hello)."""

    async def disconnect(self, code):
        if self.sender is not None and self.sender is not asyncio.current_task():
            self.sender.cancel()
        self._leave()
