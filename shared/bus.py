"""NATS helpers every service uses: the broker, the stream, durable consumers,
publishing with de-duplication, and decoding with dead-lettering (one middleware)."""

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, get_type_hints

from faststream import BaseMiddleware, ContextRepo
from faststream.exceptions import NackMessage
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, NatsRouter, PullSub
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.prometheus import NatsPrometheusMiddleware
from nats.errors import ConnectionReconnectingError, NoRespondersError
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, DeliverPolicy, StorageType
from nats.js.errors import NoStreamResponseError
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from pydantic import BaseModel
from pymongo.errors import PyMongoError

from shared.events import DeadLetter, Event
from shared.nats_fetch import raise_only_nats_timeouts
from shared.settings import CommonSettings, stream_replicas
from shared.subjects import Subjects

log = logging.getLogger(__name__)

# Redelivery is what makes delivery at-least-once; the cap keeps a message
# that can never succeed from looping for ever (it is dead-lettered below).
MAX_DELIVER = 20
# Messages a consumer fetched but never acked (it crashed) come back after this.
ACK_WAIT_S = 30.0
# Publishers set Nats-Msg-Id; the stream drops a repeat inside this window.
DUPLICATE_WINDOW_S = 600.0
STORAGE_RETRY_DELAY_S = 2.0
PUBLISH_ATTEMPTS = 3
# How long a publish is retried while the stream answers nothing (a cluster electing a leader
# takes a few seconds; a loaded 2-core machine measured up to 8 s).
PUBLISH_RETRY_S = 30.0
# What the API's request handlers allow instead: a person is waiting, and a publish to a stream that
# is away altogether already takes one 10 s try; this still carries a publish through an election.
REQUEST_PUBLISH_RETRY_S = 8.0
# What a publish gets while its stream has no leader or the connection is between servers.
LEADERLESS = (NoStreamResponseError, NoRespondersError, NatsTimeoutError, ConnectionReconnectingError)

DEAD_LETTERED = Counter(
    "trainyard_dead_lettered_events_total",
    "Events a consumer set aside: undecodable, or refused (e.g. a report from a trainer not holding the run)",
    ["consumer", "reason"],
)
# Events are small (an epoch with an 80-class confusion matrix is about 30 KB); NATS itself refuses
# messages over its max_payload (1 MiB by default).
MAX_EVENT_BYTES = 512 * 1024


# Every durable subscriber of every service pulls through this module (shared/nats_fetch.py says why).
raise_only_nats_timeouts()


def make_broker(settings: CommonSettings, service: str, registry: CollectorRegistry = REGISTRY) -> NatsBroker:
    return NatsBroker(
        settings.nats_servers,
        name=f"trainyard-{service}",
        # Reconnect for as long as it takes. nats-py's default gives up after 60 tries (about 2 min):
        # the connection is then closed for good, the service never recovers when NATS comes back,
        # and FastStream's pull loop spins on the closed connection at a full core.
        max_reconnect_attempts=-1,
        reconnect_time_wait=settings.nats_reconnect_wait_s,  # type: ignore[arg-type]  # nats-py sleeps a float
        # FastStream logs every message it handles (a heartbeat every 2 s per trainer): DEBUG, not INFO.
        log_level=logging.DEBUG,
        middlewares=[
            NatsTelemetryMiddleware(),
            NatsPrometheusMiddleware(registry=registry, app_name=service, metrics_prefix="trainyard_bus"),
            # Last, so innermost: what it sets aside counts as handled for the spans and bus metrics.
            DeadLetters(Subjects(settings.subject_prefix), service),
        ],
    )


