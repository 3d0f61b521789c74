"""The scheduler against real servers, driven through the API, with simulated trainers
(bench.loadgen: real processes speaking the trainer protocol, training nothing; or one the test
plays itself on the bus), and its store's trainer claims against the real database."""

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from pymongo import AsyncMongoClient, MongoClient

from services.scheduler.store import SchedulerStore
from shared.events import (
    Accelerator,
    Event,
    RunAccepted,
    RunAssigned,
    RunCompleted,
    RunningAttempt,
    RunReleased,
    RunStarted,
    StoredCheckpoint,
    TrainerHeartbeat,
    utcnow,
)
from shared.run_document import RunDocument
from shared.status import RunStatus
from shared.store import RUNS, TRAINERS
from shared.subjects import Subjects
from tests.helpers import TERMINAL, wait_status, wait_until
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco
from trainyard_client import ConflictError, TrainyardClient


@pytest.fixture
def client(stack: LocalStack, tmp_path: Path) -> Iterator[TrainyardClient]:
    stack.start_servers()
    stack.start_service("api")
    with TrainyardClient(stack.api_url, stack.admin_key) as api:
        yield api


@pytest.fixture
def dataset_id(client: TrainyardClient, tmp_path: Path) -> str:
    files = write_synthetic_coco(tmp_path / "shapes", train_images=2, val_images=1, size=64)
    return str(client.datasets.register("shapes", str(files.root))["id"])


def start(client: TrainyardClient, dataset_id: str, name: str, **spec: Any) -> dict[str, Any]:
    return dict(client.runs.start({"name": name, "dataset_id": dataset_id, "architecture": "rtmdet-tiny", **spec}))


def stored_run(stack: LocalStack, run_id: str) -> RunDocument:
    """The run's document as the api wrote it and the scheduler moved it, read straight from the database
    through the model every service reads it with: a field a writer spells otherwise fails here."""
    assert stack.mongo_url
    mongo: MongoClient[dict[str, Any]]
    with MongoClient(stack.mongo_url, tz_aware=True) as mongo:
        doc = mongo[stack.mongo_db][RUNS].find_one({"_id": run_id})
    assert doc is not None
    return RunDocument.model_validate(doc)


def first_at(run: dict[str, Any], status: str) -> str:
    return str(next(h["at"] for h in run["history"] if h["status"] == status))


def test_priority_first_and_an_unfittable_run_blocks_nothing(
    stack: LocalStack, client: TrainyardClient, dataset_id: str
) -> None:
    stack.start_service("scheduler")
    stack.start_load_generator("cpu", "--trainers", "1", "--run-seconds", "6")
    blocker = start(client, dataset_id, "blocker")
    wait_status(client, blocker["id"], {"in_progress"})
    huge = start(client, dataset_id, "huge", accelerator={"name": "CPU", "count": 4})
    wait_until(lambda: client.runs.get(huge["id"])["pending_reason"] == "no trainer online with CPU x4",
               what="the unfittable run to be queued")
    low = start(client, dataset_id, "low", priority=0)
    high = start(client, dataset_id, "high", priority=10)
    # Both queued behind the blocker: the later, higher-priority run is first in line.
    wait_until(lambda: (client.runs.get(low["id"])["queue_position"], client.runs.get(high["id"])["queue_position"])
               == (2, 1), what="queue positions")

    low_done = wait_status(client, low["id"], TERMINAL, timeout=40)
    high_done = dict(client.runs.get(high["id"]))
    assert low_done["status"] == high_done["status"] == "success"
    assert first_at(high_done, "in_progress") < first_at(low_done, "in_progress")
    huge_now = client.runs.get(huge["id"])
    assert huge_now["status"] == "pending"
    assert huge_now["pending_reason"] == "no trainer online with CPU x4"


