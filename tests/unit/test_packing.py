"""The client's tar stream: exactly the length it announces, read back as what was packed."""

import io
import os
import tarfile
from pathlib import Path

import pytest

from trainyard_client.packing import PackingError, pack_directory, upload_body


def test_the_stream_is_the_announced_length_and_a_tar_of_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    deep = root / ("long-directory-name-" * 6) / "images"  # past ustar's 100 characters: PAX headers
    deep.mkdir(parents=True)
    (deep / "a.png").write_bytes(os.urandom(1000))
    (root / "empty.json").write_bytes(b"")
    (root / "exact.bin").write_bytes(b"x" * 512)
    (tmp_path / "outside.txt").write_text("followed")
    (root / "link.txt").symlink_to(tmp_path / "outside.txt")
    seen: list[tuple[int, int]] = []
    body = pack_directory(root)
    sent = b"".join(body.chunks(lambda done, total: seen.append((done, total))))
    assert len(sent) == body.size and seen[-1] == (body.size, body.size)
    with tarfile.open(fileobj=io.BytesIO(sent)) as tar:
        names = {m.name: m for m in tar.getmembers()}
        files = {name: tar.extractfile(m).read() for name, m in names.items() if m.isfile()}  # type: ignore[union-attr]
    assert files == {path.relative_to(root).as_posix(): path.read_bytes()
                     for path in root.rglob("*") if path.is_file()}
    assert names["link.txt"].isfile() and files["link.txt"] == b"followed"  # sent as the file, never a link
    assert not any(m.issym() or m.islnk() for m in names.values())


def test_what_cannot_be_sent_is_said(tmp_path: Path) -> None:
    with pytest.raises(PackingError, match="does not exist"):
        upload_body(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(PackingError, match=r"a \.tar, \.tar\.gz, \.tgz or \.zip"):
        upload_body(tmp_path / "notes.txt")
    (tmp_path / "d.tgz").write_bytes(b"\x1f\x8b")
    assert upload_body(tmp_path / "d.tgz").content_type == "application/gzip"