def event_stream(subjects: Subjects, replicas: int | None = None) -> JStream:
    # FastStream declares it when the broker starts; an existing stream with another
    # configuration (another replica count) is updated to this one, its subjects kept.
    return JStream(
        name=subjects.stream,
        subjects=subjects.stream_subjects,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
        num_replicas=replicas or stream_replicas(),
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
    # One message per fetch. nats-py's fetch(batch=n), when it finds nothing waiting, sends a
    # lingering pull and, after the first message arrives, waits out the rest of its timeout for the
    # other n - 1: with batch 16 an event reaching an idle consumer sat up to 2 s before its handler
    # saw it (a completion, an assignment, a stop request). With batch 1 it returns on the first
    # message; a backlog costs one no-wait round trip per message, well under a millisecond here.
    return PullSub(batch_size=1, timeout=2.0)


async def publish_event(
    broker: NatsBroker, subjects: Subjects, subject: str, event: Event, *, dedup_key: str | None = None,
    retry_for_s: float = PUBLISH_RETRY_S,
) -> None:
    """Publish to JetStream and wait for its ack; a repeat of dedup_key is dropped by the stream.

    While the stream has no leader (a few seconds after its leader's node of a cluster died, or
    while the connection moves to another node) the publish is retried for `retry_for_s`: each
    try carries the same Msg-Id, so one that landed unacknowledged is not stored twice."""
    headers = {"Nats-Msg-Id": dedup_key or event.event_id, "content-type": "application/json"}

    async def publish_once() -> None:
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

    await retry_while_leaderless(publish_once, f"publishing on {subject}", retry_for_s)


ResultT = TypeVar("ResultT")


async def retry_while_leaderless(action: Callable[[], Awaitable[ResultT]], what: str,
                                 retry_for_s: float = PUBLISH_RETRY_S) -> ResultT:
    """Run a JetStream request (an object-store put, say) again while its stream answers nothing,
    for `retry_for_s`; `action` must be safe to repeat."""
    deadline = time.monotonic() + retry_for_s
    pause = 0.25
    while True:
        try:
            return await action()
        except LEADERLESS as error:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("%s got no answer (%s: the stream may be electing a leader); trying again", what,
                        type(error).__name__)
            await asyncio.sleep(pause)
            pause = min(2 * pause, 2.0)


class Undecodable(Exception):
    """A message whose body is not the subscriber's event: too large, not JSON, not the model."""


class Refused(Exception):
    """A well-formed event a consumer must not act on, e.g. a report from a trainer that does
    not hold the run's current attempt. Raised by a handler; the message is set aside."""


def payload_model(handler: Callable[..., Any]) -> type[BaseModel]:
    """The event type a handler takes: the annotation of its first parameter."""
    hints = get_type_hints(handler)
    first = next(iter(inspect.signature(handler).parameters), None)
    model = hints.get(first) if first else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"{handler.__qualname__}: its first parameter must be annotated with an event model")
    return model


def payload_decoder(model: type[BaseModel]) -> Callable[[StreamMessage[Any]], Awaitable[BaseModel]]:
    """A FastStream decoder that turns a body into `model` or raises Undecodable, whatever went wrong.

    FastStream's own decoder runs json.loads, which a deeply nested body turns into a RecursionError
    before any handler runs; pydantic's JSON parser has a depth limit and reports invalid UTF-8 as a
    validation error instead.
    """

    async def decode(message: StreamMessage[Any]) -> BaseModel:
        body: bytes = message.body
        if len(body) > MAX_EVENT_BYTES:
            raise Undecodable(f"the event is {len(body)} bytes, over the limit of {MAX_EVENT_BYTES}")
        try:
            return model.model_validate_json(body)
        except Exception as error:
            raise Undecodable(f"not a valid {model.__name__}: {error}") from error

    return decode


HandlerT = TypeVar("HandlerT", bound=Callable[..., Awaitable[Any]])


def durable_subscriber(
    router: NatsRouter | NatsBroker, subjects: Subjects, subject: str, consumer: str, *, max_workers: int = 1
) -> Callable[[HandlerT], Any]:
    """The one subscription policy for events that must not be lost: a durable pull consumer on the
    event stream, acked after the handler, nacked (redelivered) when it raises. The handler takes the
    decoded event as its first parameter (its annotation says which model).

    `max_workers` > 1 handles that many messages of the consumer at once: only for handlers whose
    every write is guarded so that any order of two events gives the same result."""

    def register(handler: HandlerT) -> Any:
        concurrency: dict[str, Any] = {"max_workers": max_workers} if max_workers > 1 else {}
        return router.subscriber(
            subject,
            stream=event_stream(subjects),
            durable=consumer,
            config=durable(consumer),
            pull_sub=pull(),
            ack_policy=AckPolicy.NACK_ON_ERROR,
            decoder=payload_decoder(payload_model(handler)),
            **concurrency,
        )(handler)

    return register


def core_subscriber(router: NatsRouter | NatsBroker, subject: str) -> Callable[[HandlerT], Any]:
    """A core NATS subscription (nothing stored, nothing redelivered) with the same decoding."""

    def register(handler: HandlerT) -> Any:
        return router.subscriber(subject, decoder=payload_decoder(payload_model(handler)))(handler)

    return register


