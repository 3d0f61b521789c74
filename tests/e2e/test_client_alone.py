"""The client distribution installed alone in a fresh virtual environment: it pulls no
service dependency, and the README's Python snippet and `trainyard runs list` work with
it against a running stack."""

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import service_log
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco

pytestmark = pytest.mark.training
ROOT = Path(__file__).resolve().parents[2]
# (pydantic is not among them: recent Typer, the CLI extra's, depends on it itself.)
SERVICE_DISTRIBUTIONS = {"faststream", "pymongo", "fastapi", "opentelemetry-sdk", "opentelemetry-api", "numpy",
                         "pillow", "nats-py", "uvicorn", "prometheus-client", "torch", "mmdet", "mmengine",
                         "pydantic-settings", "trainyard"}


@pytest.fixture(scope="session")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with `pip install ./client[cli]` (built from a copy: the build writes beside the sources)."""
    where = tmp_path_factory.mktemp("client-venv")
    source = where / "client-src"
    shutil.copytree(ROOT / "client", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv.create(where / "venv", with_pip=True)
    python = where / "venv" / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"{source}[cli]"],
                             capture_output=True, text=True, timeout=600, env=_clean_env())
    assert install.returncode == 0, install.stdout + install.stderr
    return where / "venv"


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would let the venv see the repository."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and
           not k.startswith("TRAINYARD_")}
    return {**env, **extra}


def test_installing_the_client_alone_pulls_no_service_dependency(client_venv: Path) -> None:
    listed = subprocess.run([str(client_venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, check=True, env=_clean_env())
    installed = {line.split("==")[0].lower().replace("_", "-") for line in listed.stdout.splitlines()}
    assert "trainyard-client" in installed and "httpx" in installed
    assert not installed & SERVICE_DISTRIBUTIONS, installed & SERVICE_DISTRIBUTIONS


def _readme_snippet(dataset_root: Path) -> str:
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme, re.S)
    assert snippet, "the README has a Python snippet"
    # The snippet as a reader adapts it: their dataset, and one short epoch on this CPU.
    code = snippet.group(1).replace("/abs/path/to/shapes", str(dataset_root)).replace("epochs=30", "epochs=1")
    return code.replace('architecture="rtmdet-tiny",', 'architecture="rtmdet-tiny", input_size=64,')


def test_the_readme_snippet_and_runs_list_work_with_the_client_alone(client_venv: Path, stack: LocalStack,
                                                                     tmp_path: Path) -> None:
    stack.start(("metrics", "scheduler", "api"))
    stack.start_service("trainer", TRAINYARD_THREADS="1")
    files = write_synthetic_coco(tmp_path / "shapes", train_images=4, val_images=2, size=64)
    env = _clean_env(TRAINYARD_API_URL=stack.api_url, TRAINYARD_API_KEY=stack.admin_key, COLUMNS="80")
    snippet = tmp_path / "snippet.py"
    snippet.write_text(_readme_snippet(files.root))
    ran = subprocess.run([str(client_venv / "bin" / "python"), str(snippet)], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=400)
    assert ran.returncode == 0, ran.stdout + ran.stderr + service_log(stack, "trainer")[-2000:]
    lines = ran.stdout.splitlines()
    assert lines[0].startswith("1 "), ran.stdout  # epoch 1, its loss and mAP, as the events came
    assert lines[-1].startswith("[["), ran.stdout  # the confusion matrix's rows

    listed = subprocess.run([str(client_venv / "bin" / "trainyard"), "runs", "list"], capture_output=True,
                            text=True, cwd=tmp_path, env=env, timeout=60)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "success" in listed.stdout and "r1" in listed.stdout
    # Without the platform the stack commands are not there, and the command says what it has.
    up = subprocess.run([str(client_venv / "bin" / "trainyard"), "up"], capture_output=True, text=True,
                        cwd=tmp_path, env=env, timeout=60)
    assert up.returncode == 2 and "No such command" in up.stdout + up.stderr
    assert sys.executable != str(client_venv / "bin" / "python")
