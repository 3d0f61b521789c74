"""The client's one hand-written implementation, in its asyncio form.

`trainyard_client/_sync/client.py` is generated from this file by
`scripts/generate_sync_client.py` (unasync: `async`/`await` dropped, `AsyncX` names
to `X`, `asyncio` to `time`); a test fails when the generated file is stale. Edit
this file only, then run the script.
"""

import asyncio
import builtins
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
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
        try:
            response = await self.http.request(call.method, call.path, params=call.params, json=call.body)
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


class AsyncResource:
    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport

    async def _send(self, call: Call) -> Any:
        return await self._transport.send(call)


class AsyncRuns(AsyncResource):
    async def start(self, spec: Mapping[str, Any] | None = None, **fields: Any) -> Run:
        """Start a run from a spec (a mapping, keyword fields, or both: fields win)."""
        return cast(Run, await self._send(calls.start_run(spec, fields)))

    async def list(self, status: str | None = None, search: str | None = None, sort: str = "-created_at",
                   limit: int = 50, cursor: str | None = None) -> RunPage:
        """One page; pass its `next_cursor` back as `cursor` for the next."""
        return cast(RunPage, await self._send(calls.list_runs(status, search, sort, limit, cursor)))

    async def list_all(self, status: str | None = None, search: str | None = None, sort: str = "-created_at",
                       page_size: int = 100) -> AsyncIterator[Run]:
        """Every matching run, page after page."""
        cursor: str | None = None
        while True:
            page = await self.list(status, search, sort, page_size, cursor)
            for run in page["items"]:
                yield run
            if (cursor := page["next_cursor"]) is None:
                return

    async def get(self, run_id: str) -> Run:
        return cast(Run, await self._send(calls.run(run_id)))

    async def kill(self, run_id: str) -> Run:
        return cast(Run, await self._send(calls.run(run_id, "kill", "POST")))

    async def rerun(self, run_id: str) -> Run:
        return cast(Run, await self._send(calls.run(run_id, "rerun", "POST")))

    async def remove(self, run_id: str) -> None:
        """Delete a finished run and everything stored for it (a run still active is a ConflictError:
        kill it first); a model it produced stays in the registry."""
        await self._send(calls.run(run_id, method="DELETE"))

    @overload
    async def logs(self, run_id: str, kind: Literal["epoch"]) -> builtins.list[EpochLog]: ...

    @overload
    async def logs(self, run_id: str, kind: Literal["iteration"]) -> builtins.list[IterationLog]: ...

    @overload
    async def logs(self, run_id: str, kind: Literal["all"] = "all") -> builtins.list[LogEntry]: ...

    async def logs(self, run_id: str, kind: Literal["all", "epoch", "iteration"] = "all") -> Any:
        """Epoch (and iteration) logs in time order; each has `kind` and `logged_at`."""
        return cast(RunLogs, await self._send(calls.run(run_id, "logs", kind=kind)))["items"]

    async def metrics(self, run_id: str, names: builtins.list[str] | None = None) -> MetricSeries:
        return cast(MetricSeries, await self._send(calls.run(run_id, "metrics", name=names)))

    async def best_epoch(self, run_id: str, metric: str = "bbox_mAP",
                         mode: Literal["max", "min"] | None = None) -> BestEpoch:
        return cast(BestEpoch, await self._send(calls.run(run_id, "best-epoch", metric=metric, mode=mode)))

    async def confusion_matrix(self, run_id: str, epoch: int | None = None) -> ConfusionMatrix:
        """The latest (or a given) evaluation's confusion matrix: rows ground truth, columns predicted."""
        return cast(ConfusionMatrix, await self._send(calls.run(run_id, "confusion-matrix", epoch=epoch)))

    async def datature_confusion_matrix(self, run_id: str, epoch: int | None = None) -> DatatureConfusionMatrix:
        """The same matrix as Datature's per-column JSON."""
        call = calls.run(run_id, "confusion-matrix", epoch=epoch, format="datature")
        return cast(DatatureConfusionMatrix, await self._send(call))

    async def config(self, run_id: str) -> RunConfig:
        """The MMEngine config (Python source) the run's latest attempt trained with."""
        return cast(RunConfig, await self._send(calls.run(run_id, "config")))

    async def previews(self, run_id: str, epoch: int | None = None) -> RunPreviews:
        """The run's evaluation previews (a run started with `preview=True`): per epoch, its images."""
        return cast(RunPreviews, await self._send(calls.run(run_id, "previews", epoch=epoch)))

    async def predictions(self, run_id: str, epoch: int | None = None) -> builtins.list[Prediction]:
        """An evaluation's predictions (the latest unless `epoch`) in COCO results format."""
        return cast(builtins.list[Prediction], await self._send(calls.run(run_id, "predictions", epoch=epoch)))

    async def preview_image(self, run_id: str, epoch: int, image_id: int) -> bytes:
        """One preview, the PNG's bytes."""
        return (await self._transport.send_raw(calls.preview_image(run_id, epoch, image_id))).content

    async def download_previews(self, run_id: str, out_dir: str | Path,
                                epoch: int | None = None) -> builtins.list[Path]:
        """Save the run's previews (or one epoch's) as <out_dir>/epoch_<n>/<image id>.png; the files written."""
        written = []
        for item in (await self.previews(run_id, epoch))["items"]:
            for image in item["images"]:
                dest = preview_file(Path(out_dir), item["epoch"], image["image_id"])
                dest.parent.mkdir(parents=True, exist_ok=True)
                call = calls.preview_image(run_id, item["epoch"], image["image_id"])
                written.append(await self._transport.download(call, dest))
        return written

    async def checkpoints(self, run_id: str) -> RunCheckpoints:
        """The checkpoints stored for the run (the newest few and the best) and what a rerun resumes from."""
        return cast(RunCheckpoints, await self._send(calls.run(run_id, "checkpoints")))

    async def compare(self, run_ids: Sequence[str]) -> dict[str, Any]:
        """2 to 10 runs side by side: series, final and best metrics, differing spec fields, config diffs."""
        return cast(dict[str, Any], await self._send(Call("GET", "/v1/runs/compare", {"ids": ",".join(run_ids)})))

    def follow(self, run_id: str, last_event_id: str | None = None) -> AsyncGenerator[RunEvent]:
        """Live status changes and epochs until the run ends; resumes itself after a dropped connection."""
        return self._transport.events(calls.run(run_id, "events"), last_event_id)


