"""deploy/nats/nats-server.conf: every service works with its own credentials, and no
service may publish what another owns (a trainer cannot publish run.created)."""

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from faststream.nats import NatsBroker
from pymongo import MongoClient

from shared.artifacts import CHUNK_BYTES, ArtifactCache, Artifacts, CheckpointManifest, checkpoint_name
from shared.bus import publish_event
from shared.events import EpochLogged, IterationLog, IterationsLogged
from shared.subjects import Subjects
from trainyard.localstack import LocalStack, StackError, _bin, _port_open, _wait, free_port
from trainyard.synth import write_synthetic_coco
from trainyard_client import TrainyardClient

NATS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "nats"
CONFIG = NATS_DIR / "nats-server.conf"
USERS = ("api", "scheduler", "trainer-0", "trainer-1", "metrics", "operator", "system")
# Each trainer has a user of its own, named by its trainer id.
TRAINER_ID = "trainer-0"


@dataclass
class SecuredNats:
    port: int

    def url(self, user: str) -> str:
        return f"nats://{user}:pw-{user}@127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def secured_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredNats]:
    """nats-server with the deploy config as is; only ports, store and passwords are the test's."""
    root = tmp_path_factory.mktemp("secured-nats")
    port, monitor = free_port(), free_port()
    env = {**os.environ, **{f"NATS_{user.upper().replace('-', '_')}_PASSWORD": f"pw-{user}" for user in USERS}}
    # The store directory is the one line that differs (the flag -sd cannot override the file).
    text = CONFIG.read_text()
    assert text.count("store_dir: /data") == 1
    config = root / "nats-server.conf"
    config.write_text(text.replace("store_dir: /data", f"store_dir: {root / 'js'}"))
    shutil.copy(NATS_DIR / "accounts.conf", root / "accounts.conf")
    log = root / "nats.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [_bin("nats-server"), "-c", str(config), "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor)],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    try:
        _wait("nats-server (deploy config)", lambda: _port_open(port), proc, log, 20)
        yield SecuredNats(port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _permission_errors(url: str, publish: str = "", request: str = "") -> list[str]:
    """The errors the server sends when this user publishes to / requests on a subject."""

    async def attempt() -> list[str]:
        errors: list[str] = []

        async def on_error(error: Exception) -> None:
            errors.append(str(error))

        conn = await nats.connect(url, error_cb=on_error, allow_reconnect=False)
        try:
            if publish:
                await conn.publish(publish, b"{}")
            if request:
                await conn.publish(request, b"{}", reply=conn.new_inbox())
            await conn.flush()
            await asyncio.sleep(0.3)
        finally:
            await conn.close()
        return errors

    return asyncio.run(attempt())


@pytest.mark.parametrize(("user", "subject"), [
    ("trainer-0", "run.created"),
    ("trainer-0", "run.assigned.some-trainer"),
    ("metrics", "run.completed"),
    ("api", "run.assigned.some-trainer"),
    ("api", "epoch.logged"),
    ("scheduler", "run.created"),
    ("trainer-0", "run.stop_requested.some-trainer"),
    # A trainer reports only under its own id: never as another trainer, nor without one.
    ("trainer-0", "epoch.logged.trainer-1"),
    ("trainer-0", "epoch.logged"),
    ("trainer-1", "model.registered.trainer-0"),
    ("trainer-0", "checkpoint.saved.trainer-1"),
    ("trainer-0", "run.completed.trainer-1"),
    ("trainer-1", "trainer.heartbeat.trainer-0"),
    ("trainer-0", "iteration.logged.trainer-1"),
    ("api", "run.released"),
    ("metrics", "run.kill_requested"),
])
def test_a_service_cannot_publish_what_another_owns(secured_nats: SecuredNats, user: str, subject: str) -> None:
    errors = _permission_errors(secured_nats.url(user), publish=subject)
    assert any("permissions violation" in e.lower() for e in errors), errors


@pytest.mark.parametrize("consumer", ["scheduler-run-created", "metrics-epochs", "trainer-trainer-1-assignments",
                                      "trainer-trainer-1-stops"])
def test_a_trainer_cannot_pull_from_another_consumer(secured_nats: SecuredNats, consumer: str) -> None:
    errors = _permission_errors(secured_nats.url("trainer-0"),
                                request=f"$JS.API.CONSUMER.MSG.NEXT.TRAINYARD.{consumer}")
    assert any("permissions violation" in e.lower() for e in errors), errors


@pytest.mark.parametrize("subject", ["epoch.logged.trainer-0", "trainer.heartbeat.trainer-0",
                                     "model.registered.trainer-0"])
def test_a_trainer_may_publish_its_own_reports(secured_nats: SecuredNats, subject: str) -> None:
    assert _permission_errors(secured_nats.url("trainer-0"), publish=subject) == []


def test_trainer_and_api_use_the_artifact_store_with_their_own_credentials(
    secured_nats: SecuredNats, tmp_path: Path
) -> None:
    """The trainer stores, fetches and drops checkpoints; the api reads and deletes; metrics may not touch it."""

    async def exercise() -> list[str]:
        errors: list[str] = []

        async def on_error(error: Exception) -> None:
            errors.append(str(error))

        checkpoint = tmp_path / "epoch_1.pth"
        checkpoint.write_bytes(os.urandom(CHUNK_BYTES + 1000))
        trainer = NatsBroker(secured_nats.url("trainer-0"), error_cb=on_error)
        api = NatsBroker(secured_nats.url("api"), error_cb=on_error)
        await trainer.connect()
        await api.connect()
        try:
            stored = await Artifacts.open(trainer, Subjects())
            await stored.upload_file(checkpoint_name("r1", 1, 1), checkpoint)
            await stored.upload_file(checkpoint_name("r1", 1, 1), checkpoint)  # replacing purges the old chunks
            await stored.write_manifest("r1", CheckpointManifest(attempt=1, epochs=[1]))
            await ArtifactCache(tmp_path / "cache", stored).fetch(checkpoint_name("r1", 1, 1))
            served = await Artifacts.open(api, Subjects())
            assert (await served.manifest("r1", 1)).epochs == [1]
            assert await served.read(checkpoint_name("r1", 1, 1)) == checkpoint.read_bytes()
            assert await served.delete_prefix("runs/r1/") == 2
            assert await stored.names("runs/") == []
        finally:
            await trainer.stop()
            await api.stop()
        return errors

    assert asyncio.run(exercise()) == []
    errors = _permission_errors(secured_nats.url("metrics"), request="$JS.API.STREAM.INFO.OBJ_TRAINYARD_ARTIFACTS")
    assert any("permissions violation" in e.lower() for e in errors), errors
    errors = _permission_errors(secured_nats.url("scheduler"), publish="$O.TRAINYARD_ARTIFACTS.C.x")
    assert any("permissions violation" in e.lower() for e in errors), errors


def test_wrong_password_is_refused(secured_nats: SecuredNats) -> None:
    with pytest.raises(Exception, match=r"(?i)authorization"):
        _permission_errors(f"nats://trainer-0:wrong@127.0.0.1:{secured_nats.port}", publish="run.started.trainer-0")


def test_services_run_end_to_end_with_their_own_credentials(
    secured_nats: SecuredNats, servers: LocalStack, tmp_path: Path
) -> None:
    """run.created -> run.assigned -> run.started/run.completed, heartbeats, epoch.logged, run.removed:
    each hop allowed."""
    namespace = "perm" + str(int(time.time() * 1000))[-8:]
    stack = LocalStack(tmp_path / "stack", nats_url=secured_nats.url("operator"), mongo_url=servers.mongo_url,
                       mongo_db=namespace)
    stack.data_dir.mkdir(parents=True)
    assert stack.mongo_url
    mongo: MongoClient[dict[str, object]] = MongoClient(stack.mongo_url)
    db = mongo[namespace]
    try:
        for service in ("metrics", "scheduler", "api"):
            stack.start_service(service, TRAINYARD_NATS_URL=secured_nats.url(service))
        stack.start_service("trainer", TRAINYARD_NATS_URL=secured_nats.url(TRAINER_ID), TRAINYARD_TRAINER_ID=TRAINER_ID,
                            TRAINYARD_ACCELERATOR_NAME="CPU", TRAINYARD_ACCELERATOR_COUNT="1", TRAINYARD_THREADS="1")
        _until(lambda: db.trainers.find_one({"_id": TRAINER_ID}) is not None, "the scheduler never saw a heartbeat")

        files = write_synthetic_coco(tmp_path / "shapes", train_images=2, val_images=2, size=64)
        with TrainyardClient(stack.api_url, stack.admin_key) as client:
            dataset = client.datasets.register("shapes", str(files.root))
            run = client.runs.start({"name": "perm", "dataset_id": dataset["id"], "architecture": "rtmdet-tiny",
                                     "epochs": 1, "input_size": 64})
            # Gone before the training child reads it (seconds later, after its imports): the
            # attempt fails fast, and its run.completed still flows.
            shutil.rmtree(files.root)
            _until(lambda: client.runs.get(run["id"])["status"] == "failed", "the run never came back failed",
                   timeout=90)
            assert client.runs.get(run["id"])["trainer_id"] == TRAINER_ID

        async def publish_epoch_as_trainer() -> None:
            broker = NatsBroker(secured_nats.url(TRAINER_ID))
            await broker.connect()
            try:
                epoch = EpochLogged(run_id=run["id"], attempt=1, epoch=1, total_epochs=1, losses={"loss_cls": 1.0},
                                    loss=1.0, learning_rate=0.01, epoch_time_s=1.0)
                await publish_event(broker, Subjects(), Subjects().epoch_logged(TRAINER_ID), epoch,
                                    dedup_key="perm-epoch-1")
                steps = IterationsLogged(run_id=run["id"], attempt=1, steps=[
                    IterationLog(step=1, epoch=1, loss=1.0, losses={"loss_cls": 1.0}, learning_rate=0.01)])
                await publish_event(broker, Subjects(), Subjects().iterations_logged(TRAINER_ID), steps,
                                    dedup_key="perm-it-1")
            finally:
                await broker.stop()

        asyncio.run(publish_epoch_as_trainer())
        _until(lambda: db.epochs.find_one({"run_id": run["id"]}) is not None, "metrics never stored the epoch")
        _until(lambda: db.iterations.find_one({"run_id": run["id"]}) is not None,
               "metrics never stored the iteration log")
        # Removal: the api publishes run.removed and deletes the run's objects, the metrics
        # service's own consumer deletes its logs.
        with TrainyardClient(stack.api_url, stack.admin_key) as client:
            client.runs.remove(run["id"])
        _until(lambda: db.epochs.find_one({"run_id": run["id"]}) is None
               and db.iterations.find_one({"run_id": run["id"]}) is None, "metrics never removed the run's logs")
    finally:
        stack.stop()
        mongo.close()
    for service in ("api", "scheduler", "trainer", "metrics"):
        log = (stack.log_dir / f"{service}.log").read_text(errors="replace")
        assert "permissions violation" not in log.lower(), f"{service}:\n{log[-3000:]}"


def _until(condition: Callable[[], bool], message: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise StackError(message)
        time.sleep(0.3)
