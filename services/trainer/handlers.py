"""Bus handlers of the trainer: take an assignment, hand it to the worker."""

from faststream.exceptions import NackMessage
from faststream.middlewares import AckPolicy
from faststream.nats import NatsBroker, NatsMessage, NatsRouter

from services.trainer.worker import Trainer
from shared.bus import decode_event, durable, event_stream, pull
from shared.events import RunAssigned
from shared.subjects import Subjects

# While busy, an assignment waits this long before it is offered again.
BUSY_RETRY_S = 5.0


def build_router(broker: NatsBroker, trainer: Trainer, subjects: Subjects) -> NatsRouter:
    router = NatsRouter()
    consumer = f"trainer-{trainer.trainer_id}"

    @router.subscriber(
        subjects.run_assigned(trainer.trainer_id),
        stream=event_stream(subjects),
        durable=consumer,
        config=durable(consumer),
        pull_sub=pull(),
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )
    async def on_run_assigned(message: NatsMessage) -> None:
        assignment = await decode_event(message, RunAssigned, broker=broker, subjects=subjects, consumer=consumer)
        if assignment is None:
            return
        if trainer.accept(assignment) == "busy":
            raise NackMessage(delay=BUSY_RETRY_S)

    return router
