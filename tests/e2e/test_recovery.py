"""Recovery with real trainers training real models: lost, stale, draining, killed."""

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import service_log
from tests.e2e.conftest import start_run
from tests.e2e.conftest import start_trainer as trainer
from tests.helpers import TERMINAL, wait_status, wait_until
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco
from trainyard_client import TrainyardClient

pytestmark = pytest.mark.training


def logged_epochs(client: TrainyardClient, run_id: str) -> list[tuple[int, int]]:
    return [(e["epoch"], e["attempt"]) for e in client.runs.logs(run_id, "epoch")]


def resume_epoch(client: TrainyardClient, run_id: str) -> int:
    """The epoch of the newest checkpoint the run has recorded (0: none yet)."""
    resume = client.runs.checkpoints(run_id)["resume_from"]
    return int(resume["epoch"]) if resume else 0


def assert_resumed_and_contiguous(client: TrainyardClient, run: dict[str, Any], epochs: int) -> None:
    logs = logged_epochs(client, run["id"])
    assert [epoch for epoch, _ in logs] == list(range(1, epochs + 1)), logs
    first_attempt = [epoch for epoch, attempt in logs if attempt == 1]
    # Resumed, not restarted: what attempt 1 reported stays attempt 1's.
    assert first_attempt and first_attempt == list(range(1, len(first_attempt) + 1)), logs
    assert {attempt for _, attempt in logs} == {1, run["attempt"]}


def test_lost_trainer_run_resumes_on_another_trainer(
    stack: LocalStack, client: TrainyardClient, dataset_id: str
) -> None:
    # Two machines that share nothing but NATS and MongoDB: each trainer has its own disk.
    doomed_disk, rescuer_disk = stack.data_dir / "doomed-disk", stack.data_dir / "rescuer-disk"
    first = trainer(stack, "doomed", TRAINYARD_WORK_ROOT=str(doomed_disk))
    run = start_run(client, dataset_id, epochs=5)
    wait_until(lambda: resume_epoch(client, run["id"]) >= 2, 120,
               "two epochs checkpointed on the first trainer")
    assert client.runs.get(run["id"])["trainer_id"] == "doomed"
    trainer(stack, "rescuer", TRAINYARD_WORK_ROOT=str(rescuer_disk))
    # The machine dies: the trainer and its training child, no goodbye, and its disk with it.
    os.killpg(first.pid, signal.SIGKILL)
    shutil.rmtree(doomed_disk)
    done = wait_status(client, run["id"], TERMINAL, timeout=180)
    assert done["status"] == "success", (done, service_log(stack, "rescuer")[-2000:])
    assert done["trainer_id"] == "rescuer" and done["attempt"] == 2
    assert [h["status"] for h in done["history"]][-4:] == ["rerun", "pending", "in_progress", "success"]
    assert "trainer doomed was lost" in next(h["message"] for h in done["history"] if h["status"] == "rerun")
    assert_resumed_and_contiguous(client, done, epochs=5)
    assert "resumes from" in service_log(stack, "rescuer")


def test_returning_stale_trainer_is_ignored_and_stopped(
    stack: LocalStack, client: TrainyardClient, dataset_id: str
) -> None:
    stale = trainer(stack, "stale")
    run = start_run(client, dataset_id, epochs=4)
    wait_until(lambda: resume_epoch(client, run["id"]) >= 1, 120, "an epoch checkpointed on the first trainer")
    trainer(stack, "fresh")
    # A network partition, in effect: the trainer and its child freeze, then come back.
    os.killpg(stale.pid, signal.SIGSTOP)
    before_freeze = logged_epochs(client, run["id"])
    wait_until(lambda: client.runs.get(run["id"])["trainer_id"] == "fresh", 60, "the run to move on")
    os.killpg(stale.pid, signal.SIGCONT)
    done = wait_status(client, run["id"], TERMINAL, timeout=180)
    assert done["status"] == "success" and done["trainer_id"] == "fresh", done
    assert_resumed_and_contiguous(client, done, epochs=4)
    # The stale attempt was told to stop, and its late events changed nothing.
    wait_until(lambda: "superseded by a newer attempt" in service_log(stack, "stale"), 30, "the stale stop")
    stale_epochs = [e for e in logged_epochs(client, run["id"]) if e[1] == 1]
    assert set(stale_epochs) <= set(before_freeze), (stale_epochs, before_freeze)
    # Nor did its checkpoints: what a rerun would continue from is the fresh attempt's.
    resume = client.runs.checkpoints(run["id"])["resume_from"]
    assert resume is not None and resume["attempt"] == 2 and resume["epoch"] == 4, resume


def test_killed_run_ends_terminated_within_seconds_and_frees_its_trainer(
    stack: LocalStack, client: TrainyardClient, dataset_id: str
) -> None:
    trainer(stack, "busy")
    run = start_run(client, dataset_id, epochs=50)
    wait_status(client, run["id"], {"in_progress"}, timeout=60)
    killed_at = time.monotonic()
    client.runs.kill(run["id"])
    done = wait_status(client, run["id"], TERMINAL, timeout=10)
    assert done["status"] == "terminated" and time.monotonic() - killed_at < 10
    freed = wait_until(lambda: [t for t in client.trainers.list() if t["free"] == 1 and not t["runs"]],
                       15, "the trainer to be free")
    assert freed[0]["id"] == "busy"
    assert "training process" not in (done["message"] or "")


def test_a_trainer_restarted_under_its_id_hands_its_run_on_at_once(stack: LocalStack, tmp_path: Path) -> None:
    """A supervisor restarts a crashed trainer well inside the heartbeat timeout: the
    attempt its previous process held is resumed at once, not after the timeout."""
    stack.start(("metrics", "api"))
    stack.start_service("scheduler", TRAINYARD_TRAINER_TIMEOUT_S="120")
    files = write_synthetic_coco(tmp_path / "shapes", train_images=8, val_images=2, size=64)
    with TrainyardClient(stack.api_url, stack.admin_key) as client:
        dataset_id = client.datasets.register("shapes", str(files.root))["id"]
        first = trainer(stack, "phoenix")
        run = start_run(client, dataset_id, epochs=4)
        wait_until(lambda: resume_epoch(client, run["id"]) >= 1, 120,
                   "an epoch checkpointed")
        os.killpg(first.pid, signal.SIGKILL)
        killed = time.monotonic()
        trainer(stack, "phoenix")
        rerun = wait_until(lambda: client.runs.get(run["id"])["attempt"] == 2, 60, "a second attempt")
        assert time.monotonic() - killed < 60, "reset by the restart, long before the 120 s heartbeat timeout"
        done = wait_status(client, run["id"], TERMINAL, timeout=180)
        assert rerun and done["status"] == "success", (done, service_log(stack, "scheduler")[-2000:])
        assert done["trainer_id"] == "phoenix" and done["attempt"] == 2
        message = next(h["message"] for h in done["history"] if h["status"] == "rerun")
        assert "trainer phoenix restarted; attempt 1 ended with its previous process" in message, message
        assert_resumed_and_contiguous(client, done, epochs=4)
