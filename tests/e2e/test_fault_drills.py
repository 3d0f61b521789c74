"""Fault drills: one process of the stack killed with -9 after epoch 2 of a real 4-epoch run, restarted
as `trainyard up` restarts it (the same supervisor, in a thread), and the run must end as if nothing
had happened: success, epochs 1..4 stored once each, none trained more than twice, its confusion
matrix stored, no process of the old attempt left. Each drill prints its recovery time (restart to the
next stored epoch) in epoch times; docs/architecture.md has the table.
"""

import time
from pathlib import Path

import pytest

from shared.artifacts import bucket_name
from shared.subjects import Subjects
from tests.drills import (
    EPOCHS_PER_RUN,
    TRAINER,
    Drill,
    Recovery,
    TrainLogKeeper,
    assert_recovered,
    kill,
    kill_training_child,
    median_epoch_s,
    record,
    run_processes,
    start_drill_run,
    start_drill_services,
    stored_epoch_keys,
    supervised,
    wait_next_epoch,
)
from tests.helpers import wait_until
from tests.nats_cluster import start_nats_cluster, stream_cluster
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco
from trainyard_client import TrainyardClient

pytestmark = pytest.mark.training

# Faults after which the run keeps its first attempt: nothing that trains was touched.
KEEPS_ATTEMPT = {"metrics", "scheduler", "api", "nats", "mongo"}
NATS_DOWN_S = 30.0
# Longer than the default trainer_timeout_s (10 s).
SCHEDULER_DOWN_S = 12.0
LONG_RUN_EPOCHS = 20


def _register_dataset(client: TrainyardClient, tmp_path: Path) -> str:
    files = write_synthetic_coco(tmp_path / "shapes", train_images=8, val_images=2, size=64)
    return str(client.datasets.register("shapes", str(files.root))["id"])


def _until_epoch_2(drill: Drill, client: TrainyardClient, tmp_path: Path,
                   epochs: int = EPOCHS_PER_RUN) -> tuple[str, TrainLogKeeper]:
    run_id = start_drill_run(client, _register_dataset(client, tmp_path), epochs)
    logs = TrainLogKeeper(drill.stack.data_dir / "work" / run_id)
    wait_until(lambda: len(drill.stored_epochs(run_id)) >= 2, 240, "epoch 2 to be stored")
    return run_id, logs


def _drill(stack: LocalStack, fault: str, tmp_path: Path) -> None:
    start_drill_services(stack)
    with supervised(stack) as drill, TrainyardClient(stack.api_url, stack.admin_key) as client:
        run_id, logs = _until_epoch_2(drill, client, tmp_path)
        before = run_processes(run_id)
        stored_before = stored_epoch_keys(drill, run_id)
        if fault == "child":
            _, killed_attempt = kill_training_child(run_id)
            restarted_at = time.monotonic()  # the trainer itself starts the next attempt
        else:
            name = TRAINER if fault == "trainer" else fault
            restarted_at = drill.wait_restarted(name, kill(drill, name))
            killed_attempt = max(before.values()) if fault == "trainer" else 0
        if killed_attempt:
            # The killed attempt's processes die with it, at once: none trains on beside its successor.
            wait_until(lambda: killed_attempt not in run_processes(run_id).values(), 2,
                       f"every process of attempt {killed_attempt} to end")
        # A fault that leaves training alone may see later epochs stored while the process is down;
        # one that kills training counts only epochs stored after the kill (its successor's).
        next_epoch_at = wait_next_epoch(drill, run_id, restarted_at,
                                        before=stored_before if fault in KEEPS_ATTEMPT else None)
        done = assert_recovered(drill, client, run_id, logs)
        if fault in KEEPS_ATTEMPT:
            assert done["attempt"] == 1, done["history"]
        else:
            assert done["attempt"] == 2, done["history"]
        record(Recovery(f"kill -9 {fault}", restarted_at, next_epoch_at, median_epoch_s(drill, run_id)))


@pytest.mark.parametrize("fault", ["trainer", "child", "metrics", "scheduler", "api"])
def test_run_survives_a_killed_process(stack: LocalStack, fault: str, tmp_path: Path) -> None:
    """A service or the training child dies; the servers (shared by these drills) stay up."""
    _drill(stack, fault, tmp_path)


