"""The external-subscriber example in docs/examples runs as documented against real NATS."""

import asyncio
import importlib.util
import logging
from pathlib import Path
from types import ModuleType

import pytest
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


async def test_example_subscriber_survives_quiet_periods(stack: LocalStack, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing published for a while (its fetch times out) and then a change: it keeps following."""
    stack.start_servers()
    assert stack.nats_url
    subjects = Subjects(stack.subject_prefix)
    broker = NatsBroker(stack.nats_url)
    await broker.connect()
    await ensure_stream(broker, subjects)
    caplog.set_level(logging.DEBUG, logger="follow_status_changes")
    follower = asyncio.create_task(load_example().follow_status_changes(
        stack.nats_url, stack.subject_prefix, durable="quiet-printer", stop_after=1, quiet_s=0.3))
    try:
        async with asyncio.timeout(20):
            while not any("no status change" in r.getMessage() for r in caplog.records):
                assert not follower.done(), follower.exception()
                await asyncio.sleep(0.05)
        change = RunStatusChanged(run_id="q" * 32, status=RunStatus.PENDING, previous_status=RunStatus.CREATED)
        await publish_event(broker, subjects, subjects.run_status_changed, change)
        seen = await asyncio.wait_for(follower, timeout=20)
    finally:
        follower.cancel()
        await broker.stop()
    assert [event["run_id"] for event in seen] == [change.run_id]
