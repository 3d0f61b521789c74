"""promtool (Debian's `prometheus` package) for the tests: found, installed, or skipped with the reason."""

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

INSTALL_HINT = "scripts/setup.sh installs it (apt-get install prometheus) when run as root with apt"


@functools.cache
def _find_or_install() -> tuple[str | None, str]:
    found = shutil.which("promtool")
    if found:
        return found, ""
    # scripts/setup.sh normally did this already; a machine set up before it did gets it here.
    if not shutil.which("apt-get"):
        return None, f"promtool is not installed and this machine has no apt-get ({INSTALL_HINT})"
    if os.geteuid() != 0:
        return None, f"promtool is not installed and installing it needs root ({INSTALL_HINT})"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    outputs = []
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                                                 "prometheus"]):
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            return None, f"promtool is not installed and `{' '.join(argv)}` timed out"
        outputs.append(done.stdout + done.stderr)
        if done.returncode != 0 and argv[1] == "install":
            return None, f"promtool is not installed and apt-get could not install it: {outputs[-1][-500:]}"
    found = shutil.which("promtool")
    return (found, "") if found else (None, "apt-get installed prometheus but promtool is not on PATH")


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