@pytest.mark.parametrize("server", ["nats", "mongo"])
def test_run_survives_a_killed_server(server: str, tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "own")
    try:
        stack.start_servers()
        _drill(stack, server, tmp_path)
    finally:
        stack.stop()


def test_run_survives_nats_down_for_30_s(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "own")
    try:
        stack.start_servers()
        start_drill_services(stack)
        # No supervisor here: it would restart NATS at once. The drill restarts it with the same call.
        with supervised(stack, watching=False) as drill, TrainyardClient(stack.api_url, stack.admin_key) as client:
            run_id, logs = _until_epoch_2(drill, client, tmp_path)
            kill(drill, "nats")
            time.sleep(NATS_DOWN_S)  # the fault itself: NATS is away this long
            stack.restart_process("nats")
            restarted_at = time.monotonic()
            next_epoch_at = wait_next_epoch(drill, run_id, restarted_at)
            assert_recovered(drill, client, run_id, logs)
            record(Recovery(f"NATS down {NATS_DOWN_S:.0f} s", restarted_at, next_epoch_at,
                            median_epoch_s(drill, run_id)))
    finally:
        stack.stop()


def test_run_survives_a_killed_node_of_a_three_node_nats_cluster(tmp_path: Path) -> None:
    # The stream and the object store at three replicas, as the Helm values' three-node NATS has them.
    stack = LocalStack(tmp_path / "own", extra_env={"TRAINYARD_NATS_REPLICAS": "3"})
    try:
        stack.data_dir.mkdir(parents=True)
        urls = start_nats_cluster(stack)
        stack.start_servers()  # the database server only: NATS is the cluster
        start_drill_services(stack)
        assert stack.service_env()["TRAINYARD_NATS_URL"] == ",".join(urls)
        # Not supervised: two nodes of three must carry on alone.
        with supervised(stack, watching=False) as drill, TrainyardClient(stack.api_url, stack.admin_key) as client:
            run_id, logs = _until_epoch_2(drill, client, tmp_path)
            subjects = Subjects(stack.subject_prefix)
            for stream in (subjects.stream, f"OBJ_{bucket_name(subjects)}"):
                placed = stream_cluster(urls, stream)
                assert placed["replicas"] == 3, (stream, placed)
            # The worst node to lose: the one leading the run's event stream.
            leader = stream_cluster(urls, subjects.stream)["leader"]
            kill(drill, f"nats-{leader.removeprefix('n')}")
            killed_at = time.monotonic()
            next_epoch_at = wait_next_epoch(drill, run_id, killed_at)
            done = assert_recovered(drill, client, run_id, logs)
            assert done["attempt"] == 1, done["history"]
            record(Recovery("kill -9 one NATS node of three", killed_at, next_epoch_at,
                            median_epoch_s(drill, run_id)))
    finally:
        stack.stop()


def test_a_scheduler_down_longer_than_the_trainer_timeout_leaves_the_run_on_attempt_1(
    stack: LocalStack, tmp_path: Path
) -> None:
    start_drill_services(stack)
    with supervised(stack, watching=False) as drill, TrainyardClient(stack.api_url, stack.admin_key) as client:
        # Enough epochs that the run still trains when the scheduler comes back.
        run_id, logs = _until_epoch_2(drill, client, tmp_path, epochs=LONG_RUN_EPOCHS)
        kill(drill, "scheduler")
        time.sleep(SCHEDULER_DOWN_S)  # the fault itself: longer than the 10 s trainer timeout
        stack.restart_process("scheduler")
        restarted_at = time.monotonic()
        assert (drill.run(run_id) or {}).get("status") == "in_progress"
        next_epoch_at = wait_next_epoch(drill, run_id, restarted_at)
        done = assert_recovered(drill, client, run_id, logs, epochs=LONG_RUN_EPOCHS)
        assert done["attempt"] == 1, done["history"]
        record(Recovery(f"scheduler down {SCHEDULER_DOWN_S:.0f} s", restarted_at, next_epoch_at,
                        median_epoch_s(drill, run_id)))
