"""A loopback NATS cluster with JetStream: N `nats-server` processes routed to each other.

What production runs (the Helm values' three-node NATS), on one machine, for
tests and drills that lose a node: each node has its own `server_name`, store
dir, client, route and monitoring port, and they form one JetStream meta group.

    cluster = NatsCluster(tmp_path / "nats", size=3)
    cluster.start()                  # returns once JetStream has a meta leader
    stack = LocalStack(..., nats_url=cluster.url)   # "nats://a,nats://b,nats://c"
    cluster.kill(1)                  # kill -9 node 1 (its store stays)
    cluster.restart(1)               # same ports and store: it rejoins
    cluster.stop()
"""

import contextlib
import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from trainyard.localstack import StackError, _bin, free_port

CLUSTER_NAME = "trainyard"


@dataclass(frozen=True)
class NatsNode:
    index: int
    name: str
    client_port: int
    route_port: int
    monitor_port: int
    store_dir: Path

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"


@dataclass
class NatsCluster:
    data_dir: Path
    size: int = 3
    nodes: list[NatsNode] = field(default_factory=list)
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"a cluster needs at least one node, not {self.size}")
        self.nodes = [
            NatsNode(index=i, name=f"nats-{i}", client_port=free_port(), route_port=free_port(),
                     monitor_port=free_port(), store_dir=self.data_dir / f"nats-{i}")
            for i in range(self.size)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated: what TRAINYARD_NATS_URL takes."""
        return ",".join(self.urls)

    def log_path(self, index: int) -> Path:
        return self.data_dir / f"{self.nodes[index].name}.log"

    def _argv(self, node: NatsNode) -> list[str]:
        routes = ",".join(f"nats://127.0.0.1:{other.route_port}" for other in self.nodes if other is not node)
        argv = [_bin("nats-server"), "-a", "127.0.0.1", "-p", str(node.client_port), "-n", node.name,
                "-js", "-sd", str(node.store_dir), "-m", str(node.monitor_port),
                "--cluster_name", CLUSTER_NAME, "--cluster", f"nats://127.0.0.1:{node.route_port}"]
        return argv + (["--routes", routes] if routes else [])

    def start_node(self, index: int) -> subprocess.Popen[bytes]:
        node = self.nodes[index]
        node.store_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path(index).open("ab") as out:
            proc = subprocess.Popen(self._argv(node), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes[index] = proc
        return proc

    def start(self, timeout: float = 60) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for index in range(self.size):
            self.start_node(index)
        self.wait_ready(timeout)

    def restart(self, index: int, timeout: float = 60) -> None:
        """Start a stopped node again with its ports and store: it rejoins and catches up."""
        proc = self.processes.get(index)
        if proc is not None and proc.poll() is None:
            raise StackError(f"{self.nodes[index].name} is still running")
        self.start_node(index)
        self.wait_ready(timeout, nodes=[index])

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        proc = self.processes.get(index)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        proc.wait(30)

    def stop(self) -> None:
        for index in list(self.processes):
            proc = self.processes.pop(index)
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def jetstream_ready(self, index: int) -> bool:
        """The node serves JetStream and knows the meta leader (its /healthz says ok)."""
        node = self.nodes[index]
        url = f"http://127.0.0.1:{node.monitor_port}/healthz"
        with contextlib.suppress(urllib.error.URLError, OSError, ValueError), \
                urllib.request.urlopen(url, timeout=1) as reply:
            return bool(reply.status == 200 and json.loads(reply.read()).get("status") == "ok")
        return False

    def meta_leader(self) -> str | None:
        """The server_name of JetStream's meta leader, as any running node reports it."""
        for index, proc in self.processes.items():
            if proc.poll() is not None:
                continue
            url = f"http://127.0.0.1:{self.nodes[index].monitor_port}/jsz"
            with contextlib.suppress(urllib.error.URLError, OSError, ValueError), \
                    urllib.request.urlopen(url, timeout=1) as reply:
                leader = json.loads(reply.read()).get("meta_cluster", {}).get("leader")
                if leader:
                    return str(leader)
        return None

    def wait_ready(self, timeout: float = 60, nodes: list[int] | None = None) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(range(self.size)) if nodes is None else nodes
        while time.monotonic() < deadline:
            for index in waiting:
                proc = self.processes[index]
                if proc.poll() is not None:
                    tail = self.log_path(index).read_text(errors="replace")[-2000:]
                    raise StackError(f"{self.nodes[index].name} exited with code {proc.returncode}:\n{tail}")
            if all(self.jetstream_ready(i) for i in waiting) and self.meta_leader():
                return
            time.sleep(0.2)
        raise StackError(f"the NATS cluster was not ready within {timeout:.0f} s; logs in {self.data_dir}")
