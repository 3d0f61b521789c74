"""A scheduler killed under load, with a deep queue and a busy fleet, and started again: its
in-memory queue index and trainer liveness are rebuilt from the database and the heartbeats,
no queued run is lost and none is assigned twice."""

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg

from shared.events import RunAssigned
from tests.helpers import TERMINAL
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco
from trainyard_client import TrainyardClient

RUNS = 200


@pytest.fixture
def client(stack: LocalStack) -> Iterator[TrainyardClient]:
    stack.start_servers()
    stack.start_service("api")
    with TrainyardClient(stack.api_url, stack.admin_key) as api:
        yield api


@pytest.fixture
def dataset_id(client: TrainyardClient, tmp_path: Path) -> str:
    files = write_synthetic_coco(tmp_path / "shapes", train_images=2, val_images=1, size=64)
    return str(client.datasets.register("shapes", str(files.root))["id"])


def test_a_scheduler_killed_under_load_loses_no_queued_run_and_assigns_none_twice(
    stack: LocalStack, client: TrainyardClient, dataset_id: str
) -> None:
    stack.start_load_generator("fleet", "--trainers", "10", "--run-seconds", "0.5", "--heartbeat-seconds", "1")
    assignments: Counter[tuple[str, int]] = Counter()

    async def scenario() -> list[dict[str, Any]]:
        assert stack.nats_url
        connection = await nats.connect(stack.nats_url)

        async def record(message: Msg) -> None:
            event = RunAssigned.model_validate_json(message.data)
            assignments[(event.run_id, event.attempt)] += 1

        await connection.subscribe(f"{stack.subject_prefix}.run.assigned.>", cb=record)
        await connection.flush()

        def every_run() -> list[dict[str, Any]]:
            return [dict(r) for r in client.runs.list_all()]

        spec = {"dataset_id": dataset_id, "architecture": "rtmdet-tiny"}
        ids = [str((await asyncio.to_thread(client.runs.start, {"name": f"run-{i}", **spec}))["id"])
               for i in range(RUNS)]
        # Started once every run is stored: the queue is deep when the scheduler dies.
        scheduler = stack.start_service("scheduler", TRAINYARD_ASSIGNMENT_ACK_TIMEOUT_S="3")
        # Killed mid-queue: some runs done, some training, most still waiting.
        deadline = time.monotonic() + 120
        while sum(r["status"] == "success" for r in await asyncio.to_thread(every_run)) < 20:
            assert time.monotonic() < deadline, "the first 20 runs did not finish"
            await asyncio.sleep(0.2)
        os.kill(scheduler.pid, signal.SIGKILL)
        await asyncio.to_thread(scheduler.wait)
        waiting = sum(r["status"] in ("created", "pending") for r in await asyncio.to_thread(every_run))
        assert waiting > RUNS // 2, "the kill came too late to test a deep queue"
        stack.start_service("scheduler", name="scheduler-again", TRAINYARD_ASSIGNMENT_ACK_TIMEOUT_S="3")
        # Events the killed scheduler had fetched but not acked come back after the consumers' ack wait.
        deadline = time.monotonic() + 240
        # Each run read by its id: the question is what the scheduler did to every one of them, not
        # whether a listing paged while 200 runs change status shows each (one such listing missed one).
        def each_run() -> list[dict[str, Any]]:
            return [dict(client.runs.get(run_id)) for run_id in ids]

        while True:
            runs = await asyncio.to_thread(each_run)
            if sum(r["status"] in TERMINAL for r in runs) == RUNS or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        await connection.drain()
        return runs

    runs = asyncio.run(scenario())
    assert len(runs) == RUNS
    assert Counter(r["status"] for r in runs) == {"success": RUNS}
    for run in runs:
        statuses = [h["status"] for h in run["history"]]
        assert statuses.count("in_progress") == 1 and statuses.count("success") == 1, run
        # Every attempt was assigned once at most (a claim the killed process never sent is
        # retried as a new attempt after the acceptance timeout, never sent again as the old one).
        sent = [attempt for (run_id, attempt), count in assignments.items() if run_id == run["id"]]
        assert all(assignments[(run["id"], attempt)] == 1 for attempt in sent), run["id"]
        assert run["attempt"] in sent