def _dead_letter_key(message: NatsMessage, consumer: str, letter: DeadLetter) -> str:
    """Keyed by a stream message's place in the stream, so a redelivery of the same bad
    message (its ack lost, say) is not set aside twice; core NATS messages have no place."""
    try:
        metadata = message.raw_message.metadata
    except NatsError:
        return letter.event_id
    return f"dead:{consumer}:{metadata.stream}:{metadata.sequence.stream}"


class DeadLetters:
    """The broker middleware that sets aside what a consumer cannot or must not handle, for every
    subscriber of a service: an undecodable body (Undecodable, from payload_decoder), a trainer
    report whose subject names another trainer than the event, and an event its handler refused
    (Refused). Each goes to deadletter.<subject> with the reason and the payload, is counted, and
    is acked: it is never retried and the consumer goes on. A storage error instead nacks with a
    pause, so the message comes back."""

    def __init__(self, subjects: Subjects, service: str) -> None:
        self.subjects = subjects
        self.service = service

    def __call__(self, msg: Any, /, *, context: ContextRepo) -> "_DeadLetterScope":
        return _DeadLetterScope(msg, context=context, owner=self)


class _DeadLetterScope(BaseMiddleware):
    def __init__(self, msg: Any, /, *, context: ContextRepo, owner: DeadLetters) -> None:
        super().__init__(msg, context=context)
        self.owner = owner

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]) -> Any:
        try:
            event = await msg.decode()
        except Exception as error:  # whatever a decoder raises, the message is set aside
            return await self._set_aside(msg, "undecodable", str(error))
        subject: str = msg.raw_message.subject
        sender = self.owner.subjects.reporting_trainer(subject)
        claimed = getattr(event, "trainer_id", sender)
        if sender is not None and claimed != sender:
            return await self._set_aside(msg, "refused", f"published by trainer {sender} for trainer {claimed}")
        try:
            return await call_next(msg)
        except Refused as refusal:
            return await self._set_aside(msg, "refused", str(refusal))
        except PyMongoError as error:
            log.warning("storage failed on %s, the message will be redelivered: %s", subject, error)
            raise NackMessage(delay=STORAGE_RETRY_DELAY_S) from error

    def _consumer(self, msg: StreamMessage[Any]) -> str:
        try:
            return str(msg.raw_message.metadata.consumer)
        except NatsError:
            subscriber = self.context.get("handler_")
            return f"{self.owner.service}:{getattr(subscriber, 'subject', '?')}"

    async def _set_aside(self, msg: StreamMessage[Any], reason: str, error: str) -> None:
        subject: str = msg.raw_message.subject
        consumer = self._consumer(msg)
        raw: bytes = msg.body
        log.warning("dead-lettering a message on %s (%s): %s", subject, reason, error[:500])
        DEAD_LETTERED.labels(consumer=consumer, reason=reason).inc()
        letter = DeadLetter(subject=subject, consumer=consumer, reason=reason, error=error[:4000],
                            payload=raw[:65536].decode("utf-8", errors="replace"))
        broker = self.context.get("broker")
        assert isinstance(broker, NatsBroker), "dead letters need the service's broker in the context"
        await publish_event(broker, self.owner.subjects, self.owner.subjects.dead_letter(subject), letter,
                            dedup_key=_dead_letter_key(msg, consumer, letter))  # type: ignore[arg-type]


async def ensure_stream(broker: NatsBroker, subjects: Subjects, replicas: int | None = None) -> None:
    """Create the event stream if it is missing, for services that only publish; an existing
    one gets any subjects it lacks and the configured replica count."""
    from nats.js.api import StreamConfig
    from nats.js.errors import NotFoundError

    replicas = replicas or stream_replicas()
    js = broker.connection.jetstream()
    config = StreamConfig(
        name=subjects.stream,
        subjects=subjects.stream_subjects,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
        num_replicas=replicas,
    )
    try:
        info = await js.stream_info(subjects.stream)
    except NotFoundError:
        await js.add_stream(config)
        return
    # A newer release may add subjects: widen the existing stream, never narrow it.
    missing = set(config.subjects or ()) - set(info.config.subjects or ())
    if missing or (info.config.num_replicas or 1) != replicas:
        info.config.subjects = sorted({*(info.config.subjects or ()), *missing})
        # NATS scales a clustered stream's replicas in place (and refuses more than its nodes).
        info.config.num_replicas = replicas
        await js.update_stream(info.config)
