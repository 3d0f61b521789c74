"""Polling helpers the integration and end-to-end tests share."""

import time
from collections.abc import Callable
from typing import Any

from trainyard.client import TrainyardClient

TERMINAL = {"success", "failed", "aborted", "terminated"}


def wait_until(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_status(client: TrainyardClient, run_id: str, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
    return dict(wait_until(lambda: (r := client.runs.get(run_id))["status"] in statuses and r,
                           timeout, f"run {run_id} to become {statuses}"))
