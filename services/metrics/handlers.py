"""Bus handlers of the metrics service: check who reports, store, nothing else.

Decoding, dead-lettering and the storage guard are the bus's (shared.bus.DeadLetters)."""

import logging

from faststream.exceptions import NackMessage
from faststream.nats import NatsMessage, NatsRouter
from prometheus_client import Counter

from services.metrics.store import MetricsStore
from shared.bus import durable_subscriber
from shared.events import EpochLogged, IterationsLogged, ModelRegistered, RunRemoved
from shared.subjects import Subjects

log = logging.getLogger(__name__)

EPOCHS_INGESTED = Counter("trainyard_epochs_ingested_total", "epoch.logged events stored", ["outcome"])
CONSUMER = "metrics-epochs"
MODELS_CONSUMER = "metrics-models"
MODELS_REGISTERED = Counter("trainyard_models_registered_total", "Trained models recorded")
ITERATIONS_CONSUMER = "metrics-iterations"
ITERATIONS_INGESTED = Counter("trainyard_iterations_ingested_total", "Iteration logs stored (steps)", ["outcome"])
REMOVALS_CONSUMER = "metrics-run-removed"
RUNS_REMOVED = Counter("trainyard_run_removals_total", "run.removed events handled", ["outcome"])
# The api publishes run.removed just before it deletes the run: a removal seen before that
# delete lands is looked at again after this long.
REMOVAL_RECHECK_S = 1.0


def build_router(store: MetricsStore, subjects: Subjects) -> NatsRouter:
    router = NatsRouter()

    def sender(message: NatsMessage) -> str:
        return subjects.reporting_trainer(message.raw_message.subject) or ""

    @durable_subscriber(router, subjects, subjects.epoch_logged(), CONSUMER)
    async def on_epoch_logged(event: EpochLogged, message: NatsMessage) -> None:
        # Refused (dead-lettered) unless the sender holds the run's current attempt.
        if await store.report_standing(event.run_id, event.attempt, sender(message), [event.epoch]) == "removed":
            EPOCHS_INGESTED.labels(outcome="removed").inc()
            log.info("ignoring epoch %d of removed run %s", event.epoch, event.run_id)
            return
        stored = await store.record_epoch(event)
        EPOCHS_INGESTED.labels(outcome="stored" if stored else "duplicate").inc()

    @durable_subscriber(router, subjects, subjects.model_registered(), MODELS_CONSUMER)
    async def on_model_registered(event: ModelRegistered, message: NatsMessage) -> None:
        # A model counts the epochs it trained: none (0) or the run's own.
        counted = [event.epochs_completed] if event.epochs_completed else []
        standing = await store.report_standing(event.run_id, event.attempt, sender(message), counted)
        if standing == "removed":
            return
        if await store.epochs_stored(event.run_id) < event.epochs_completed:
            # Its last epochs are still on their way (another consumer): the
            # best epoch must be chosen from all of them.
            raise NackMessage(delay=1.0)
        if await store.register_model(event):
            MODELS_REGISTERED.inc()

    @durable_subscriber(router, subjects, subjects.iterations_logged(), ITERATIONS_CONSUMER)
    async def on_iterations_logged(event: IterationsLogged, message: NatsMessage) -> None:
        epochs = sorted({step.epoch for step in event.steps})
        if await store.report_standing(event.run_id, event.attempt, sender(message), epochs) == "removed":
            ITERATIONS_INGESTED.labels(outcome="removed").inc(len(event.steps))
            return
        stored = await store.record_iterations(event)
        ITERATIONS_INGESTED.labels(outcome="stored").inc(stored)
        ITERATIONS_INGESTED.labels(outcome="duplicate").inc(len(event.steps) - stored)

    @durable_subscriber(router, subjects, subjects.run_removed, REMOVALS_CONSUMER)
    async def on_run_removed(event: RunRemoved) -> None:
        state = await store.removal_state(event.run_id)
        if state == "not_yet":
            raise NackMessage(delay=REMOVAL_RECHECK_S)
        if state == "refused":
            RUNS_REMOVED.labels(outcome="refused").inc()
            log.info("run %s was not removed (it became active again): its data stays", event.run_id)
            return
        deleted = await store.remove_run_data(event)
        RUNS_REMOVED.labels(outcome="removed").inc()
        log.info("removed the data of run %s: %s", event.run_id, deleted)

    return router
