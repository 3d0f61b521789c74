"""One real run seen from outside: its spans from all four services form one trace,
and every service's /metrics says what happened (promtool-clean, with the run's numbers)."""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import service_log
from tests.observed import namespaced_stack, sample_value, scrape, start_with_metrics
from tests.otlp import ReceivedSpan, otlp_receiver
from tests.promtool import check_metrics
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco
from trainyard_client import TrainyardClient

pytestmark = pytest.mark.training

SERVICE_NAMES = {"trainyard-api", "trainyard-scheduler", "trainyard-trainer", "trainyard-metrics"}
TRAINER_ID = "cpu-traced-1"
# Span clocks are one machine's; a child may only seem to start before its parent by rounding.
CLOCK_SLACK_NS = 5_000_000


@dataclass
class ObservedRun:
    run: dict[str, Any]
    spans: list[ReceivedSpan]
    expositions: dict[str, str]
    subject_prefix: str


def _run_trace_complete(run_id: str) -> Any:
    def done(spans: list[ReceivedSpan]) -> bool:
        stored = [s for s in spans if s.name == "store epoch" and s.attributes.get("trainyard.run_id") == run_id]
        completed = [s for s in spans if s.name.endswith(f"run.completed.{TRAINER_ID} process")]
        # The trainer's span ends after it publishes run.completed, so it can arrive
        # after the scheduler's handling of that event: wait for it too.
        trained = [s for s in spans if s.name == "train run" and s.attributes.get("trainyard.run_id") == run_id]
        return len(stored) >= 2 and bool(completed) and bool(trained)

    return done


@pytest.fixture(scope="module")
def observed_run(servers: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservedRun]:
    """A two-epoch rtmdet-tiny run with every service exporting spans to an OTLP receiver."""
    root = tmp_path_factory.mktemp("observed")
    with otlp_receiver() as (endpoint, receiver):
        # A short batch delay: spans arrive while the test waits, not only at shutdown.
        stack = namespaced_stack(servers, root / "stack", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                                 OTEL_BSP_SCHEDULE_DELAY="200")
        try:
            urls = start_with_metrics(stack, TRAINYARD_TRAINER_ID=TRAINER_ID, TRAINYARD_THREADS="1")
            files = write_synthetic_coco(Path(root) / "shapes", train_images=8, val_images=4, size=64)
            with TrainyardClient(stack.api_url, stack.admin_key) as client:
                dataset = client.datasets.register("shapes", str(files.root))
                run = client.runs.start({"name": "traced", "dataset_id": dataset["id"],
                                         "architecture": "rtmdet-tiny", "epochs": 2, "batch_size": 4,
                                         "input_size": 64})
                deadline = time.monotonic() + 240
                while run["status"] not in ("success", "failed", "aborted") and time.monotonic() < deadline:
                    time.sleep(0.5)
                    run = client.runs.get(run["id"])
            assert run["status"] == "success", (run, service_log(stack, "trainer")[-3000:])
            spans = receiver.wait_for(_run_trace_complete(run["id"]), timeout=20)
            # The scheduler recounts runs every few seconds: wait until it saw this one finish.
            deadline = time.monotonic() + 15
            while sample_value(scrape(urls["scheduler"]), "trainyard_runs", status="success") != 1:
                assert time.monotonic() < deadline, "the scheduler never counted the finished run"
                time.sleep(0.5)
            expositions = {service: scrape(url) for service, url in urls.items()}
            yield ObservedRun(dict(run), spans, expositions, stack.subject_prefix)
        finally:
            stack.stop()


def _run_trace(observed: ObservedRun) -> list[ReceivedSpan]:
    run_id = observed.run["id"]
    trace_ids = {s.trace_id for s in observed.spans if s.attributes.get("trainyard.run_id") == run_id}
    assert len(trace_ids) == 1, f"the run's spans are in {len(trace_ids)} traces"
    return [s for s in observed.spans if s.trace_id in trace_ids]


def test_one_run_is_one_trace_across_all_four_services(observed_run: ObservedRun) -> None:
    trace = _run_trace(observed_run)
    assert {s.service for s in trace} == SERVICE_NAMES
    assert not [s.name for s in trace if "heartbeat" in s.name], "heartbeats are not part of a run's trace"
    by_id = {s.span_id: s for s in trace}
    roots = [s for s in trace if not s.parent_span_id]
    assert [(r.service, r.name) for r in roots] == [("trainyard-api", "POST /v1/runs")]
    dangling = [s.name for s in trace if s.parent_span_id and s.parent_span_id not in by_id]
    assert not dangling, f"spans whose parent is missing from the trace: {dangling}"
    for span in trace:
        if span.parent_span_id:
            parent = by_id[span.parent_span_id]
            assert span.start_ns >= parent.start_ns - CLOCK_SLACK_NS, f"{span.name} starts before {parent.name}"


