"""What both clients share: where the API is, every operation's method, path, query and body,
and the server-sent events parser. Nothing here does I/O on the network, so the sync client
(generated from the async one) and the async one cannot drift apart.
"""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainyard_client.errors import EmptyApiKey

DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_DATA_DIR = ".trainyard"
# Files a local stack (`trainyard up`) writes under its data dir: its URLs, and its admin key.
STATE_FILE = "stack.json"
API_KEY_FILE = "api-key"
USER_AGENT = "trainyard-client/0.1"
# The server sends a comment at least every 15 s; silence much longer means a dead connection.
STREAM_READ_TIMEOUT_S = 60.0
RECONNECT_ATTEMPTS = 5
# An upload's answer comes after the server has unpacked and validated the whole dataset.
UPLOAD_READ_TIMEOUT_S = 600.0


# -- connection defaults ----------------------------------------------------------



@dataclass(frozen=True)
class Connection:
    """Where the API is, with which key, and where that URL came from (named when nothing answers)."""

    url: str
    api_key: str | None
    url_source: str


def data_dir(explicit: str | Path | None = None) -> Path:
    return Path(explicit or os.environ.get("TRAINYARD_DATA_DIR") or DEFAULT_DATA_DIR)


def resolve_connection(base_url: str | None = None, api_key: str | None = None,
                       stack_dir: str | Path | None = None) -> Connection:
    """The base URL: given, else TRAINYARD_API_URL, else the local stack's (<data dir>/stack.json),
    else http://127.0.0.1:8000; the key: given, else TRAINYARD_API_KEY, else the local stack's."""
    folder = data_dir(stack_dir)
    key = api_key or os.environ.get("TRAINYARD_API_KEY")
    if api_key is None and key is not None and not key.strip():
        raise EmptyApiKey(0, "TRAINYARD_API_KEY is set but empty: set it to a key, or unset it "
                          "to use the local stack's admin key")
    if not key and (folder / API_KEY_FILE).is_file():
        key = (folder / API_KEY_FILE).read_text().strip()
    if base_url:
        return Connection(base_url, key, "given")
    if url := os.environ.get("TRAINYARD_API_URL"):
        return Connection(url, key, "TRAINYARD_API_URL")
    state = folder / STATE_FILE
    if state.is_file():
        try:
            recorded = json.loads(state.read_text()).get("api_url")
        except (ValueError, OSError):
            recorded = None
        if recorded:
            return Connection(str(recorded), key, f"the local stack recorded in {state}")
    return Connection(DEFAULT_API_URL, key, f"the default: no local stack is recorded in {state} "
                                            "(--data-dir or TRAINYARD_DATA_DIR name another)")


def headers(api_key: str | None) -> dict[str, str]:
    sent = {"User-Agent": USER_AGENT}
    if api_key:
        sent["Authorization"] = f"Bearer {api_key}"
    return sent


def event_headers(last_event_id: str | None) -> dict[str, str]:
    return {"Accept": "text/event-stream", **({"Last-Event-ID": last_event_id} if last_event_id else {})}


def preview_file(out_dir: Path, epoch: int, image_id: int) -> Path:
    """Where `download_previews` puts one preview: <out_dir>/epoch_<n>/<image id>.png."""
    return out_dir / f"epoch_{epoch}" / f"{image_id}.png"


# -- requests --------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = None


def _params(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


class _Calls:
    """Every operation as a method, path, query and body: the one place the API's shape is spelled."""

    @staticmethod
    def start_run(spec: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> Call:
        return Call("POST", "/v1/runs", body={**(spec or {}), **fields})

    @staticmethod
    def list_runs(status: str | None, search: str | None, sort: str, limit: int, cursor: str | None) -> Call:
        return Call("GET", "/v1/runs", _params(status=status, search=search, sort=sort, limit=limit, cursor=cursor))

    @staticmethod
    def run(run_id: str, action: str = "", method: str = "GET", **params: Any) -> Call:
        """One run (`action` empty) or one of its sub-resources: kill, rerun, logs, metrics, config..."""
        return Call(method, f"/v1/runs/{run_id}" + (f"/{action}" if action else ""), _params(**params))

    @staticmethod
    def preview_image(run_id: str, epoch: int, image_id: int) -> Call:
        return Call("GET", f"/v1/runs/{run_id}/previews/{epoch}/{image_id}")

    @staticmethod
    def register_dataset(name: str, path: str, layout: Mapping[str, str]) -> Call:
        return Call("POST", "/v1/datasets", body={"name": name, "path": path, **layout})

    @staticmethod
    def upload_dataset(name: str) -> Call:
        return Call("POST", "/v1/datasets", _params(name=name))

    @staticmethod
    def list_datasets(limit: int, cursor: str | None) -> Call:
        return Call("GET", "/v1/datasets", _params(limit=limit, cursor=cursor))

    @staticmethod
    def get_dataset(dataset_id: str) -> Call:
        return Call("GET", f"/v1/datasets/{dataset_id}")

    @staticmethod
    def list_models(published: bool | None, limit: int) -> Call:
        return Call("GET", "/v1/models", _params(published=published, limit=limit))

    @staticmethod
    def model(model_id: str, action: str = "", method: str = "GET", **params: Any) -> Call:
        return Call(method, f"/v1/models/{model_id}" + (f"/{action}" if action else ""), _params(**params))

    @staticmethod
    def list_trainers() -> Call:
        return Call("GET", "/v1/trainers")

    @staticmethod
    def list_architectures() -> Call:
        return Call("GET", "/v1/architectures")

    @staticmethod
    def create_key(name: str, scopes: list[str]) -> Call:
        return Call("POST", "/v1/keys", body={"name": name, "scopes": scopes})

    @staticmethod
    def list_keys() -> Call:
        return Call("GET", "/v1/keys")

    @staticmethod
    def revoke_key(key_id: str) -> Call:
        return Call("DELETE", f"/v1/keys/{key_id}")

    @staticmethod
    def who_am_i() -> Call:
        return Call("GET", "/v1/keys/me")


calls = _Calls()


# -- server-sent events ----------------------------------------------------------------


@dataclass(frozen=True)
class RunEvent:
    """One server-sent event of a run: `status`, `epoch`, `iteration` or `end`; `id` resumes the stream after it."""

    id: str | None
    event: str
    data: dict[str, Any]


class EventParser:
    """Server-sent events, line by line (https://html.spec.whatwg.org/multipage/server-sent-events.html)."""

    def __init__(self, last_id: str | None = None) -> None:
        self.last_id = last_id
        self.retry_ms: int | None = None
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> RunEvent | None:
        if line == "":
            if not self._data:
                self._event = ""
                return None
            event = RunEvent(id=self.last_id, event=self._event or "message", data=json.loads("\n".join(self._data)))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None
