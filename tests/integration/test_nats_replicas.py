"""The event stream and the artifact store are replicated as TRAINYARD_NATS_REPLICAS says,
on a real three-node NATS cluster on loopback."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from shared.artifacts import Artifacts, bucket_name
from shared.bus import ensure_stream
from shared.settings import nats_servers
from shared.subjects import Subjects
from trainyard.nats_cluster import NatsCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "cluster", size=3)
    nodes.start()
    yield nodes
    nodes.stop()


async def replicas_of(broker: NatsBroker, stream: str) -> tuple[int, int]:
    """The stream's configured replica count, and how many servers hold it (leader and replicas)."""
    info = await broker.connection.jetstream().stream_info(stream)
    assert info.cluster is not None
    return info.config.num_replicas or 1, 1 + len(info.cluster.replicas or [])


async def test_stream_and_bucket_get_three_replicas_on_a_three_node_cluster(cluster: NatsCluster) -> None:
    subjects = Subjects("replicated")
    broker = NatsBroker(nats_servers(cluster.url))
    await broker.connect()
    try:
        await ensure_stream(broker, subjects, replicas=3)
        await Artifacts.open(broker, subjects, replicas=3)
        assert await replicas_of(broker, subjects.stream) == (3, 3)
        assert await replicas_of(broker, f"OBJ_{bucket_name(subjects)}") == (3, 3)
    finally:
        await broker.stop()


async def test_a_single_server_keeps_one_replica(bus: tuple[NatsBroker, Subjects]) -> None:
    broker, subjects = bus
    await Artifacts.open(broker, subjects)
    info = await broker.connection.jetstream().stream_info(subjects.stream)
    assert (info.config.num_replicas or 1) == 1
    bucket = await broker.connection.jetstream().stream_info(f"OBJ_{bucket_name(subjects)}")
    assert (bucket.config.num_replicas or 1) == 1
