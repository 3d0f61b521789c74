# GENERATED from trainyard_client/_async/client.py by scripts/generate_sync_client.py: edit that file.
"""The client's one hand-written implementation, in its asyncio form.

`trainyard_client/_sync/client.py` is generated from this file by
`scripts/generate_sync_client.py` (unasync: `async`/`await` dropped, `AsyncX` names
to `X`, `asyncio` to `time`); a test fails when the generated file is stale. Edit
this file only, then run the script.
"""

import builtins
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast, overload

import httpx

from trainyard_client.calls import (
    RECONNECT_ATTEMPTS,
    STREAM_READ_TIMEOUT_S,
    UPLOAD_READ_TIMEOUT_S,
    Call,
    Connection,
    EventParser,
    RunEvent,
    calls,
    event_headers,
    headers,
    preview_file,
    resolve_connection,
)
from trainyard_client.errors import ApiUnreachable, error_from_response
from trainyard_client.packing import UploadBody, upload_body
from trainyard_client.sweep_types import Sweep, SweepList
from trainyard_client.types import (
    ApiKey,
    ApiKeyPage,
    Architecture,
    BestEpoch,
    ConfusionMatrix,
    CreatedApiKey,
    Dataset,
    DatasetPage,
    DatatureConfusionMatrix,
    EpochLog,
    IterationLog,
    LogEntry,
    MetricSeries,
    Model,
    ModelBestEpoch,
    ModelPage,
    Prediction,
    Run,
    RunCheckpoints,
    RunConfig,
    RunLogs,
    RunPage,
    RunPreviews,
    Trainer,
    WhoAmI,
)


class SyncTransport:
    def __init__(self, connection: Connection, timeout: float) -> None:
        self.connection = connection
        self.http = httpx.Client(base_url=connection.url, timeout=timeout, headers=headers(connection.api_key))

    def _unreachable(self, what: str, error: Exception) -> ApiUnreachable:
        return ApiUnreachable(0, f"{what} {self.connection.url} ({self.connection.url_source}): {error}")

    def send(self, call: Call) -> Any:
        """The answer's JSON; None for an answer without a body (204)."""
        response = self.send_raw(call)
        return response.json() if response.content else None

    def send_raw(self, call: Call) -> httpx.Response:
        try:
            response = self.http.request(call.method, call.path, params=call.params, json=call.body)
        except httpx.TransportError as error:
            raise self._unreachable("no answer from", error) from error
        if response.is_error:
            raise error_from_response(response)
        return response

    def upload(self, call: Call, body: UploadBody, progress: Callable[[int, int], None] | None) -> Any:
        """Send `body` as the request's content, a chunk at a time; `progress(sent, total)` after each."""

        def chunks() -> Iterator[bytes]:
            for chunk in body.chunks(progress):
                yield chunk

        timeout = httpx.Timeout(self.http.timeout.connect, read=UPLOAD_READ_TIMEOUT_S)
        sent_headers = {"Content-Type": body.content_type, "Content-Length": str(body.size)}
        try:
            response = self.http.request(
                call.method, call.path, params=call.params, content=chunks(), headers=sent_headers, timeout=timeout)
        except httpx.TransportError as error:
            raise self._unreachable("upload broke to", error) from error
        if response.is_error:
            raise error_from_response(response)
        return response.json()

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
            raise self._unreachable("download broke from", error) from error
        finally:
            partial.unlink(missing_ok=True)
        return dest

    def events(self, call: Call, last_event_id: str | None) -> Generator[RunEvent]:
        """The stream's events, reconnecting after a dropped connection from the last event seen."""
        parser = EventParser(last_event_id)
        failures = 0
        while True:
            try:
                timeout = httpx.Timeout(self.http.timeout.connect, read=STREAM_READ_TIMEOUT_S)
                with self.http.stream(call.method, call.path, params=call.params,
                                            headers=event_headers(parser.last_id), timeout=timeout) as response:
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
                    raise self._unreachable("event stream lost from", error) from error
            time.sleep((parser.retry_ms or 1000) / 1000)

    def close(self) -> None:
        self.http.close()


class SyncResource:
    def __init__(self, transport: SyncTransport) -> None:
        self._transport = transport

    def _send(self, call: Call) -> Any:
        return self._transport.send(call)


