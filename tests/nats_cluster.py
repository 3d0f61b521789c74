"""A three-node NATS cluster with JetStream on loopback, started as processes of a LocalStack."""

import asyncio
from typing import Any

import nats
from nats.errors import Error as NatsError

from tests.helpers import wait_until
from trainyard.localstack import LocalStack, _bin, _port_open, free_port

CLUSTER = "trainyard"


def start_nats_cluster(stack: LocalStack, nodes: int = 3) -> list[str]:
    """Start `nodes` routed nats-servers (processes `nats-0`, ...); the stack's NATS URL names all."""
    client_ports = [free_port() for _ in range(nodes)]
    route_ports = [free_port() for _ in range(nodes)]
    routes = ",".join(f"nats://127.0.0.1:{port}" for port in route_ports)
    for node, (client_port, route_port) in enumerate(zip(client_ports, route_ports, strict=True)):
        stack._spawn(f"nats-{node}", [
            _bin("nats-server"), "-a", "127.0.0.1", "-p", str(client_port), "-n", f"n{node}", "-js",
            "-sd", str(stack.data_dir / f"nats-{node}"), "--cluster_name", CLUSTER,
            "--cluster", f"nats://127.0.0.1:{route_port}", "--routes", routes,
        ])
    urls = [f"nats://127.0.0.1:{port}" for port in client_ports]
    wait_until(lambda: all(_port_open(port) for port in client_ports), 30, "every NATS node to listen")
    stack.nats_url = ",".join(urls)
    # JetStream answers only once the nodes have elected a meta leader.
    wait_until(lambda: asyncio.run(_jetstream_answers(urls)), 60, "the JetStream cluster to elect a leader")
    return urls


async def _jetstream_answers(urls: list[str]) -> bool:
    try:
        connection = await nats.connect(urls, connect_timeout=1, max_reconnect_attempts=0)
    except (NatsError, OSError):
        return False
    try:
        await connection.jetstream().account_info()
        return True
    except (NatsError, OSError):
        return False
    finally:
        await connection.close()


def stream_cluster(urls: list[str], stream: str) -> dict[str, Any]:
    """The stream's replica count, its leader and replicas (server names `n<i>`)."""

    async def ask() -> dict[str, Any]:
        connection = await nats.connect(urls, connect_timeout=2)
        try:
            info = await connection.jetstream().stream_info(stream)
        finally:
            await connection.close()
        cluster = info.cluster
        return {"replicas": info.config.num_replicas, "leader": cluster.leader if cluster else None,
                "peers": [peer.name for peer in (cluster.replicas or [])] if cluster else []}

    return asyncio.run(ask())
