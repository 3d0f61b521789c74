"""Faults of the trainer process with real training: its death, its child's death, its drain."""

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from services.trainer.lifeline import PROCESS_RECORD, process_start_time
from tests.conftest import service_log
from tests.e2e.conftest import start_run
from tests.e2e.conftest import start_trainer as trainer
from tests.e2e.test_distributed_run import rank_pids
from tests.e2e.test_recovery import logged_epochs, resume_epoch
from tests.helpers import TERMINAL, wait_status, wait_until
from trainyard.localstack import LocalStack
from trainyard_client import TrainyardClient

pytestmark = pytest.mark.training


def recorded_children(attempt_dir: Path) -> list[int]:
    record = wait_until(lambda: (attempt_dir / PROCESS_RECORD).exists() and
                        json.loads((attempt_dir / PROCESS_RECORD).read_text()), 120, "the process record")
    return [int(child["pid"]) for child in record["children"]]


def gone(pid: int) -> bool:
    return process_start_time(pid) is None  # an unreaped zombie counts as gone: it runs nothing


def rerun_message(run: dict[str, Any]) -> str:
    return str(next(h["message"] for h in run["history"] if h["status"] == "rerun"))


@pytest.mark.parametrize("ranks", [1, 2])
def test_a_trainer_killed_with_sigkill_takes_its_training_processes_along_and_its_successor_cleans_up(
    stack: LocalStack, client: TrainyardClient, dataset_id: str, ranks: int
) -> None:
    work_root = stack.data_dir / f"disk-{ranks}"
    env = {"TRAINYARD_WORK_ROOT": str(work_root), "TRAINYARD_ACCELERATOR_NAME": "CPU",
           "TRAINYARD_ACCELERATOR_COUNT": str(ranks)}
    doomed = trainer(stack, "doomed", **env)
    run = start_run(client, dataset_id, epochs=30, batch_size=2, accelerator={"name": "CPU", "count": ranks})
    attempt_dir = work_root / run["id"] / "attempt-1"
    children = recorded_children(attempt_dir)
    assert len(children) == ranks and sorted(children) == sorted(rank_pids(run["id"]))
    wait_until(lambda: resume_epoch(client, run["id"]) >= 1, 120, "an epoch checkpointed")
    assert list(attempt_dir.glob("epoch_*.pth")), "the attempt's local checkpoint"

    doomed.kill()  # the trainer alone, not its process group
    doomed.wait()
    wait_until(lambda: all(gone(pid) for pid in children), 5, "every training process to die with the trainer")
    assert not rank_pids(run["id"])
    assert list(attempt_dir.glob("*.pth")) and (attempt_dir / PROCESS_RECORD).exists(), "left behind"

    trainer(stack, "doomed", **env)  # a supervisor brings it back on the same disk
    wait_until(lambda: not (attempt_dir / PROCESS_RECORD).exists(), 60, "the successor to clean up")
    assert not list(attempt_dir.glob("*.pth")) and (attempt_dir / "train.log").exists()
    assert f"cleaned up {attempt_dir} of a trainer that died" in service_log(stack, "doomed")
    client.runs.kill(run["id"])  # its retry is not what this test is about
    try:
        wait_status(client, run["id"], TERMINAL, timeout=30)
    except AssertionError as error:  # once in CI: what the scheduler did is all there is to go on
        raise AssertionError(f"{error}\nscheduler log:\n{service_log(stack, 'scheduler')[-4000:]}") from None


def test_a_training_process_killed_by_a_signal_is_retried_and_the_message_names_the_signal(
    stack: LocalStack, client: TrainyardClient, dataset_id: str
) -> None:
    work_root = stack.data_dir / "work"
    trainer(stack, "host", TRAINYARD_WORK_ROOT=str(work_root))
    run = start_run(client, dataset_id, epochs=3)
    wait_until(lambda: resume_epoch(client, run["id"]) >= 1, 120, "an epoch checkpointed")
    [child] = recorded_children(work_root / run["id"] / "attempt-1")
    os.kill(child, signal.SIGKILL)  # what the kernel's out-of-memory killer does
    done = wait_status(client, run["id"], TERMINAL, timeout=180)
    assert done["status"] == "success" and done["attempt"] == 2, (done, service_log(stack, "host")[-3000:])
    assert [h["status"] for h in done["history"]][-4:] == ["rerun", "pending", "in_progress", "success"]
    message = rerun_message(done)
    assert message.startswith("training process was killed by signal 9 (SIGKILL); signal 9 is often the "
                              "kernel's out-of-memory killer"), message
    peak = int(message.split("peak memory was at least ")[1].split(" MiB")[0])
    assert 50 < peak < 64 * 1024, message  # a Python process with torch, well under the machine
    epochs = logged_epochs(client, run["id"])
    assert [e for e, _ in epochs] == [1, 2, 3] and epochs[0] == (1, 1), epochs

    # on_reset: fail, the same fault ends the run failed, saying why.
    failing = start_run(client, dataset_id, epochs=30, on_reset="fail")
    [child] = recorded_children(work_root / failing["id"] / "attempt-1")
    wait_status(client, failing["id"], {"in_progress"}, timeout=120)
    os.kill(child, signal.SIGKILL)
    done = wait_status(client, failing["id"], TERMINAL, timeout=60)
    assert done["status"] == "failed" and done["attempt"] == 1, done
    assert "killed by signal 9 (SIGKILL)" in done["message"] and "on_reset is 'fail'" in done["message"], done


# checkpoint.interval 3: the drained epoch is saved (and stored) off the interval all the same.
@pytest.mark.parametrize("interval", [1, 3])
def test_a_draining_trainer_stores_the_epoch_in_progress_and_the_next_attempt_resumes_after_it(
    stack: LocalStack, client: TrainyardClient, dataset_id: str, interval: int
) -> None:
    leaving = trainer(stack, "leaving")
    run = start_run(client, dataset_id, epochs=5, checkpoint={"interval": interval})
    wait_until(lambda: len(client.runs.logs(run["id"], "epoch")) >= 1, 120, "an epoch before the drain")
    trainer(stack, "staying")
    reported_at_signal = len(client.runs.logs(run["id"], "epoch"))
    leaving.send_signal(signal.SIGTERM)
    assert leaving.wait(timeout=120) == 0
    done = wait_status(client, run["id"], TERMINAL, timeout=180)
    assert done["status"] == "success" and done["trainer_id"] == "staying", done
    message = rerun_message(done)
    assert "trainer leaving handed the run back (trainer leaving is draining; stopped after epoch" in message
    drained_epoch = int(message.split("stopped after epoch ")[1].split(",")[0])
    # The epoch that was training when SIGTERM came was finished and stored, not lost.
    assert drained_epoch > reported_at_signal, (drained_epoch, reported_at_signal)
    epochs = logged_epochs(client, run["id"])
    assert epochs == [(e, 1) for e in range(1, drained_epoch + 1)] + [(e, 2) for e in range(drained_epoch + 1, 6)]
    # The second attempt resumed after it: no epoch was trained twice.
    assert "resumes from" in service_log(stack, "staying")
    assert f"epoch_{drained_epoch}.pth" in service_log(stack, "staying")
