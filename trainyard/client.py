"""Typed Python clients of the trainyard HTTP API: `TrainyardClient` (sync) and `AsyncTrainyardClient`.

Both mirror the API resource by resource (`client.runs.start/list/get/kill/rerun/remove/logs/...`,
`client.datasets`, `client.models`, `client.keys`) and raise a `TrainyardError`
subclass carrying the API's problem details when a call fails.

Connection defaults, so the same code runs against the local stack and a deployment:
the base URL is `TRAINYARD_API_URL`, else the local stack's (`.trainyard/stack.json`),
else http://127.0.0.1:8000; the key is `TRAINYARD_API_KEY`, else the local stack's
admin key (`.trainyard/api-key`; `TRAINYARD_DATA_DIR` moves `.trainyard`).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict, cast

import httpx

from trainyard.localstack import API_KEY_FILE, STATE_FILE

DEFAULT_API_URL = "http://127.0.0.1:8000"
USER_AGENT = "trainyard-client/0.1"
# The server sends a comment at least every 15 s; silence much longer means a dead connection.
STREAM_READ_TIMEOUT_S = 60.0
RECONNECT_ATTEMPTS = 5


# -- errors -------------------------------------------------------------------


class TrainyardError(Exception):
    """The API answered with a problem (or could not be reached): status, title, detail, per-field errors."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None,
                 title: str | None = None) -> None:
        super().__init__(f"{status}: {detail}" if status else detail)
        self.status = status
        self.title = title or ""
        self.detail = detail
        self.errors = errors or []


class ApiUnreachable(TrainyardError):
    """No answer: the connection failed or timed out."""


class InvalidRequest(TrainyardError):
    """400, 413 or 422: the request itself is wrong; `errors` names each bad field."""


class AuthenticationError(TrainyardError):
    """401: no key, a malformed key, or a revoked one."""


class PermissionDenied(TrainyardError):
    """403: the key lacks the scope the operation needs."""


class NotFoundError(TrainyardError):
    """404: nothing with that id in the key's project."""


class ConflictError(TrainyardError):
    """409: the operation does not fit the resource's current state."""


class ServerError(TrainyardError):
    """5xx: the API failed; its log has the cause."""


_ERRORS_BY_STATUS: dict[int, type[TrainyardError]] = {
    400: InvalidRequest, 401: AuthenticationError, 403: PermissionDenied, 404: NotFoundError,
    409: ConflictError, 413: InvalidRequest, 422: InvalidRequest,
}


def error_from_response(response: httpx.Response) -> TrainyardError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"detail": response.text[:500] or response.reason_phrase}
    kind = _ERRORS_BY_STATUS.get(response.status_code, ServerError if response.status_code >= 500 else TrainyardError)
    errors = body.get("errors") if isinstance(body.get("errors"), list) else None
    return kind(response.status_code, str(body.get("detail")), errors, str(body.get("title") or ""))


# -- shapes of what the API returns ---------------------------------------------


class Progress(TypedDict):
    epoch: int
    total_epochs: int
    percent: float


class StatusChange(TypedDict):
    status: str
    at: str
    message: str | None
    attempt: int | None


class Run(TypedDict):
    id: str
    name: str
    project: str
    status: str
    overview: str
    message: str | None
    pending_reason: str | None
    spec: dict[str, Any]
    trainer_id: str | None
    attempt: int
    device: str | None
    progress: Progress
    queue_position: int | None
    latest_metrics: dict[str, float | None]
    created_at: str
    updated_at: str
    started_at: str | None
    completed_at: str | None
    duration_s: float | None
    history: list[StatusChange]


class RunPage(TypedDict):
    items: list[Run]
    next_cursor: str | None


class SplitSummary(TypedDict):
    annotations: str
    images: str
    image_count: int
    box_count: int
    boxes_per_class: dict[str, int]


class Dataset(TypedDict):
    id: str
    name: str
    project: str
    root: str
    classes: list[str]
    train: SplitSummary
    val: SplitSummary
    created_at: str


class DatasetPage(TypedDict):
    items: list[Dataset]
    next_cursor: str | None


