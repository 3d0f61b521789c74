"""An external subscriber: print every run's status changes as trainyard publishes them.

    pip install nats-py
    python follow_status_changes.py nats://127.0.0.1:4222

It reads `run.status_changed` (see docs/asyncapi.yaml) through a durable
JetStream consumer of its own: it sees each change at least once, resumes
where it stopped after a restart, and takes nothing away from trainyard's
own consumers. It only needs read access to the stream.
"""

import asyncio
import json
import logging
import sys
from typing import Any

import nats

log = logging.getLogger("follow_status_changes")


async def follow_status_changes(nats_url: str, subject_prefix: str = "", durable: str = "status-printer",
                                stop_after: int | None = None, quiet_s: float = 5) -> list[dict[str, Any]]:
    """Print status changes until `stop_after` of them (for ever when None); return them."""
    subject = f"{subject_prefix}.run.status_changed" if subject_prefix else "run.status_changed"
    stream = f"TRAINYARD_{subject_prefix.upper()}" if subject_prefix else "TRAINYARD"
    connection = await nats.connect(nats_url)
    seen: list[dict[str, Any]] = []
    try:
        consumer = await connection.jetstream().pull_subscribe(subject, durable=durable, stream=stream)
        while stop_after is None or len(seen) < stop_after:
            try:
                messages = await consumer.fetch(10, timeout=quiet_s)
            except TimeoutError:
                # Nothing changed for quiet_s. nats-py raises the builtin TimeoutError (or its own
                # subclass of it, depending on the version): catching the builtin covers both.
                log.debug("no status change for %s s", quiet_s)
                continue
            for message in messages:
                event = json.loads(message.data)  # unknown fields are fine: ignore them
                print(f"{event['occurred_at']}  run {event['run_id']}  {event.get('previous_status')} -> "
                      f"{event['status']}  {event.get('message') or ''}")
                seen.append(event)
                await message.ack()  # acked only once handled: a crash means it comes again
    finally:
        await connection.close()
    return seen


if __name__ == "__main__":
    asyncio.run(follow_status_changes(sys.argv[1] if len(sys.argv) > 1 else "nats://127.0.0.1:4222"))
