"""A dataset directory as a tar stream, or an archive file as it is: the body of an upload.

The tar is written block by block while it is sent, never whole in memory or on
disk, and its exact size is known before the first byte (each member's header,
its data padded to 512 bytes, the end-of-archive blocks padded to tarfile's
record size), so the upload carries a Content-Length and the server can refuse
an oversize one before reading it. Only regular files and directories are packed
(a symlink is packed as the file it points to: the server refuses links).
"""

import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

BLOCK = tarfile.BLOCKSIZE
CHUNK_BYTES = 1 << 20
ARCHIVE_TYPES = {".tar": "application/x-tar", ".tgz": "application/gzip", ".gz": "application/gzip",
                 ".zip": "application/zip"}


class PackingError(ValueError):
    """The directory or file cannot be sent as a dataset; the message says why."""


@dataclass(frozen=True)
class UploadBody:
    content_type: str
    size: int
    source: Path
    members: tuple[tuple[tarfile.TarInfo, Path | None], ...] | None = None  # None: `source` is sent as it is

    def chunks(self, progress: Callable[[int, int], None] | None = None) -> Iterator[bytes]:
        """The body a chunk at a time; `progress(sent, total)` once each chunk has been taken."""
        sent = 0
        for chunk in _file_chunks(self.source, self.size) if self.members is None else self._tar(self.members):
            yield chunk
            sent += len(chunk)
            if progress is not None:
                progress(sent, self.size)

    def _tar(self, members: tuple[tuple[tarfile.TarInfo, Path | None], ...]) -> Iterator[bytes]:
        sent = 0
        for info, path in members:
            header = info.tobuf(tarfile.PAX_FORMAT)
            sent += len(header)
            yield header
            if path is None:
                continue
            data = 0
            for chunk in _file_chunks(path, info.size):
                data += len(chunk)
                yield chunk
            padding = -data % BLOCK
            sent += data + padding
            if padding:
                yield b"\0" * padding
        yield b"\0" * (self.size - sent)  # two zero blocks, padded to the record size


def _file_chunks(path: Path, size: int) -> Iterator[bytes]:
    read = 0
    with path.open("rb") as stream:
        while chunk := stream.read(min(CHUNK_BYTES, size - read)):
            read += len(chunk)
            yield chunk
    if read != size:
        raise PackingError(f"{path} changed size while it was sent ({size} bytes, then {read})")


def _tar_size(headers: int, data_sizes: list[int]) -> int:
    body = headers + sum(size + (-size % BLOCK) for size in data_sizes) + 2 * BLOCK
    return body + (-body % tarfile.RECORDSIZE)


def pack_directory(root: Path) -> UploadBody:
    """Every file and directory under `root`, named relative to it, in a stable order."""
    if not root.is_dir():
        raise PackingError(f"{root} is not a directory")
    members: list[tuple[tarfile.TarInfo, Path | None]] = []
    for here, dirs, files in os.walk(root):
        dirs.sort()
        folder = Path(here)
        for name in [*sorted(dirs), *sorted(files)]:
            path = folder / name
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            status = path.stat()  # follows symlinks: their targets are what is sent
            info.mtime = int(status.st_mtime)
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                members.append((info, None))
            elif path.is_file():
                info.size, info.mode = status.st_size, 0o644
                members.append((info, path))
            else:
                raise PackingError(f"{path}: neither a file nor a directory")
    headers = sum(len(info.tobuf(tarfile.PAX_FORMAT)) for info, _ in members)
    size = _tar_size(headers, [info.size for info, path in members if path is not None])
    return UploadBody("application/x-tar", size, root, tuple(members))


def upload_body(source: Path) -> UploadBody:
    """A directory is packed as a tar; a .tar, .tar.gz, .tgz or .zip file is sent as it is."""
    if source.is_dir():
        return pack_directory(source)
    if not source.is_file():
        raise PackingError(f"{source} does not exist")
    content_type = ARCHIVE_TYPES.get(source.suffix.lower())
    if content_type is None:
        raise PackingError(f"{source}: send a directory, or a .tar, .tar.gz, .tgz or .zip archive")
    return UploadBody(content_type, source.stat().st_size, source)