class EpochLog(TypedDict):
    kind: Literal["epoch"]
    epoch: int
    attempt: int
    total_epochs: int
    loss: float
    losses: dict[str, float]
    learning_rate: float
    epoch_time_s: float
    metrics: dict[str, float | None]
    logged_at: str


class MetricSeries(TypedDict):
    run_id: str
    epochs: list[int]
    series: dict[str, list[float | None]]


class BestEpoch(TypedDict):
    run_id: str
    metric: str
    mode: Literal["max", "min"]
    value: float
    epoch: EpochLog


class ConfusionMatrix(TypedDict):
    format: Literal["matrix"]
    run_id: str
    epoch: int
    classes: list[str]
    matrix: list[list[int]]
    score_threshold: float
    iou_threshold: float


class PreviewImage(TypedDict):
    image_id: int
    file_name: str
    url: str


class EpochPreviews(TypedDict):
    epoch: int
    attempt: int
    images: list[PreviewImage]


class RunPreviews(TypedDict):
    run_id: str
    score_threshold: float | None
    items: list[EpochPreviews]


def preview_file(out_dir: Path, epoch: int, image_id: int) -> Path:
    """Where `download_previews` puts one preview: <out_dir>/epoch_<n>/<image id>.png."""
    return out_dir / f"epoch_{epoch}" / f"{image_id}.png"


class ApiKey(TypedDict):
    id: str
    name: str
    project: str
    scopes: list[str]
    created_at: str
    created_by: str
    revoked_at: str | None


class CreatedApiKey(ApiKey):
    key: str


class WhoAmI(TypedDict):
    key_id: str
    project: str
    scopes: list[str]


@dataclass(frozen=True)
class RunEvent:
    """One server-sent event of a run: `status`, `epoch` or `end`; `id` resumes the stream after it."""

    id: str | None
    event: str
    data: dict[str, Any]


# -- connection defaults ----------------------------------------------------------


def _data_dir() -> Path:
    return Path(os.environ.get("TRAINYARD_DATA_DIR", ".trainyard"))


def default_api_url() -> str:
    if url := os.environ.get("TRAINYARD_API_URL"):
        return url
    state = _data_dir() / STATE_FILE
    if state.is_file():
        try:
            recorded = json.loads(state.read_text()).get("api_url")
        except (ValueError, OSError):
            recorded = None
        if recorded:
            return str(recorded)
    return DEFAULT_API_URL


class EmptyApiKey(TrainyardError):
    """TRAINYARD_API_KEY is set but empty: an error, never a silent switch to the local admin key."""


def default_api_key() -> str | None:
    key = os.environ.get("TRAINYARD_API_KEY")
    if key is not None:
        if not key.strip():
            raise EmptyApiKey(0, "TRAINYARD_API_KEY is set but empty: set it to a key, or unset it "
                              "to use the local stack's admin key")
        return key
    path = _data_dir() / API_KEY_FILE
    return path.read_text().strip() if path.is_file() else None


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


