"""The client's one HTTP transport, in its asyncio form: requests, uploads, downloads and event streams.

`trainyard_client/_sync/transport.py` is generated from this file by
`scripts/generate_sync_client.py`; edit this file only, then run the script.
"""

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from trainyard_client.calls import (
    RECONNECT_ATTEMPTS,
    STREAM_READ_TIMEOUT_S,
    UPLOAD_READ_TIMEOUT_S,
    Call,
    Connection,
    EventParser,
    RunEvent,
    event_headers,
    headers,
)
from trainyard_client.errors import ApiUnreachable, error_from_response
from trainyard_client.packing import UploadBody

# A kept-alive connection that the server closed just as it was reused (httpx and uvicorn both
# drop idle ones after 5 s) fails before any answer; a read is safe to send once more.
RESENDABLE_METHODS = frozenset({"GET", "HEAD"})


class AsyncTransport:
    def __init__(self, connection: Connection, timeout: float) -> None:
        self.connection = connection
        self.http = httpx.AsyncClient(base_url=connection.url, timeout=timeout, headers=headers(connection.api_key))

    def _unreachable(self, what: str, error: Exception) -> ApiUnreachable:
        return ApiUnreachable(0, f"{what} {self.connection.url} ({self.connection.url_source}): {error}")

    async def send(self, call: Call) -> Any:
        """The answer's JSON; None for an answer without a body (204)."""
        response = await self.send_raw(call)
        return response.json() if response.content else None

    async def send_raw(self, call: Call) -> httpx.Response:
        for last_try in (False, True):
            try:
                response = await self.http.request(call.method, call.path, params=call.params, json=call.body)
                break
            except (httpx.RemoteProtocolError, httpx.ReadError) as error:
                if last_try or call.method not in RESENDABLE_METHODS:
                    raise self._unreachable("no answer from", error) from error
            except httpx.TransportError as error:
                raise self._unreachable("no answer from", error) from error
        if response.is_error:
            raise error_from_response(response)
        return response

    async def upload(self, call: Call, body: UploadBody, progress: Callable[[int, int], None] | None) -> Any:
        """Send `body` as the request's content, a chunk at a time; `progress(sent, total)` after each."""

        async def chunks() -> AsyncIterator[bytes]:
            for chunk in body.chunks(progress):
                yield chunk

        timeout = httpx.Timeout(self.http.timeout.connect, read=UPLOAD_READ_TIMEOUT_S)
        sent_headers = {"Content-Type": body.content_type, "Content-Length": str(body.size)}
        try:
            response = await self.http.request(
                call.method, call.path, params=call.params, content=chunks(), headers=sent_headers, timeout=timeout)
        except httpx.TransportError as error:
            raise self._unreachable("upload broke to", error) from error
        if response.is_error:
            raise error_from_response(response)
        return response.json()

    async def download(self, call: Call, dest: Path) -> Path:
        """Stream a binary answer into `dest`, whole or not at all."""
        partial = dest.with_name(f".{dest.name}.partial")
        try:
            async with self.http.stream(call.method, call.path, params=call.params) as response:
                if response.is_error:
                    await response.aread()
                    raise error_from_response(response)
                with partial.open("wb") as out:
                    async for block in response.aiter_bytes():
                        out.write(block)
            partial.replace(dest)
        except httpx.TransportError as error:
            raise self._unreachable("download broke from", error) from error
        finally:
            partial.unlink(missing_ok=True)
        return dest

    async def events(self, call: Call, last_event_id: str | None) -> AsyncGenerator[RunEvent]:
        """The stream's events, reconnecting after a dropped connection from the last event seen."""
        parser = EventParser(last_event_id)
        failures = 0
        while True:
            try:
                timeout = httpx.Timeout(self.http.timeout.connect, read=STREAM_READ_TIMEOUT_S)
                async with self.http.stream(call.method, call.path, params=call.params,
                                            headers=event_headers(parser.last_id), timeout=timeout) as response:
                    if response.is_error:
                        await response.aread()
                        raise error_from_response(response)
                    async for line in response.aiter_lines():
                        event = parser.feed(line)
                        if event is None:
                            continue
                        failures = 0
                        yield event
                        if event.event == "end":
                            return
                # Closed before `end` (an API restart, a proxy's timeout): resume where it stopped.
                failures += 1
                if failures > RECONNECT_ATTEMPTS:
                    raise ApiUnreachable(0, "event stream keeps closing before the run ends")
            except httpx.TransportError as error:
                failures += 1
                if failures > RECONNECT_ATTEMPTS:
                    raise self._unreachable("event stream lost from", error) from error
            await asyncio.sleep((parser.retry_ms or 1000) / 1000)

    async def close(self) -> None:
        await self.http.aclose()
