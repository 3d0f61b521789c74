"""Bus handlers of the metrics service: decode, store, nothing else."""

import logging

from faststream.exceptions import NackMessage
from faststream.nats import NatsBroker, NatsMessage, NatsRouter
from prometheus_client import Counter

from services.metrics.store import MetricsStore
from shared.bus import decode_event, durable_subscriber, redelivered_on_storage_error
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


def build_router(broker: NatsBroker, store: MetricsStore, subjects: Subjects) -> NatsRouter:
    router = NatsRouter()

    @durable_subscriber(router, subjects, subjects.epoch_logged, CONSUMER)
    async def on_epoch_logged(message: NatsMessage) -> None:
        event = await decode_event(message, EpochLogged, broker=broker, subjects=subjects, consumer=CONSUMER)
        if event is None:
            return
        with redelivered_on_storage_error(f"storing epoch {event.epoch} of run {event.run_id}"):
            if await store.is_superseded(event.run_id, event.attempt):
                EPOCHS_INGESTED.labels(outcome="superseded").inc()
                log.info("ignoring epoch %d of superseded attempt %d of run %s", event.epoch, event.attempt,
                         event.run_id)
                return
            stored = await store.record_epoch(event)
        EPOCHS_INGESTED.labels(outcome="stored" if stored else "duplicate").inc()

    @durable_subscriber(router, subjects, subjects.model_registered, MODELS_CONSUMER)
    async def on_model_registered(message: NatsMessage) -> None:
        event = await decode_event(message, ModelRegistered, broker=broker, subjects=subjects,
                                   consumer=MODELS_CONSUMER)
        if event is None:
            return
        with redelivered_on_storage_error(f"registering the model of run {event.run_id}"):
            if await store.epochs_stored(event.run_id) < event.epochs_completed:
                # Its last epochs are still on their way (another consumer): the
                # best epoch must be chosen from all of them.
                raise NackMessage(delay=1.0)
            if await store.register_model(event):
                MODELS_REGISTERED.inc()

    @durable_subscriber(router, subjects, subjects.iterations_logged, ITERATIONS_CONSUMER)
    async def on_iterations_logged(message: NatsMessage) -> None:
        event = await decode_event(message, IterationsLogged, broker=broker, subjects=subjects,
                                   consumer=ITERATIONS_CONSUMER)
        if event is None:
            return
        with redelivered_on_storage_error(f"storing iterations of run {event.run_id}"):
            if await store.is_superseded(event.run_id, event.attempt):
                ITERATIONS_INGESTED.labels(outcome="superseded").inc(len(event.steps))
                return
            stored = await store.record_iterations(event)
        ITERATIONS_INGESTED.labels(outcome="stored").inc(stored)
        ITERATIONS_INGESTED.labels(outcome="duplicate").inc(len(event.steps) - stored)

    @durable_subscriber(router, subjects, subjects.run_removed, REMOVALS_CONSUMER)
    async def on_run_removed(message: NatsMessage) -> None:
        event = await decode_event(message, RunRemoved, broker=broker, subjects=subjects,
                                   consumer=REMOVALS_CONSUMER)
        if event is None:
            return
        with redelivered_on_storage_error(f"removing the data of run {event.run_id}"):
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