# -- requests, shared by both clients ------------------------------------------------


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
    def get_run(run_id: str) -> Call:
        return Call("GET", f"/v1/runs/{run_id}")

    @staticmethod
    def kill_run(run_id: str) -> Call:
        return Call("POST", f"/v1/runs/{run_id}/kill")

    @staticmethod
    def rerun(run_id: str) -> Call:
        return Call("POST", f"/v1/runs/{run_id}/rerun")

    @staticmethod
    def remove_run(run_id: str) -> Call:
        return Call("DELETE", f"/v1/runs/{run_id}")

    @staticmethod
    def run_logs(run_id: str, kind: str) -> Call:
        return Call("GET", f"/v1/runs/{run_id}/logs", _params(kind=kind))

    @staticmethod
    def run_metrics(run_id: str, names: list[str] | None) -> Call:
        return Call("GET", f"/v1/runs/{run_id}/metrics", _params(name=names))

    @staticmethod
    def best_epoch(run_id: str, metric: str, mode: str | None) -> Call:
        return Call("GET", f"/v1/runs/{run_id}/best-epoch", _params(metric=metric, mode=mode))

    @staticmethod
    def confusion_matrix(run_id: str, epoch: int | None, layout: str) -> Call:
        return Call("GET", f"/v1/runs/{run_id}/confusion-matrix", _params(epoch=epoch, format=layout))

    @staticmethod
    def run_previews(run_id: str, epoch: int | None) -> Call:
        return Call("GET", f"/v1/runs/{run_id}/previews", _params(epoch=epoch))

    @staticmethod
    def run_predictions(run_id: str, epoch: int | None) -> Call:
        return Call("GET", f"/v1/runs/{run_id}/predictions", _params(epoch=epoch))

    @staticmethod
    def preview_image(run_id: str, epoch: int, image_id: int) -> Call:
        return Call("GET", f"/v1/runs/{run_id}/previews/{epoch}/{image_id}")

    @staticmethod
    def run_checkpoints(run_id: str) -> Call:
        return Call("GET", f"/v1/runs/{run_id}/checkpoints")

    @staticmethod
    def compare_runs(run_ids: Sequence[str]) -> Call:
        return Call("GET", "/v1/runs/compare", {"ids": ",".join(run_ids)})

    @staticmethod
    def model_weights(model_id: str) -> Call:
        return Call("GET", f"/v1/models/{model_id}/weights")

    @staticmethod
    def run_events(run_id: str) -> Call:
        return Call("GET", f"/v1/runs/{run_id}/events")

    @staticmethod
    def register_dataset(name: str, path: str, layout: Mapping[str, str]) -> Call:
        return Call("POST", "/v1/datasets", body={"name": name, "path": path, **layout})

    @staticmethod
    def list_datasets(limit: int, cursor: str | None) -> Call:
        return Call("GET", "/v1/datasets", _params(limit=limit, cursor=cursor))

    @staticmethod
    def get_dataset(dataset_id: str) -> Call:
        return Call("GET", f"/v1/datasets/{dataset_id}")

    # Model registry and trainers: the routes come with issues 3 and 4.
    @staticmethod
    def list_models(params: Mapping[str, Any]) -> Call:
        return Call("GET", "/v1/models", _params(**params))

    @staticmethod
    def get_model(model_id: str) -> Call:
        return Call("GET", f"/v1/models/{model_id}")

    @staticmethod
    def publish_model(model_id: str, publish: bool) -> Call:
        return Call("POST", f"/v1/models/{model_id}/{'publish' if publish else 'unpublish'}")

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


class _EventParser:
    """Server-sent events, line by line (https://html.spec.whatwg.org/multipage/server-sent-events.html)."""

    def __init__(self) -> None:
        self.last_id: str | None = None
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


def _body(response: httpx.Response) -> Any:
    """The JSON of an answer; None for one without a body (204)."""
    return response.json() if response.content else None


def _event_headers(last_event_id: str | None) -> dict[str, str]:
    return {"Accept": "text/event-stream", **({"Last-Event-ID": last_event_id} if last_event_id else {})}


# -- sync client -----------------------------------------------------------------------


class _SyncTransport:
    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=timeout, headers=_headers(api_key))

    def send(self, call: Call, *, raw: bool = False) -> Any:
        """The answer's JSON, or with `raw` its bytes (an image, say)."""
        try:
            response = self.http.request(call.method, call.path, params=call.params, json=call.body)
        except httpx.TransportError as error:
            raise ApiUnreachable(0, f"no answer from {self.http.base_url}: {error}") from error
        if response.is_error:
            raise error_from_response(response)
        return response.content if raw else _body(response)

    def download(self, call: Call, dest: Path) -> Path:
        """Stream a binary answer into `dest`, whole or not at all."""
        partial = dest.with_name(f".{dest.name}.partial")
        try:
            with self.http.stream(call.method, call.path, params=call.params) as response:
                if response.is_error:
                    response.read()
                    raise error_from_response(response)
                with partial.open("wb") as out:
                    for block in response.iter_bytes():
                        out.write(block)
            partial.replace(dest)
        except httpx.TransportError as error:
            raise ApiUnreachable(0, f"download from {self.http.base_url} broke: {error}") from error
        finally:
            partial.unlink(missing_ok=True)
        return dest

    def events(self, call: Call, last_event_id: str | None) -> Generator[RunEvent]:
        """The stream's events, reconnecting after a dropped connection from the last event seen."""
        parser = _EventParser()
        parser.last_id = last_event_id
        failures = 0
        while True:
            try:
                timeout = httpx.Timeout(self.http.timeout.connect, read=STREAM_READ_TIMEOUT_S)
                with self.http.stream(call.method, call.path, params=call.params,
                                      headers=_event_headers(parser.last_id), timeout=timeout) as response:
                    if response.is_error:
                        response.read()
                        raise error_from_response(response)
                    for line in response.iter_lines():
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
                    raise ApiUnreachable(0, f"event stream lost: {error}") from error
            time.sleep((parser.retry_ms or 1000) / 1000)

    def close(self) -> None:
        self.http.close()


