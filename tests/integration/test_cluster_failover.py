"""Publishing and storing go on through a leader election: on a real three-node NATS cluster on
loopback, the node leading the event stream and the artifact bucket is killed with -9, and the next
publish and the next put, made at once, still succeed (they get no answer for the seconds the
remaining nodes take to elect a new leader, and are tried again)."""

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from shared.artifacts import Artifacts, bucket_name
from shared.bus import PUBLISH_RETRY_S, ensure_stream, publish_event
from shared.events import RunStatusChanged
from shared.status import RunStatus
from shared.subjects import Subjects
from trainyard.nats_cluster import NatsCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "cluster", size=3)
    nodes.start()
    yield nodes
    nodes.stop()


async def _leader(broker: NatsBroker, stream: str) -> str:
    info = await broker.connection.jetstream().stream_info(stream)
    assert info.cluster is not None and info.cluster.leader
    return info.cluster.leader


async def test_a_publish_and_a_put_right_after_the_leaders_node_dies_succeed(cluster: NatsCluster) -> None:
    subjects = Subjects("failover")
    bucket = f"OBJ_{bucket_name(subjects)}"
    broker = NatsBroker(cluster.urls)
    await broker.connect()
    try:
        await ensure_stream(broker, subjects, replicas=3)
        artifacts = await Artifacts.open(broker, subjects, replicas=3)
        leader = await _leader(broker, subjects.stream)
        # Both streams led from one node, so that losing it leaves both without a leader.
        js = broker.connection.jetstream()
        for _ in range(30):
            if await _leader(broker, bucket) == leader:
                break
            await js._api_request(f"$JS.API.STREAM.LEADER.STEPDOWN.{bucket}", b"", timeout=5)
            await asyncio.sleep(0.5)  # the step-down's election
        assert await _leader(broker, bucket) == leader
        cluster.kill(next(n.index for n in cluster.nodes if n.name == leader), signal.SIGKILL)

        began = time.monotonic()
        change = RunStatusChanged(run_id="f" * 32, status=RunStatus.PENDING, previous_status=RunStatus.CREATED)
        await publish_event(broker, subjects, subjects.run_status_changed, change)
        stored = await artifacts.upload_bytes("runs/failover/object.bin", b"x" * 100_000)
        took_s = time.monotonic() - began
        print(f"\npublish and put after the leader's node died: {took_s:.1f} s")
        assert took_s < 2 * PUBLISH_RETRY_S
        assert stored.size == 100_000
        assert await _leader(broker, subjects.stream) != leader
        info = await js.stream_info(subjects.stream)
        assert info.state.messages == 1
    finally:
        await broker.stop()
