"""Every service serves Prometheus metrics that promtool accepts, with bounded labels."""

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.dashboards import metric_names, prometheus_expressions
from tests.observed import (
    SERVICES,
    exported_series_names,
    namespaced_stack,
    sample_value,
    scrape,
    start_with_metrics,
)
from tests.promtool import check_metrics
from trainyard.localstack import LocalStack

# What each service must export (beyond the bus metrics every service has).
OWN_METRICS = {
    "api": ("trainyard_http_requests_total", "trainyard_http_request_duration_seconds_bucket",
            "trainyard_artifact_transfer_seconds_bucket", "trainyard_artifact_bytes_total"),
    "scheduler": ("trainyard_runs", "trainyard_queue_depth", "trainyard_trainers", "trainyard_trainer_accelerators",
                  "trainyard_scheduling_latency_seconds_bucket", "trainyard_assignment_retries_total",
                  "trainyard_assignments_total", "trainyard_trainers_lost_total", "trainyard_run_resets_total"),
    "trainer": ("trainyard_epoch_duration_seconds_bucket", "trainyard_training_attempts_total",
                "trainyard_trainer_assignments_total", "trainyard_trainer_running_attempts",
                "trainyard_artifact_transfer_seconds_bucket", "trainyard_artifact_bytes_total"),
    "metrics": ("trainyard_epochs_ingested_total", "trainyard_epoch_ingest_lag_seconds_bucket"),
}
BUS_METRICS = ("trainyard_bus_received_messages_total", "trainyard_bus_published_messages_total",
               "trainyard_dead_lettered_events_total")


@pytest.fixture(scope="module")
def expositions(servers: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Each service's /metrics text after a trainer registered and the API answered a few requests."""
    stack = namespaced_stack(servers, tmp_path_factory.mktemp("metrics-stack") / "stack")
    try:
        # A named accelerator: the trainer need not import torch to find out what it has.
        urls = start_with_metrics(stack, TRAINYARD_TRAINER_ID="cpu-metrics-1", TRAINYARD_ACCELERATOR_NAME="CPU",
                                  TRAINYARD_ACCELERATOR_COUNT="1")
        auth = {"Authorization": f"Bearer {stack.admin_key}"}
        httpx.get(f"{stack.api_url}/v1/runs", timeout=10, headers=auth).raise_for_status()
        assert httpx.get(f"{stack.api_url}/v1/runs/{'0' * 32}", timeout=10, headers=auth).status_code == 404
        # The scheduler recounts its fleet every few seconds; wait for the trainer to show.
        deadline = time.monotonic() + 20
        while sample_value(scrape(urls["scheduler"]), "trainyard_trainers", accelerator="CPU", state="idle") != 1:
            assert time.monotonic() < deadline, "the scheduler never counted the idle trainer"
            time.sleep(0.5)
        yield {service: scrape(url) for service, url in urls.items()}
    finally:
        stack.stop()


@pytest.mark.parametrize("service", SERVICES)
def test_metrics_output_passes_promtool(expositions: dict[str, str], service: str) -> None:
    result = check_metrics(expositions[service])
    assert result.returncode == 0, f"promtool check metrics on {service}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("service", SERVICES)
def test_service_exports_its_metrics(expositions: dict[str, str], service: str) -> None:
    text = expositions[service]
    for name in (*OWN_METRICS[service], *BUS_METRICS):
        assert f"# TYPE {name.removesuffix('_bucket')}" in text or f"\n{name}" in text, (service, name)


def test_http_metrics_label_the_route_template_not_the_path(expositions: dict[str, str]) -> None:
    text = expositions["api"]
    assert sample_value(text, "trainyard_http_requests_total", method="GET", route="/v1/runs", code="200") == 1
    assert sample_value(text, "trainyard_http_requests_total", method="GET", route="/v1/runs/{run_id}",
                        code="404") == 1
    assert "0" * 32 not in text
    # Prometheus' own scrapes are not counted as traffic.
    assert 'route="/metrics"' not in text


def test_scheduler_counts_trainers_and_runs(expositions: dict[str, str]) -> None:
    text = expositions["scheduler"]
    assert sample_value(text, "trainyard_trainers", accelerator="CPU", state="idle") == 1
    assert sample_value(text, "trainyard_trainers", accelerator="CPU", state="lost") == 0
    assert sample_value(text, "trainyard_trainer_accelerators", accelerator="CPU", state="free") == 1
    assert sample_value(text, "trainyard_trainer_accelerators", accelerator="CPU", state="in_use") == 0
    assert sample_value(text, "trainyard_runs", status="pending") == 0


def test_every_metric_in_dashboards_and_alerts_is_exported_by_a_service(expositions: dict[str, str]) -> None:
    exported = set().union(*(exported_series_names(text) for text in expositions.values()))
    exported.add("up")  # Prometheus' own series for every target
    checked = 0
    for where, expr in prometheus_expressions():
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        missing = names - exported
        assert not missing, f"{where}: {sorted(missing)} is exported by no service ({expr})"
        checked += 1
    assert checked > 30