class Runs(SyncResource):
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
            for run in page["items"]:
                yield run
            if (cursor := page["next_cursor"]) is None:
                return

    def get(self, run_id: str) -> Run:
        return cast(Run, self._send(calls.run(run_id)))

    def kill(self, run_id: str) -> Run:
        return cast(Run, self._send(calls.run(run_id, "kill", "POST")))

    def rerun(self, run_id: str) -> Run:
        return cast(Run, self._send(calls.run(run_id, "rerun", "POST")))

    def remove(self, run_id: str) -> None:
        """Delete a finished run and everything stored for it (a run still active is a ConflictError:
        kill it first); a model it produced stays in the registry."""
        self._send(calls.run(run_id, method="DELETE"))

    @overload
    def logs(self, run_id: str, kind: Literal["epoch"]) -> builtins.list[EpochLog]: ...

    @overload
    def logs(self, run_id: str, kind: Literal["iteration"]) -> builtins.list[IterationLog]: ...

    @overload
    def logs(self, run_id: str, kind: Literal["all"] = "all") -> builtins.list[LogEntry]: ...

    def logs(self, run_id: str, kind: Literal["all", "epoch", "iteration"] = "all") -> Any:
        """Epoch (and iteration) logs in time order; each has `kind` and `logged_at`."""
        return cast(RunLogs, self._send(calls.run(run_id, "logs", kind=kind)))["items"]

    def metrics(self, run_id: str, names: builtins.list[str] | None = None) -> MetricSeries:
        return cast(MetricSeries, self._send(calls.run(run_id, "metrics", name=names)))

    def best_epoch(self, run_id: str, metric: str = "bbox_mAP",
                         mode: Literal["max", "min"] | None = None) -> BestEpoch:
        return cast(BestEpoch, self._send(calls.run(run_id, "best-epoch", metric=metric, mode=mode)))

    def confusion_matrix(self, run_id: str, epoch: int | None = None) -> ConfusionMatrix:
        """The latest (or a given) evaluation's confusion matrix: rows ground truth, columns predicted."""
        return cast(ConfusionMatrix, self._send(calls.run(run_id, "confusion-matrix", epoch=epoch)))

    def datature_confusion_matrix(self, run_id: str, epoch: int | None = None) -> DatatureConfusionMatrix:
        """The same matrix as Datature's per-column JSON."""
        call = calls.run(run_id, "confusion-matrix", epoch=epoch, format="datature")
        return cast(DatatureConfusionMatrix, self._send(call))

    def config(self, run_id: str) -> RunConfig:
        """The MMEngine config (Python source) the run's latest attempt trained with."""
        return cast(RunConfig, self._send(calls.run(run_id, "config")))

    def previews(self, run_id: str, epoch: int | None = None) -> RunPreviews:
        """The run's evaluation previews (a run started with `preview=True`): per epoch, its images."""
        return cast(RunPreviews, self._send(calls.run(run_id, "previews", epoch=epoch)))

    def predictions(self, run_id: str, epoch: int | None = None) -> builtins.list[Prediction]:
        """An evaluation's predictions (the latest unless `epoch`) in COCO results format."""
        return cast(builtins.list[Prediction], self._send(calls.run(run_id, "predictions", epoch=epoch)))

    def preview_image(self, run_id: str, epoch: int, image_id: int) -> bytes:
        """One preview, the PNG's bytes."""
        return (self._transport.send_raw(calls.preview_image(run_id, epoch, image_id))).content

    def download_previews(self, run_id: str, out_dir: str | Path,
                                epoch: int | None = None) -> builtins.list[Path]:
        """Save the run's previews (or one epoch's) as <out_dir>/epoch_<n>/<image id>.png; the files written."""
        written = []
        for item in (self.previews(run_id, epoch))["items"]:
            for image in item["images"]:
                dest = preview_file(Path(out_dir), item["epoch"], image["image_id"])
                dest.parent.mkdir(parents=True, exist_ok=True)
                call = calls.preview_image(run_id, item["epoch"], image["image_id"])
                written.append(self._transport.download(call, dest))
        return written

    def checkpoints(self, run_id: str) -> RunCheckpoints:
        """The checkpoints stored for the run (the newest few and the best) and what a rerun resumes from."""
        return cast(RunCheckpoints, self._send(calls.run(run_id, "checkpoints")))

    def compare(self, run_ids: Sequence[str]) -> dict[str, Any]:
        """2 to 10 runs side by side: series, final and best metrics, differing spec fields, config diffs."""
        return cast(dict[str, Any], self._send(Call("GET", "/v1/runs/compare", {"ids": ",".join(run_ids)})))

    def follow(self, run_id: str, last_event_id: str | None = None) -> Generator[RunEvent]:
        """Live status changes and epochs until the run ends; resumes itself after a dropped connection."""
        return self._transport.events(calls.run(run_id, "events"), last_event_id)


class Datasets(SyncResource):
    def register(self, name: str, path: str, **layout: str) -> Dataset:
        """A dataset on storage the server and its trainers read, under one of its dataset roots."""
        return cast(Dataset, self._send(calls.register_dataset(name, path, layout)))

    def upload(
        self, name: str, source: str | Path, progress: Callable[[int, int], None] | None = None
    ) -> Dataset:
        """Send a dataset: a directory (annotations/{train,val}.json, images/{train,val}/), packed as a
        tar while it is sent, or a .tar, .tar.gz, .tgz or .zip of one. `progress(sent, total)` in bytes."""
        body = upload_body(Path(source))
        return cast(Dataset, self._transport.upload(calls.upload_dataset(name), body, progress))

    def get(self, dataset_id: str) -> Dataset:
        return cast(Dataset, self._send(calls.get_dataset(dataset_id)))

    def list(self, limit: int = 50, cursor: str | None = None) -> DatasetPage:
        return cast(DatasetPage, self._send(calls.list_datasets(limit, cursor)))


