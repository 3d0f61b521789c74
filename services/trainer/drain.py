"""Drain: a trainer that is leaving asks its children to stop after the epoch in progress.

The trainer writes a marker file into the attempt's work dir; after each
reported epoch (its checkpoint written, its report sent) `TrainyardDrainHook`
looks for it and ends the training loop there, and the child reports
`drained` instead of `finished`. A file, not a signal: a signal arriving
before the child has installed its handler would kill it, and every rank of
a distributed run sees the same file (rank 0 decides for all).

The hook is in services/trainer/hooks.py: this module is the trainer's side and
imports no MMEngine (which would bring torch into the trainer process).
"""

from __future__ import annotations

from pathlib import Path

DRAIN_MARKER = "drain-requested"


def request_drain(work_dir: Path) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / DRAIN_MARKER).touch()