class AsyncDatasets(AsyncResource):
    async def register(self, name: str, path: str, **layout: str) -> Dataset:
        """A dataset on storage the server and its trainers read, under one of its dataset roots."""
        return cast(Dataset, await self._send(calls.register_dataset(name, path, layout)))

    async def upload(
        self, name: str, source: str | Path, progress: Callable[[int, int], None] | None = None
    ) -> Dataset:
        """Send a dataset: a directory (annotations/{train,val}.json, images/{train,val}/), packed as a
        tar while it is sent, or a .tar, .tar.gz, .tgz or .zip of one. `progress(sent, total)` in bytes."""
        body = upload_body(Path(source))
        return cast(Dataset, await self._transport.upload(calls.upload_dataset(name), body, progress))

    async def get(self, dataset_id: str) -> Dataset:
        return cast(Dataset, await self._send(calls.get_dataset(dataset_id)))

    async def list(self, limit: int = 50, cursor: str | None = None) -> DatasetPage:
        return cast(DatasetPage, await self._send(calls.list_datasets(limit, cursor)))


class AsyncModels(AsyncResource):
    """The model registry: trained models, published or not."""

    async def list(self, published: bool | None = None, limit: int = 100) -> ModelPage:
        return cast(ModelPage, await self._send(calls.list_models(published, limit)))

    async def get(self, model_id: str) -> Model:
        return cast(Model, await self._send(calls.model(model_id)))

    async def publish(self, model_id: str) -> Model:
        return cast(Model, await self._send(calls.model(model_id, "publish", "POST")))

    async def unpublish(self, model_id: str) -> Model:
        return cast(Model, await self._send(calls.model(model_id, "unpublish", "POST")))

    async def best_epoch(self, model_id: str, metric: str = "bbox_mAP") -> ModelBestEpoch:
        return cast(ModelBestEpoch, await self._send(calls.model(model_id, "best-epoch", metric=metric)))

    async def lineage(self, model_id: str) -> ModelPage:
        """The model and the models it was fine-tuned from, newest first."""
        return cast(ModelPage, await self._send(calls.model(model_id, "lineage")))

    async def download_weights(self, model_id: str, dest: str | Path) -> Path:
        """Save the model's trained weights (a PyTorch state_dict file) to `dest`."""
        return await self._transport.download(calls.model(model_id, "weights"), Path(dest))


