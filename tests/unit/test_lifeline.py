"""A child dies with its parent; a starting trainer cleans up what a dead one left (real processes)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from services.trainer.lifeline import (
    PROCESS_RECORD,
    RecordedProcess,
    clean_up_predecessors,
    process_start_time,
    record_processes,
)
from tests.helpers import wait_until

# A parent that starts one child calling die_with_parent, prints the child's pid, and waits.
PARENT = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c",
    "import os, time; from services.trainer.lifeline import die_with_parent; "
    "die_with_parent(int(os.environ['PARENT'])); print('ready', flush=True); time.sleep(120)"],
    env={**os.environ, "PARENT": str(os.getpid())}, stdout=subprocess.PIPE)
assert child.stdout.readline().strip() == b"ready"
print(child.pid, flush=True)
child.wait()
"""


def gone(pid: int) -> bool:
    return process_start_time(pid) is None


def test_a_child_is_killed_when_its_parent_is_killed_with_sigkill() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert not gone(child_pid)
    parent.kill()
    parent.wait()
    wait_until(lambda: gone(child_pid), 5, "the child to die with its parent")


def test_a_child_whose_parent_died_before_it_set_the_death_signal_kills_itself() -> None:
    # The recorded parent pid is not this child's parent: as if the parent had died already.
    child = subprocess.run([sys.executable, "-c", "from services.trainer.lifeline import die_with_parent; "
                            "die_with_parent(1); print('survived')"], capture_output=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert child.returncode == -signal.SIGKILL and b"survived" not in child.stdout


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def test_a_starting_trainer_kills_a_dead_trainers_children_and_drops_its_checkpoints(tmp_path: Path) -> None:
    dead_attempt, live_attempt = tmp_path / "run-a" / "attempt-1", tmp_path / "run-b" / "attempt-2"
    orphan, live_owner, live_child = sleeper(), sleeper(), sleeper()
    dead_owner = sleeper()
    try:
        dead = RecordedProcess.of(dead_owner.pid)
        dead_owner.kill()
        dead_owner.wait()
        for attempt, owner, child in ((dead_attempt, dead, orphan), (live_attempt, RecordedProcess.of(live_owner.pid),
                                                                     live_child)):
            attempt.mkdir(parents=True)
            (attempt / "epoch_1.pth").write_bytes(b"weights")
            (attempt / "train.log").write_text("log")
            (attempt / PROCESS_RECORD).write_text(json.dumps(
                {"trainer": owner.__dict__, "children": [RecordedProcess.of(child.pid).__dict__]}))
        cached = tmp_path / "cache" / "runs" / "run-a" / "checkpoints" / "attempt_1" / "epoch_1.pth"
        cached.parent.mkdir(parents=True)
        cached.write_bytes(b"weights")

        cleanup = clean_up_predecessors(tmp_path, tmp_path / "cache")

        assert cleanup.killed == [orphan.pid] and cleanup.attempts == [dead_attempt]
        assert orphan.wait(timeout=5) == -signal.SIGKILL
        assert not list(dead_attempt.glob("*.pth")) and not cached.exists()
        assert not (dead_attempt / PROCESS_RECORD).exists()
        assert (dead_attempt / "train.log").exists(), "the logs stay, as for an attempt that ended"
        # A live trainer's attempt (trainers may share a work root) is left alone.
        assert live_child.poll() is None and (live_attempt / "epoch_1.pth").exists()
        assert (live_attempt / PROCESS_RECORD).exists()
    finally:
        for process in (orphan, live_owner, live_child):
            process.kill()
            process.wait()


def test_a_recorded_pid_reused_by_another_process_is_not_killed(tmp_path: Path) -> None:
    bystander = sleeper()
    try:
        attempt = tmp_path / "run" / "attempt-1"
        attempt.mkdir(parents=True)
        started = process_start_time(bystander.pid)
        assert started is not None
        # The dead trainer's child had this pid, but started at another time.
        (attempt / PROCESS_RECORD).write_text(json.dumps({
            "trainer": {"pid": 2**22 + 1, "started": 1},
            "children": [{"pid": bystander.pid, "started": started - 1}],
        }))
        assert clean_up_predecessors(tmp_path).killed == []
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_the_record_names_this_trainer_and_its_children(tmp_path: Path) -> None:
    child = sleeper()
    try:
        attempt = tmp_path / "run" / "attempt-1"
        attempt.mkdir(parents=True)
        record_processes(attempt, [child.pid])
        record = json.loads((attempt / PROCESS_RECORD).read_text())
        assert record["trainer"] == {"pid": os.getpid(), "started": process_start_time(os.getpid())}
        assert record["children"] == [{"pid": child.pid, "started": process_start_time(child.pid)}]
        assert clean_up_predecessors(tmp_path).attempts == [], "its own trainer is alive"
        assert child.poll() is None and (attempt / PROCESS_RECORD).exists()
    finally:
        child.kill()
        child.wait()
