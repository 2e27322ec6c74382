"""Group flush of a whole file system (Linux ``syncfs``): one flush makes durable everything
written to it before the flush began, for every instance waiting at that moment.

Storing one instance durably file by file takes four flushes of the disk: the file's data, a new
fan-out directory's entry, the rename's directory entry and the index's WAL; each one waits on
the device. ``syncfs`` writes what is dirty on the file system and flushes the device once, and
instances received in parallel, by any process, share that one flush (the first waiter runs it,
the ones arriving meanwhile run the next one together). It also writes whatever else is dirty on that file system,
so it suits a volume that holds the archive (the embedded default's data directory); where other
heavy writers share it, ``blob_sync = "files"`` keeps the flushes per file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import mmap
import os
import sys
import threading
from pathlib import Path


def _syncfs_function():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_SYNCFS = _syncfs_function()


def available() -> bool:
    return _SYNCFS is not None


def same_file_system(a: Path, b: Path) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False


class FileSystemFlush:
    """``flush()`` returns once a syncfs that began after the call has finished (or raises the
    OSError it failed with).

    The count of flushes begun and ended lives in a small state file next to the store, mapped
    by every process that flushes it (the DIMSE receivers, the HTTP workers) and taken with
    ``flock`` to run a flush: a flush run by any process serves the waiters of all of them, so
    instances received in parallel by different processes share one flush of the device."""

    def __init__(self, directory: Path):
        if _SYNCFS is None:
            raise OSError("syncfs no está disponible en este sistema")
        self._directory = directory
        self._state_path = directory / STATE_FILE
        self._thread_lock = threading.Lock()  # flock is per open file: threads queue here first
        self._pid: int | None = None
        self._fd = -1
        self._state: memoryview | None = None

    def flush(self) -> None:
        state = self._shared()
        needed = state[_STARTED] + 1  # the next flush to begin covers everything written so far
        while state[_FINISHED] < needed:
            with self._thread_lock:
                if state[_FINISHED] >= needed:
                    break
                fcntl.flock(self._fd, fcntl.LOCK_EX)  # waits while another process flushes
                try:
                    if state[_FINISHED] < needed:
                        state[_STARTED] += 1
                        number = state[_STARTED]
                        error = self._syncfs()
                        if error is not None:
                            state[_FAILED] = max(state[_FAILED], number)
                            state[_ERRNO] = error.errno or 0
                        state[_FINISHED] = number
                finally:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
        if state[_FAILED] >= needed:  # the flush that covered this call (or a later one) failed
            errno = state[_ERRNO]
            raise OSError(errno, f"syncfs: {os.strerror(errno) if errno else 'falló'}")

    def _shared(self) -> memoryview:
        """The mapped state (opened again in a forked process: its own open file for flock)."""
        if self._pid != os.getpid():
            with self._thread_lock:
                if self._pid != os.getpid():
                    fd = os.open(self._state_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
                    if os.fstat(fd).st_size < _STATE_BYTES:
                        os.ftruncate(fd, _STATE_BYTES)  # zeros: nothing flushed yet
                    self._state = memoryview(mmap.mmap(fd, _STATE_BYTES)).cast("q")
                    self._fd, self._pid = fd, os.getpid()
        return self._state

    def _syncfs(self) -> OSError | None:
        try:
            fd = os.open(self._directory, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            return exc
        try:
            if _SYNCFS(fd) == 0:  # ctypes releases the GIL for the call
                return None
            errno = ctypes.get_errno()
            return OSError(errno, f"syncfs: {os.strerror(errno)}")
        finally:
            os.close(fd)


STATE_FILE = ".flush-state"
# Slots of the state (signed 64-bit): flushes begun, flushes ended, the latest one that failed
# and its errno. Aligned 8-byte words: each read or write is whole on every platform with syncfs.
_STARTED, _FINISHED, _FAILED, _ERRNO = range(4)
_STATE_BYTES = 64
