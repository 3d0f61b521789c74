"""The live event stream against real services: the scheduler moves the run (a simulated trainer
holds it), the metrics service stores epochs the test publishes as the trainer would, and the
stream delivers both live and resumes from Last-Event-ID without missing or repeating anything."""

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from faststream.nats import NatsBroker

from shared.bus import publish_event
from shared.events import ConfusionMatrix, EpochLogged
from shared.subjects import Subjects
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco
from trainyard_client import AsyncTrainyardClient, RunEvent


def epoch_event(run_id: str, attempt: int, n: int) -> EpochLogged:
    return EpochLogged(
        run_id=run_id, attempt=attempt, epoch=n, total_epochs=3, losses={"loss_cls": 1.0 / n, "loss_bbox": 0.5},
        loss=1.0 / n + 0.5, learning_rate=0.01, epoch_time_s=1.5, metrics={"bbox_mAP": 0.1 * n},
        confusion_matrix=ConfusionMatrix(classes=["a", "Background"], matrix=[[n, 1], [0, 0]],
                                         score_threshold=0.3, iou_threshold=0.5),
    )


async def next_event(events: AsyncIterator[RunEvent], within_s: float = 15) -> RunEvent:
    return await asyncio.wait_for(anext(events), within_s)


async def events_until(events: AsyncIterator[RunEvent], done: str, seen: list[RunEvent]) -> RunEvent:
    """Read events into `seen` until one of kind `done` (an epoch, a status name, or `end`) arrives."""
    while True:
        event = await next_event(events)
        seen.append(event)
        if done in (event.event, event.data.get("status")):
            return event


async def test_stream_delivers_epochs_live_and_resumes_from_last_event_id(
    stack: LocalStack, bus: tuple[NatsBroker, Subjects], tmp_path: Path
) -> None:
    broker, subjects = bus
    for service in ("metrics", "scheduler", "api"):
        stack.start_service(service)
    stack.start_load_generator("held", "--trainers", "1", "--behaviour", "hang", "--heartbeat-seconds", "0.5")
    data = write_synthetic_coco(tmp_path / "shapes", train_images=2, val_images=1, size=64).root
    async with AsyncTrainyardClient(stack.api_url, stack.admin_key) as client:
        dataset = await client.datasets.register("shapes", str(data))
        run = await client.runs.start(name="live", dataset_id=dataset["id"], architecture="rtmdet-tiny", epochs=3)
        run_id = run["id"]

        # First connection: the history so far, then an epoch the moment it is stored.
        first: list[RunEvent] = []
        stream = client.runs.follow(run_id)
        await events_until(stream, "in_progress", first)
        attempt = (await client.runs.get(run_id))["attempt"]
        published_at = time.monotonic()
        await publish_event(broker, subjects, subjects.epoch_logged("held-0"), epoch_event(run_id, attempt, 1))
        epoch_1 = await events_until(stream, "epoch", first)
        assert time.monotonic() - published_at < 5
        assert epoch_1.data["epoch"] == 1 and epoch_1.data["losses"]["loss_cls"] == 1.0
        assert (await client.runs.get(run_id))["status"] == "in_progress", "delivered live, not after the fact"
        await stream.aclose()  # the client goes away

        # While nobody listens, epoch 2 is stored.
        await publish_event(broker, subjects, subjects.epoch_logged("held-0"), epoch_event(run_id, attempt, 2))
        await asyncio.sleep(1.5)

        # Reconnecting with the last id seen: epoch 2 first, nothing repeated; then epoch 3 live, the kill, the end.
        resumed: list[RunEvent] = []
        stream = client.runs.follow(run_id, last_event_id=epoch_1.id)
        assert (await events_until(stream, "epoch", resumed)).data["epoch"] == 2
        await publish_event(broker, subjects, subjects.epoch_logged("held-0"), epoch_event(run_id, attempt, 3))
        assert (await events_until(stream, "epoch", resumed)).data["epoch"] == 3
        await client.runs.kill(run_id)
        await events_until(stream, "end", resumed)
        with pytest.raises(StopAsyncIteration):
            await next_event(stream)

        # A fresh connection replays the whole run: exactly what the two connections saw together.
        replay = [event async for event in client.runs.follow(run_id)]

    assert [(e.id, e.event, e.data) for e in first + resumed] == [(e.id, e.event, e.data) for e in replay]
    assert [e.data["status"] for e in replay if e.event == "status"] == ["created", "pending", "in_progress",
                                                                         "terminated"]
    assert [e.data["epoch"] for e in replay if e.event == "epoch"] == [1, 2, 3]
    assert replay[-1].event == "end" and replay[-1].data == {"run_id": run_id, "status": "terminated"}
    # Each event moves the position on; `end` repeats the final position (resuming there ends at once).
    ids = [e.id for e in replay[:-1]]
    assert len(set(ids)) == len(ids) and all(ids) and replay[-1].id == ids[-1]


async def test_bad_last_event_id_is_a_422_problem(stack: LocalStack, tmp_path: Path) -> None:
    stack.start_service("api")
    data = write_synthetic_coco(tmp_path / "shapes", train_images=2, val_images=1, size=64).root
    async with AsyncTrainyardClient(stack.api_url, stack.admin_key) as client:
        dataset = await client.datasets.register("shapes", str(data))
        run = await client.runs.start(name="x", dataset_id=dataset["id"], architecture="rtmdet-tiny")
    headers = {"Authorization": f"Bearer {stack.admin_key}", "Last-Event-ID": "yesterday"}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers) as http:
        response = await http.get(f"/v1/runs/{run['id']}/events")
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "header.last-event-id"


async def test_a_revoked_keys_stream_closes_within_seconds(stack: LocalStack, tmp_path: Path) -> None:
    stack.start_service("api", TRAINYARD_SSE_KEY_RECHECK_S="1")
    data = write_synthetic_coco(tmp_path / "shapes", train_images=2, val_images=1, size=64).root
    admin = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=admin, timeout=30) as http:
        dataset = (await http.post("/v1/datasets", json={"name": "shapes", "path": str(data)})).json()
        run = (await http.post("/v1/runs", json={"name": "x", "dataset_id": dataset["id"],
                                                  "architecture": "rtmdet-tiny"})).json()
        reader = (await http.post("/v1/keys", json={"name": "watcher", "scopes": ["runs:read"]})).json()
        headers = {"Authorization": f"Bearer {reader['key']}"}
        # No scheduler: the run stays queued, so only the revocation can end this stream.
        async with http.stream("GET", f"/v1/runs/{run['id']}/events", headers=headers) as stream:
            lines = stream.aiter_lines()
            while "event: status" not in await asyncio.wait_for(anext(lines), 15):
                pass
            assert (await http.delete(f"/v1/keys/{reader['id']}")).status_code == 200
            revoked_at = time.monotonic()

            async def rest() -> list[str]:
                return [line async for line in lines]

            tail = await asyncio.wait_for(rest(), 15)
        assert "event: revoked" in tail
        assert time.monotonic() - revoked_at < 10
        assert (await http.get(f"/v1/runs/{run['id']}/events", headers=headers)).status_code == 401
