"""The sync client is generated from the async one, and the client imports nothing of the platform."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "client" / "trainyard_client"
# What the services need and the client must never pull in.
SERVICE_PACKAGES = {"faststream", "pymongo", "fastapi", "opentelemetry", "numpy", "PIL", "pydantic",
                    "pydantic_settings", "nats", "uvicorn", "prometheus_client", "shared", "services", "torch",
                    "mmdet", "mmengine"}


def test_the_committed_sync_client_is_what_the_generator_writes() -> None:
    check = subprocess.run([sys.executable, "scripts/generate_sync_client.py", "--check"], cwd=ROOT,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_check_fails_when_the_sync_client_is_edited_by_hand(tmp_path: Path) -> None:
    generated = CLIENT / "_sync" / "client.py"
    original = generated.read_text()
    try:
        generated.write_text(original.replace("def kill(", "def kill_now(", 1))
        check = subprocess.run([sys.executable, "scripts/generate_sync_client.py", "--check"], cwd=ROOT,
                               capture_output=True, text=True)
        assert check.returncode == 1 and "stale: client.py" in check.stdout
    finally:
        generated.write_text(original)


def _imported_top_levels(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_no_client_module_imports_a_service_dependency_or_exceeds_400_lines() -> None:
    for path in CLIENT.rglob("*.py"):
        imported = _imported_top_levels(path)
        # The CLI's package module adds the platform's commands only when they are importable.
        allowed = {"trainyard"} if path == CLIENT / "cli" / "__init__.py" else set()
        assert not (imported & SERVICE_PACKAGES), (path, imported & SERVICE_PACKAGES)
        assert "trainyard" not in imported - allowed, path
        assert len(path.read_text().splitlines()) <= 400, path
