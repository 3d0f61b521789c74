"""Helpers for tests that look at the services from outside: their /metrics and their spans."""

import time
import uuid
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from trainyard.localstack import LocalStack, free_port

SERVICES = ("metrics", "scheduler", "api", "trainer")


def namespaced_stack(servers: LocalStack, root: Path, **extra_env: str) -> LocalStack:
    """A stack on the shared servers under its own database and subject prefix (as conftest's `stack`)."""
    namespace = "t" + uuid.uuid4().hex[:10]
    stack = LocalStack(root, nats_url=servers.nats_url, mongo_url=servers.mongo_url, mongo_db=namespace,
                       subject_prefix=namespace, extra_env=extra_env)
    stack.data_dir.mkdir(parents=True)
    return stack


def start_with_metrics(stack: LocalStack, **trainer_env: str) -> dict[str, str]:
    """Start the four services, each serving /metrics; returns each service's /metrics URL."""
    urls: dict[str, str] = {}
    for service in SERVICES:
        env = dict(trainer_env) if service == "trainer" else {}
        if service == "api":
            stack.start_service("api")
            urls["api"] = f"{stack.api_url}/metrics"
            continue
        port = free_port()
        stack.start_service(service, TRAINYARD_METRICS_PORT=str(port), **env)
        urls[service] = f"http://127.0.0.1:{port}/metrics"
    for service, url in urls.items():
        wait_for_scrape(url, service)
    return urls


def wait_for_scrape(url: str, service: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = httpx.get(url, timeout=2, follow_redirects=True)
            if reply.status_code == 200:
                return reply.text
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"{service} did not serve {url} within {timeout} s")
        time.sleep(0.2)


def scrape(url: str) -> str:
    reply = httpx.get(url, timeout=5, follow_redirects=True)
    reply.raise_for_status()
    return reply.text


def sample_value(exposition: str, name: str, **labels: str) -> float | None:
    """The value of one sample (`name` with at least these labels), or None."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def exported_series_names(exposition: str) -> set[str]:
    """Every series name an exposition declares, whether or not it has samples yet."""
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", ""),
                "gauge": ("",), "untyped": ("",), "info": ("_info",)}
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            base = name.removesuffix("_total") if kind == "counter" else name
            names.update(base + suffix for suffix in suffixes.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names
