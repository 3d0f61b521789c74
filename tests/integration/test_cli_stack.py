"""`trainyard up` / `trainyard down` and `trainyard dataset synth` as a person runs them."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.helpers import wait_until

TRAINYARD = [sys.executable, "-m", "trainyard_client.cli"]


def test_up_starts_everything_and_down_stops_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "stack"
    env = {**os.environ, "TRAINYARD_DATA_DIR": str(data_dir), "TRAINYARD_THREADS": "1"}
    env.pop("TRAINYARD_NATS_URL", None)
    env.pop("TRAINYARD_MONGO_URL", None)
    up = subprocess.Popen([*TRAINYARD, "up", "--api-port", "0"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, start_new_session=True)
    try:
        state_file = data_dir / "stack.json"
        wait_until(state_file.exists, 90, "the stack to record itself")
        state = json.loads(state_file.read_text())
        assert set(state["processes"]) == {"nats", "mongo", "metrics", "scheduler", "api", "trainer"}
        assert httpx.get(f"{state['api_url']}/healthz").json() == {"status": "ok"}
        assert (data_dir / "nats").is_dir() and (data_dir / "mongo").is_dir()

        down = subprocess.run([*TRAINYARD, "down"], env=env, capture_output=True, text=True, timeout=60)
        assert "stopped" in down.stdout
        assert up.wait(timeout=60) == 0
        pids = list(state["processes"].values())
        wait_until(lambda: not any(_alive(pid) for pid in pids), 30, "every process to end")
        assert not state_file.exists()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for every purpose here.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def test_dataset_synth_writes_a_registrable_coco_dataset(tmp_path: Path) -> None:
    out = tmp_path / "shapes"
    result = subprocess.run([*TRAINYARD, "dataset", "synth", "--out", str(out), "--train-images", "4",
                             "--val-images", "2"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    train = json.loads((out / "annotations" / "train.json").read_text())
    assert len(train["images"]) == 4 and len(train["categories"]) >= 3
    assert all((out / "images" / "train" / image["file_name"]).exists() for image in train["images"])
