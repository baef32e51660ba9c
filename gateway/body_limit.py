"""ASGI middleware: each route's request-body limit, enforced before the body is read.

A declared Content-Length over the limit is answered 413 at once, without reading a byte; a chunked body
(no Content-Length) is counted as it arrives and refused as soon as it goes over. JSON routes get a small
limit (GatewaySettings.max_json_body_bytes); only the upload route gets the large one.

The 413 does not ask to close the connection: uvicorn then discards whatever the client still sends instead
of resetting the socket, which could destroy the 413 before a client busy sending has read it.
"""

from __future__ import annotations

import json
from typing import Callable

from schemas.errors import RequestTooLarge


class BodyLimit:
    def __init__(self, app, limit_for: Callable[[str], int]):
        """limit_for: the route path (without any root_path) -> its body limit in bytes."""
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(_route_path(scope))
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.strip().isdigit() and int(declared) > limit:
            return await _refuse(send, limit)
        received = 0
        refused = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _OverLimit
            return message

        async def guarded_send(message):
            # Whatever the app answers once the body went over the limit (FastAPI turns the interrupted read
            # into a 400) is replaced by one 413 naming the limit.
            nonlocal refused
            if received <= limit:
                return await send(message)
            if not refused:
                refused = True
                await _refuse(send, limit)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _OverLimit:
            if not refused:
                await _refuse(send, limit)


class _OverLimit(Exception):
    pass


def _route_path(scope) -> str:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


async def _refuse(send, limit: int) -> None:
    error = RequestTooLarge(f"The request body is over this route's {limit:,}-byte limit.")
    body = json.dumps({"error": {"code": error.code, "message": error.message}}).encode()
    await send({"type": "http.response.start", "status": error.http_status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
