"""A blob being received: a temporary file in the store's spool, written as the bytes arrive and
made durable once, when they are complete.

On local disks the bulk of a blob goes with direct I/O (O_DIRECT) from a small set of reused,
page-aligned buffers: the bytes are copied once (socket buffer to our buffer) and go to the disk
without passing through the page cache, so the final flush has only the last block and the
file's metadata left to write. An archive writes far more than it rereads soon, and a cache that
fills with just-received instances costs page allocations and copies on every instance (more in
virtual machines, where the first touch of a guest page faults to the host). Where the file
system refuses O_DIRECT (tmpfs, some network file systems) the file is written through the page
cache as usual; behaviour is the same.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import secrets
from pathlib import Path

BLOCK = 4096  # alignment of direct writes: offsets, lengths and buffer addresses
BUFFER = 1024 * 1024  # bytes gathered before one direct write (a CT slice: one)
_free_buffers: list[mmap.mmap] = []  # reused: their pages are already resident
_MAX_FREE = 16


def _buffer() -> mmap.mmap:
    try:
        return _free_buffers.pop()
    except IndexError:
        return mmap.mmap(-1, BUFFER)  # anonymous mappings are page-aligned


def _release(buf: mmap.mmap) -> None:
    if len(_free_buffers) < _MAX_FREE:
        _free_buffers.append(buf)
    else:
        buf.close()


class SpoolFile:
    """One temporary file: ``write`` as bytes come, ``end`` when they are all written (the file
    may then be read), then ``sync_and_close`` (durable) or ``discard``. ``path`` is what the
    store adopts."""

    def __init__(self, directory: Path, *, direct: bool):
        self.path = directory / f".tmp-{secrets.token_hex(12)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        self._direct = False
        if direct and hasattr(os, "O_DIRECT"):
            try:
                self._fd = os.open(self.path, flags | os.O_DIRECT, 0o600)
                self._direct = True
            except OSError:  # EINVAL: this file system does not do direct I/O
                self._fd = os.open(self.path, flags, 0o600)
        else:
            self._fd = os.open(self.path, flags, 0o600)
        self._buf: mmap.mmap | None = None
        self._view: memoryview | None = None
        self._filled = 0
        self._open = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._direct:
            _write_all(self._fd, memoryview(data))
            return
        data = memoryview(data)
        if self._buf is None:
            self._buf = _buffer()
            self._view = memoryview(self._buf)
        while data:
            n = min(len(data), BUFFER - self._filled)
            self._view[self._filled : self._filled + n] = data[:n]
            self._filled += n
            data = data[n:]
            if self._filled == BUFFER:
                _write_all(self._fd, self._view)
                self._filled = 0

    def end(self) -> None:
        """The last bytes have been written: write what is still buffered, so the file can be
        read back (its header parsed) before it is flushed."""
        if self._buf is not None and self._filled:
            aligned = self._filled - self._filled % BLOCK
            if aligned:
                _write_all(self._fd, self._view[:aligned])
            if aligned < self._filled:  # the last, partial block goes through the page cache
                self._stop_direct()
                _write_all(self._fd, self._view[aligned : self._filled])
            self._filled = 0

    def sync_and_close(self) -> None:
        """Flush the whole file to the disk; closed afterwards."""
        try:
            self.end()
            os.fdatasync(self._fd)
        finally:
            self._close()

    def close(self) -> None:
        """Write what is buffered and close, leaving the flush to a file-system flush."""
        try:
            self.end()
        finally:
            self._close()

    def discard(self) -> None:
        """Close (if open) and remove the file."""
        self._close()
        self.path.unlink(missing_ok=True)

    def _stop_direct(self) -> None:
        fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        self._direct = False

    def _close(self) -> None:
        if self._open:
            self._open = False
            if self._buf is not None:
                self._view.release()
                _release(self._buf)
                self._buf = self._view = None
            os.close(self._fd)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]
