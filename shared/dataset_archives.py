"""Unpacking an uploaded dataset archive (tar, tar.gz/bz2/xz or zip) without trusting it.

The API unpacks an upload to validate it before accepting it; a trainer unpacks the
stored copy again before training. Both go through `unpack_archive`, which writes
only regular files and directories, each under the destination, and refuses:
absolute members and members with `..` (zip-slip, tar-slip); symlinks, hardlinks,
devices, FIFOs and sparse files; encrypted zip members; and archives whose members
add up to more than `max_unpacked_bytes` (a zip or gzip bomb), counted from the
headers before anything is written and again while writing. Files are written by
this code, never by `tarfile.extract`, with default permissions.
"""

from __future__ import annotations

import lzma
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

# Media types an upload may be sent as; the format itself is read from the file's first bytes.
ARCHIVE_MEDIA_TYPES = frozenset({
    "application/x-tar", "application/tar", "application/gzip", "application/x-gzip", "application/x-tar+gzip",
    "application/zip", "application/x-zip-compressed", "application/octet-stream",
})
BLOCK_BYTES = 1 << 20
# What reading a damaged archive raises, whichever compression it uses.
_BROKEN = (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError)
DEFAULT_MAX_UNPACKED_BYTES = 8 * 1024 * 1024 * 1024
# Members are counted too: a million empty files is a bomb of another kind.
DEFAULT_MAX_MEMBERS = 500_000


def media_type(content_type: str | None) -> str:
    """`application/x-tar; charset=...` -> `application/x-tar`."""
    return (content_type or "").split(";", 1)[0].strip().lower()


class ArchiveRefused(ValueError):
    """The archive, or one member of it, is not unpacked; `member` names it ('' for the whole archive)."""

    def __init__(self, member: str, message: str) -> None:
        super().__init__(f"{member}: {message}" if member else message)
        self.member = member
        self.message = message


@dataclass(frozen=True)
class UnpackLimits:
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES
    max_members: int = DEFAULT_MAX_MEMBERS


@dataclass(frozen=True)
class Member:
    """One entry of an archive, in terms both formats share."""

    name: str
    is_dir: bool
    size: int


def safe_name(name: str) -> PurePosixPath:
    """The member's path relative to the destination (`.` for the destination itself), or
    ArchiveRefused saying why it may not be written."""
    if "\x00" in name or "\\" in name:
        raise ArchiveRefused(name, "member name contains a NUL or a backslash")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveRefused(name, "absolute member path (it would be written outside the dataset)")
    path = PurePosixPath(name)
    if ".." in path.parts:
        raise ArchiveRefused(name, "member path contains '..' (it would be written outside the dataset)")
    return path


def _tar_member(info: tarfile.TarInfo) -> Member:
    if info.issym():
        raise ArchiveRefused(info.name, f"symlink member (to {info.linkname!r}): only files and directories")
    if info.islnk():
        raise ArchiveRefused(info.name, f"hardlink member (to {info.linkname!r}): only files and directories")
    if info.ischr() or info.isblk() or info.isfifo():
        raise ArchiveRefused(info.name, "device or FIFO member: only files and directories")
    if info.issparse() or not (info.isreg() or info.isdir()):
        raise ArchiveRefused(info.name, f"member of tar type {info.type!r}: only files and directories")
    return Member(info.name, info.isdir(), info.size)


def _zip_member(info: zipfile.ZipInfo) -> Member:
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise ArchiveRefused(info.filename, "symlink member: only files and directories")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise ArchiveRefused(info.filename, "device or FIFO member: only files and directories")
    if info.flag_bits & 0x1:
        raise ArchiveRefused(info.filename, "encrypted member")
    return Member(info.filename, info.is_dir(), info.file_size)


class _Reader:
    """An open archive: its members in order, and each file member's bytes."""

    def __init__(self, path: Path) -> None:
        with path.open("rb") as head:
            magic = head.read(4)
        self.zip: zipfile.ZipFile | None = None
        self.tar: tarfile.TarFile | None = None
        try:
            if magic[:2] == b"PK":
                self.zip = zipfile.ZipFile(path)
            else:
                self.tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by close())
        except _BROKEN as error:
            raise ArchiveRefused("", f"not a tar, tar.gz or zip archive: {error}") from None

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()
        if self.tar is not None:
            self.tar.close()

    def entries(self) -> Iterator[tuple[Member, object]]:
        if self.zip is not None:
            for zinfo in self.zip.infolist():
                yield _zip_member(zinfo), zinfo
            return
        assert self.tar is not None
        while True:
            try:
                tinfo = self.tar.next()
            except _BROKEN as error:
                raise ArchiveRefused("", f"broken tar archive: {error}") from None
            if tinfo is None:
                return
            yield _tar_member(tinfo), tinfo

    def open(self, handle: object) -> IO[bytes]:
        if self.zip is not None:
            assert isinstance(handle, zipfile.ZipInfo)
            return self.zip.open(handle)
        assert self.tar is not None and isinstance(handle, tarfile.TarInfo)
        stream = self.tar.extractfile(handle)
        assert stream is not None  # a regular file always has one
        return stream


@contextmanager
def _opened(path: Path) -> Iterator[_Reader]:
    reader = _Reader(path)
    try:
        yield reader
    finally:
        reader.close()


def check_archive(path: Path, limits: UnpackLimits) -> list[Member]:
    """Every member, checked by name, type, count and declared size before a byte is unpacked."""
    members: list[Member] = []
    total = 0
    with _opened(path) as reader:
        for member, _ in reader.entries():
            if not safe_name(member.name).parts and not member.is_dir:
                raise ArchiveRefused(member.name, "a file member without a name")
            total += member.size
            if total > limits.max_unpacked_bytes:
                raise ArchiveRefused(member.name, f"unpacked, the archive reaches {total} bytes at this member, "
                                                  f"over the limit of {limits.max_unpacked_bytes} bytes")
            members.append(member)
            if len(members) > limits.max_members:
                raise ArchiveRefused(member.name, f"more than {limits.max_members} members, over the limit")
    return members


def unpack_archive(path: Path, dest: Path, limits: UnpackLimits) -> list[Member]:
    """Check the archive whole (`check_archive`), then write its files and directories under `dest`."""
    members = check_archive(path, limits)
    dest.mkdir(parents=True, exist_ok=True)
    written = 0
    with _opened(path) as reader:
        for member, handle in reader.entries():
            target = dest.joinpath(*safe_name(member.name).parts)
            try:
                if member.is_dir:
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with reader.open(handle) as source, target.open("wb") as out:
                    while block := source.read(BLOCK_BYTES):
                        written += len(block)
                        if written > limits.max_unpacked_bytes:  # headers that lied about sizes
                            raise ArchiveRefused(member.name, f"unpacked over the limit of "
                                                              f"{limits.max_unpacked_bytes} bytes")
                        out.write(block)
            except ArchiveRefused:
                raise
            except _BROKEN as error:
                raise ArchiveRefused(member.name, f"cannot be unpacked: {error}") from None
    return members


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
