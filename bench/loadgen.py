"""A load generator that plays many trainers in one process, training nothing.

It speaks the real trainer protocol (heartbeats, accepting assignments,
run.started, run.completed, stop requests) so the scheduler can be tested and
benchmarked at scale without GPUs. It is not a trainer: it never trains.

    python -m bench.loadgen --trainers 50 --accelerator CPU --run-seconds 0.5
"""

import argparse
import asyncio
import logging
import socket
from dataclasses import dataclass, field

from faststream.nats import NatsBroker

from shared.bus import durable_subscriber, ensure_stream, make_broker, publish_event
from shared.events import (
    Accelerator,
    RunAccepted,
    RunAssigned,
    RunCompleted,
    RunningAttempt,
    RunStarted,
    RunStopRequested,
    TrainerHeartbeat,
)
from shared.settings import CommonSettings
from shared.status import RunStatus
from shared.subjects import Subjects

log = logging.getLogger("bench.loadgen")


@dataclass
class FakeTrainer:
    """One simulated trainer; `behaviour` says what it does with an assignment."""

    trainer_id: str
    accelerator: str
    capacity: int
    behaviour: str  # complete | ignore | hang
    run_seconds: float
    running: dict[str, int] = field(default_factory=dict)
    stops: dict[str, asyncio.Event] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return self.capacity - len(self.running)


class LoadGenerator:
    def __init__(self, broker: NatsBroker, subjects: Subjects, trainers: list[FakeTrainer],
                 heartbeat_s: float) -> None:
        self.broker = broker
        self.subjects = subjects
        self.trainers = trainers
        self.heartbeat_s = heartbeat_s
        self.tasks: set[asyncio.Task[None]] = set()
        for trainer in trainers:
            self._subscribe(trainer)

    def _subscribe(self, trainer: FakeTrainer) -> None:
        consumer = f"trainer-{trainer.trainer_id}-assignments"

        @durable_subscriber(self.broker, self.subjects, self.subjects.run_assigned(trainer.trainer_id), consumer)
        async def on_assigned(event: RunAssigned) -> None:
            if trainer.behaviour == "ignore" or event.run_id in trainer.running:
                return
            trainer.running[event.run_id] = event.attempt
            trainer.stops[event.run_id] = asyncio.Event()
            task = asyncio.create_task(self._play(trainer, event))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        stops = f"trainer-{trainer.trainer_id}-stops"

        @durable_subscriber(self.broker, self.subjects, self.subjects.run_stop_requested(trainer.trainer_id), stops)
        async def on_stop(event: RunStopRequested) -> None:
            if trainer.running.get(event.run_id) == event.attempt:
                trainer.stops[event.run_id].set()

    async def _play(self, trainer: FakeTrainer, event: RunAssigned) -> None:
        ids = {"run_id": event.run_id, "attempt": event.attempt, "trainer_id": trainer.trainer_id}
        key = f"{event.run_id}:{event.attempt}"
        try:
            await publish_event(self.broker, self.subjects, self.subjects.run_accepted(trainer.trainer_id),
                                RunAccepted(**ids),
                                dedup_key=f"{key}:accepted")
            await publish_event(self.broker, self.subjects, self.subjects.run_started(trainer.trainer_id),
                                RunStarted(**ids, device="loadgen"), dedup_key=f"{key}:started")
            stop = trainer.stops[event.run_id]
            seconds = None if trainer.behaviour == "hang" else trainer.run_seconds
            try:
                await asyncio.wait_for(stop.wait(), timeout=seconds)
                status, message = RunStatus.TERMINATED, "stopped on request"
            except TimeoutError:
                status, message = RunStatus.SUCCESS, None
            await publish_event(self.broker, self.subjects, self.subjects.run_completed(trainer.trainer_id),
                                RunCompleted(**ids, status=status, message=message),
                                dedup_key=f"{key}:completed")
        finally:
            trainer.running.pop(event.run_id, None)
            trainer.stops.pop(event.run_id, None)

    async def heartbeats(self) -> None:
        host = socket.gethostname()
        while True:
            for trainer in self.trainers:
                beat = TrainerHeartbeat(
                    trainer_id=trainer.trainer_id, host=host, version="loadgen",
                    accelerators=[Accelerator(name=trainer.accelerator, count=trainer.capacity)],
                    running=[RunningAttempt(run_id=r, attempt=a) for r, a in trainer.running.items()],
                    free=trainer.free,
                )
                await self.broker.publish(beat.model_dump_json(), self.subjects.trainer_heartbeat(trainer.trainer_id))
            await asyncio.sleep(self.heartbeat_s)


async def run_load_generator(args: argparse.Namespace) -> None:
    settings = CommonSettings()
    subjects = Subjects(settings.subject_prefix)
    broker = make_broker(settings, "loadgen")
    trainers = [
        FakeTrainer(f"{args.name}-{i}", args.accelerator, args.count, args.behaviour, args.run_seconds)
        for i in range(args.trainers)
    ]
    generator = LoadGenerator(broker, subjects, trainers, args.heartbeat_seconds)
    await broker.connect()
    await ensure_stream(broker, subjects)
    await broker.start()
    try:
        await generator.heartbeats()
    finally:
        await broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("--trainers", type=int, default=1)
    parser.add_argument("--name", default="loadgen")
    parser.add_argument("--accelerator", default="CPU")
    parser.add_argument("--count", type=int, default=1, help="accelerators per simulated trainer")
    parser.add_argument("--behaviour", choices=["complete", "ignore", "hang"], default="complete")
    parser.add_argument("--run-seconds", type=float, default=0.5)
    parser.add_argument("--heartbeat-seconds", type=float, default=2.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    asyncio.run(run_load_generator(args))


if __name__ == "__main__":
    main()
