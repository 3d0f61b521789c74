"""Under the local stack every service serves /metrics, on ports the stack records and prints."""

import functools
import json

import httpx

from tests.helpers import wait_until
from trainyard.localstack import LocalStack


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2, follow_redirects=True).status_code == 200
    except httpx.TransportError:
        return False


def test_scheduler_metrics_and_api_serve_metrics_on_recorded_ports(stack: LocalStack) -> None:
    for service in ("scheduler", "metrics", "api"):
        stack.start_service(service)
    stack.write_state()
    urls = json.loads((stack.data_dir / "stack.json").read_text())["metrics_urls"]
    assert set(urls) == {"scheduler", "metrics", "api"} and urls == stack.metrics_urls()
    for service, url in urls.items():
        wait_until(functools.partial(_answers, url), 30, f"{service}'s /metrics")
        assert "python_info" in httpx.get(url, follow_redirects=True).text, service
