"""Streaming ingest over a websocket (`ws/telemetry/ingest`) for sources that keep a connection open.

The source authenticates with its token in the `Authorization: Bearer fdc_…` header of the handshake.
Each text frame is one batch, either the JSON batch format of `POST /api/v1/telemetry/samples` or
`{"format": "prometheus", "text": "…"}`; an optional `"id"` is echoed. Every frame gets one reply with the
same status and body the REST endpoints give (202, 400, 429, 503); a batch is accepted or rejected whole.

Close codes: 4401 missing or invalid token (also when the source is revoked or its token reissued while the
socket is open: the token is checked again every `TOKEN_RECHECK_S`), 1009 frame too large, 1013 buffer
unavailable (retry later).
"""

from __future__ import annotations

import json
import time

from channels.generic.websocket import WebsocketConsumer
from django.conf import settings
from django.core.cache import cache

from telemetry.buffer import BufferUnavailable
from telemetry.ingest import BatchRejected, ingest
from telemetry.models import Source
from telemetry.parsers import ParseError, ParseResult
from telemetry.parsers.json_batch import parse_json_batch
from telemetry.parsers.prometheus import parse_exposition

CLOSE_UNAUTHENTICATED = 4401
CLOSE_TOO_LARGE = 1009
CLOSE_TRY_AGAIN = 1013
# How long a revoked or reissued token may keep an open socket ingesting (REST refuses it at once); checking
# every frame would add a database read to each batch.
TOKEN_RECHECK_S = 5.0


def _token(scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            parts = value.decode("latin-1").split()
            if len(parts) == 2 and parts[0] == "Bearer":
                return parts[1]
    return None


class IngestStreamConsumer(WebsocketConsumer):
    # Each frame is answered on its own socket; no groups, so no channel-layer subscription to tear down
    # (an alias that names no layer gives None, as the live consumer does too).
    channel_layer_alias = "fusedc-ingest-stream-needs-no-channel-layer"

    def connect(self):
        self.token = _token(self.scope)
        self.source = Source.authenticate(self.token) if self.token else None
        if self.source is None:
            self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.token_checked_at = time.monotonic()
        self.accept()

    def _token_still_valid(self) -> bool:
        if time.monotonic() - self.token_checked_at < TOKEN_RECHECK_S:
            return True
        source = Source.authenticate(self.token)
        if source is None:
            return False
        self.source, self.token_checked_at = source, time.monotonic()
        return True

    def _allowed(self) -> bool:
        """The source's per-minute budget, shared with its REST requests' limit."""
        limit = self.source.rate_limit_per_minute
        if not limit:
            return True
        key = f"fusedc:stream-rate:{self.source.pk}:{int(time.time() // 60)}"
        cache.add(key, 0, timeout=120)
        return cache.incr(key) <= limit

    def receive(self, text_data=None, bytes_data=None):
        if not self._token_still_valid():
            self.close(code=CLOSE_UNAUTHENTICATED)  # this frame is not accepted; nothing before it is lost
            return
        raw = text_data if text_data is not None else (bytes_data or b"").decode("utf-8", errors="replace")
        if len(raw.encode()) > settings.TELEMETRY_MAX_BODY_BYTES:
            self.close(code=CLOSE_TOO_LARGE)
            return
        try:
            frame = json.loads(raw)
        except json.JSONDecodeError as exc:
            self._reply(None, 400, {"code": "invalid_batch", "message": f"not JSON: {exc.msg} at char {exc.pos}"})
            return
        frame_id = frame.pop("id", None) if isinstance(frame, dict) else None
        if not self._allowed():
            self._reply(frame_id, 429, {"code": "rate_limited", "message": "rate limit of this source exceeded"})
            return
        parsed = self._parse(frame)
        try:
            report = ingest(self.source, parsed)
        except BatchRejected as exc:
            errors = [
                {"line": e.line, "reason": e.reason} if e.line is not None else {"item": e.path, "reason": e.reason}
                for e in exc.errors[:100]
            ]
            self._reply(frame_id, 400, {"code": "invalid_batch", "message": f"{len(exc.errors)} problem(s); nothing "
                                        "in this batch was accepted", "errors": errors})
            return
        except BufferUnavailable as exc:
            self._reply(frame_id, 503, {"code": exc.code, "message": exc.message})
            self.close(code=CLOSE_TRY_AGAIN)
            return
        self._reply(frame_id, 202, report.as_dict())

    @staticmethod
    def _parse(frame) -> ParseResult:
        if isinstance(frame, dict) and frame.get("format") == "prometheus":
            text = frame.get("text")
            if not isinstance(text, str):
                result = ParseResult()
                result.errors.append(ParseError("'text' must be the exposition text", path="text"))
                return result
            return parse_exposition(text, default_timestamp=time.time())
        return parse_json_batch(frame)

    def _reply(self, frame_id, status: int, body: dict):
        self.send(text_data=json.dumps({"id": frame_id, "status": status, **body}))
