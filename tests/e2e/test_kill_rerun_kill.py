"""Kill, rerun, kill within a second: the API accepted the last kill, so the run ends `terminated`."""

import asyncio

import nats
import pytest

from shared.subjects import Subjects
from tests.e2e.conftest import start_run, start_trainer
from tests.helpers import wait_status, wait_until
from trainyard.localstack import LocalStack
from trainyard_client import TrainyardClient

pytestmark = pytest.mark.training

CONSUMERS = ("scheduler-run-kill-requested", "scheduler-run-rerun-requested")


def handled_everything(stack: LocalStack) -> bool:
    """Whether the scheduler has handled (acked) every kill and rerun request published so far."""
    async def pending() -> int:
        assert stack.nats_url
        connection = await nats.connect(stack.nats_url)
        try:
            stream, js = Subjects(stack.subject_prefix).stream, connection.jetstream()
            infos = [await js.consumer_info(stream, name) for name in CONSUMERS]
            return sum(info.num_pending + info.num_ack_pending for info in infos)
        finally:
            await connection.close()

    return asyncio.run(pending()) == 0


@pytest.mark.parametrize("where", ["queued", "running"])
def test_kill_rerun_kill_within_a_second_ends_terminated(where: str, stack: LocalStack, client: TrainyardClient,
                                                           dataset_id: str) -> None:
    if where == "running":
        start_trainer(stack, "krk-trainer")
        run = start_run(client, dataset_id, epochs=20)
        wait_status(client, run["id"], {"in_progress"}, timeout=120)
    else:
        # No trainer offers this accelerator: the run waits in the queue.
        run = start_run(client, dataset_id, epochs=20, accelerator={"name": "GPU_NONE", "count": 1})
        wait_status(client, run["id"], {"pending"})
    client.runs.kill(run["id"])
    wait_status(client, run["id"], {"terminated"}, timeout=60)
    client.runs.rerun(run["id"])
    client.runs.kill(run["id"])  # within a second of the rerun, whatever state the rerun has reached
    wait_until(lambda: handled_everything(stack), 60, "the scheduler to handle every kill and rerun")
    final = wait_status(client, run["id"], {"terminated"}, timeout=60)
    assert final["status"] == "terminated", final
    if where == "running":
        # Its trainer is free again: nothing of the run still trains.
        wait_until(lambda: all(t["free"] == t["capacity"] for t in client.trainers.list()), 30, "a free trainer")
