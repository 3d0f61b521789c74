"""Write the sync client from the async one (unasync, as encode/httpcore does), or check it is current.

    python scripts/generate_sync_client.py          # rewrite client/trainyard_client/_sync/
    python scripts/generate_sync_client.py --check  # exit 1 when the committed file is stale

Only `_async/` is written by hand; tests/unit/test_client_generation.py runs `--check`.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import unasync

ROOT = Path(__file__).resolve().parent.parent
ASYNC_DIR = ROOT / "client" / "trainyard_client" / "_async"
SYNC_DIR = ROOT / "client" / "trainyard_client" / "_sync"
RENAMES = {
    "AsyncTransport": "SyncTransport", "AsyncResource": "SyncResource", "AsyncRuns": "Runs",
    "AsyncDatasets": "Datasets", "AsyncModels": "Models", "AsyncTrainers": "Trainers",
    "AsyncArchitectures": "Architectures", "AsyncKeys": "Keys", "AsyncSweeps": "Sweeps",
    "AsyncTrainyardClient": "TrainyardClient",
    "AsyncClient": "Client", "asyncio": "time", "aread": "read", "aiter_bytes": "iter_bytes",
    "aiter_lines": "iter_lines", "aclose": "close", "_async": "_sync",
}
HEADER = "# GENERATED from trainyard_client/_async/{name} by scripts/generate_sync_client.py: edit that file.\n"


def generated() -> dict[str, str]:
    """The sync modules as they should read: unasync's output, imports sorted as ruff wants them."""
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        rule = unasync.Rule(fromdir=str(ASYNC_DIR) + "/", todir=tmp + "/", additional_replacements=RENAMES)
        sources = sorted(ASYNC_DIR.glob("*.py"))
        unasync.unasync_files([str(path) for path in sources], [rule])
        for source in sources:
            text = HEADER.format(name=source.name) + (Path(tmp) / source.name).read_text()
            # `asyncio` became `time`: the import block may need re-sorting.
            sort = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "I", "--fix", "--quiet",
                                   "--stdin-filename", str(SYNC_DIR / source.name), "-"],
                                  input=text, capture_output=True, text=True, cwd=ROOT)
            out[source.name] = sort.stdout or text
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="report a stale sync client instead of writing it")
    args = parser.parse_args()
    stale = []
    for name, text in generated().items():
        target = SYNC_DIR / name
        if target.exists() and target.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            target.write_text(text)
    if args.check and stale:
        print(f"stale: {', '.join(stale)} under {SYNC_DIR}; run python scripts/generate_sync_client.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