def test_two_schedulers_never_assign_a_run_twice(stack: LocalStack, client: TrainyardClient, dataset_id: str) -> None:
    stack.start_service("scheduler", name="scheduler-a")
    stack.start_service("scheduler", name="scheduler-b")
    stack.start_load_generator("pool", "--trainers", "20", "--run-seconds", "0.05", "--heartbeat-seconds", "0.5")
    assigned: list[str] = []

    async def count_assignments(ready: asyncio.Event, done: asyncio.Event) -> None:
        assert stack.nats_url
        connection = await nats.connect(stack.nats_url)

        async def record(message: Any) -> None:
            assigned.append(message.subject)

        await connection.subscribe(f"{stack.subject_prefix}.run.assigned.>", cb=record)
        await connection.flush()
        ready.set()
        await done.wait()
        await connection.drain()

    async def scenario() -> list[dict[str, Any]]:
        ready, done = asyncio.Event(), asyncio.Event()
        counter = asyncio.create_task(count_assignments(ready, done))
        await ready.wait()
        runs = [await asyncio.to_thread(start, client, dataset_id, f"run-{i}") for i in range(200)]
        deadline = time.monotonic() + 120
        finished: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            every_run = await asyncio.to_thread(lambda: [dict(r) for r in client.runs.list_all()])
            finished = [r for r in every_run if r["status"] in TERMINAL]
            if len(finished) == len(runs):
                break
            await asyncio.sleep(1)
        await asyncio.sleep(1)
        done.set()
        await counter
        return finished

    finished = asyncio.run(scenario())
    assert len(finished) == 200
    assert {r["status"] for r in finished} == {"success"}
    assert {r["attempt"] for r in finished} == {1}
    assert len(assigned) == 200 and len(set(assigned)) <= 20
    for run in finished:
        assert [h["status"] for h in run["history"]].count("in_progress") == 1


def test_scheduler_restart_mid_queue_loses_and_repeats_nothing(
    stack: LocalStack, client: TrainyardClient, dataset_id: str
) -> None:
    scheduler = stack.start_service("scheduler", TRAINYARD_ASSIGNMENT_ACK_TIMEOUT_S="3")
    stack.start_load_generator("pair", "--trainers", "2", "--run-seconds", "0.3")
    runs = [start(client, dataset_id, f"run-{i}") for i in range(30)]
    wait_until(lambda: sum(r["status"] == "success" for r in client.runs.list_all()) >= 5, what="5 done")
    os.kill(scheduler.pid, signal.SIGKILL)
    scheduler.wait()
    stack.start_service("scheduler", name="scheduler-again", TRAINYARD_ASSIGNMENT_ACK_TIMEOUT_S="3")
    # Events the killed scheduler had fetched but not acked come back after the
    # consumers' ack wait (30 s), so a run or two finish only then.
    for run in runs:
        done = wait_status(client, run["id"], TERMINAL, timeout=120)
        assert done["status"] == "success", done
        statuses = [h["status"] for h in done["history"]]
        assert statuses.count("success") == 1 and statuses.count("in_progress") == 1


def test_unaccepted_assignments_retry_until_attempts_run_out(
    stack: LocalStack, client: TrainyardClient, dataset_id: str
) -> None:
    stack.start_service("scheduler", TRAINYARD_ASSIGNMENT_ACK_TIMEOUT_S="1")
    stack.start_load_generator("deaf", "--trainers", "1", "--behaviour", "ignore")
    run = start(client, dataset_id, "doomed", max_attempts=2)
    done = wait_status(client, run["id"], TERMINAL, timeout=30)
    assert done["status"] == "aborted"
    assert done["attempt"] == 2
    assert "out of attempts (2 of 2)" in done["message"]
    assert "did not accept the assignment in time" in done["message"]
    stored = stored_run(stack, run["id"])
    assert (stored.status, stored.attempt, stored.message) == (RunStatus.ABORTED, 2, done["message"])
    assert stored.completed_at is not None and stored.started_at is None and stored.attempt_limit is None
    assert [(h.status, h.attempt) for h in stored.history][:2] == [(RunStatus.CREATED, None), (RunStatus.PENDING, None)]
    assert stored.history[-1].status == RunStatus.ABORTED and stored.history[-1].attempt == 2