class _SyncResource:
    def __init__(self, transport: _SyncTransport) -> None:
        self._transport = transport

    def _send(self, call: Call) -> Any:
        return self._transport.send(call)


class Runs(_SyncResource):
    def start(self, spec: Mapping[str, Any] | None = None, **fields: Any) -> Run:
        """Start a run from a spec (a mapping, keyword fields, or both: fields win)."""
        return cast(Run, self._send(calls.start_run(spec, fields)))

    def list(self, status: str | None = None, search: str | None = None, sort: str = "-created_at",
             limit: int = 50, cursor: str | None = None) -> RunPage:
        """One page; pass its `next_cursor` back as `cursor` for the next."""
        return cast(RunPage, self._send(calls.list_runs(status, search, sort, limit, cursor)))

    def list_all(self, status: str | None = None, search: str | None = None, sort: str = "-created_at",
                 page_size: int = 100) -> Iterator[Run]:
        """Every matching run, page after page."""
        cursor: str | None = None
        while True:
            page = self.list(status, search, sort, page_size, cursor)
            yield from page["items"]
            if (cursor := page["next_cursor"]) is None:
                return

    def get(self, run_id: str) -> Run:
        return cast(Run, self._send(calls.get_run(run_id)))

    def kill(self, run_id: str) -> Run:
        return cast(Run, self._send(calls.kill_run(run_id)))

    def rerun(self, run_id: str) -> Run:
        return cast(Run, self._send(calls.rerun(run_id)))

    def remove(self, run_id: str) -> None:
        """Delete a finished run and everything stored for it (a run still active is a ConflictError:
        kill it first); a model it produced stays in the registry."""
        self._send(calls.remove_run(run_id))

    def logs(self, run_id: str, kind: Literal["all", "epoch", "iteration"] = "all") -> builtins.list[dict[str, Any]]:
        """Epoch (and iteration) logs in time order; each has `kind` and `logged_at`."""
        return cast(builtins.list[dict[str, Any]], self._send(calls.run_logs(run_id, kind))["items"])

    def metrics(self, run_id: str, names: builtins.list[str] | None = None) -> MetricSeries:
        return cast(MetricSeries, self._send(calls.run_metrics(run_id, names)))

    def best_epoch(self, run_id: str, metric: str = "bbox_mAP", mode: Literal["max", "min"] | None = None) -> BestEpoch:
        return cast(BestEpoch, self._send(calls.best_epoch(run_id, metric, mode)))

    def confusion_matrix(self, run_id: str, epoch: int | None = None,
                         format: Literal["matrix", "datature"] = "matrix") -> dict[str, Any]:
        """Rows and columns (`format="matrix"`, a ConfusionMatrix) or Datature's per-column JSON."""
        return cast(dict[str, Any], self._send(calls.confusion_matrix(run_id, epoch, format)))

    def previews(self, run_id: str, epoch: int | None = None) -> RunPreviews:
        """The run's evaluation previews (a run started with `preview=True`): per epoch, its images."""
        return cast(RunPreviews, self._send(calls.run_previews(run_id, epoch)))

    def predictions(self, run_id: str, epoch: int | None = None) -> builtins.list[dict[str, Any]]:
        """An evaluation's predictions (the latest unless `epoch`) in COCO results format: a list of
        {image_id, category_id, bbox: [x, y, w, h], score}, what pycocotools' `COCO.loadRes` reads."""
        return cast(builtins.list[dict[str, Any]], self._send(calls.run_predictions(run_id, epoch)))

    def preview_image(self, run_id: str, epoch: int, image_id: int) -> bytes:
        """One preview, the PNG's bytes."""
        return cast(bytes, self._transport.send(calls.preview_image(run_id, epoch, image_id), raw=True))

    def download_previews(self, run_id: str, out_dir: str | Path, epoch: int | None = None) -> builtins.list[Path]:
        """Save the run's previews (or one epoch's) as <out_dir>/epoch_<n>/<image id>.png; the files written."""
        written = []
        for item in self.previews(run_id, epoch)["items"]:
            for image in item["images"]:
                dest = preview_file(Path(out_dir), item["epoch"], image["image_id"])
                dest.parent.mkdir(parents=True, exist_ok=True)
                written.append(self._transport.download(calls.preview_image(run_id, item["epoch"],
                                                                            image["image_id"]), dest))
        return written

    def checkpoints(self, run_id: str) -> dict[str, Any]:
        """The checkpoints stored for the run (the newest few and the best) and the epoch a rerun resumes after."""
        return cast(dict[str, Any], self._send(calls.run_checkpoints(run_id)))

    def compare(self, run_ids: Sequence[str]) -> dict[str, Any]:
        """2 to 10 runs side by side: series, final and best metrics, differing spec fields, config diffs."""
        return cast(dict[str, Any], self._send(calls.compare_runs(run_ids)))

    def follow(self, run_id: str, last_event_id: str | None = None) -> Generator[RunEvent]:
        """Live status changes and epochs until the run ends; resumes itself after a dropped connection."""
        return self._transport.events(calls.run_events(run_id), last_event_id)


