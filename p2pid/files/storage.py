"""The files on disk behind a transfer: a source that serves sealed chunks of a file, and the
partial file of an incoming transfer (the sink that verifies, hashes and writes chunks).

Blocking code: the transport calls these methods in worker threads (one thread opens chunks
while another writes them), so the partial file's shared state sits behind a lock.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path

from p2pid.crypto.file_chunks import (
    ChunkError,
    FileAssembler,
    chunk_length,
    chunk_offset,
    hash_file,
    seal_chunk,
)
from p2pid.files.transport import SourceError
from p2pid.wire.files import FileOffer


class SourceChangedError(SourceError, OSError):
    """The file being served is not the file that was offered any more."""


def file_mtime_ns(path: str) -> int:
    return os.stat(path).st_mtime_ns


class FileSource:
    """Serves sealed chunks of `path`: a whole file (`have` empty) or the durable chunks of a
    partial one. The file must still have the offered size and the recorded modification time
    (0: not checked, for a partial file that is still being written)."""

    def __init__(
        self,
        offer: FileOffer,
        path: str,
        manifest: bytes,
        *,
        mtime_ns: int = 0,
        have: bytes = b"",
    ) -> None:
        self._offer = offer
        self._manifest = manifest
        self._have = have
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            status = os.fstat(self._fd)
            whole = not have
            if (whole and status.st_size != offer.size) or (
                mtime_ns and status.st_mtime_ns != mtime_ns
            ):
                raise SourceChangedError(errno.ESTALE, f"{path} changed since it was offered")
        except BaseException:
            os.close(self._fd)
            raise

    @property
    def offer(self) -> FileOffer:
        return self._offer

    def have(self) -> bytes:
        return self._have

    def manifest(self) -> bytes:
        return self._manifest

    def read_sealed(self, index: int) -> bytes:
        length = chunk_length(self._offer, index)
        data = os.pread(self._fd, length, chunk_offset(self._offer, index))
        if len(data) != length:
            raise SourceChangedError(errno.ESTALE, "the file is shorter than when it was offered")
        return seal_chunk(self._offer, index, data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


class PartFile:
    """The partial file of an incoming transfer. `durable` chunks (a bitmap) are on disk from an
    earlier attempt; `checkpoint()` says which chunks are durable now."""

    def __init__(
        self, offer: FileOffer, path: str, manifest: bytes, durable: bytes | None = None
    ) -> None:
        self._offer = offer
        self.path = path
        self._assembler = FileAssembler(offer, manifest, durable or None)
        self._written = bytearray(self._assembler.bitmap())
        self._written_bytes = sum(
            chunk_length(offer, i) for i in range(offer.chunk_count) if self._assembler.has(i)
        )
        self._lock = threading.Lock()
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        self._fd = os.open(path, flags, 0o600)

    @property
    def offer(self) -> FileOffer:
        return self._offer

    @property
    def written_bytes(self) -> int:
        return self._written_bytes

    def missing(self) -> list[range]:
        with self._lock:
            return self._assembler.missing()

    @property
    def complete(self) -> bool:
        return self._assembler.complete

    def open_chunk(self, index: int, sealed: bytes | bytearray | memoryview) -> bytes | None:
        with self._lock:
            if self._assembler.has(index):
                return None
        # Opened and checked outside the lock: the writer thread checkpoints meanwhile.
        plaintext = self._assembler.verify(index, sealed)
        with self._lock:
            return plaintext if self._assembler.record(index) else None

    def write_chunk(self, index: int, plaintext: bytes) -> None:
        offset = chunk_offset(self._offer, index)
        view = memoryview(plaintext)
        while view:
            written = os.pwrite(self._fd, view, offset)
            view = view[written:]
            offset += written
        with self._lock:
            self._written[index >> 3] |= 1 << (index & 7)
            self._written_bytes += len(plaintext)

    def checkpoint(self) -> tuple[bytes, int]:
        """Make what is written durable; (the bitmap of durable chunks, their bytes)."""
        with self._lock:
            bitmap = bytes(self._written)
            done = self._written_bytes
        os.fdatasync(self._fd)
        return bitmap, done

    def check_durable(self) -> int:
        """Read back the chunks an earlier run left on disk and check each against its digest;
        those that do not match (the file was cut short or changed meanwhile) are fetched again.
        How many were dropped."""
        dropped = 0
        for index in range(self._offer.chunk_count):
            with self._lock:
                if not self._assembler.has(index):
                    continue
            length = chunk_length(self._offer, index)
            data = os.pread(self._fd, length, chunk_offset(self._offer, index))
            try:
                self._assembler.check_plaintext(index, data)
            except ChunkError:
                with self._lock:
                    self._assembler.forget(index)
                    self._written[index >> 3] &= ~(1 << (index & 7)) & 0xFF
                    self._written_bytes -= length
                dropped += 1
        return dropped

    def finish(self, folder: str, name: str) -> str:
        """Once every chunk is verified (each against its digest, so the file matches the
        content hash), make it durable and move it into `folder` under `name` (or "name (2)"...:
        nothing is overwritten). The final path. IncompleteFileError: the file stays partial."""
        with self._lock:
            self._assembler.finish()
        os.ftruncate(self._fd, self._offer.size)
        os.fsync(self._fd)
        final = _place(self.path, folder, name)
        _fsync_directory(folder)
        return final

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def part_path_for(folder: str, name: str, file_id: bytes) -> str:
    return str(Path(folder) / f".{name[:200]}.{file_id.hex()[:12]}.p2pid-part")


def _candidates(name: str) -> list[str]:
    stem, dot, suffix = name.partition(".") if not name.startswith(".") else (name, "", "")
    return [name] + [f"{stem} ({n}){dot}{suffix}" for n in range(2, 1000)]


def _place(part: str, folder: str, name: str) -> str:
    """Move `part` to the first free name in `folder`, atomically and without overwriting."""
    for candidate in _candidates(name):
        target = str(Path(folder) / candidate)
        try:
            os.link(part, target)
        except FileExistsError:
            continue
        except OSError as error:  # no hard links here (FAT, some network file systems)
            if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            if os.path.lexists(target):
                continue
            os.rename(part, target)
            return target
        os.unlink(part)
        return target
    raise FileExistsError(errno.EEXIST, f"no free name for {name} in {folder}")


def find_placed(folder: str, offer: FileOffer) -> str | None:
    """The file `PartFile.finish` moved into `folder` for this offer, if it is there whole (its
    size and content hash match), else None."""
    for candidate in _candidates(offer.name):
        path = Path(folder) / candidate
        try:
            if path.stat().st_size != offer.size:
                continue
        except FileNotFoundError:
            if candidate != offer.name:
                return None  # names are taken in order: no later one was used
            continue
        if hash_file(path, offer.chunk_size)[0] == offer.content_hash:
            return str(path)
    return None


def _fsync_directory(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["ChunkError", "FileSource", "PartFile", "SourceChangedError", "part_path_for"]
