"""A healthy trainer starts quietly: no ERROR and no traceback in its log."""

import asyncio

from faststream.nats import NatsBroker, NatsMessage

from shared.subjects import Subjects
from tests.conftest import service_log
from trainyard.localstack import LocalStack

# Heartbeats come every 2 s and the durable subscribers fetch every 2 s: ten heartbeats span
# some thirty fetches of the trainer's three subscribers.
HEARTBEATS = 10


async def test_a_healthy_trainer_start_logs_no_error(stack: LocalStack, bus: tuple[NatsBroker, Subjects]) -> None:
    broker, subjects = bus
    heartbeats: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_heartbeat(message: NatsMessage) -> None:
        await heartbeats.put(message.body)

    subscriber = broker.subscriber(subjects.trainer_heartbeat())
    subscriber(on_heartbeat)
    await subscriber.start()
    stack.start_service("trainer")
    for _ in range(HEARTBEATS):
        await asyncio.wait_for(heartbeats.get(), timeout=60)
    log = service_log(stack, "trainer")
    assert "ERROR" not in log and "Traceback" not in log, log[-4000:]
