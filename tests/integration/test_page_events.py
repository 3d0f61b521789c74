"""The console's live lists against real services: a simulated trainer (bench.loadgen, speaking the
trainer protocol) comes online, takes a run and is killed; a sweep's trials advance to the end; a
dataset registered elsewhere arrives; and a reconnect with Last-Event-ID sends nothing until the
state differs from what the client has."""

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx

from shared.apikeys import Scope
from tests.e2e.conftest import FAST_LOSS_DETECTION
from tests.helpers import create_key, http, problem_of
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco

Event = tuple[str, str | None, Any]


@contextmanager
def events(client: httpx.Client, path: str, **headers: str) -> Iterator[Iterator[Event]]:
    """The stream's events as (kind, id, data); comment lines and `retry` are skipped."""
    with client.stream("GET", path, headers=headers) as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"].startswith("text/event-stream")

        def parse() -> Iterator[Event]:
            kind, event_id, data = "message", None, ""
            for line in answer.iter_lines():
                if line == "":
                    if data:
                        yield kind, event_id, json.loads(data)
                    kind, event_id, data = "message", None, ""
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: "):
                    data += line[6:]
        yield parse()


def until(stream: Iterator[Event], check: Callable[[Event], bool], seen: list[Event] | None = None) -> Event:
    """Read events (each within the client's read timeout) until one passes `check`."""
    for event in stream:
        if seen is not None:
            seen.append(event)
        if check(event):
            return event
    raise AssertionError("the stream closed first")


def register(admin: httpx.Client, tmp_path: Path, name: str) -> dict[str, Any]:
    files = write_synthetic_coco(tmp_path / name, train_images=2, val_images=1, size=64)
    answer = admin.post("/v1/datasets", json={"name": name, "path": str(files.root)})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def trainer_in(body: list[dict[str, Any]], trainer_id: str) -> dict[str, Any]:
    """The trainer's entry; an empty one (no health, no runs) while it is not listed."""
    return next((t for t in body if t["id"] == trainer_id), {"health": None, "runs": []})


def test_trainers_stream_follows_a_trainer_online_running_and_lost(stack: LocalStack, tmp_path: Path) -> None:
    stack.start_servers()
    stack.start_service("scheduler", **FAST_LOSS_DETECTION)
    stack.start_service("api", **FAST_LOSS_DETECTION)
    admin = http(stack, stack.admin_key)
    dataset = register(admin, tmp_path, "shapes")
    with events(admin, "/v1/trainers/events") as stream:
        kind, _, body = next(stream)
        assert (kind, body) == ("trainers", [])  # the state at once, even an empty one
        trainer = stack.start_load_generator("watched", "--trainers", "1", "--behaviour", "hang",
                                             "--heartbeat-seconds", "0.5")
        until(stream, lambda e: trainer_in(e[2], "watched-0")["health"] == "online")
        run = admin.post("/v1/runs", json={"name": "held", "dataset_id": dataset["id"],
                                           "architecture": "rtmdet-tiny", "epochs": 1})
        assert run.status_code == 201, run.text
        run_id = run.json()["id"]
        seen: list[Event] = []
        until(stream, lambda e: [r["run_id"] for r in trainer_in(e[2], "watched-0")["runs"]] == [run_id], seen)
        # Sent only when it changed: no two events in a row carry the same state.
        assert all(a[2] != b[2] for a, b in pairwise(seen))
        trainer.kill()  # SIGKILL: no goodbye, only silence
        trainer.wait()
        until(stream, lambda e: trainer_in(e[2], "watched-0")["health"] == "lost")


def test_sweep_stream_sends_trials_advancing_then_end(stack: LocalStack, tmp_path: Path) -> None:
    stack.start_servers()
    stack.start_service("scheduler", **FAST_LOSS_DETECTION)
    stack.start_service("api", **FAST_LOSS_DETECTION)
    stack.start_load_generator("quick", "--trainers", "1", "--behaviour", "complete", "--run-seconds", "1",
                               "--heartbeat-seconds", "0.5")
    admin = http(stack, stack.admin_key)
    dataset = register(admin, tmp_path, "shapes")
    answer = admin.post("/v1/sweeps", json={
        "name": "live", "base": {"architecture": "rtmdet-tiny", "epochs": 1, "dataset_id": dataset["id"]},
        "searcher": {"name": "grid"}, "metric": "bbox_mAP", "trials": 2, "max_concurrent": 1,
        "space": {"learning_rate": {"type": "choice", "values": [0.001, 0.002]}}})
    assert answer.status_code == 201, answer.text
    sweep_id = answer.json()["id"]
    seen: list[Event] = []
    with events(admin, f"/v1/sweeps/{sweep_id}/events") as stream:
        until(stream, lambda e: e[0] == "end", seen)
    sweeps = [data for kind, _, data in seen if kind == "sweep"]
    assert sweeps[-1]["status"] != "running"
    assert {t["status"] for t in sweeps[-1]["trials"]} == {"success"}
    # The trials advanced while the stream was open: its first state had a trial still to run.
    assert any(t["status"] != "success" for t in sweeps[0]["trials"]), sweeps[0]
    assert seen[-1][1] == seen[-2][1]  # `end` carries the id of the last state


def test_datasets_stream_resumes_with_last_event_id_and_checks_its_input(stack: LocalStack, tmp_path: Path) -> None:
    stack.start_servers()
    stack.start_service("api")
    admin = http(stack, stack.admin_key)
    first = register(admin, tmp_path, "first")
    with events(admin, "/v1/datasets/events") as stream:
        kind, last_id, body = next(stream)
    assert kind == "datasets" and [d["id"] for d in body["items"]] == [first["id"]] and last_id
    # Resumed at what it has: nothing comes until a dataset is registered, and then the new list.
    with events(admin, "/v1/datasets/events", **{"Last-Event-ID": last_id}) as stream:
        second = register(admin, tmp_path, "second")
        kind, new_id, body = next(stream)
    assert kind == "datasets" and new_id != last_id
    assert [d["id"] for d in body["items"]] == [second["id"], first["id"]]

    problem = problem_of(admin.get("/v1/datasets/events", params={"last_event_id": "not-a-digest"}), 422)
    assert problem["errors"][0]["field"] == "query.last_event_id"
    problem_of(admin.get(f"/v1/sweeps/{'0' * 32}/events"), 404)
    problem_of(admin.get(f"/v1/models/{'0' * 32}/events"), 404)
    reader = http(stack, create_key(stack, "default", [Scope.RUNS_READ], name="reader"))
    problem = problem_of(reader.get("/v1/trainers/events"), 403)
    assert "trainers:read" in problem["detail"]
