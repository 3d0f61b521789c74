"""ASHA's rung decisions as files in an attempt's work dir: the trainer writes them, the child reads them.

Plain file I/O (no MMEngine), so the trainer service can write what the child's hook waits for.
"""

import json
from pathlib import Path

DECISIONS_DIR = "decisions"


def decision_path(work_dir: Path, epoch: int) -> Path:
    return work_dir / DECISIONS_DIR / f"epoch_{epoch}.json"


def write_decision(work_dir: Path, epoch: int, proceed: bool, message: str) -> None:
    """Written whole, then renamed: the child never reads half a decision."""
    path = decision_path(work_dir, epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps({"proceed": proceed, "message": message}))
    partial.replace(path)


def stop_decision(work_dir: Path) -> str | None:
    """The message of any stop decision received so far."""
    folder = work_dir / DECISIONS_DIR
    for path in sorted(folder.glob("epoch_*.json")) if folder.exists() else []:
        decision = json.loads(path.read_text())
        if not decision["proceed"]:
            return str(decision["message"])
    return None