def test_execution_timeout_aborts_and_frees_the_trainer(
    stack: LocalStack, client: TrainyardClient, dataset_id: str
) -> None:
    stack.start_service("scheduler")
    stack.start_load_generator("stuck", "--trainers", "1", "--behaviour", "hang")
    run = start(client, dataset_id, "forever", execution_timeout_s=10)
    wait_status(client, run["id"], {"in_progress"})
    done = wait_status(client, run["id"], TERMINAL, timeout=30)
    assert done["status"] == "aborted"
    assert done["message"] == "exceeded its execution timeout of 10 s"
    stored = stored_run(stack, run["id"])
    assert stored.status == RunStatus.ABORTED and stored.trainer_id == "stuck-0" and stored.device
    assert stored.started_at is not None and stored.completed_at is not None and stored.started_at < stored.completed_at
    assert [h.status for h in stored.history][-2:] == [RunStatus.IN_PROGRESS, RunStatus.ABORTED]
    trainers = wait_until(lambda: [t for t in client.trainers.list() if t["free"] == 1],
                          what="the trainer freed")
    assert trainers[0]["id"] == "stuck-0" and trainers[0]["health"] == "online"


def test_killing_a_queued_run_ends_it_at_once(stack: LocalStack, client: TrainyardClient, dataset_id: str) -> None:
    stack.start_service("scheduler")
    run = start(client, dataset_id, "nowhere", accelerator={"name": "GPU_H100", "count": 8})
    wait_status(client, run["id"], {"pending"})
    client.runs.kill(run["id"])
    done = wait_status(client, run["id"], TERMINAL, timeout=10)
    assert done["status"] == "terminated" and done["message"] == "killed by user"
    with pytest.raises(ConflictError):
        client.runs.kill(run["id"])


def test_queue_position_counts_waiting_as_the_scheduler_does(
    stack: LocalStack, client: TrainyardClient, dataset_id: str
) -> None:
    # One second of waiting is worth a level of priority; no trainer is online, so both wait.
    stack.start_service("scheduler", TRAINYARD_AGING_S="1")
    old = start(client, dataset_id, "old", priority=0)
    wait_until(lambda: client.runs.get(old["id"])["queue_position"] == 1, what="the first run queued")
    time.sleep(3)
    new = start(client, dataset_id, "new", priority=1)
    # Without aging the newer, higher-priority run would be first in line.
    wait_until(lambda: (client.runs.get(old["id"])["queue_position"], client.runs.get(new["id"])["queue_position"])
               == (1, 2), what="aged queue positions")


def test_a_kill_racing_the_runs_creation_is_never_lost(
    stack: LocalStack, client: TrainyardClient, dataset_id: str
) -> None:
    # Killed before, while or after the scheduler queues them: each ends terminated.
    stack.start_service("scheduler")
    runs = [start(client, dataset_id, f"k{i}") for i in range(6)]
    for run in runs:
        client.runs.kill(run["id"])
    for run in runs:
        assert wait_status(client, run["id"], TERMINAL, timeout=60)["status"] == "terminated"


