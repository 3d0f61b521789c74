"""A stored status change whose `run.status_changed` the bus could not take is published later.

The real scheduler makes a change while the real NATS server is down (killed with -9): the change is
stored with its event in the run's outbox. Once NATS is back, the scheduler's periodic pass publishes
it, and a plain nats-py subscriber sees it on the stream, once, with the event id stored.
"""

import asyncio
import json
import os
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import nats
from pymongo import MongoClient

from shared.events import RunKillRequested, utcnow
from shared.run_document import HistoryEntry, RunDocument
from shared.specs import DatasetLayout, DatasetSplit, RunSpec
from shared.status import RunStatus
from shared.store import RUNS
from shared.subjects import Subjects
from tests.conftest import service_log
from tests.helpers import wait_until
from trainyard.localstack import LocalStack, _port_open

RUN_ID = "0" * 31 + "1"
RECONNECT_WAIT_S = 0.1


def _published_changes(url: str, subjects: Subjects) -> list[dict[str, Any]]:
    """Every run.status_changed the stream holds, read with an ephemeral consumer from the start."""

    async def read() -> list[dict[str, Any]]:
        connection = await nats.connect(url, connect_timeout=2)
        try:
            js = connection.jetstream()
            consumer = await js.pull_subscribe(subjects.run_status_changed, stream=subjects.stream)
            seen: list[dict[str, Any]] = []
            while True:
                try:
                    messages = await consumer.fetch(50, timeout=1)
                except TimeoutError:
                    return seen
                seen += [json.loads(m.data) | {"msg_id": (m.headers or {}).get("Nats-Msg-Id")} for m in messages]
        finally:
            await connection.close()

    return asyncio.run(read())


def _mongo(url: str) -> MongoClient[dict[str, Any]]:
    return MongoClient(url)


def _unannounced_run(created_ago_s: float) -> dict[str, Any]:
    """A run whose run.created was never published (the API died between insert and publish)."""
    created = utcnow() - timedelta(seconds=created_ago_s)
    split = DatasetSplit(annotations="/data/outbox/train.json", images="/data/outbox/images")
    return RunDocument(
        id=RUN_ID, project="default", name="outbox", status=RunStatus.CREATED,
        spec=RunSpec(name="outbox", dataset_id="d" * 32, architecture="rtmdet-tiny", epochs=1),
        dataset=DatasetLayout(root="/data/outbox", train=split, val=split, classes=["shape"]),
        created_at=created, updated_at=created, created_by="test",
        history=[HistoryEntry(status=RunStatus.CREATED, at=created)],
    ).document()


def test_a_change_stored_while_nats_is_down_is_published_once_it_is_back(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "own")
    try:
        stack.start_servers()
        assert stack.nats_url and stack.mongo_url
        subjects = Subjects(stack.subject_prefix)
        # Quick reconnect tries, so that NATS stays away past nats-py's default budget of 60 of them: the
        # scheduler must still come back (it used to close its connection for good and spin).
        stack.start_service("scheduler", TRAINYARD_NATS_RECONNECT_WAIT_S=str(RECONNECT_WAIT_S))
        # Connected, every consumer made, its periodic pass running: NATS dies after the scheduler's start.
        wait_until(lambda: "started successfully" in service_log(stack, "scheduler"), 120,
                   "the scheduler to start")
        nats_server = stack.processes["nats"]
        os.kill(nats_server.pid, signal.SIGKILL)
        nats_server.wait(10)
        killed_at = time.monotonic()

        with _mongo(stack.mongo_url) as client:
            runs = client[stack.mongo_db][RUNS]
            runs.insert_one(_unannounced_run(created_ago_s=60))
            # The periodic pass queues it (created -> pending) with NATS away: stored, not announced.
            queued = wait_until(lambda: (r := runs.find_one({"_id": RUN_ID, "status": "pending"})) and r, 60,
                                "the scheduler to queue the run")
            assert [e["event_id"] for e in queued["status_outbox"]], queued
            stored = queued["status_outbox"][0]["event_id"]
            assert _port_open(urlparse(stack.nats_url).port or 0) is False
            # The fault itself: NATS away for longer than 60 reconnect tries.
            time.sleep(max(0.0, 80 * RECONNECT_WAIT_S - (time.monotonic() - killed_at)))

            stack.restart_process("nats")
            wait_until(lambda: _port_open(urlparse(stack.nats_url or "").port or 0), 30, "NATS to listen again")
            changes = wait_until(lambda: [c for c in _published_changes(stack.nats_url or "", subjects)
                                          if c["run_id"] == RUN_ID], 60, "the stored change on the bus")
            wait_until(lambda: not (runs.find_one({"_id": RUN_ID}) or {}).get("status_outbox"), 30,
                       "the outbox to empty")
        assert [(c["event_id"], c["msg_id"], c["previous_status"], c["status"]) for c in changes] == [
            (stored, stored, "created", "pending")]
        # Passes after the one that published it add nothing: the entry left the outbox with the ack.
        assert [c["event_id"] for c in _published_changes(stack.nats_url, subjects)
                if c["run_id"] == RUN_ID] == [stored]
    finally:
        stack.stop()


