"""A real (tiny) training run with `preview` on and `matrix` off, through every service: its previews
come back as PNGs through the API and the clients; then the finished run is removed with all it
stored (documents and artifacts), while its registered model stays."""

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faststream.nats import NatsBroker
from PIL import Image
from pymongo import MongoClient

from services.trainer.previews import GROUND_TRUTH_COLOUR, PREVIEW_SCORE_THRESHOLD
from shared.artifacts import Artifacts, run_prefix
from shared.subjects import Subjects
from tests.conftest import service_log
from tests.e2e.conftest import start_run, start_trainer
from tests.helpers import wait_status, wait_until
from trainyard.localstack import LocalStack
from trainyard_client import AsyncTrainyardClient, NotFoundError, TrainyardClient

pytestmark = pytest.mark.training
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PER_RUN = ("epochs", "iterations", "confusion_matrices")


def stored_names(stack: LocalStack, prefix: str) -> list[str]:
    assert stack.nats_url

    async def names() -> list[str]:
        assert stack.nats_url
        broker = NatsBroker(stack.nats_url)
        await broker.connect()
        try:
            return await (await Artifacts.open(broker, Subjects(stack.subject_prefix))).names(prefix)
        finally:
            await broker.stop()

    return asyncio.run(names())


def test_previews_of_a_real_run_then_its_removal(
    stack: LocalStack, client: TrainyardClient, dataset_id: str, tmp_path: Path
) -> None:
    start_trainer(stack, "preview-trainer")
    run = start_run(client, dataset_id, epochs=2, matrix=False, preview=True, preview_images=2, log_interval=1)
    run_id = run["id"]
    final = wait_status(client, run_id, {"success", "failed", "aborted"}, timeout=300)
    assert final["status"] == "success", (final, service_log(stack, "preview-trainer")[-3000:])

    # Two evaluations, the same two validation images (the lowest ids) each time.
    listing = wait_until(lambda: len((p := client.runs.previews(run_id))["items"]) == 2 and p, 30,
                         "both epochs' previews")
    assert listing["score_threshold"] == PREVIEW_SCORE_THRESHOLD
    dataset = client.datasets.get(dataset_id)
    val = json.loads(Path(dataset["val"]["annotations"]).read_text())
    chosen = sorted(val["images"], key=lambda image: image["id"])[:2]
    for item in listing["items"]:
        assert [(i["image_id"], i["file_name"]) for i in item["images"]] == [(c["id"], c["file_name"]) for c in chosen]
    for item in listing["items"]:
        for image, source in zip(item["images"], chosen, strict=True):
            data = client.runs.preview_image(run_id, item["epoch"], image["image_id"])
            assert data.startswith(PNG_MAGIC) and 1_000 < len(data) < 200_000
            drawn = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=int)
            with Image.open(Path(dataset["val"]["images"]) / source["file_name"]) as original:
                plain = np.asarray(original.convert("RGB").resize((drawn.shape[1], drawn.shape[0] - 16)), dtype=int)
            # The boxes are drawn: the preview is not the plain image, and the ground truth's colour is there.
            assert (np.abs(drawn[: plain.shape[0]] - plain).sum(axis=2) > 60).mean() > 0.005
            assert (np.abs(drawn - GROUND_TRUTH_COLOUR).sum(axis=2) < 30).sum() > 50

    async def download_async() -> list[Path]:
        async with AsyncTrainyardClient(client.base_url, stack.admin_key) as aclient:
            return await aclient.runs.download_previews(run_id, tmp_path / "previews")

    files = asyncio.run(download_async())
    assert len(files) == 4 and all(path.read_bytes().startswith(PNG_MAGIC) for path in files)

    # matrix=false: no matrix stored, and the endpoint says why.
    with pytest.raises(NotFoundError, match="matrix=false"):
        client.runs.confusion_matrix(run_id)

    # Remove it: documents, logs and every artifact of the run go; its model stays.
    model = wait_until(lambda: client.models.list()["items"], 30, "the model to be registered")[0]
    assert stored_names(stack, run_prefix(run_id)), "checkpoints and previews are stored before removal"
    client.runs.remove(run_id)
    with pytest.raises(NotFoundError):
        client.runs.get(run_id)
    with pytest.raises(NotFoundError):
        client.runs.remove(run_id)
    assert stored_names(stack, run_prefix(run_id)) == []
    mongo: MongoClient[dict[str, Any]] = MongoClient(stack.mongo_url)
    try:
        db = mongo[stack.mongo_db]
        wait_until(lambda: all(db[name].count_documents({"run_id": run_id}) == 0 for name in PER_RUN), 30,
                   "the metrics service to delete the run's logs")
        assert db.runs.count_documents({"_id": run_id}) == 0
    finally:
        mongo.close()
    kept = client.models.get(model["id"])
    assert kept["run"]["id"] == run_id
    assert client.models.download_weights(model["id"], tmp_path / "model.pth").stat().st_size > 0
