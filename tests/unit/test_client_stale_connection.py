"""A kept-alive connection the server closes just as the client reuses it: a GET is sent once more,
a POST is not (it may have been acted on). The server is a real socket that answers one request per
connection while announcing keep-alive, then closes without answering the next one."""

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from trainyard_client import TrainyardClient
from trainyard_client.errors import ApiUnreachable

RUN = (b'{"id": "0123456789abcdef0123456789abcdef", "name": "r", "status": "pending"}')
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
          b"Content-Length: " + str(len(RUN)).encode() + b"\r\n\r\n" + RUN)


@contextmanager
def one_answer_per_connection() -> Iterator[tuple[str, list[bytes]]]:
    listener = socket.create_server(("127.0.0.1", 0))
    requests: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                requests.append(connection.recv(65536).split(b"\r\n", 1)[0])
                connection.sendall(ANSWER)
                # The client's next request on this connection is read and dropped: the server has
                # already decided to close it, as a server's keep-alive timeout does.
                connection.settimeout(5)
                try:
                    if connection.recv(65536):
                        requests.append(b"dropped")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", requests
    finally:
        listener.close()


def test_a_get_on_a_connection_the_server_closed_is_sent_again() -> None:
    with one_answer_per_connection() as (url, requests), TrainyardClient(url, "ty_x") as client:
        run_id = "0123456789abcdef0123456789abcdef"
        assert client.runs.get(run_id)["name"] == "r"
        assert client.runs.get(run_id)["name"] == "r"
        assert requests == [f"GET /v1/runs/{run_id} HTTP/1.1".encode(), b"dropped",
                            f"GET /v1/runs/{run_id} HTTP/1.1".encode()]


def test_a_post_on_a_connection_the_server_closed_is_not_sent_again() -> None:
    with one_answer_per_connection() as (url, requests), TrainyardClient(url, "ty_x") as client:
        run_id = "0123456789abcdef0123456789abcdef"
        client.runs.get(run_id)
        with pytest.raises(ApiUnreachable, match="no answer from"):
            client.runs.kill(run_id)
        assert requests == [f"GET /v1/runs/{run_id} HTTP/1.1".encode(), b"dropped"]