class AsyncTrainers(AsyncResource):
    """Trainers, their accelerators and what they run."""

    async def list(self) -> builtins.list[Trainer]:
        return cast(builtins.list[Trainer], await self._send(calls.list_trainers()))


class AsyncArchitectures(AsyncResource):
    async def list(self) -> builtins.list[Architecture]:
        return cast(builtins.list[Architecture], await self._send(calls.list_architectures()))


class AsyncKeys(AsyncResource):
    """API keys of the caller's project (admin scope), and the caller's own key."""

    async def create(self, name: str, scopes: builtins.list[str]) -> CreatedApiKey:
        return cast(CreatedApiKey, await self._send(calls.create_key(name, scopes)))

    async def list(self) -> builtins.list[ApiKey]:
        return cast(ApiKeyPage, await self._send(calls.list_keys()))["items"]

    async def revoke(self, key_id: str) -> ApiKey:
        return cast(ApiKey, await self._send(calls.revoke_key(key_id)))

    async def me(self) -> WhoAmI:
        return cast(WhoAmI, await self._send(calls.who_am_i()))


class AsyncSweeps(AsyncResource):
    """Hyperparameter sweeps: their trials are runs (`runs.list(sweep_id=...)` is not needed: `get` has them)."""

    async def start(self, spec: Mapping[str, Any]) -> Sweep:
        """Start a sweep from a SweepSpec (base run spec, search space, searcher, metric, trials)."""
        return cast(Sweep, await self._send(Call("POST", "/v1/sweeps", body=dict(spec))))

    async def get(self, sweep_id: str) -> Sweep:
        return cast(Sweep, await self._send(Call("GET", f"/v1/sweeps/{sweep_id}")))

    async def list(self) -> builtins.list[Sweep]:
        """The project's newest 100 sweeps, newest first."""
        page = cast(SweepList, await self._send(Call("GET", "/v1/sweeps")))
        return page["items"]

    async def kill(self, sweep_id: str) -> Sweep:
        """Stop a sweep: its trials still queued or training end `terminated`."""
        return cast(Sweep, await self._send(Call("POST", f"/v1/sweeps/{sweep_id}/kill")))


class AsyncTrainyardClient:
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
        self._transport = AsyncTransport(connection, timeout)
        self.runs = AsyncRuns(self._transport)
        self.datasets = AsyncDatasets(self._transport)
        self.models = AsyncModels(self._transport)
        self.trainers = AsyncTrainers(self._transport)
        self.architectures = AsyncArchitectures(self._transport)
        self.keys = AsyncKeys(self._transport)
        self.sweeps = AsyncSweeps(self._transport)

    async def request(self, method: str, path: str, **params: Any) -> Any:
        """Any operation by method and path (query from keywords), with the same typed errors."""
        return await self._transport.send(Call(method, path, params))

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> "AsyncTrainyardClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
