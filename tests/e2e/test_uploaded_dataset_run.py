"""A dataset sent by upload, not by server path, trains for real: the trainer fetches and unpacks it."""

import shutil
from pathlib import Path

import pytest

from tests.conftest import service_log
from tests.e2e.conftest import start_run, start_trainer
from tests.helpers import wait_status
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco
from trainyard_client import TrainyardClient

pytestmark = pytest.mark.training


def test_a_run_trains_on_an_uploaded_dataset(stack: LocalStack, client: TrainyardClient, tmp_path: Path) -> None:
    files = write_synthetic_coco(tmp_path / "shapes", train_images=8, val_images=2, size=64)
    dataset = client.datasets.upload("uploaded-shapes", files.root)
    # Gone from the disk it was sent from: the run can only train on the stored archive.
    shutil.rmtree(files.root)
    start_trainer(stack, "upload-trainer")
    run = start_run(client, dataset["id"], epochs=1)
    done = wait_status(client, run["id"], {"success", "failed", "aborted"}, timeout=300)
    assert done["status"] == "success", (done, service_log(stack, "upload-trainer")[-3000:])
    assert [e["epoch"] for e in client.runs.logs(run["id"], "epoch")] == [1]
    unpacked = stack.data_dir / "work" / "cache" / "datasets" / dataset["id"] / "files"
    assert (unpacked / "annotations" / "train.json").is_file()
    assert len(list((unpacked / "images" / "train").iterdir())) == 8
    assert not list(unpacked.parent.glob("archive*"))  # the downloaded archive is not kept beside its files
