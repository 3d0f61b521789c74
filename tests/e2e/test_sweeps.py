"""An ASHA sweep trained for real: 8 trials over the learning rate on two CPU trainers."""

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import service_log
from tests.e2e.conftest import FAST_LOSS_DETECTION, start_trainer
from tests.helpers import TERMINAL, http, wait_until
from trainyard.localstack import LocalStack
from trainyard_client import TrainyardClient
from trainyard_client.cli import app

pytestmark = pytest.mark.training

TRIALS, ETA, MAX_EPOCHS = 8, 4, 4


def sweep_spec(dataset_id: str) -> dict[str, Any]:
    return {
        "name": "lr-search",
        "base": {"dataset_id": dataset_id, "architecture": "rtmdet-tiny", "batch_size": 4, "input_size": 64,
                 "log_interval": 5},
        "space": {"learning_rate": {"type": "log_uniform", "low": 1e-4, "high": 5e-2}},
        "searcher": {"name": "asha", "reduction_factor": ETA, "first_rung_epochs": 1, "max_epochs": MAX_EPOCHS},
        "metric": "bbox_mAP_50", "trials": TRIALS, "max_concurrent": 2, "seed": 7,
    }


def test_asha_sweep_stops_poor_trials_at_the_first_rung_and_survives_a_scheduler_restart(
        stack: LocalStack, client: TrainyardClient, dataset_id: str, tmp_path: Path) -> None:
    start_trainer(stack, "sweep-trainer-1")
    start_trainer(stack, "sweep-trainer-2")
    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text(yaml.safe_dump(sweep_spec(dataset_id)))
    with http(stack, stack.admin_key) as api:
        # Started as a person would: `trainyard sweeps start -f sweep.yaml`.
        started = CliRunner().invoke(app, ["sweeps", "start", "-f", str(spec_file), "--json",
                                           "--api-url", stack.api_url, "--api-key", stack.admin_key])
        assert started.exit_code == 0, started.output
        sweep = json.loads(started.output)
        sweep_id = sweep["id"]
        assert sweep["rung_epochs"] == [1] and len(sweep["trials"]) == TRIALS
        rates = [t["parameters"]["learning_rate"] for t in sweep["trials"]]
        assert len(set(rates)) == TRIALS

        def get() -> dict[str, Any]:
            response = api.get(f"/v1/sweeps/{sweep_id}")
            assert response.status_code == 200, response.text
            failed = [t for t in response.json()["trials"] if t["status"] in ("failed", "aborted")]
            assert not failed, failed
            return dict(response.json())

        # The scheduler dies (kill -9) once ASHA has decided for some trials, and comes back.
        wait_until(lambda: sum(t["epochs_completed"] >= 1 for t in get()["trials"]) >= 3, 400,
                   "three trials past the first rung's epoch")
        scheduler = stack.processes["scheduler"]
        os.kill(scheduler.pid, signal.SIGKILL)
        scheduler.wait()
        stack.start_service("scheduler", **FAST_LOSS_DETECTION)

        # Never more than max_concurrent trials hold a trainer at once, and the sweep ends.
        final = wait_until(lambda: (s := get())["status"] == "completed" and s, 900, "the sweep to complete")
        trials = final["trials"]
        assert {t["status"] for t in trials} <= TERMINAL and all(t["status"] == "success" for t in trials), (
            trials, service_log(stack, "scheduler")[-3000:])

        stopped = [t for t in trials if t["stopped"] is not None]
        assert len(stopped) >= TRIALS // 2, trials
        for trial in stopped:
            assert trial["stopped"]["rung"] == 0 and trial["stopped"]["epoch"] == 1
            assert trial["epochs_completed"] == 1
            assert trial["message"].startswith("stopped by ASHA at rung 1") and "top" in trial["message"]
        continued = [t for t in trials if t["stopped"] is None]
        assert continued and all(t["epochs_completed"] == MAX_EPOCHS for t in continued)

        # Every trial's epochs are stored; the best at the first rung went on; the sweep's best is the max.
        rung_values = {}
        best_value, best_runs = None, set()
        for trial in trials:
            epochs = client.runs.logs(trial["run_id"], "epoch")
            assert [e["epoch"] for e in epochs] == list(range(1, trial["epochs_completed"] + 1))
            first = epochs[0]["metrics"]["bbox_mAP_50"]
            assert first is not None
            rung_values[trial["run_id"]] = first
            for epoch in epochs:
                value = epoch["metrics"]["bbox_mAP_50"]
                assert value is not None
                if best_value is None or value > best_value:
                    best_value, best_runs = value, {trial["run_id"]}
                elif value == best_value:
                    best_runs.add(trial["run_id"])
        top_at_rung = max(rung_values.values())
        assert any(rung_values[t["run_id"]] == top_at_rung for t in continued)
        assert final["best"]["value"] == best_value and final["best"]["run_id"] in best_runs

        # The runs API filters by sweep; a finished sweep cannot be killed.
        listed = api.get("/v1/runs", params={"sweep_id": sweep_id, "limit": 200}).json()["items"]
        assert {r["id"] for r in listed} == {t["run_id"] for t in trials}
        assert api.post(f"/v1/sweeps/{sweep_id}/kill").status_code == 409
        shown = CliRunner().invoke(app, ["sweeps", "get", sweep_id, "--api-url", stack.api_url,
                                         "--api-key", stack.admin_key], env={"COLUMNS": "80"})
        assert shown.exit_code == 0 and "rung 1" in shown.output and "best: trial" in shown.output, shown.output
        assert [s["id"] for s in client.sweeps.list()] == [sweep_id]