def test_a_training_process_killed_by_a_signal_is_a_reset_that_honours_on_reset(
    stack: LocalStack, client: TrainyardClient, dataset_id: str
) -> None:
    """`run.released` with cause child_killed (the trainer saw its child die of a signal): retried
    from the checkpoint the event names, or failed with `on_reset: fail`."""
    stack.start_service("scheduler")
    stack.start_load_generator("stuck", "--trainers", "2", "--behaviour", "hang")
    retried = start(client, dataset_id, "retried")
    failing = start(client, dataset_id, "failing", on_reset="fail")
    running = [wait_status(client, run["id"], {"in_progress"}) for run in (retried, failing)]
    killed = "training process was killed by signal 9 (SIGKILL); signal 9 is often the kernel's out-of-memory killer"

    async def release(run: dict[str, Any]) -> None:
        assert stack.nats_url is not None
        connection = await nats.connect(stack.nats_url)
        event = RunReleased(run_id=run["id"], attempt=1, trainer_id=run["trainer_id"], reason=killed,
                            cause="child_killed",
                            checkpoint=StoredCheckpoint(attempt=1, epoch=3, name=f"runs/{run['id']}/epoch_3.pth"))
        subject = Subjects(stack.subject_prefix).run_released(run["trainer_id"])
        await connection.jetstream().publish(subject, event.model_dump_json().encode())
        await connection.close()

    for run in running:
        asyncio.run(release(run))
    again = wait_until(lambda: (r := client.runs.get(retried["id"]))["attempt"] == 2 and r, 30, "a second attempt")
    statuses = [h["status"] for h in again["history"]]
    assert statuses[statuses.index("in_progress") + 1:][:2] == ["rerun", "pending"], statuses
    assert next(h["message"] for h in again["history"] if h["status"] == "rerun") == killed
    # The release's checkpoint was recorded before the reset: the retry resumes from epoch 3.
    resume_from = client.runs.checkpoints(retried["id"])["resume_from"]
    assert resume_from is not None and resume_from["epoch"] == 3
    done = wait_status(client, failing["id"], TERMINAL)
    assert done["status"] == "failed" and done["message"] == f"{killed}; on_reset is 'fail'", done


class ScriptedTrainer:
    """A trainer the test plays itself over the real bus: it heartbeats what it runs, and accepts,
    starts and ends exactly the attempts the test tells it to, when it tells it to (a late report
    of an older attempt, say, which no real trainer can be made to send on cue)."""

    def __init__(self, connection: Client, subjects: Subjects, trainer_id: str, capacity: int) -> None:
        self.connection = connection
        self.jetstream = connection.jetstream()
        self.subjects = subjects
        self.trainer_id = trainer_id
        self.capacity = capacity
        self.instance = f"{trainer_id}-process"
        self.assigned: asyncio.Queue[RunAssigned] = asyncio.Queue()
        self.running: dict[str, int] = {}

    async def __aenter__(self) -> "ScriptedTrainer":
        async def take(message: Any) -> None:
            await self.assigned.put(RunAssigned.model_validate_json(message.data))

        await self.connection.subscribe(self.subjects.run_assigned(self.trainer_id), cb=take)
        await self.connection.flush()
        self._beating = asyncio.create_task(self._heartbeats())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._beating

    async def _heartbeats(self) -> None:
        while True:
            beat = TrainerHeartbeat(
                trainer_id=self.trainer_id, instance=self.instance, host="scripted", version="test",
                accelerators=[Accelerator(name="CPU", count=self.capacity)],
                running=[RunningAttempt(run_id=r, attempt=a) for r, a in self.running.items()],
                free=self.capacity - len(self.running),
            )
            await self.connection.publish(self.subjects.trainer_heartbeat(self.trainer_id),
                                          beat.model_dump_json().encode())
            await asyncio.sleep(0.5)

    async def report(self, subject: str, event: Event) -> int:
        """Publish a trainer report on the stream; its stream sequence number."""
        ack = await self.jetstream.publish(subject, event.model_dump_json().encode(),
                                           headers={"Nats-Msg-Id": event.event_id})
        return int(ack.seq)

    async def next_assignment(self) -> RunAssigned:
        return await asyncio.wait_for(self.assigned.get(), timeout=30)

    async def run(self, assignment: RunAssigned) -> None:
        """Accept and start an attempt (it then runs until the test ends it)."""
        ids = {"run_id": assignment.run_id, "attempt": assignment.attempt, "trainer_id": self.trainer_id}
        self.running[assignment.run_id] = assignment.attempt
        await self.report(self.subjects.run_accepted(self.trainer_id), RunAccepted(**ids, instance=self.instance))
        await self.report(self.subjects.run_started(self.trainer_id), RunStarted(**ids, device="scripted"))


def handled_by(stack: LocalStack, consumer: str, sequence: int) -> bool:
    """Whether the scheduler's consumer has acked every message up to this stream sequence."""

    async def ack_floor() -> int:
        assert stack.nats_url
        connection = await nats.connect(stack.nats_url)
        try:
            info = await connection.jetstream().consumer_info(Subjects(stack.subject_prefix).stream, consumer)
            return int(info.ack_floor.stream_seq) if info.ack_floor else 0
        finally:
            await connection.close()

    return asyncio.run(ack_floor()) >= sequence


