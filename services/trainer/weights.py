"""A registered model's weights: the state_dict of one MMEngine checkpoint, without optimizer state.

Written where torch already is, never in the trainer process: the training
child writes the weights of its last and best checkpoints before it reports
`finished` (`weights_path`), and the trainer uploads that file. Only when the
run's best epoch is an earlier attempt's (fetched from the store) does the
trainer convert it, in a short-lived process of its own
(`python -m services.trainer.weights CHECKPOINT OUT META_JSON`). Importing torch
into the long-lived trainer cost it ~300 MB, and every torch.load of a ~79 MB
checkpoint in a worker thread left more of its memory behind (glibc keeps a
freed thread arena's pages), so the trainer grew with every run.

    python -m services.trainer.weights CHECKPOINT OUT META_JSON
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

WEIGHTS_PREFIX = "model_weights_epoch_"


def weights_path(work_dir: Path, epoch: int) -> Path:
    """Where the child leaves the weights of its epoch `epoch` for the trainer to register."""
    return work_dir / f"{WEIGHTS_PREFIX}{epoch}.pth"


def write_weights(checkpoint: Path, out: Path, meta: Mapping[str, object]) -> int:
    """The checkpoint's state_dict alone (what a fine-tune loads and a user downloads), written whole
    or not at all; returns the checkpoint's epoch (its meta's, else -1)."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    partial = out.with_name(f".{out.name}.partial")
    torch.save({"state_dict": state.get("state_dict", state), "meta": {**state.get("meta", {}), **meta}}, partial)
    partial.replace(out)
    return int(state.get("meta", {}).get("epoch", -1))


async def convert_in_subprocess(checkpoint: Path, out: Path, meta: Mapping[str, object]) -> None:
    """write_weights in a process of its own, so this one never imports torch."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", __name__, str(checkpoint), str(out), json.dumps(dict(meta)),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    _, stderr = await process.communicate()
    if process.returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"converting {checkpoint} to model weights exited with {process.returncode}: "
                           + " | ".join(tail))


if __name__ == "__main__":
    write_weights(Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]))
