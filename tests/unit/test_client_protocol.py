"""The client's reading of the API: problem details into typed errors, server-sent events into events."""

import httpx
import pytest

from trainyard_client import (
    AuthenticationError,
    ConflictError,
    InvalidRequest,
    NotFoundError,
    PermissionDenied,
    ServerError,
    TrainyardError,
    error_from_response,
)
from trainyard_client.calls import EventParser


@pytest.mark.parametrize(("status", "kind"), [(401, AuthenticationError), (403, PermissionDenied),
                                              (404, NotFoundError), (409, ConflictError), (413, InvalidRequest),
                                              (422, InvalidRequest), (502, ServerError), (418, TrainyardError)])
def test_problems_become_typed_errors_with_the_apis_message(status: int, kind: type[TrainyardError]) -> None:
    body = {"title": "t", "status": status, "detail": "epochs: must be at least 1",
            "errors": [{"field": "epochs", "message": "must be at least 1"}]}
    error = error_from_response(httpx.Response(status, json=body))
    assert type(error) is kind and error.status == status
    assert error.detail == "epochs: must be at least 1" and error.errors[0]["field"] == "epochs"
    assert str(error) == f"{status}: epochs: must be at least 1"


def test_a_non_json_error_keeps_its_text() -> None:
    error = error_from_response(httpx.Response(502, text="bad gateway from the proxy"))
    assert isinstance(error, ServerError) and error.detail == "bad gateway from the proxy"


def test_event_stream_parsing_keeps_ids_and_skips_comments() -> None:
    parser = EventParser()
    lines = ["retry: 2000", "", ": keep-alive", "", "id: 1-0-0", "event: status", 'data: {"status": "created"}', "",
             "id: 1-1-1", "event: epoch", 'data: {"epoch":', 'data:  1}', ""]
    events = [event for line in lines if (event := parser.feed(line)) is not None]
    assert [(e.id, e.event, e.data) for e in events] == [("1-0-0", "status", {"status": "created"}),
                                                         ("1-1-1", "epoch", {"epoch": 1})]
    assert parser.retry_ms == 2000 and parser.last_id == "1-1-1"
