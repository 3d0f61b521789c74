"""promtool for the tests: on PATH or in the venv, else installed by scripts/install-promtool.sh,
else the calling test is skipped with the reason it could not be had."""

import functools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _find_or_install() -> tuple[str | None, str]:
    venv_bin = Path(sys.executable).parent
    for candidate in (shutil.which("promtool"), venv_bin / "promtool"):
        if candidate and Path(candidate).is_file():
            return str(candidate), ""
    # scripts/setup.sh normally did this already; a machine set up before it did gets it here.
    done = subprocess.run(["bash", str(ROOT / "scripts" / "install-promtool.sh"), str(venv_bin)],
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode == 0 and (venv_bin / "promtool").is_file():
        return str(venv_bin / "promtool"), ""
    return None, f"promtool cannot be installed here: {done.stderr.strip()[-500:]}"


def promtool() -> str:
    """The promtool binary; skips the calling test, saying why, when it truly cannot be had."""
    path, reason = _find_or_install()
    if path is None:
        pytest.skip(reason)
    return path


def check_metrics(exposition: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), "check", "metrics"], input=exposition, capture_output=True, text=True,
                          timeout=60, check=False)


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), "check", "config", str(path)], capture_output=True, text=True, timeout=60,
                          check=False)
