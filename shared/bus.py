"""NATS helpers every service uses: the broker, the stream, durable consumers,
publishing with de-duplication, and decoding with dead-lettering."""

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any, TypeVar

from faststream.exceptions import NackMessage
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, NatsRouter, PullSub
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.prometheus import NatsPrometheusMiddleware
from nats.errors import Error as NatsError
from nats.js.api import ConsumerConfig, DeliverPolicy, StorageType
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from pydantic import BaseModel, ValidationError
from pymongo.errors import PyMongoError

from shared.events import DeadLetter, Event
from shared.settings import CommonSettings
from shared.subjects import Subjects

log = logging.getLogger(__name__)

EventT = TypeVar("EventT", bound=BaseModel)

# Redelivery is what makes delivery at-least-once; the cap keeps a message
# that can never succeed from looping for ever (it is dead-lettered below).
MAX_DELIVER = 20
# Messages a consumer fetched but never acked (it crashed) come back after this.
ACK_WAIT_S = 30.0
# Publishers set Nats-Msg-Id; the stream drops a repeat inside this window.
DUPLICATE_WINDOW_S = 600.0
STORAGE_RETRY_DELAY_S = 2.0
PUBLISH_ATTEMPTS = 3

DEAD_LETTERED = Counter(
    "trainyard_dead_lettered_events_total",
    "Events a consumer could not decode and set aside",
    ["consumer"],
)


def make_broker(settings: CommonSettings, service: str, registry: CollectorRegistry = REGISTRY) -> NatsBroker:
    return NatsBroker(
        settings.nats_servers,
        name=f"trainyard-{service}",
        # FastStream logs every message it handles (a heartbeat every 2 s per trainer): DEBUG, not INFO.
        log_level=logging.DEBUG,
        middlewares=[
            NatsTelemetryMiddleware(),
            NatsPrometheusMiddleware(registry=registry, app_name=service, metrics_prefix="trainyard_bus"),
        ],
    )


def event_stream(subjects: Subjects) -> JStream:
    return JStream(
        name=subjects.stream,
        subjects=subjects.stream_subjects,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
        declare=True,
    )


def durable(name: str) -> ConsumerConfig:
    """A durable pull consumer that every replica of a service shares."""
    return ConsumerConfig(
        durable_name=name,
        ack_wait=ACK_WAIT_S,
        max_deliver=MAX_DELIVER,
        deliver_policy=DeliverPolicy.ALL,
    )


def pull() -> PullSub:
    return PullSub(batch_size=16, timeout=2.0)


def durable_subscriber(router: NatsRouter | NatsBroker, subjects: Subjects, subject: str, consumer: str) -> Any:
    """The one subscription policy for events that must not be lost: a durable pull consumer on the
    event stream, acked after the handler, nacked (redelivered) when it raises."""
    return router.subscriber(
        subject,
        stream=event_stream(subjects),
        durable=consumer,
        config=durable(consumer),
        pull_sub=pull(),
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )


@contextlib.contextmanager
def redelivered_on_storage_error(what: str) -> Iterator[None]:
    """Storage down or failing: nack with a pause, so the message comes back instead of being lost."""
    try:
        yield
    except PyMongoError as error:
        log.warning("%s failed, the message will be redelivered: %s", what, error)
        raise NackMessage(delay=STORAGE_RETRY_DELAY_S) from error


async def publish_event(
    broker: NatsBroker, subjects: Subjects, subject: str, event: Event, *, dedup_key: str | None = None
) -> None:
    """Publish to JetStream and wait for its ack; a repeat of dedup_key is dropped by the stream."""
    headers = {"Nats-Msg-Id": dedup_key or event.event_id, "content-type": "application/json"}
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            await broker.publish(event.model_dump_json(), subject, headers=headers, stream=subjects.stream,
                                 timeout=10.0)
            return
        except json.JSONDecodeError:
            # The publish is a request: a plain (core) subscriber on the subject that
            # answers it can beat the stream's ack with an empty reply. The stream has
            # the message or will have it on retry; the Msg-Id makes a retry harmless.
            if attempt == PUBLISH_ATTEMPTS:
                raise
            log.warning("a non-JetStream reply answered the publish on %s (a core subscriber replying?); "
                        "publishing again", subject)


def _dead_letter_key(message: NatsMessage, consumer: str, letter: DeadLetter) -> str:
    """Keyed by a stream message's place in the stream, so a redelivery of the same bad
    message (its ack lost, say) is not set aside twice; core NATS messages have no place."""
    try:
        metadata = message.raw_message.metadata
    except NatsError:
        return letter.event_id
    return f"dead:{consumer}:{metadata.stream}:{metadata.sequence.stream}"


async def decode_event(
    message: NatsMessage,
    model: type[EventT],
    *,
    broker: NatsBroker,
    subjects: Subjects,
    consumer: str,
) -> EventT | None:
    """The event in a message, or None after setting a malformed message aside.

    A malformed event must never stop a consumer, nor be redelivered for ever:
    it goes to deadletter.<subject> with the error, and the caller acks it.
    """
    raw: bytes = message.body
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        subject = message.raw_message.subject
        log.warning("dead-lettering a malformed %s on %s: %s", model.__name__, subject, error)
        DEAD_LETTERED.labels(consumer=consumer).inc()
        letter = DeadLetter(
            subject=subject,
            consumer=consumer,
            error=str(error)[:4000],
            payload=raw[:65536].decode("utf-8", errors="replace"),
        )
        await publish_event(broker, subjects, subjects.dead_letter(subject), letter,
                            dedup_key=_dead_letter_key(message, consumer, letter))
        return None


async def ensure_stream(broker: NatsBroker, subjects: Subjects) -> None:
    """Create the event stream if it is missing, for services that only publish."""
    from nats.js.api import StreamConfig
    from nats.js.errors import NotFoundError

    js = broker.connection.jetstream()
    config = StreamConfig(
        name=subjects.stream,
        subjects=subjects.stream_subjects,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
    )
    try:
        info = await js.stream_info(subjects.stream)
    except NotFoundError:
        await js.add_stream(config)
        return
    # A newer release may add subjects: widen the existing stream, never narrow it.
    missing = set(config.subjects or ()) - set(info.config.subjects or ())
    if missing:
        info.config.subjects = sorted({*(info.config.subjects or ()), *missing})
        await js.update_stream(info.config)
