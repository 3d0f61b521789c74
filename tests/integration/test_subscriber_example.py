"""The external-subscriber example in docs/examples runs as documented against real NATS."""

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

from faststream.nats import NatsBroker

from shared.bus import ensure_stream, publish_event
from shared.events import RunStatusChanged
from shared.status import RunStatus
from shared.subjects import Subjects
from trainyard.localstack import LocalStack

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "follow_status_changes.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("follow_status_changes", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_example_subscriber_sees_status_changes(stack: LocalStack) -> None:
    stack.start_servers()
    assert stack.nats_url
    subjects = Subjects(stack.subject_prefix)
    broker = NatsBroker(stack.nats_url)
    await broker.connect()
    await ensure_stream(broker, subjects)
    change = RunStatusChanged(run_id="r" * 32, status=RunStatus.PENDING, previous_status=RunStatus.CREATED,
                              message="no trainer online with CPU x1")
    await publish_event(broker, subjects, subjects.run_status_changed, change)
    await broker.stop()
    seen = await asyncio.wait_for(
        load_example().follow_status_changes(stack.nats_url, stack.subject_prefix, stop_after=1), timeout=20)
    assert seen[0]["run_id"] == change.run_id and seen[0]["status"] == "pending"
