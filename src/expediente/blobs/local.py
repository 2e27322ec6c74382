"""Content-addressed blob store on local files (the embedded default).

Files live under <root>/ab/cd/<hash> (the same names an S3 store uses under its prefix, so a
local store moves to a bucket with a plain copy). Writes go to a temporary file that is
fsynced and renamed, so a stored blob is complete and durable before its key is returned, and
storing the same bytes twice is a no-op. Content addressing and encryption: `blobs/base.py`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from expediente.blobs import fs_flush
from expediente.blobs.base import BlobConfigError, BlobNotFound, BlobStore, check_key, is_key
from expediente.blobs.fs_flush import FileSystemFlush
from expediente.blobs.encryption import BlobIntegrityError
from expediente.blobs.keyring import Keyring, load_keyring
from expediente.blobs.spool import SpoolFile
from expediente.config import Settings


class LocalBlobStore(BlobStore):
    adopts_by_rename = True

    def __init__(self, root: Path, keyring: Keyring | None = None, sync: str = "files"):
        if sync not in ("auto", "files"):
            raise BlobConfigError(f'blob_sync debe ser "auto" o "files", no {sync!r}')
        self.root = Path(root)
        self._root = str(self.root)
        self.spool = self.root / "spool"
        self._spool_made = False
        self.keyring = keyring
        self.root.mkdir(parents=True, exist_ok=True)
        self.file_system_flush = FileSystemFlush(self.root) if sync == "auto" and fs_flush.available() else None

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBlobStore:
        return cls(settings.blob_dir, load_keyring(settings), settings.blob_sync.strip().lower())

    def describe(self) -> str:
        return f"archivos locales en {self.root}"

    def _path(self, key: str) -> Path:
        return Path(self._file(key))

    def _file(self, key: str) -> str:
        """The blob's path as text: the hot path's stat and rename skip pathlib's parsing."""
        check_key(key)
        return f"{self._root}/{key[:2]}/{key[2:4]}/{key}"

    @contextmanager
    def _open(self, key: str) -> Iterator[BinaryIO]:
        try:
            f = open(self._path(key), "rb")
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        with f:
            yield f

    def temporary(self) -> SpoolFile:
        """A new temporary file inside the store (same file system, so ``adopt`` is a rename),
        written with direct I/O where the file system allows it (blobs/spool.py)."""
        if not self._spool_made:
            self.spool.mkdir(parents=True, exist_ok=True)
            self._make_top_level()
            self._spool_made = True
        return SpoolFile(self.spool, direct=True)

    def _adopt_plain(self, tmp: Path, key: str, durable: bool = True) -> None:
        path = self._file(key)
        try:
            os.replace(tmp, path)  # no copy
        except FileNotFoundError:  # the first blob of its fan-out directory
            if not os.path.exists(tmp):
                raise
            self._make_dirs(os.path.dirname(path), durable)
            os.replace(tmp, path)
        if durable:
            _fsync_dir(os.path.dirname(path))

    def _make_top_level(self) -> None:
        """The 256 first-level fan-out directories, made together before the first blob is
        received (one flush of the root instead of one per directory as blobs arrive)."""
        made = False
        for i in range(256):
            try:
                (self.root / f"{i:02x}").mkdir()
                made = True
            except FileExistsError:
                pass
        if made:
            _fsync_dir(self.root)

    def _make_dirs(self, directory: str, durable: bool = True) -> None:
        """Create the fan-out directories down to ``directory``, each one durably (its parent
        flushed: a new directory entry survives a crash only then) unless the caller flushes
        the whole file system afterwards."""
        if directory == self._root or os.path.isdir(directory):
            return
        parent = os.path.dirname(directory)
        self._make_dirs(parent, durable)
        try:
            os.mkdir(directory)
        except FileExistsError:
            return
        if durable:
            _fsync_dir(parent)

    def _write(self, key: str, fill: Callable[[BinaryIO], None]) -> None:
        path = self._path(key)
        self._make_dirs(str(path.parent))
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    def exists(self, key: str) -> bool:
        return os.path.exists(self._file(key))

    def discard(self, key: str) -> None:
        try:
            os.unlink(self._file(key))
        except FileNotFoundError:
            pass

    def keys(self) -> Iterator[str]:
        """Every stored blob's key (temporary files of unfinished writes excluded)."""
        for path in self.root.glob("??/??/*"):
            if is_key(path.name):
                yield path.name


def _fsync_dir(directory: Path | str) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a crash
    finally:
        os.close(dir_fd)


__all__ = ["BlobIntegrityError", "BlobNotFound", "LocalBlobStore"]
