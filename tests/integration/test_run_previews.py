"""Evaluation previews through the real services, without training: the trainer's part (PNGs in the
artifact store, named on epoch.logged) is played by the test; the metrics service stores the names
with the epoch, and the api lists and serves the PNGs to the clients and the CLI."""

import asyncio
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from faststream.nats import NatsBroker
from PIL import Image
from typer.testing import CliRunner

from shared.artifacts import Artifacts, preview_name
from shared.bus import publish_event
from shared.events import EpochLogged, PreviewImage
from shared.subjects import Subjects
from tests.helpers import problem_of, record_assignment
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco
from trainyard_client import AsyncTrainyardClient, NotFoundError, TrainyardClient
from trainyard_client.cli import app

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMAGES = {5: "img_5.png", 7: "img_7.png"}


def png(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, shade, shade)).save(out, format="PNG")
    return out.getvalue()


async def log_epoch_with_previews(broker: NatsBroker, subjects: Subjects, artifacts: Artifacts, run_id: str,
                                  epoch: int) -> dict[int, bytes]:
    """What the trainer does after an evaluation with previews: store the PNGs, then name them on the epoch."""
    stored, previews = {}, []
    for image_id, file_name in IMAGES.items():
        name = preview_name(run_id, epoch, image_id)
        stored[image_id] = png(epoch * 10 + image_id)
        await artifacts.upload_bytes(name, stored[image_id])
        previews.append(PreviewImage(image_id=image_id, file_name=file_name, object_name=name))
    await publish_event(broker, subjects, subjects.epoch_logged("t1"), EpochLogged(
        run_id=run_id, attempt=1, epoch=epoch, total_epochs=2, losses={"loss_cls": 1.0}, loss=1.0,
        learning_rate=0.01, epoch_time_s=1.0, metrics={"bbox_mAP": 0.1}, previews=previews,
        preview_score_threshold=0.3))
    return stored


async def test_previews_are_listed_and_served_as_png(
    stack: LocalStack, bus: tuple[NatsBroker, Subjects], tmp_path: Path
) -> None:
    broker, subjects = bus
    for service in ("metrics", "api"):
        stack.start_service(service)
    artifacts = await Artifacts.open(broker, subjects)
    data = write_synthetic_coco(tmp_path / "shapes", train_images=2, val_images=1, size=64).root
    async with AsyncTrainyardClient(stack.api_url, stack.admin_key) as client:
        dataset = await client.datasets.register("shapes", str(data))
        spec: dict[str, Any] = {"dataset_id": dataset["id"], "architecture": "rtmdet-tiny"}
        run_id = (await client.runs.start(name="p", preview=True, preview_images=2, **spec))["id"]
        plain_id = (await client.runs.start(name="plain", **spec))["id"]
        await record_assignment(stack, (run_id, plain_id), "t1")

        assert (await client.runs.previews(run_id)) == {"run_id": run_id, "score_threshold": None, "items": []}
        pngs = {epoch: await log_epoch_with_previews(broker, subjects, artifacts, run_id, epoch) for epoch in (1, 2)}
        listing = await _until_listed(client, run_id, 2)
        assert listing["score_threshold"] == 0.3
        assert [(item["epoch"], item["attempt"]) for item in listing["items"]] == [(1, 1), (2, 1)]
        assert listing["items"][1]["images"] == [
            {"image_id": i, "file_name": name, "url": f"/v1/runs/{run_id}/previews/2/{i}"} for i, name in IMAGES.items()
        ]
        only_two = await client.runs.previews(run_id, epoch=2)
        assert [item["epoch"] for item in only_two["items"]] == [2]

        for epoch, images in pngs.items():
            for image_id, content in images.items():
                served = await client.runs.preview_image(run_id, epoch, image_id)
                assert served == content and served.startswith(PNG_MAGIC)
        files = await client.runs.download_previews(run_id, tmp_path / "async-out", epoch=1)
        assert [path.read_bytes() for path in files] == list(pngs[1].values())

        # A run started without previews says so, rather than listing nothing for ever.
        with pytest.raises(NotFoundError) as off:
            await client.runs.previews(plain_id)
        assert off.value.detail == f"run {plain_id} was started with preview=false: its evaluations render no previews"

    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers) as api:
        answer = await api.get(f"/v1/runs/{run_id}/previews/1/5")
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        # An image the epoch did not preview, an epoch without previews.
        assert problem_of(await api.get(f"/v1/runs/{run_id}/previews/1/6"), 404)["detail"] == (
            f"no preview in run with id '{run_id} epoch 1 image 6'")
        problem_of(await api.get(f"/v1/runs/{run_id}/previews/3/5"), 404)
        # Gone from the store (removed by hand, say): 410, not a server error.
        await artifacts.delete(preview_name(run_id, 2, 7))
        gone = problem_of(await api.get(f"/v1/runs/{run_id}/previews/2/7"), 410)
        assert "no longer in the artifact store" in gone["detail"]
    with TrainyardClient(stack.api_url, stack.admin_key) as sync_client:
        assert sync_client.runs.preview_image(run_id, 1, 7) == pngs[1][7]
        assert sync_client.runs.previews(run_id)["items"][0]["images"][0]["image_id"] == 5

    cli = CliRunner(env={"TRAINYARD_API_URL": stack.api_url, "TRAINYARD_API_KEY": stack.admin_key,
                         "COLUMNS": "200"})
    listed = cli.invoke(app, ["runs", "previews", run_id, "--epoch", "1"])
    assert listed.exit_code == 0 and "img_5.png" in listed.output and "score >= 0.3" in listed.output, listed.output
    out = tmp_path / "cli-out"
    downloaded = cli.invoke(app, ["runs", "previews", run_id, "--epoch", "1", "--out", str(out)])
    assert downloaded.exit_code == 0, downloaded.output
    assert (out / "epoch_1" / "5.png").read_bytes() == pngs[1][5]
    assert (out / "epoch_1" / "7.png").read_bytes() == pngs[1][7]


async def _until_listed(client: AsyncTrainyardClient, run_id: str, epochs: int) -> Any:
    for _ in range(100):
        listing = await client.runs.previews(run_id)
        if len(listing["items"]) == epochs:
            return listing
        await asyncio.sleep(0.2)
    raise AssertionError("the metrics service never stored the epochs with their previews")
