"""Datasets sent as archives: accepted only after unpacking and validating; slips, links, bombs and
oversize uploads refused by name with nothing stored; the API's memory bounded for a large upload."""

import asyncio
import io
import json
import os
import re
import socket
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from faststream.nats import NatsBroker
from typer.testing import CliRunner

from shared.artifacts import Artifacts, dataset_archive_name
from shared.subjects import Subjects
from tests.helpers import http, private_stack, problem_of, wait_until
from tests.integration.test_dataset_boundaries import rss_bytes
from trainyard.localstack import LocalStack
from trainyard.synth import DatasetFiles, write_synthetic_coco
from trainyard_client import InvalidRequest, TrainyardClient
from trainyard_client.cli import app

MiB = 1024 * 1024
MAX_UPLOAD = 64 * MiB
MAX_UNPACKED = 64 * MiB


@pytest.fixture(scope="module")
def stack(servers: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = private_stack(servers, tmp_path_factory.mktemp("upload-stack"))
    # No dataset root at all: an upload needs no server path. The spool directory does not exist yet.
    stack.start_service("api", TRAINYARD_DATASET_ROOTS="", TRAINYARD_MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
                        TRAINYARD_MAX_UNPACKED_BYTES=str(MAX_UNPACKED),
                        TRAINYARD_UPLOAD_DIR=str(stack.data_dir / "spool"))
    yield stack
    stack.stop()


@pytest.fixture
def api(stack: LocalStack) -> Iterator[httpx.Client]:
    with http(stack, stack.admin_key) as client:
        yield client


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> DatasetFiles:
    return write_synthetic_coco(tmp_path_factory.mktemp("upload-data") / "shapes", train_images=4, val_images=2,
                                size=64)


def stored_datasets(stack: LocalStack) -> list[str]:
    """Every uploaded archive in the stack's artifact store, read from NATS itself."""

    async def names() -> list[str]:
        assert stack.nats_url
        broker = NatsBroker(stack.nats_url)
        await broker.connect()
        try:
            return await (await Artifacts.open(broker, Subjects(stack.subject_prefix))).names("datasets/")
        finally:
            await broker.stop()

    return asyncio.run(names())


def dataset_tar(files: DatasetFiles, extra: list[tuple[tarfile.TarInfo, bytes | None]] | None = None) -> bytes:
    """The dataset as a tar in memory, with hand-made members added (small archives only)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        tar.add(files.root, arcname=".")
        for info, data in extra or []:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple[tarfile.TarInfo,
                                                                                               bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


def upload(api: httpx.Client, body: bytes, content_type: str = "application/x-tar", name: str = "up") -> httpx.Response:
    return api.post("/v1/datasets", params={"name": name}, content=body, headers={"Content-Type": content_type})


def test_a_directory_uploaded_through_the_client_is_validated_stored_and_listed(
    stack: LocalStack, shapes: DatasetFiles
) -> None:
    seen: list[tuple[int, int]] = []
    with TrainyardClient(stack.api_url, stack.admin_key) as client:
        dataset = client.datasets.upload("shapes", shapes.root, progress=lambda sent, total: seen.append((sent, total)))
        assert dataset["classes"] == list(shapes.classes)
        assert dataset["train"]["image_count"] == 4 and dataset["val"]["image_count"] == 2
        assert dataset["archive"] == dataset_archive_name(dataset["id"])
        assert client.datasets.get(dataset["id"])["archive"] == dataset["archive"]
    total = seen[-1][1]
    assert seen[-1] == (total, total) and total % tarfile.RECORDSIZE == 0  # the whole tar, as announced
    assert dataset["archive"] in stored_datasets(stack)


def test_a_directory_pushed_through_the_cli_shows_its_progress(stack: LocalStack, shapes: DatasetFiles) -> None:
    cli = CliRunner(env={"TRAINYARD_API_URL": stack.api_url, "TRAINYARD_API_KEY": stack.admin_key, "COLUMNS": "100"})
    result = cli.invoke(app, ["datasets", "push", "pushed", str(shapes.root)])
    assert result.exit_code == 0, result.output
    assert "sending shapes" in result.output and "pushed" in result.output
    as_json = cli.invoke(app, ["datasets", "push", "pushed-json", str(shapes.root), "--json"])
    assert as_json.exit_code == 0, as_json.output
    dataset = json.loads(as_json.stdout)
    assert dataset["name"] == "pushed-json" and dataset["archive"] in stored_datasets(stack)
    missing = cli.invoke(app, ["datasets", "push", "nothing", str(shapes.root / "missing")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_tar_gz_and_zip_archives_with_one_top_directory_are_accepted(
    api: httpx.Client, shapes: DatasetFiles, tmp_path: Path
) -> None:
    gz = tmp_path / "shapes.tar.gz"
    with tarfile.open(gz, "w:gz") as tar:
        tar.add(shapes.root, arcname="shapes")
    accepted = upload(api, gz.read_bytes(), "application/gzip", name="gz")
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["root"] == "shapes"
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as zipped:
        for path in sorted(shapes.root.rglob("*")):
            zipped.write(path, path.relative_to(shapes.root).as_posix())
    accepted = upload(api, packed.getvalue(), "application/zip", name="zip")
    assert accepted.status_code == 201, accepted.text


@pytest.mark.parametrize(("bad", "said"), [
    (member("../x", data=b"outside"), "'../x': member path contains '..'"),
    (member("images/../../x", data=b"outside"), "'images/../../x': member path contains '..'"),
    (member("/etc/cron.d/x", data=b"outside"), "'/etc/cron.d/x': absolute member path"),
    (member("images/train/link.png", tarfile.SYMTYPE, link="/etc/passwd"), "'images/train/link.png': symlink"),
    (member("images/train/hard.png", tarfile.LNKTYPE, link="/etc/passwd"), "'images/train/hard.png': hardlink"),
    (member("images/train/dev", tarfile.CHRTYPE), "'images/train/dev': device or FIFO"),
    (member("images/train/fifo", tarfile.FIFOTYPE), "'images/train/fifo': device or FIFO"),
])
def test_a_slipping_or_linking_member_is_refused_by_name_and_nothing_is_stored(
    stack: LocalStack, api: httpx.Client, shapes: DatasetFiles, bad: tuple[tarfile.TarInfo, bytes | None], said: str,
) -> None:
    before = stored_datasets(stack), api.get("/v1/datasets").json()["items"]
    body = problem_of(upload(api, dataset_tar(shapes, [bad])), 422)
    assert said in body["detail"], body
    assert body["errors"][0]["member"] == bad[0].name
    assert (stored_datasets(stack), api.get("/v1/datasets").json()["items"]) == before
    assert list((stack.data_dir / "spool").iterdir()) == []  # nothing of the upload left on the API's disk


def test_bombs_are_refused_by_member_and_limit(stack: LocalStack, api: httpx.Client, tmp_path: Path) -> None:
    before = stored_datasets(stack)
    zeros = tmp_path / "zeros"
    with zeros.open("wb") as handle:
        handle.truncate(MAX_UNPACKED + 1)  # sparse: compresses to almost nothing
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz") as tar:
        tar.add(zeros, arcname="images/train/zeros.png")
    assert bomb.stat().st_size < MiB
    detail = problem_of(upload(api, bomb.read_bytes(), "application/gzip"), 422)["detail"]
    assert "'images/train/zeros.png'" in detail and f"over the limit of {MAX_UNPACKED} bytes" in detail
    zip_bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zip_bomb, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        for i in range(2):
            zipped.write(zeros, f"images/train/zeros-{i}.png")
    detail = problem_of(upload(api, zip_bomb.read_bytes(), "application/zip"), 422)["detail"]
    assert "'images/train/zeros-0.png'" in detail and f"over the limit of {MAX_UNPACKED} bytes" in detail
    assert stored_datasets(stack) == before


def test_an_oversize_upload_is_refused_whether_announced_or_streamed(
    stack: LocalStack, api: httpx.Client, tmp_path: Path
) -> None:
    before = stored_datasets(stack)
    announced = api.post("/v1/datasets", params={"name": "big"}, headers={
        "Content-Type": "application/x-tar", "Content-Length": str(MAX_UPLOAD + 1)}, content=b"\0" * (MAX_UPLOAD + 1))
    detail = problem_of(announced, 413)["detail"]
    assert f"upload is {MAX_UPLOAD + 1} bytes, over the limit of {MAX_UPLOAD} bytes" in detail

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it arrives
        for _ in range(MAX_UPLOAD // MiB + 1):
            yield b"\0" * MiB

    streamed = api.post("/v1/datasets", params={"name": "big"}, headers={"Content-Type": "application/x-tar"},
                        content=chunks())
    detail = problem_of(streamed, 413)["detail"]
    assert f"over the limit of {MAX_UPLOAD} bytes (TRAINYARD_MAX_UPLOAD_BYTES)" in detail
    assert stored_datasets(stack) == before
    assert list((stack.data_dir / "spool").iterdir()) == []


def test_invalid_datasets_and_archives_are_named_by_member_path(
    api: httpx.Client, shapes: DatasetFiles, tmp_path: Path
) -> None:
    broken = write_synthetic_coco(tmp_path / "broken", train_images=2, val_images=1, size=64)
    data = json.loads(broken.val_annotations.read_text())
    data["images"][0]["file_name"] = "../../../../etc/passwd"
    broken.val_annotations.write_text(json.dumps(data))
    broken.train_annotations.write_text("[" * 100 + "]" * 100)
    body = problem_of(upload(api, dataset_tar(broken)), 422)
    assert body["detail"].startswith("annotations/train.json: JSON nested 100 levels deep, over the limit of 32")
    assert "'../../../../etc/passwd' resolves outside the dataset's root the archive" in body["errors"][1]["message"]
    assert "trainyard-upload" not in json.dumps(body)  # no temporary path of the server
    assert "not a tar, tar.gz or zip archive" in problem_of(upload(api, b"not an archive" * 100), 422)["detail"]
    assert problem_of(upload(api, b""), 422)
    nameless = api.post("/v1/datasets", content=dataset_tar(shapes), headers={"Content-Type": "application/x-tar"})
    assert problem_of(nameless, 422)["errors"][0]["field"] == "query.name"
    (tmp_path / "empty").mkdir()
    with (TrainyardClient(str(api.base_url), api.headers["Authorization"].split()[1]) as client,
          pytest.raises(InvalidRequest, match=re.escape("annotations/train.json: annotation file does not exist"))):
        client.datasets.upload("empty", tmp_path / "empty")


def test_a_large_upload_is_streamed_with_the_api_memory_bounded(
    stack: LocalStack, shapes: DatasetFiles, tmp_path: Path
) -> None:
    large = tmp_path / "large"
    write_synthetic_coco(large, train_images=4, val_images=2, size=64)
    padding = 48 * MiB
    (large / "extra.bin").write_bytes(os.urandom(padding))  # incompressible, and no part of the dataset
    api_pid = stack.processes["api"].pid
    before = rss_bytes(api_pid), _peak_rss(api_pid)
    with TrainyardClient(stack.api_url, stack.admin_key) as client:
        dataset = client.datasets.upload("large", large)
    assert dataset["train"]["image_count"] == 4
    grown = rss_bytes(api_pid) - before[0], _peak_rss(api_pid) - before[1]
    print(f"API memory for a {padding / MiB:.0f} MiB upload: resident +{grown[0] / MiB:.1f} MiB, "
          f"peak +{grown[1] / MiB:.1f} MiB (ratio of the upload: {grown[1] / padding:.2f})")
    assert grown[0] < padding / 2 and grown[1] < padding / 2


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def test_an_upload_broken_off_is_a_client_error_and_leaves_nothing(stack: LocalStack, api: httpx.Client) -> None:
    def answered(code: str) -> float:
        for line in api.get("/metrics/").text.splitlines():
            if line.startswith("trainyard_http_requests_total{") and 'route="/v1/datasets"' in line \
                    and 'method="POST"' in line and f'code="{code}"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = answered("400"), answered("500")
    url = httpx.URL(stack.api_url)
    with socket.create_connection((url.host, url.port or 80)) as sent:
        sent.sendall(f"POST /v1/datasets?name=cut HTTP/1.1\r\nHost: {url.host}\r\n"
                     f"Authorization: Bearer {stack.admin_key}\r\nContent-Type: application/x-tar\r\n"
                     f"Content-Length: {10 * MiB}\r\n\r\n".encode() + b"\0" * MiB)
    wait_until(lambda: answered("400") > before[0], what="the broken-off upload to be answered 400")
    assert answered("500") == before[1]
    assert list((stack.data_dir / "spool").iterdir()) == []
