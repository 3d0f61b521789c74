"""Fault drills: a supervised stack, a real run of a tiny model, one fault after epoch 2, and what must hold.

What a drill reads during the fault it reads from MongoDB directly (the api may
be the process that is down); what it asserts at the end it reads through the
API, as a user would.
"""

import json
import os
import re
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from shared.store import EPOCHS, RUNS
from tests.helpers import TERMINAL, wait_status, wait_until
from trainyard.localstack import LocalStack
from trainyard.supervisor import Supervisor
from trainyard_client import TrainyardClient

EPOCHS_PER_RUN = 4
# The trainer's environment in the drills: one thread, quick heartbeats.
DRILL_TRAINER_ENV = {"TRAINYARD_THREADS": "1", "TRAINYARD_HEARTBEAT_INTERVAL_S": "1"}
TRAINER = "drill-trainer"
CHILD_MODULE = "services.trainer.child"
# MMEngine's line at the end of each training epoch: "Epoch(train)  [3][4/4]  ...".
EPOCH_END = re.compile(r"Epoch\(train\)\s*\[(\d+)\]\[\s*(\d+)/(\d+)\]")


def run_processes(run_id: str) -> dict[int, int]:
    """Live training processes of a run, pid -> attempt, found by scanning /proc.

    A child's command line names its job file, `<work root>/<run>/attempt-<n>/job.json`.
    """
    found: dict[int, int] = {}
    pattern = re.compile(rf"/{re.escape(run_id)}/attempt-(\d+)/")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if CHILD_MODULE not in cmdline or not (match := pattern.search(cmdline)):
                continue
            # A zombie has ended: only its parent has not collected it yet.
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            found[int(entry.name)] = int(match.group(1))
    return found


def _api_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def pid_alive(pid: int) -> bool:
    with suppress(OSError):
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    return False


class TrainLogKeeper:
    """Keeps a copy of every attempt's train.log while the run trains.

    The trainer may clean up a dead predecessor's work dir; what each attempt
    trained must still be countable afterwards. The logs only grow, so the
    longest text read is the whole log.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.logs: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for path in self.run_dir.glob("attempt-*/train.log"):
            with suppress(OSError):
                text = path.read_text(errors="replace")
                if len(text) > len(self.logs.get(path.parent.name, "")):
                    self.logs[path.parent.name] = text

    def _keep(self) -> None:
        while not self._stop.wait(0.3):
            self._read()

    def close(self) -> dict[int, int]:
        """How many times each epoch was trained to its end, over all attempts."""
        self._stop.set()
        self._thread.join()
        self._read()
        trained: dict[int, int] = {}
        for text in self.logs.values():
            done = {int(m.group(1)) for m in EPOCH_END.finditer(text) if m.group(2) == m.group(3)}
            for epoch in done:
                trained[epoch] = trained.get(epoch, 0) + 1
        return trained


@dataclass
class Drill:
    """A stack under a supervisor (in a thread, checking as `trainyard up` does)."""

    stack: LocalStack
    supervisor: Supervisor
    said: list[str] = field(default_factory=list)

    def mongo(self) -> MongoClient[dict[str, Any]]:
        assert self.stack.mongo_url
        return MongoClient(self.stack.mongo_url, serverSelectionTimeoutMS=1000)

    def stored_epochs(self, run_id: str) -> list[dict[str, Any]]:
        """The run's stored epochs, or [] while the database server cannot be reached."""
        with suppress(PyMongoError), self.mongo() as client:
            return list(client[self.stack.mongo_db][EPOCHS].find({"run_id": run_id}, {"_id": 0, "epoch": 1,
                                                                                     "attempt": 1,
                                                                                     "epoch_time_s": 1}))
        return []

    def run(self, run_id: str) -> dict[str, Any] | None:
        """The stored run, or None while the database server cannot be reached."""
        with suppress(PyMongoError), self.mongo() as client:
            return client[self.stack.mongo_db][RUNS].find_one({"_id": run_id})
        return None

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 60) -> float:
        """When the supervisor has started `name` again (monotonic time)."""
        wait_until(lambda: (p := self.stack.processes.get(name)) is not None and p.pid != old_pid, timeout,
                   f"the supervisor to restart {name}")
        restarted_at = time.monotonic()
        if name == "api":
            # The supervisor does not wait for readiness; a drill that reads through the API next
            # must not race the restarted process's imports (a refused connection ended one CI run).
            wait_until(lambda: _api_answers(self.stack.api_url), timeout, "the restarted api to answer")
        return restarted_at


@contextmanager
def supervised(stack: LocalStack, watching: bool = True) -> Iterator[Drill]:
    drill = Drill(stack, Supervisor(stack, report=lambda line: drill.said.append(line)))
    stop = threading.Event()
    thread = threading.Thread(target=drill.supervisor.run_until, args=(stop, 0.25), daemon=True)
    if watching:
        thread.start()
    try:
        yield drill
    finally:
        stop.set()
        if watching:
            thread.join()


