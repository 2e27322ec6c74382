"""Group flush of a whole file system (Linux ``syncfs``): one flush makes durable everything
written to it before the flush began, for every instance waiting at that moment.

Storing one instance durably file by file takes four flushes of the disk: the file's data, a new
fan-out directory's entry, the rename's directory entry and the index's WAL; each one waits on
the device. ``syncfs`` writes what is dirty on the file system and flushes the device once, and
instances received in parallel share that one flush (the first waiter runs it, the ones arriving
meanwhile run the next one together). It also writes whatever else is dirty on that file system,
so it suits a volume that holds the archive (the embedded default's data directory); where other
heavy writers share it, ``blob_sync = "files"`` keeps the flushes per file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
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
    OSError it failed with)."""

    def __init__(self, directory: Path):
        if _SYNCFS is None:
            raise OSError("syncfs no está disponible en este sistema")
        self._directory = directory
        self._cond = threading.Condition()
        self._started = 0  # flushes begun
        self._finished = 0  # flushes ended
        self._failures: dict[int, OSError] = {}  # recent failed flushes, by number

    def flush(self) -> None:
        with self._cond:
            needed = self._started + 1  # the next flush to begin covers everything written so far
            while self._finished < needed:
                if self._started == self._finished:  # nobody is flushing: this thread does
                    self._started += 1
                    number = self._started
                    self._cond.release()
                    try:
                        error = self._syncfs()
                    finally:
                        self._cond.acquire()
                    self._finished = number
                    if error is not None:
                        self._failures[number] = error
                        for old in [n for n in self._failures if n < number - 64]:
                            del self._failures[old]
                    self._cond.notify_all()
                else:
                    self._cond.wait()
            failure = self._failures.get(needed)
        if failure is not None:
            raise failure

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
