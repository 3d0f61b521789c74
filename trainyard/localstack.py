"""The local default: real NATS (JetStream) and a MongoDB-wire server as child
processes with all data under one directory, then the four services."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.settings import LOCAL_MONGO_OPTIONS

# The file names the client reads a local stack's URL and admin key from: spelled once, there.
from trainyard_client.calls import API_KEY_FILE, STATE_FILE

SERVICES = ("metrics", "scheduler", "api", "trainer")
DEFAULT_PROJECT = "default"
REPO_ROOT = Path(__file__).resolve().parent.parent
__all__ = ["API_KEY_FILE", "DEFAULT_PROJECT", "SERVICES", "STATE_FILE", "LocalStack", "StackError"]
# How long a stop waits for processes to end on SIGTERM before it kills them.
STOP_TIMEOUT_S = 15.0


class StackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _bin(name: str) -> str:
    """A console script of this environment, else one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise StackError(f"{name} is not installed: run scripts/setup.sh")
    return found


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _wait(what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise StackError(f"{what} exited with code {proc.returncode}; log {log}:\n{tail}")
        if ready():
            return
        time.sleep(0.1)
    raise StackError(f"{what} did not become ready within {timeout:.0f} s; log {log}")


def _mongo_answers(url: str) -> bool:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    try:
        client: MongoClient[dict[str, object]]
        with MongoClient(url, serverSelectionTimeoutMS=500) as client:
            client.admin.command("ping")
        return True
    except PyMongoError:
        return False


@dataclass
class LocalStack:
    """Starts what is missing, remembers what it started, stops it in reverse order."""

    data_dir: Path
    nats_url: str | None = None
    mongo_url: str | None = None
    mongo_db: str = "trainyard"
    subject_prefix: str = ""
    api_port: int | None = None
    # The address NATS, the API and /metrics listen on: 0.0.0.0 lets other machines
    # (a GPU trainer) join; the URLs handed out stay on the loopback for this machine.
    listen: str = "127.0.0.1"
    # Each service's /metrics port (the API serves it on its own port), once started.
    metrics_ports: dict[str, int] = field(default_factory=dict)
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # The database server's cache: 256 MB holds a working stack's data many times over; the
    # benchmarks that store 100,000 runs (over 300 MB with their indexes) pass more, since a cache
    # smaller than the working set makes every insert evict and read back pages.
    mongo_cache_size: str = "256M"
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # How each process was started, so a supervisor restarts it exactly so:
    # same arguments, ports, data dir and environment.
    launches: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        full_env = {**os.environ, **(env or {})}
        self.launches[name] = (list(argv), full_env)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                # Own process group: Ctrl-C in a terminal reaches the stack's
                # owner, which then stops children in order.
                start_new_session=True,
            )
        self.processes[name] = proc
        return proc

    def restart_process(self, name: str) -> subprocess.Popen[bytes]:
        """Start `name` again as it was started the first time (its old process must have ended).

        Does not wait for it to be ready: the services reconnect by themselves,
        and a process that dies again at once is just one more death to the supervisor.
        """
        argv, env = self.launches[name]
        old = self.processes.get(name)
        if old is not None and old.poll() is None:
            raise StackError(f"{name} (pid {old.pid}) is still running")
        with (self.log_dir / f"{name}.log").open("ab") as out:
            out.write(f"\n--- restarted by the local stack at {time.strftime('%H:%M:%S')} ---\n".encode())
        return self._spawn(name, argv, env)

    def start_servers(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.nats_url is None:
            port = free_port()
            proc = self._spawn(
                "nats",
                [_bin("nats-server"), "-a", self.listen, "-p", str(port), "-js", "-sd", str(self.data_dir / "nats")],
            )
            self.nats_url = f"nats://127.0.0.1:{port}"
            _wait("nats-server", lambda: _port_open(port), proc, self.log_dir / "nats.log", 20)
        if self.mongo_url is None:
            port = free_port()
            argv = [_bin("secantusd-py"), "--host", "127.0.0.1", "--port", str(port)]
            # --sync-on-commit: without it a kill -9 can lose acknowledged writes.
            argv += ["--storage-path", str(self.data_dir / "mongo"), "--cache-size", self.mongo_cache_size,
                     "--sync-on-commit"]
            proc = self._spawn("mongo", argv)
            url = f"mongodb://127.0.0.1:{port}/?{LOCAL_MONGO_OPTIONS}"
            _wait("secantusd", lambda: _mongo_answers(url), proc, self.log_dir / "mongo.log", 60)
            self.mongo_url = url

    def service_env(self, **overrides: str) -> dict[str, str]:
        assert self.nats_url and self.mongo_url, "servers not started"
        env = {
            "TRAINYARD_NATS_URL": self.nats_url,
            "TRAINYARD_MONGO_URL": self.mongo_url,
            "TRAINYARD_MONGO_DB": self.mongo_db,
            "TRAINYARD_SUBJECT_PREFIX": self.subject_prefix,
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        env.update(overrides)
        return env

    @property
    def api_key_file(self) -> Path:
        return self.data_dir / API_KEY_FILE

    @property
    def admin_key(self) -> str:
        """The admin key of the default project (the API must have been started once)."""
        return self.api_key_file.read_text().strip()

    def ensure_admin_key(self) -> str:
        """Keep one admin key of the default project under the data dir and make sure MongoDB knows it.

        Written straight to MongoDB, as `trainyard keys bootstrap` does: it is
        the first key, so there is no key yet to ask the API with.
        """
        from datetime import UTC, datetime

        from pymongo import MongoClient

        from shared.apikeys import Scope, generate_key, key_document, parse_key
        from shared.store import API_KEYS

        assert self.mongo_url, "servers not started"
        key = self.api_key_file.read_text().strip() if self.api_key_file.exists() else ""
        if parse_key(key) is None:
            key = generate_key()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            # Owner-only from the first byte: the key is the project's master key.
            fd = os.open(self.api_key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(key + "\n")
        doc = key_document(key, DEFAULT_PROJECT, "local stack admin", [Scope.ADMIN], created_by="localstack",
                           now=datetime.now(UTC))
        client: MongoClient[dict[str, object]]
        with MongoClient(self.mongo_url) as client:
            # $setOnInsert: a key someone revoked stays revoked across restarts.
            client[self.mongo_db][API_KEYS].update_one({"_id": doc.pop("_id")}, {"$setOnInsert": doc}, upsert=True)
        return key

    def signin_link(self) -> str:
        """A one-time console sign-in link as the local admin key (10 minutes, single use)."""
        from datetime import UTC, datetime

        from pymongo import MongoClient

        from shared.apikeys import parse_key
        from shared.console import new_token, signin_path, signin_token_document
        from shared.store import CONSOLE_SIGNIN_TOKENS

        parsed = parse_key(self.ensure_admin_key())
        assert parsed is not None and self.mongo_url
        token = new_token()
        client: MongoClient[dict[str, Any]] = MongoClient(self.mongo_url)
        with client:
            client[self.mongo_db][CONSOLE_SIGNIN_TOKENS].insert_one(
                signin_token_document(token, parsed[0], DEFAULT_PROJECT, now=datetime.now(UTC)))
        return self.api_url + signin_path(token)

    def start_service(self, service: str, name: str | None = None, **env: str) -> subprocess.Popen[bytes]:
        if service == "api":
            self.ensure_admin_key()
            self.api_port = self.api_port or free_port()
            env.setdefault("TRAINYARD_PORT", str(self.api_port))
            if "TRAINYARD_DATASET_ROOTS" not in os.environ and "TRAINYARD_DATASET_ROOTS" not in self.extra_env:
                # Datasets by server path: the stack's own data directory unless told otherwise.
                env.setdefault("TRAINYARD_DATASET_ROOTS", str(self.data_dir.resolve()))
            env.setdefault("TRAINYARD_HOST", self.listen)
        elif "TRAINYARD_METRICS_PORT" not in {**self.extra_env, **env}:
            self.metrics_ports[name or service] = free_port()
            env["TRAINYARD_METRICS_PORT"] = str(self.metrics_ports[name or service])
            env.setdefault("TRAINYARD_METRICS_HOST", self.listen)
        if service == "trainer":
            env.setdefault("TRAINYARD_WORK_ROOT", str(self.data_dir / "work"))
        name = name or service
        proc = self._spawn(name, [sys.executable, "-m", f"services.{service}.main"], self.service_env(**env))
        if service == "api":
            port = self.api_port
            _wait("api", lambda: _port_open(port), proc, self.log_dir / f"{name}.log", 30)  # type: ignore[arg-type]
        return proc

    def start_load_generator(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Simulated trainers (bench.loadgen, test tooling beside the product) under this stack's namespace."""
        argv = [sys.executable, "-m", "bench.loadgen", "--name", name, *args]
        pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        return self._spawn(f"loadgen-{name}", argv, self.service_env(PYTHONPATH=pythonpath))

    def start(self, services: tuple[str, ...] = SERVICES) -> None:
        self.start_servers()
        for service in services:
            self.start_service(service)
        self.write_state()

    def write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "nats_url": self.nats_url,
            "mongo_url": self.mongo_url,
            "mongo_db": self.mongo_db,
            "api_url": self.api_url if self.api_port else None,
            "metrics_urls": self.metrics_urls(),
            "processes": {name: proc.pid for name, proc in self.processes.items()},
        }
        (self.data_dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    def metrics_urls(self) -> dict[str, str]:
        """Where each started service serves Prometheus metrics."""
        urls = {name: f"http://127.0.0.1:{port}/metrics" for name, port in self.metrics_ports.items()
                if name in self.processes}
        if self.api_port and "api" in self.processes:
            urls["api"] = f"{self.api_url}/metrics"
        return urls

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> None:
        self.stop_processes([name], sig, timeout)

    def stop_processes(self, names: list[str], sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> None:
        """Signal them all at once, then wait for all under one deadline: the stop takes at
        most `timeout` however many there are (one by one, a stack whose database server
        had died took about a minute, each service spending its own timeout on it)."""
        procs = [proc for name in names if (proc := self.processes.pop(name, None)) is not None]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        # Services first, servers last, so nothing loses its connection mid-write.
        self.stop_processes([n for n in reversed(list(self.processes)) if n not in ("nats", "mongo")])
        self.stop_processes([n for n in ("mongo", "nats") if n in self.processes])
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / STATE_FILE).unlink()

    @contextlib.contextmanager
    def running(self, services: tuple[str, ...] = SERVICES) -> Iterator["LocalStack"]:
        try:
            self.start(services)
            yield self
        finally:
            self.stop()


def stop_recorded_stack(data_dir: Path) -> list[str]:
    """`trainyard down`: signal the stack that `trainyard up` recorded."""
    state_path = data_dir / STATE_FILE
    if not state_path.exists():
        return []
    state = json.loads(state_path.read_text())
    stopped = []
    with contextlib.suppress(ProcessLookupError):
        # The owner stops its children in order on SIGTERM.
        os.kill(int(state["pid"]), signal.SIGTERM)
        stopped.append(f"trainyard up (pid {state['pid']})")
    return stopped