def test_changes_of_many_runs_are_announced_once_each_in_the_order_stored(tmp_path: Path) -> None:
    """The announcer publishes in the background: every change reaches the stream once, each run's in
    the order it was stored, and every outbox empties (acknowledged entries pulled in batches)."""
    stack = LocalStack(tmp_path / "own")
    run_ids = [f"{i:032x}" for i in range(1, 21)]
    try:
        stack.start_servers()
        assert stack.nats_url and stack.mongo_url
        subjects = Subjects(stack.subject_prefix)
        stack.start_service("scheduler")
        wait_until(lambda: "started successfully" in service_log(stack, "scheduler"), 120, "the scheduler to start")
        with _mongo(stack.mongo_url) as client:
            runs = client[stack.mongo_db][RUNS]
            runs.insert_many([_unannounced_run(created_ago_s=60) | {"_id": run_id} for run_id in run_ids])
            # The periodic pass queues them all (created -> pending), no trainer online: they stay queued.
            wait_until(lambda: runs.count_documents({"_id": {"$in": run_ids}, "status": "pending"}) == len(run_ids),
                       60, "the scheduler to queue the runs")

            async def kill_all() -> None:
                connection = await nats.connect(stack.nats_url or "", connect_timeout=2)
                try:
                    js = connection.jetstream()
                    for run_id in run_ids:
                        kill = RunKillRequested(run_id=run_id)
                        await js.publish(subjects.run_kill_requested, kill.model_dump_json().encode(),
                                         stream=subjects.stream, headers={"Nats-Msg-Id": kill.event_id})
                finally:
                    await connection.close()

            asyncio.run(kill_all())  # pending -> terminated, a second change of each run
            wait_until(lambda: runs.count_documents({"_id": {"$in": run_ids}, "status": "terminated"})
                       == len(run_ids), 60, "the scheduler to end the runs")
            wait_until(lambda: runs.count_documents({"_id": {"$in": run_ids}, "status_outbox.0": {"$exists": True}})
                       == 0, 30, "every outbox to empty")
            stored = {doc["_id"]: doc for doc in runs.find({"_id": {"$in": run_ids}})}
        changes = [c for c in _published_changes(stack.nats_url, subjects) if c["run_id"] in stored]
        for run_id in run_ids:
            of_run = [(c["previous_status"], c["status"]) for c in changes if c["run_id"] == run_id]
            assert of_run == [("created", "pending"), ("pending", "terminated")], (run_id, of_run)
        assert len({c["event_id"] for c in changes}) == len(changes) == 2 * len(run_ids)
        # Announced and pulled by the announcer itself: the periodic pass found nothing left to publish.
        assert "from its outbox" not in service_log(stack, "scheduler")
    finally:
        stack.stop()