def start_drill_services(stack: LocalStack, **scheduler_env: str) -> None:
    stack.start_service("metrics")
    stack.start_service("scheduler", **scheduler_env)
    stack.start_service("api")
    stack.start_service("trainer", name=TRAINER, TRAINYARD_TRAINER_ID=TRAINER, **DRILL_TRAINER_ENV)


def start_drill_run(client: TrainyardClient, dataset_id: str, epochs: int = EPOCHS_PER_RUN) -> str:
    run = client.runs.start({"name": "drill", "dataset_id": dataset_id, "architecture": "rtmdet-tiny",
                             "epochs": epochs, "batch_size": 2, "input_size": 64})
    return str(run["id"])


def kill(drill: Drill, name: str) -> int:
    """kill -9 one process of the stack (only it: a child of a trainer is left to what follows)."""
    pid = drill.stack.processes[name].pid
    os.kill(pid, signal.SIGKILL)
    return pid


def kill_training_child(run_id: str) -> tuple[int, int]:
    """kill -9 the run's training child, as the out-of-memory killer would; (pid, its attempt)."""
    pid, attempt = wait_until(lambda: next(iter(run_processes(run_id).items()), None), 30, "the training child")
    os.kill(pid, signal.SIGKILL)
    return pid, attempt


@dataclass
class Recovery:
    fault: str
    restarted_at: float
    next_epoch_at: float
    median_epoch_s: float

    @property
    def epoch_times(self) -> float:
        """Time from the restart to the next stored epoch, in epoch times."""
        return (self.next_epoch_at - self.restarted_at) / self.median_epoch_s


def stored_epoch_keys(drill: Drill, run_id: str) -> set[tuple[int, int]]:
    return {(e["epoch"], e["attempt"]) for e in drill.stored_epochs(run_id)}


def wait_next_epoch(drill: Drill, run_id: str, restarted_at: float, timeout: float = 120,
                    before: set[tuple[int, int]] | None = None) -> float:
    """When the first epoch not stored at the restart (or in `before`, what was stored when the fault
    was made) is seen stored (monotonic time, never before the restart).

    A fault that does not stop training (the api) may see the next epoch stored while it is down: its
    recovery is then the time to the first look after the restart, nearly 0.
    Fails at once if the run ends without one (it failed instead of recovering)."""
    if before is None:
        before = stored_epoch_keys(drill, run_id)

    def stored_since() -> bool:
        if stored_epoch_keys(drill, run_id) - before:
            return True
        run = drill.run(run_id)
        if run and run.get("status") in TERMINAL:
            history = [(h["status"], h.get("attempt"), h.get("message")) for h in run.get("history", [])]
            raise AssertionError(f"run ended {run['status']} with no epoch stored after the fault: {history}")
        return False

    try:
        wait_until(stored_since, timeout, "an epoch stored after the restart")
    except AssertionError as stuck:
        run = drill.run(run_id) or {}
        history = [(h["status"], h.get("attempt"), h.get("message")) for h in run.get("history", [])]
        raise AssertionError(f"{stuck}; the run is {run.get('status')}: {history}") from None
    return time.monotonic()


def record(recovery: Recovery) -> None:
    line = {"fault": recovery.fault, "recovery_epoch_times": round(recovery.epoch_times, 2),
            "recovery_s": round(recovery.next_epoch_at - recovery.restarted_at, 1),
            "median_epoch_s": round(recovery.median_epoch_s, 2)}
    print(f"\nfault drill {json.dumps(line)}")
    if path := os.environ.get("TRAINYARD_DRILL_REPORT"):
        with open(path, "a") as out:
            out.write(json.dumps(line) + "\n")


def assert_recovered(drill: Drill, client: TrainyardClient, run_id: str, logs: TrainLogKeeper,
                     timeout: float = 300, epochs: int = EPOCHS_PER_RUN) -> dict[str, Any]:
    """The run ends success with epochs 1..N stored once each, none trained more than twice, its
    confusion matrix stored, and no process of any of its attempts left; the finished run."""
    done = wait_status(client, run_id, TERMINAL, timeout=timeout)
    history = [(h["status"], h.get("message")) for h in done["history"]]
    assert done["status"] == "success", (done["message"], history, drill.said)
    stored = drill.stored_epochs(run_id)
    assert sorted(e["epoch"] for e in stored) == list(range(1, epochs + 1)), stored
    assert [e["epoch"] for e in client.runs.logs(run_id, "epoch")] == list(range(1, epochs + 1))
    matrix = client.runs.confusion_matrix(run_id)
    assert matrix["epoch"] == epochs and matrix["matrix"], matrix
    wait_until(lambda: not run_processes(run_id), 30, "every training process of the run to end")
    trained = logs.close()
    assert set(trained) == set(range(1, epochs + 1)), trained
    assert max(trained.values()) <= 2, f"epochs trained more than twice: {trained}"
    return done


def median_epoch_s(drill: Drill, run_id: str) -> float:
    return statistics.median(float(e["epoch_time_s"]) for e in drill.stored_epochs(run_id))
