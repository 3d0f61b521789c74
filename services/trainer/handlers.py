"""Bus handlers of the trainer: take assignments and stop requests, hand them to the worker."""

from faststream.exceptions import NackMessage
from faststream.nats import NatsRouter

from services.trainer.worker import Trainer
from shared.bus import durable_subscriber
from shared.events import RunAssigned, RunStopRequested
from shared.subjects import Subjects
from shared.sweeps import RunRungDecided

# While busy, an assignment waits this long before it is offered again (the
# scheduler sends it elsewhere if it stays unaccepted).
BUSY_RETRY_S = 5.0


def build_router(trainer: Trainer, subjects: Subjects) -> NatsRouter:
    router = NatsRouter()
    assignments = f"trainer-{trainer.trainer_id}-assignments"
    stops = f"trainer-{trainer.trainer_id}-stops"

    @durable_subscriber(router, subjects, subjects.run_assigned(trainer.trainer_id), assignments)
    async def on_run_assigned(assignment: RunAssigned) -> None:
        if await trainer.accept(assignment) == "busy":
            raise NackMessage(delay=BUSY_RETRY_S)

    @durable_subscriber(router, subjects, subjects.run_stop_requested(trainer.trainer_id), stops)
    async def on_run_stop_requested(request: RunStopRequested) -> None:
        await trainer.stop(request)

    decisions = f"trainer-{trainer.trainer_id}-rung-decisions"

    @durable_subscriber(router, subjects, subjects.run_rung_decided(trainer.trainer_id), decisions)
    async def on_run_rung_decided(decision: RunRungDecided) -> None:
        trainer.rung_decided(decision)

    return router