class Datasets(_SyncResource):
    def register(self, name: str, path: str, **layout: str) -> Dataset:
        return cast(Dataset, self._send(calls.register_dataset(name, path, layout)))

    def get(self, dataset_id: str) -> Dataset:
        return cast(Dataset, self._send(calls.get_dataset(dataset_id)))

    def list(self, limit: int = 50, cursor: str | None = None) -> DatasetPage:
        return cast(DatasetPage, self._send(calls.list_datasets(limit, cursor)))


class Models(_SyncResource):
    """The model registry (`/v1/models`, issue 3): trained models, published or not."""

    def list(self, **filters: Any) -> dict[str, Any]:
        return cast(dict[str, Any], self._send(calls.list_models(filters)))

    def get(self, model_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._send(calls.get_model(model_id)))

    def publish(self, model_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._send(calls.publish_model(model_id, True)))

    def unpublish(self, model_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._send(calls.publish_model(model_id, False)))

    def download_weights(self, model_id: str, dest: str | Path) -> Path:
        """Save the model's trained weights (a PyTorch state_dict file) to `dest`."""
        return self._transport.download(calls.model_weights(model_id), Path(dest))


class Trainers(_SyncResource):
    """Trainers and their accelerators (`/v1/trainers`, issue 4)."""

    def list(self) -> Any:
        return self._send(calls.list_trainers())


class Architectures(_SyncResource):
    def list(self) -> builtins.list[dict[str, Any]]:
        return cast(builtins.list[dict[str, Any]], self._send(calls.list_architectures()))


class Keys(_SyncResource):
    """API keys of the caller's project (admin scope), and the caller's own key."""

    def create(self, name: str, scopes: builtins.list[str]) -> CreatedApiKey:
        return cast(CreatedApiKey, self._send(calls.create_key(name, scopes)))

    def list(self) -> builtins.list[ApiKey]:
        return cast(builtins.list[ApiKey], self._send(calls.list_keys())["items"])

    def revoke(self, key_id: str) -> ApiKey:
        return cast(ApiKey, self._send(calls.revoke_key(key_id)))

    def me(self) -> WhoAmI:
        return cast(WhoAmI, self._send(calls.who_am_i()))