def stored_trainer(stack: LocalStack, trainer_id: str) -> dict[str, Any]:
    assert stack.mongo_url
    mongo: MongoClient[dict[str, Any]]
    with MongoClient(stack.mongo_url, tz_aware=True) as mongo:
        doc = mongo[stack.mongo_db][TRAINERS].find_one({"_id": trainer_id})
    assert doc is not None
    return doc


def play_with_one_trainer(stack: LocalStack, played: Callable[[ScriptedTrainer], Awaitable[None]]) -> None:
    """Start the scheduler and play `played` as trainer "solo" (one accelerator) over real NATS."""
    stack.start_service("scheduler")
    nats_url = stack.nats_url
    assert nats_url

    async def scenario() -> None:
        connection = await nats.connect(nats_url)
        try:
            async with ScriptedTrainer(connection, Subjects(stack.subject_prefix), "solo", capacity=1) as trainer:
                await played(trainer)
        finally:
            await connection.close()

    asyncio.run(scenario())


async def until(check: Callable[[], Any], what: str) -> Any:
    return await asyncio.to_thread(wait_until, check, 30, what)


def test_a_late_completion_of_an_older_attempt_frees_nothing_of_the_current_one(
    stack: LocalStack, client: TrainyardClient, dataset_id: str
) -> None:
    """Attempt 1 is handed back (its training process killed), attempt 2 is placed on the same
    one-accelerator trainer and runs; then attempt 1's run.completed arrives. The trainer stays
    full and attempt 2 keeps running: before, the late completion released the run's assignment
    whatever its attempt, the trainer showed a free accelerator and took a second run."""
    subjects = Subjects(stack.subject_prefix)

    async def played(trainer: ScriptedTrainer) -> None:
        run = await asyncio.to_thread(start, client, dataset_id, "twice")
        first = await trainer.next_assignment()
        assert (first.run_id, first.attempt) == (run["id"], 1)
        await trainer.run(first)
        await until(lambda: client.runs.get(run["id"])["status"] == "in_progress", "attempt 1 in progress")

        trainer.running.pop(run["id"])
        await trainer.report(subjects.run_released("solo"), RunReleased(
            run_id=run["id"], attempt=1, trainer_id="solo", cause="child_killed",
            reason="training process was killed by signal 9 (SIGKILL)"))
        second = await trainer.next_assignment()
        assert (second.run_id, second.attempt) == (run["id"], 2)
        await trainer.run(second)
        await until(lambda: (r := client.runs.get(run["id"]))["status"] == "in_progress" and r["attempt"] == 2,
                    "attempt 2 in progress")
        before = stored_trainer(stack, "solo")
        assert before["free"] == 0 and before["assignments"][run["id"]]["attempt"] == 2, before

        late = await trainer.report(subjects.run_completed("solo"), RunCompleted(
            run_id=run["id"], attempt=1, trainer_id="solo", status=RunStatus.ABORTED, message="killed"))
        await until(lambda: handled_by(stack, "scheduler-run-completed", late), "the late completion handled")
        after = stored_trainer(stack, "solo")
        assert after["free"] == 0 and after["assignments"] == before["assignments"], after
        current = await asyncio.to_thread(client.runs.get, run["id"])
        assert (current["status"], current["attempt"], current["trainer_id"]) == ("in_progress", 2, "solo")
        listed = await asyncio.to_thread(client.trainers.list)
        assert [(t["id"], t["free"]) for t in listed] == [("solo", 0)]

        # The trainer is full: a second run waits for it (before, it was assigned there at once).
        other = await asyncio.to_thread(start, client, dataset_id, "waiting")
        await until(lambda: client.runs.get(other["id"])["pending_reason"]
                    == "waiting for CPU x1 to free up (1 trainers online, all busy)", "the second run to wait")
        assert trainer.assigned.empty()

        # Attempt 2's own completion frees the trainer, and the waiting run gets it.
        trainer.running.pop(run["id"])
        await trainer.report(subjects.run_completed("solo"), RunCompleted(
            run_id=run["id"], attempt=2, trainer_id="solo", status=RunStatus.SUCCESS, epochs_completed=1))
        third = await trainer.next_assignment()
        assert (third.run_id, third.attempt) == (other["id"], 1)
        done = await asyncio.to_thread(wait_status, client, run["id"], TERMINAL)
        assert (done["status"], done["attempt"]) == ("success", 2)

    play_with_one_trainer(stack, played)


