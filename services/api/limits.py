"""Refuse request bodies over a size limit before reading them (413, as a problem)."""

import json
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.errors import PROBLEM_JSON


class BodySizeLimit:
    """Pure ASGI middleware: checks Content-Length up front and counts chunked bodies as they arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int, own_limit: Callable[[Scope], bool] = lambda scope: False) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Requests that enforce a limit of their own while streaming (a dataset upload).
        self.own_limit = own_limit

    def _too_large(self) -> str:
        return f"request body larger than {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.own_limit(scope):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI lets an HTTPException raised while reading the body through to the
                    # problem handler, which answers 413.
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, counting_receive, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = json.dumps({"type": "about:blank", "title": "Content Too Large", "status": 413,
                           "detail": self._too_large(), "instance": scope.get("path", "")}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
