"""A run holding two accelerators trains with distributed data parallel, and a kill stops every rank."""

from pathlib import Path

import pytest

from tests.conftest import service_log
from tests.e2e.conftest import start_run
from tests.e2e.conftest import start_trainer as trainer
from tests.helpers import TERMINAL, wait_status, wait_until
from trainyard.localstack import LocalStack
from trainyard_client import TrainyardClient

pytestmark = pytest.mark.training
TWO_CPUS = {"name": "CPU", "count": 2}


def rank_pids(run_id: str) -> list[int]:
    """Training processes of the run (their command line names its job file)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"services.trainer.child" in argv and any(run_id.encode() in arg for arg in argv):
            pids.append(int(proc.name))
    return pids


def test_two_cpu_accelerators_train_one_run_on_two_ranks_and_a_kill_stops_both(
    stack: LocalStack, client: TrainyardClient, dataset_id: str
) -> None:
    trainer(stack, "cpu-pair", TRAINYARD_ACCELERATOR_NAME="CPU", TRAINYARD_ACCELERATOR_COUNT="2")
    run = start_run(client, dataset_id, epochs=2, batch_size=2, log_interval=1, accelerator=TWO_CPUS)
    done = wait_status(client, run["id"], TERMINAL, timeout=240)
    assert done["status"] == "success", (done, service_log(stack, "cpu-pair")[-3000:])
    assert done["device"] == "cpu x2 (DDP, gloo)"
    assert [e["epoch"] for e in client.runs.logs(run["id"], "epoch")] == [1, 2]
    # 8 images, 2 per rank and iteration: 2 iterations an epoch (one process would take 4).
    steps = wait_until(lambda: len(logs := client.runs.logs(run["id"], "iteration")) >= 4 and logs, 20,
                       "the iteration logs")
    assert [(s["step"], s["epoch"]) for s in steps] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert wait_until(lambda: client.models.list()["items"], 30, "the model")[0]["epochs"] == 2

    long = start_run(client, dataset_id, epochs=50, batch_size=2, accelerator=TWO_CPUS)
    wait_status(client, long["id"], {"in_progress"}, timeout=120)
    assert len(rank_pids(long["id"])) == 2
    client.runs.kill(long["id"])
    assert wait_status(client, long["id"], TERMINAL, timeout=10)["status"] == "terminated"
    wait_until(lambda: not rank_pids(long["id"]), 10, "every rank to exit")
    wait_until(lambda: [t for t in client.trainers.list() if t["free"] == 2], 15, "the trainer to be free")