def test_spans_follow_the_run_from_request_to_completion(observed_run: ObservedRun) -> None:
    trace = _run_trace(observed_run)
    by_id = {s.span_id: s for s in trace}
    prefix = observed_run.subject_prefix

    def lineage(span: ReceivedSpan) -> list[tuple[str, str]]:
        """(service, name) of the span and its ancestors, nearest first."""
        chain = []
        current: ReceivedSpan | None = span
        while current is not None:
            chain.append((current.service.removeprefix("trainyard-"), current.name))
            current = by_id.get(current.parent_span_id)
        return chain

    def only(service: str, name: str) -> ReceivedSpan:
        found = [s for s in trace if s.service == f"trainyard-{service}" and s.name == name]
        assert len(found) == 1, (service, name, [s.name for s in trace])
        return found[0]

    def in_order(chain: list[tuple[str, str]], *expected: tuple[str, str]) -> bool:
        """`expected` (nearest ancestor first) appear in `chain` in that order."""
        positions = [chain.index(step) for step in expected if step in chain]
        return len(positions) == len(expected) and positions == sorted(positions)

    request = ("api", "POST /v1/runs")
    scheduled = ("scheduler", f"{prefix}.run.created process")
    assigned = ("scheduler", "assign run")
    received = ("trainer", f"{prefix}.run.assigned.{TRAINER_ID} process")
    training = ("trainer", "train run")

    assert in_order(lineage(only(*scheduled)), scheduled, request)
    assign = [s for s in trace if s.name == "assign run" and s.attributes.get("trainyard.assigned")]
    assert len(assign) == 1
    # Placed while handling run.created, or by a later placement pass: either way the run's trace.
    assert in_order(lineage(assign[0]), assigned, request)
    train = only(*training)
    assert in_order(lineage(train), training, received, assigned, request)
    assert train.attributes["trainyard.attempt"] == 1

    epochs = sorted((s for s in trace if s.name == "train epoch"), key=lambda s: s.start_ns)
    assert [e.attributes["trainyard.epoch"] for e in epochs] == [1, 2]
    assert all(e.parent_span_id == train.span_id for e in epochs)
    assert all(e.end_ns <= train.end_ns for e in epochs)

    writes = [s for s in trace if s.service == "trainyard-metrics" and s.name == "store epoch"]
    assert sorted(w.attributes["trainyard.epoch"] for w in writes) == [1, 2]
    for write in writes:
        # Each write descends from the span of the epoch it stores.
        epoch_span = next(e for e in epochs if e.attributes["trainyard.epoch"] == write.attributes["trainyard.epoch"])
        assert epoch_span.span_id in _ancestor_ids(write, by_id)
        logged = ("metrics", f"{prefix}.epoch.logged.{TRAINER_ID} process")
        assert in_order(lineage(write), ("metrics", "store epoch"), logged,
                        ("trainer", "train epoch"), training, assigned, request)

    started_name, completed_name = (f"{prefix}.run.{what}.{TRAINER_ID} process" for what in ("started", "completed"))
    started = only("scheduler", started_name)
    assert in_order(lineage(started), ("scheduler", started_name), training, request)
    completed = only("scheduler", completed_name)
    assert in_order(lineage(completed), ("scheduler", completed_name), training, request)
    assert completed.start_ns >= max(e.end_ns for e in epochs) - CLOCK_SLACK_NS


def _ancestor_ids(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> set[str]:
    ids = set()
    current = by_id.get(span.parent_span_id)
    while current is not None:
        ids.add(current.span_id)
        current = by_id.get(current.parent_span_id)
    return ids


@pytest.mark.parametrize("service", ["api", "scheduler", "trainer", "metrics"])
def test_metrics_after_a_run_pass_promtool(observed_run: ObservedRun, service: str) -> None:
    result = check_metrics(observed_run.expositions[service])
    assert result.returncode == 0, f"promtool check metrics on {service}:\n{result.stdout}{result.stderr}"


def test_metrics_count_what_the_run_did(observed_run: ObservedRun) -> None:
    api, scheduler = observed_run.expositions["api"], observed_run.expositions["scheduler"]
    trainer, metrics = observed_run.expositions["trainer"], observed_run.expositions["metrics"]
    assert sample_value(api, "trainyard_http_requests_total", method="POST", route="/v1/runs", code="201") == 1
    assert sample_value(scheduler, "trainyard_runs", status="success") == 1
    assert sample_value(scheduler, "trainyard_scheduling_latency_seconds_count") == 1
    assert sample_value(scheduler, "trainyard_assignments_total") == 1
    assert sample_value(trainer, "trainyard_epoch_duration_seconds_count", device="cpu") == 2
    assert sample_value(trainer, "trainyard_training_attempts_total", status="success") == 1
    assert sample_value(trainer, "trainyard_trainer_assignments_total", outcome="accepted") == 1
    assert sample_value(trainer, "trainyard_trainer_running_attempts") == 0
    assert sample_value(scheduler, "trainyard_trainer_accelerators", accelerator="CPU", state="free") == 1
    assert sample_value(metrics, "trainyard_epochs_ingested_total", outcome="stored") == 2
    assert sample_value(metrics, "trainyard_epoch_ingest_lag_seconds_count") == 2
    # No label carries the run's id: series must not grow with the number of runs.
    for text in observed_run.expositions.values():
        assert observed_run.run["id"] not in text