class TrainyardClient:
    """Blocking client: `with TrainyardClient() as client: client.runs.list()`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url or default_api_url()
        self._transport = _SyncTransport(self.base_url, api_key or default_api_key(), timeout)
        self.runs = Runs(self._transport)
        self.datasets = Datasets(self._transport)
        self.models = Models(self._transport)
        self.trainers = Trainers(self._transport)
        self.architectures = Architectures(self._transport)
        self.keys = Keys(self._transport)

    def request(self, method: str, path: str, **params: Any) -> Any:
        """Any operation by method and path (query from keywords), with the same typed errors."""
        return self._transport.send(Call(method, path, params))

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> TrainyardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- async client ----------------------------------------------------------------------


class _AsyncTransport:
    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout, headers=_headers(api_key))

    async def send(self, call: Call, *, raw: bool = False) -> Any:
        try:
            response = await self.http.request(call.method, call.path, params=call.params, json=call.body)
        except httpx.TransportError as error:
            raise ApiUnreachable(0, f"no answer from {self.http.base_url}: {error}") from error
        if response.is_error:
            raise error_from_response(response)
        return response.content if raw else _body(response)

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
            raise ApiUnreachable(0, f"download from {self.http.base_url} broke: {error}") from error
        finally:
            partial.unlink(missing_ok=True)
        return dest

    async def events(self, call: Call, last_event_id: str | None) -> AsyncGenerator[RunEvent]:
        parser = _EventParser()
        parser.last_id = last_event_id
        failures = 0
        while True:
            try:
                timeout = httpx.Timeout(self.http.timeout.connect, read=STREAM_READ_TIMEOUT_S)
                async with self.http.stream(call.method, call.path, params=call.params,
                                            headers=_event_headers(parser.last_id), timeout=timeout) as response:
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
                    raise ApiUnreachable(0, f"event stream lost: {error}") from error
            await asyncio.sleep((parser.retry_ms or 1000) / 1000)

    async def close(self) -> None:
        await self.http.aclose()


class _AsyncResource:
    def __init__(self, transport: _AsyncTransport) -> None:
        self._transport = transport

    async def _send(self, call: Call) -> Any:
        return await self._transport.send(call)


class AsyncRuns(_AsyncResource):
    async def start(self, spec: Mapping[str, Any] | None = None, **fields: Any) -> Run:
        return cast(Run, await self._send(calls.start_run(spec, fields)))

    async def list(self, status: str | None = None, search: str | None = None, sort: str = "-created_at",
                   limit: int = 50, cursor: str | None = None) -> RunPage:
        return cast(RunPage, await self._send(calls.list_runs(status, search, sort, limit, cursor)))

    async def list_all(self, status: str | None = None, search: str | None = None, sort: str = "-created_at",
                       page_size: int = 100) -> AsyncIterator[Run]:
        cursor: str | None = None
        while True:
            page = await self.list(status, search, sort, page_size, cursor)
            for run in page["items"]:
                yield run
            if (cursor := page["next_cursor"]) is None:
                return

    async def get(self, run_id: str) -> Run:
        return cast(Run, await self._send(calls.get_run(run_id)))

    async def kill(self, run_id: str) -> Run:
        return cast(Run, await self._send(calls.kill_run(run_id)))

    async def rerun(self, run_id: str) -> Run:
        return cast(Run, await self._send(calls.rerun(run_id)))

    async def remove(self, run_id: str) -> None:
        await self._send(calls.remove_run(run_id))

    async def logs(self, run_id: str,
                   kind: Literal["all", "epoch", "iteration"] = "all") -> builtins.list[dict[str, Any]]:
        return cast(builtins.list[dict[str, Any]], (await self._send(calls.run_logs(run_id, kind)))["items"])

    async def metrics(self, run_id: str, names: builtins.list[str] | None = None) -> MetricSeries:
        return cast(MetricSeries, await self._send(calls.run_metrics(run_id, names)))

    async def best_epoch(self, run_id: str, metric: str = "bbox_mAP",
                         mode: Literal["max", "min"] | None = None) -> BestEpoch:
        return cast(BestEpoch, await self._send(calls.best_epoch(run_id, metric, mode)))

    async def confusion_matrix(self, run_id: str, epoch: int | None = None,
                               format: Literal["matrix", "datature"] = "matrix") -> dict[str, Any]:
        return cast(dict[str, Any], await self._send(calls.confusion_matrix(run_id, epoch, format)))

    async def previews(self, run_id: str, epoch: int | None = None) -> RunPreviews:
        return cast(RunPreviews, await self._send(calls.run_previews(run_id, epoch)))

    async def predictions(self, run_id: str, epoch: int | None = None) -> builtins.list[dict[str, Any]]:
        return cast(builtins.list[dict[str, Any]], await self._send(calls.run_predictions(run_id, epoch)))

    async def preview_image(self, run_id: str, epoch: int, image_id: int) -> bytes:
        return cast(bytes, await self._transport.send(calls.preview_image(run_id, epoch, image_id), raw=True))

    async def download_previews(self, run_id: str, out_dir: str | Path,
                                epoch: int | None = None) -> builtins.list[Path]:
        written = []
        for item in (await self.previews(run_id, epoch))["items"]:
            for image in item["images"]:
                dest = preview_file(Path(out_dir), item["epoch"], image["image_id"])
                dest.parent.mkdir(parents=True, exist_ok=True)
                written.append(await self._transport.download(calls.preview_image(run_id, item["epoch"],
                                                                                  image["image_id"]), dest))
        return written

    async def checkpoints(self, run_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self._send(calls.run_checkpoints(run_id)))

    def follow(self, run_id: str, last_event_id: str | None = None) -> AsyncGenerator[RunEvent]:
        return self._transport.events(calls.run_events(run_id), last_event_id)


class AsyncDatasets(_AsyncResource):
    async def register(self, name: str, path: str, **layout: str) -> Dataset:
        return cast(Dataset, await self._send(calls.register_dataset(name, path, layout)))

    async def get(self, dataset_id: str) -> Dataset:
        return cast(Dataset, await self._send(calls.get_dataset(dataset_id)))

    async def list(self, limit: int = 50, cursor: str | None = None) -> DatasetPage:
        return cast(DatasetPage, await self._send(calls.list_datasets(limit, cursor)))


class AsyncModels(_AsyncResource):
    """The model registry (`/v1/models`, issue 3)."""

    async def list(self, **filters: Any) -> dict[str, Any]:
        return cast(dict[str, Any], await self._send(calls.list_models(filters)))

    async def get(self, model_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self._send(calls.get_model(model_id)))

    async def publish(self, model_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self._send(calls.publish_model(model_id, True)))

    async def unpublish(self, model_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self._send(calls.publish_model(model_id, False)))

    async def download_weights(self, model_id: str, dest: str | Path) -> Path:
        return await self._transport.download(calls.model_weights(model_id), Path(dest))


class AsyncTrainers(_AsyncResource):
    """Trainers and their accelerators (`/v1/trainers`, issue 4)."""

    async def list(self) -> Any:
        return await self._send(calls.list_trainers())


class AsyncArchitectures(_AsyncResource):
    async def list(self) -> builtins.list[dict[str, Any]]:
        return cast(builtins.list[dict[str, Any]], await self._send(calls.list_architectures()))


class AsyncKeys(_AsyncResource):
    async def create(self, name: str, scopes: builtins.list[str]) -> CreatedApiKey:
        return cast(CreatedApiKey, await self._send(calls.create_key(name, scopes)))

    async def list(self) -> builtins.list[ApiKey]:
        return cast(builtins.list[ApiKey], (await self._send(calls.list_keys()))["items"])

    async def revoke(self, key_id: str) -> ApiKey:
        return cast(ApiKey, await self._send(calls.revoke_key(key_id)))

    async def me(self) -> WhoAmI:
        return cast(WhoAmI, await self._send(calls.who_am_i()))


class AsyncTrainyardClient:
    """Asyncio client: `async with AsyncTrainyardClient() as client: await client.runs.list()`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url or default_api_url()
        self._transport = _AsyncTransport(self.base_url, api_key or default_api_key(), timeout)
        self.runs = AsyncRuns(self._transport)
        self.datasets = AsyncDatasets(self._transport)
        self.models = AsyncModels(self._transport)
        self.trainers = AsyncTrainers(self._transport)
        self.architectures = AsyncArchitectures(self._transport)
        self.keys = AsyncKeys(self._transport)

    async def request(self, method: str, path: str, **params: Any) -> Any:
        """Any operation by method and path (query from keywords), with the same typed errors."""
        return await self._transport.send(Call(method, path, params))

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> AsyncTrainyardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
