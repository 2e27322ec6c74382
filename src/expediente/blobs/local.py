"""Content-addressed blob store on local files (the embedded default).

A blob's key is the SHA-256 of its bytes; files live under <root>/ab/cd/<hash>. Writes go to a
temporary file that is fsynced and renamed, so a stored blob is complete and durable before its
key is returned, and storing the same bytes twice is a no-op.

With a keyring, new files are encrypted (`blobs/encryption.py`) and the key stays the SHA-256
of the plaintext, so deduplication and callers are unchanged. Files written before encryption
was enabled stay readable as they are until `expediente blobs rotate-key` encrypts them.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from expediente.blobs.encryption import BlobIntegrityError, EncryptedFile, encrypt, read_header
from expediente.blobs.keyring import Keyring, UnknownKey, load_keyring
from expediente.config import Settings

_KEY = re.compile(r"^[0-9a-f]{64}$")
_READ_CHUNK = 1024 * 1024


class BlobNotFound(KeyError):
    pass


class LocalBlobStore:
    def __init__(self, root: Path, keyring: Keyring | None = None):
        self.root = Path(root)
        self.keyring = keyring
        self.root.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBlobStore:
        return cls(settings.blob_dir, load_keyring(settings))

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"clave de blob inválida: {key[:80]!r}")
        return self.root / key[:2] / key[2:4] / key

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        path = self._path(key)
        if path.exists():
            return key
        self._write(path, lambda f: self._encode(f, [data], bytes.fromhex(key)))
        return key

    def temporary(self) -> tuple[int, Path]:
        """A new temporary file inside the store (same file system, so ``adopt`` is a rename)."""
        spool = self.root / "spool"
        spool.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=spool, prefix=".tmp-")
        return fd, Path(tmp)

    def adopt(self, tmp: Path, key: str) -> bool:
        """Take a finished, fsynced temporary file whose SHA-256 is ``key`` into the store.
        Plaintext: a rename (no copy). With a keyring: encrypted into place, then removed.
        Returns False (and removes the file) when the blob was already stored."""
        path = self._path(key)
        if path.exists():
            tmp.unlink(missing_ok=True)
            return False
        try:
            if self.keyring is not None:
                with open(tmp, "rb") as f:
                    self._write(path, lambda out: self._encode(out, _plain_chunks(f), bytes.fromhex(key)))
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, path)
                _fsync_dir(path.parent)
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def _encode(self, f: BinaryIO, chunks, digest: bytes) -> None:
        if self.keyring is None:
            for chunk in chunks:
                f.write(chunk)
        else:
            encrypt(chunks, f, self.keyring, digest)

    def _write(self, path: Path, fill: Callable[[BinaryIO], None]) -> None:
        """Atomically create or replace `path` with what `fill` writes; durable when it returns."""
        path.parent.mkdir(parents=True, exist_ok=True)
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

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """The blob's bytes, or the range [start, end) of them (frames read without the rest).

        Encrypted files are authenticated: a damaged or altered one raises BlobIntegrityError,
        never returns other bytes."""
        if start < 0 or (end is not None and end < 0):
            raise ValueError(f"rango de bytes inválido: {start}-{end}")
        try:
            with open(self._path(key), "rb") as f:
                encrypted = self._encrypted(f, key)
                if encrypted is None:
                    return _read_plain(f, start, end)
                try:
                    return encrypted.read(start, end)
                except BlobIntegrityError as exc:
                    if _sha256_of(f) == key:  # see _encrypted
                        return _read_plain(f, start, end)
                    raise BlobIntegrityError(f"el blob {key} está dañado o fue alterado: {exc}") from None
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def _encrypted(self, f: BinaryIO, key: str) -> EncryptedFile | None:
        """The file opened for decryption, or None when it is a plaintext blob.

        A plaintext blob written before encryption may start like a header by chance; when a
        file cannot be opened as encrypted, its content address tells the two apart."""
        try:
            header = read_header(f)
            if header is None:
                return None
            if self.keyring is None:
                raise UnknownKey("el blob está cifrado y no hay llaves configuradas (blob_key o blob_keyring)")
            return EncryptedFile.open(f, header, self.keyring, bytes.fromhex(key))
        except (BlobIntegrityError, UnknownKey) as exc:
            if _sha256_of(f) == key:
                return None
            if isinstance(exc, UnknownKey):
                raise
            raise BlobIntegrityError(f"el blob {key} está dañado o fue alterado: {exc}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def keys(self) -> Iterator[str]:
        """Every stored blob's key (temporary files of unfinished writes excluded)."""
        for path in self.root.glob("??/??/*"):
            if _KEY.match(path.name):
                yield path.name

    def key_id_of(self, key: str) -> str | None:
        """The id of the keyring key that encrypts this blob; None for a plaintext blob."""
        with open(self._path(key), "rb") as f:
            encrypted = self._encrypted(f, key)
            return encrypted.header.key_id if encrypted is not None else None

    def reencrypt(self, key: str) -> None:
        """Rewrite the blob under the current key (atomic replace), checking its content address."""
        if self.keyring is None:
            raise UnknownKey("no hay llaves configuradas (blob_key o blob_keyring)")
        path = self._path(key)
        with open(path, "rb") as f:
            encrypted = self._encrypted(f, key)
            source = encrypted.chunks() if encrypted is not None else _plain_chunks(f)
            hasher = hashlib.sha256()

            def hashed() -> Iterator[bytes]:
                for chunk in source:
                    hasher.update(chunk)
                    yield chunk

            def fill(out: BinaryIO) -> None:
                encrypt(hashed(), out, self.keyring, bytes.fromhex(key))
                if hasher.hexdigest() != key:
                    raise BlobIntegrityError("el contenido no corresponde a su clave SHA-256")

            self._write(path, fill)


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a crash
    finally:
        os.close(dir_fd)


def _read_plain(f: BinaryIO, start: int, end: int | None) -> bytes:
    f.seek(start)
    return f.read() if end is None else f.read(max(0, end - start))


def _plain_chunks(f: BinaryIO) -> Iterator[bytes]:
    f.seek(0)
    while chunk := f.read(_READ_CHUNK):
        yield chunk


def _sha256_of(f: BinaryIO) -> str:
    hasher = hashlib.sha256()
    for chunk in _plain_chunks(f):
        hasher.update(chunk)
    return hasher.hexdigest()


__all__ = ["BlobIntegrityError", "BlobNotFound", "LocalBlobStore"]
