"""Bus handlers of the trainer: take assignments and stop requests, hand them to the worker."""

from faststream.exceptions import NackMessage
from faststream.nats import NatsBroker, NatsMessage, NatsRouter

from services.trainer.worker import Trainer
from shared.bus import decode_event, durable_subscriber
from shared.events import RunAssigned, RunStopRequested
from shared.subjects import Subjects
from shared.sweeps import RunRungDecided

# While busy, an assignment waits this long before it is offered again (the
# scheduler sends it elsewhere if it stays unaccepted).
BUSY_RETRY_S = 5.0


def build_router(broker: NatsBroker, trainer: Trainer, subjects: Subjects) -> NatsRouter:
    router = NatsRouter()
    assignments = f"trainer-{trainer.trainer_id}-assignments"
    stops = f"trainer-{trainer.trainer_id}-stops"

    @durable_subscriber(router, subjects, subjects.run_assigned(trainer.trainer_id), assignments)
    async def on_run_assigned(message: NatsMessage) -> None:
        assignment = await decode_event(message, RunAssigned, broker=broker, subjects=subjects,
                                        consumer=assignments)
        if assignment is None:
            return
        if await trainer.accept(assignment) == "busy":
            raise NackMessage(delay=BUSY_RETRY_S)

    @durable_subscriber(router, subjects, subjects.run_stop_requested(trainer.trainer_id), stops)
    async def on_run_stop_requested(message: NatsMessage) -> None:
        request = await decode_event(message, RunStopRequested, broker=broker, subjects=subjects, consumer=stops)
        if request is not None:
            await trainer.stop(request)

    decisions = f"trainer-{trainer.trainer_id}-rung-decisions"

    @durable_subscriber(router, subjects, subjects.run_rung_decided(trainer.trainer_id), decisions)
    async def on_run_rung_decided(message: NatsMessage) -> None:
        decision = await decode_event(message, RunRungDecided, broker=broker, subjects=subjects,
                                      consumer=decisions)
        if decision is not None:
            trainer.rung_decided(decision)

    return router