class Models(SyncResource):
    """The model registry: trained models, published or not."""

    def list(self, published: bool | None = None, limit: int = 100) -> ModelPage:
        return cast(ModelPage, self._send(calls.list_models(published, limit)))

    def get(self, model_id: str) -> Model:
        return cast(Model, self._send(calls.model(model_id)))

    def publish(self, model_id: str) -> Model:
        return cast(Model, self._send(calls.model(model_id, "publish", "POST")))

    def unpublish(self, model_id: str) -> Model:
        return cast(Model, self._send(calls.model(model_id, "unpublish", "POST")))

    def best_epoch(self, model_id: str, metric: str = "bbox_mAP") -> ModelBestEpoch:
        return cast(ModelBestEpoch, self._send(calls.model(model_id, "best-epoch", metric=metric)))

    def lineage(self, model_id: str) -> ModelPage:
        """The model and the models it was fine-tuned from, newest first."""
        return cast(ModelPage, self._send(calls.model(model_id, "lineage")))

    def download_weights(self, model_id: str, dest: str | Path) -> Path:
        """Save the model's trained weights (a PyTorch state_dict file) to `dest`."""
        return self._transport.download(calls.model(model_id, "weights"), Path(dest))


class Trainers(SyncResource):
    """Trainers, their accelerators and what they run."""

    def list(self) -> builtins.list[Trainer]:
        return cast(builtins.list[Trainer], self._send(calls.list_trainers()))


class Architectures(SyncResource):
    def list(self) -> builtins.list[Architecture]:
        return cast(builtins.list[Architecture], self._send(calls.list_architectures()))


class Keys(SyncResource):
    """API keys of the caller's project (admin scope), and the caller's own key."""

    def create(self, name: str, scopes: builtins.list[str]) -> CreatedApiKey:
        return cast(CreatedApiKey, self._send(calls.create_key(name, scopes)))

    def list(self) -> builtins.list[ApiKey]:
        return cast(ApiKeyPage, self._send(calls.list_keys()))["items"]

    def revoke(self, key_id: str) -> ApiKey:
        return cast(ApiKey, self._send(calls.revoke_key(key_id)))

    def me(self) -> WhoAmI:
        return cast(WhoAmI, self._send(calls.who_am_i()))


class Sweeps(SyncResource):
    """Hyperparameter sweeps: their trials are runs (`runs.list(sweep_id=...)` is not needed: `get` has them)."""

    def start(self, spec: Mapping[str, Any]) -> Sweep:
        """Start a sweep from a SweepSpec (base run spec, search space, searcher, metric, trials)."""
        return cast(Sweep, self._send(Call("POST", "/v1/sweeps", body=dict(spec))))

    def get(self, sweep_id: str) -> Sweep:
        return cast(Sweep, self._send(Call("GET", f"/v1/sweeps/{sweep_id}")))

    def list(self) -> builtins.list[Sweep]:
        """The project's newest 100 sweeps, newest first."""
        page = cast(SweepList, self._send(Call("GET", "/v1/sweeps")))
        return page["items"]

    def kill(self, sweep_id: str) -> Sweep:
        """Stop a sweep: its trials still queued or training end `terminated`."""
        return cast(Sweep, self._send(Call("POST", f"/v1/sweeps/{sweep_id}/kill")))


class TrainyardClient:
    """A client of the trainyard API, one resource an attribute: `client.runs.list()`; close it
    (or use it as a context manager) when done.

    Connection defaults (`trainyard_client.calls.resolve_connection`): the base URL is given,
    else TRAINYARD_API_URL, else the local stack's (<data dir>/stack.json), else
    http://127.0.0.1:8000; the key is given, else TRAINYARD_API_KEY, else the local stack's.
    The data dir is `data_dir`, else TRAINYARD_DATA_DIR, else `.trainyard`.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30.0,
                 data_dir: str | Path | None = None) -> None:
        connection = resolve_connection(base_url, api_key, data_dir)
        self.connection = connection
        self.base_url = connection.url
        self._transport = SyncTransport(connection, timeout)
        self.runs = Runs(self._transport)
        self.datasets = Datasets(self._transport)
        self.models = Models(self._transport)
        self.trainers = Trainers(self._transport)
        self.architectures = Architectures(self._transport)
        self.keys = Keys(self._transport)
        self.sweeps = Sweeps(self._transport)

    def request(self, method: str, path: str, **params: Any) -> Any:
        """Any operation by method and path (query from keywords), with the same typed errors."""
        return self._transport.send(Call(method, path, params))

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> "TrainyardClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
