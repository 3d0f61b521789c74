"""Unpacking an untrusted archive: zip members are held to the same rules as tar members."""

import stat
import zipfile
from pathlib import Path

import pytest

from shared.dataset_archives import ArchiveRefused, UnpackLimits, unpack_archive


def zip_with(path: Path, name: str, data: bytes = b"x", mode: int | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr("annotations/train.json", b"{}")
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.external_attr = mode << 16
        zipped.writestr(info, data)
    return path


@pytest.mark.parametrize(("name", "mode", "said"), [
    ("../escaped", None, "'..'"),
    ("images/../../escaped", None, "'..'"),
    ("/tmp/escaped", None, "absolute member path"),
    ("C:/escaped", None, "absolute member path"),
    ("images\\..\\..\\escaped", None, "backslash"),
    ("images/link", stat.S_IFLNK | 0o777, "symlink member"),
    ("images/fifo", stat.S_IFIFO | 0o644, "device or FIFO"),
])
def test_a_zip_member_out_of_bounds_is_refused_and_nothing_written(
    tmp_path: Path, name: str, mode: int | None, said: str
) -> None:
    archive = zip_with(tmp_path / "bad.zip", name, b"/etc/passwd", mode)
    dest = tmp_path / "out"
    with pytest.raises(ArchiveRefused, match=said) as refused:
        unpack_archive(archive, dest, UnpackLimits())
    assert refused.value.member == name
    assert not dest.exists() and not (tmp_path / "escaped").exists()


def test_members_are_counted_and_a_file_cannot_be_a_directory(tmp_path: Path) -> None:
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zipped:
        for i in range(4):
            zipped.writestr(f"f{i}", b"")
    with pytest.raises(ArchiveRefused, match="more than 3 members"):
        unpack_archive(many, tmp_path / "a", UnpackLimits(max_members=3))
    clash = tmp_path / "clash.zip"
    with zipfile.ZipFile(clash, "w") as zipped:
        zipped.writestr("images", b"a file")
        zipped.writestr("images/x.png", b"under it")
    with pytest.raises(ArchiveRefused, match=r"images/x\.png: cannot be unpacked"):
        unpack_archive(clash, tmp_path / "b", UnpackLimits())
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zipped:
        zipped.writestr("./images/x.png", b"png")
    unpack_archive(good, tmp_path / "c", UnpackLimits())
    assert (tmp_path / "c" / "images" / "x.png").read_bytes() == b"png"
