"""`trainyard up` / `trainyard down` and `trainyard dataset synth` as a person runs them."""

import contextlib
import json
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

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


def _start_up(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    data_dir = tmp_path / "stack"
    full_env = {**os.environ, "TRAINYARD_DATA_DIR": str(data_dir), "TRAINYARD_THREADS": "1", **env}
    full_env.pop("TRAINYARD_NATS_URL", None)
    full_env.pop("TRAINYARD_MONGO_URL", None)
    output = tmp_path / "up.out"
    with output.open("wb") as out:
        up = subprocess.Popen([*TRAINYARD, "up", "--api-port", "0", *args], env=full_env, stdout=out,
                              stderr=subprocess.STDOUT, start_new_session=True)
    return up, data_dir, output


def _state(data_dir: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((data_dir / "stack.json").read_text())
    return state


def _restarted(data_dir: Path, name: str, old_pid: int) -> int:
    """The new pid of `name` once the supervisor has restarted it and recorded it (0 until then)."""
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
        pid = int(_state(data_dir)["processes"][name])
        if pid != old_pid and _alive(pid):
            return pid
    return 0


def test_up_restarts_a_killed_child_in_place_and_keeps_answering(tmp_path: Path) -> None:
    up, data_dir, output = _start_up(tmp_path)
    try:
        wait_until((data_dir / "stack.json").exists, 90, "the stack to record itself")
        state = _state(data_dir)
        api = httpx.Client(base_url=state["api_url"], timeout=10,
                           headers={"Authorization": f"Bearer {(data_dir / 'api-key').read_text().strip()}"})
        assert api.get("/v1/runs").status_code == 200
        # The database server first, then the api: each is restarted alone, on its port and data.
        for name in ("mongo", "api"):
            old_pid = int(_state(data_dir)["processes"][name])
            os.kill(old_pid, signal.SIGKILL)
            new_pid = wait_until(partial(_restarted, data_dir, name, old_pid), 60, f"{name} to be restarted")
            assert new_pid != old_pid
            wait_until(lambda: _answers(api), 60, f"the api to answer after {name} was restarted")
        said = output.read_text()
        assert "mongo killed by signal 9 (SIGKILL) (restarts so far: 0)" in said, said
        assert "mongo restarted (pid" in said and "restart 1)" in said, said
        assert "api killed by signal 9 (SIGKILL)" in said, said
        # The rest never stopped: the same processes as before.
        after = _state(data_dir)["processes"]
        for name in ("nats", "metrics", "scheduler", "trainer"):
            assert after[name] == state["processes"][name], (name, said)
        assert up.poll() is None, said
        assert state["api_url"] == _state(data_dir)["api_url"]

        subprocess.run([*TRAINYARD, "down", "--data-dir", str(data_dir)], capture_output=True, timeout=60)
        assert up.wait(timeout=60) == 0
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)


def test_up_gives_up_on_a_process_that_keeps_dying(tmp_path: Path) -> None:
    # A misconfigured trainer: it cannot read its settings, so every start dies the same way.
    up, data_dir, output = _start_up(tmp_path, "--max-deaths", "3", "--death-window-s", "120",
                                     TRAINYARD_HEARTBEAT_INTERVAL_S="often")
    try:
        wait_until(lambda: "giving up" in output.read_text(), 120, "the supervisor to give up on the trainer")
        said = output.read_text()
        assert ("trainer exited with code 1 and died 3 times within 120 s: giving up on it, "
                "not restarting it again (restarted 2 times)") in said, said
        assert "heartbeat_interval_s" in said, "the last log line says why"
        assert said.count("trainer restarted (pid") == 2, said
        # The rest of the stack stays up.
        assert up.poll() is None
        assert httpx.get(f"{_state(data_dir)['api_url']}/healthz").json() == {"status": "ok"}
        os.kill(up.pid, signal.SIGTERM)
        assert up.wait(timeout=60) == 0
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)


def _answers(api: httpx.Client) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return api.get("/v1/runs").status_code == 200
    return False


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