def test_a_killed_run_stays_killed_when_its_trainer_then_hands_it_back(
    stack: LocalStack, client: TrainyardClient, dataset_id: str
) -> None:
    """A kill ends the run at once and tells its trainer to stop. If the training process dies of
    that stop (or of anything) before the trainer has taken the stop in, the trainer hands the run
    back as `child_killed`. That hand-back must free the trainer and nothing more: before, it
    moved the killed run terminated -> rerun -> pending, and it trained again (seen in CI)."""
    subjects = Subjects(stack.subject_prefix)

    async def played(trainer: ScriptedTrainer) -> None:
        run = await asyncio.to_thread(start, client, dataset_id, "killed")
        first = await trainer.next_assignment()
        await trainer.run(first)
        await until(lambda: client.runs.get(run["id"])["status"] == "in_progress", "attempt 1 in progress")
        await asyncio.to_thread(client.runs.kill, run["id"])
        await until(lambda: client.runs.get(run["id"])["status"] == "terminated", "the kill")

        trainer.running.pop(run["id"])
        released = await trainer.report(subjects.run_released("solo"), RunReleased(
            run_id=run["id"], attempt=1, trainer_id="solo", cause="child_killed",
            reason="training process was killed by signal 15 (SIGTERM)"))
        await until(lambda: handled_by(stack, "scheduler-run-released", released), "the hand-back handled")
        current = await asyncio.to_thread(client.runs.get, run["id"])
        assert (current["status"], current["attempt"]) == ("terminated", 1), current["history"]
        assert stored_trainer(stack, "solo")["free"] == 1
        assert trainer.assigned.empty()

    play_with_one_trainer(stack, played)


async def test_a_trainer_release_frees_only_the_attempt_it_names(servers: LocalStack) -> None:
    """The store's claims and releases against the real database: the claiming process (which
    keeps the count it took) and a replica (which reads the stored one) alike free nothing for an
    older attempt, and an assignment stored before assignments named their attempt is freed by any."""
    assert servers.mongo_url
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_url, tz_aware=True)

    async def trainer() -> dict[str, Any]:
        doc = await db[TRAINERS].find_one({"_id": "t"})
        assert doc is not None
        return doc

    try:
        db = mongo["t" + uuid.uuid4().hex[:10]]
        await db[TRAINERS].insert_one({"_id": "t", "capacity": 2, "free": 2, "lost": False, "draining": False,
                                       "assignments": {}})
        claimer, replica = SchedulerStore(db), SchedulerStore(db)
        assert await claimer.claim_trainer("t", "r", 2, 1)
        assert not await claimer.claim_trainer("t", "r", 3, 1)  # one assignment per run and trainer
        assert not await claimer.release_trainer("t", "r", 1)
        assert not await replica.release_trainer("t", "r", 1)
        held = await trainer()
        assert held["free"] == 1 and held["assignments"]["r"]["attempt"] == 2
        assert await replica.release_trainer("t", "r", 2)
        assert not await claimer.release_trainer("t", "r", 2)  # given back once
        assert (await trainer())["free"] == 2

        # Stored by a scheduler from before assignments named their attempt.
        await db[TRAINERS].update_one({"_id": "t"}, {"$set": {"assignments.old": {"count": 1, "assigned_at": utcnow()}},
                                                     "$inc": {"free": -1}})
        assert await replica.release_trainer("t", "old", 3)
        freed = await trainer()
        assert freed["free"] == 2 and freed["assignments"] == {}
    finally:
        await mongo.close()
