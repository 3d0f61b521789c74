"""A training child lives no longer than its trainer, and a trainer cleans up after a dead predecessor.

Two halves of one promise: no attempt's processes outlive the trainer that
owns them (they would hold the accelerators and keep training while the run's
retry starts elsewhere).

- In the child (every rank): `die_with_parent` asks Linux to SIGKILL it when
  the trainer dies (`prctl(PR_SET_PDEATHSIG)`), then checks that the trainer
  had not already died before that, and keeps a watch thread on the parent
  for systems without prctl.
- In the trainer: each attempt's work dir holds `processes.json`, naming the
  trainer and its children by pid and start time (a pid alone may be reused).
  A trainer that starts kills the recorded children of every trainer that is
  no longer alive under the same work root (trainers may share one: only dead
  owners are cleaned up) and drops their checkpoints, leaving the attempt's
  logs as an attempt that ended normally leaves them.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.trainer.reports import QUEUED_DIR

log = logging.getLogger(__name__)

# Set by the trainer for its children: the pid they must not outlive.
TRAINER_PID_VARIABLE = "TRAINYARD_TRAINER_PID"
PROCESS_RECORD = "processes.json"
PR_SET_PDEATHSIG = 1
# The watch thread's period, where prctl is missing.
PARENT_POLL_S = 0.5
# How long a starting trainer waits for a predecessor's children to be gone.
REAP_TIMEOUT_S = 10.0


def die_with_parent(parent_pid: int) -> None:
    """Make this process die (SIGKILL) when `parent_pid`, its parent, dies.

    The death signal fires when the thread that forked this process exits: the
    trainer starts its children from its event loop, in the main thread."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before the death signal was set: it would never fire.
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="trainyard-parent-watch", daemon=True).start()


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (the state) on; None if the process is gone or a zombie
    (dead, not yet reaped by its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (the command) is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else fields


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, None if it is gone (or dead, unreaped).

    A pid and its start time name one process; a pid alone may have been reused."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None  # field 22 of the whole line


def peak_memory_bytes(pid: int) -> int | None:
    """The process's peak resident memory so far (VmHWM), None if it is gone."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


@dataclass(frozen=True)
class RecordedProcess:
    pid: int
    started: int | None

    @classmethod
    def of(cls, pid: int) -> RecordedProcess:
        return cls(pid, process_start_time(pid))

    def alive(self) -> bool:
        started = process_start_time(self.pid)
        return started is not None and (self.started is None or started == self.started)


def record_processes(work_dir: Path, children: list[int]) -> None:
    """Write the attempt's process record: this trainer and the children it started."""
    record = {
        "trainer": RecordedProcess.of(os.getpid()).__dict__,
        "children": [RecordedProcess.of(pid).__dict__ for pid in children],
    }
    path = work_dir / PROCESS_RECORD
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record))
    temporary.replace(path)  # a reader never sees half a record


def forget_processes(work_dir: Path) -> None:
    (work_dir / PROCESS_RECORD).unlink(missing_ok=True)


@dataclass
class Cleanup:
    """What a starting trainer found of dead predecessors."""

    killed: list[int] = field(default_factory=list)
    checkpoints_removed: list[Path] = field(default_factory=list)
    attempts: list[Path] = field(default_factory=list)


def clean_up_predecessors(work_root: Path, cache_root: Path | None = None) -> Cleanup:
    """Kill what dead trainers left running under `work_root`, and drop their checkpoints."""
    cleanup = Cleanup()
    for path in sorted(work_root.glob(f"*/attempt-*/{PROCESS_RECORD}")):
        try:
            record = json.loads(path.read_text())
            owner = RecordedProcess(**record["trainer"])
            children = [RecordedProcess(**child) for child in record["children"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("ignoring unreadable process record %s: %s", path, error)
            continue
        if owner.pid == os.getpid() or owner.alive():
            continue  # a live trainer's attempt (trainers may share a work root)
        work_dir = path.parent
        for child in children:
            if child.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                cleanup.killed.append(child.pid)
        _wait_gone([c for c in children if c.pid in cleanup.killed])
        cleanup.attempts.append(work_dir)
        # With the links the dead trainer had queued for upload (services/trainer/checkpoints.py).
        checkpoints = [*work_dir.glob("*.pth"), *work_dir.glob(f"{QUEUED_DIR}/*.pth")]
        if cache_root is not None:
            checkpoints += list((cache_root / "runs" / work_dir.parent.name).rglob("*.pth"))
        for checkpoint in checkpoints:
            checkpoint.unlink(missing_ok=True)
            cleanup.checkpoints_removed.append(checkpoint)
        forget_processes(work_dir)
    return cleanup


def _wait_gone(processes: list[RecordedProcess]) -> None:
    deadline = time.monotonic() + REAP_TIMEOUT_S
    while any(p.alive() for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)

