"""What every blob back end shares: content addressing, the encryption envelope, key checks.

A blob's key is the SHA-256 of its plaintext (64 lower-case hex digits, checked before any
path or object name is made from it). With a keyring, new blobs are encrypted
(`blobs/encryption.py`) and the key stays the plaintext's SHA-256, so deduplication and callers
do not change; blobs written before encryption was enabled stay readable until rotation
encrypts them. A back end supplies only the bytes: open a stored blob for reading, write one
atomically and durably, adopt a finished temporary file, list keys.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO

from expediente.blobs.encryption import TAG, BlobIntegrityError, EncryptedFile, encrypt, read_header
from expediente.blobs.keyring import Keyring, UnknownKey
from expediente.blobs.spool import SpoolFile

_KEY = re.compile(r"^[0-9a-f]{64}$")
READ_CHUNK = 1024 * 1024


class BlobNotFound(KeyError):
    pass


class BlobStoreError(OSError):
    """The store cannot be reached or refuses us (object store down, credentials, permissions);
    the message says which, in Spanish, for operators."""


class BlobConfigError(ValueError):
    """Blob store settings that cannot work (unknown back end, missing bucket, ...)."""


def check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(f"clave de blob inválida: {str(key)[:80]!r}")
    return key


def is_key(name: str) -> bool:
    return bool(_KEY.match(name))


class BlobStore:
    """Content-addressed, optionally encrypted blobs; subclasses store the bytes."""

    keyring: Keyring | None
    spool: Path  # where `temporary` files are made
    read_chunk = READ_CHUNK  # bytes per read when streaming a whole blob
    # True when `adopt` of a plain blob is a rename on the local disk: it cannot fail for a
    # reason of its own, so the ingest makes it durable while the index commits (see ingest.py).
    adopts_by_rename = False
    # A group flush of the file system the blobs are on (blobs/fs_flush.py), or None.
    file_system_flush = None

    # ------------------------------------------------------------ back-end primitives

    def _open(self, key: str) -> AbstractContextManager[BinaryIO]:
        """The stored bytes, seekable (SEEK_END gives the size); BlobNotFound when absent."""
        raise NotImplementedError

    def _write(self, key: str, fill: Callable[[BinaryIO], None]) -> None:
        """Create or replace the blob with what `fill` writes, atomically; durable on return."""
        raise NotImplementedError

    def _adopt_plain(self, tmp: Path, key: str, durable: bool = True) -> None:
        """Take the finished temporary file as the stored blob, unchanged (``durable=False``:
        leaving the flush to the caller's ``file_system_flush``)."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def keys(self) -> Iterator[str]:
        raise NotImplementedError

    def discard(self, key: str) -> None:
        """Remove a blob nothing refers to (the new bytes of a duplicate that was kept)."""
        raise NotImplementedError

    def temporary(self) -> SpoolFile:
        """A new temporary file for a blob being received; ``adopt`` stores it."""
        raise NotImplementedError

    def check(self) -> None:
        """Reach the store once (startup); BlobStoreError saying why when it cannot be used."""

    def describe(self) -> str:
        """Where the blobs are, for operators."""
        raise NotImplementedError

    # ------------------------------------------------------------ shared behaviour

    def sweep_spool(self, older_than_s: float = 24 * 3600) -> int:
        """Remove temporary files a crash left in the spool (a receive in progress is younger
        than a day); returns how many."""
        removed = 0
        limit = time.time() - older_than_s
        for path in self.spool.glob(".tmp-*") if self.spool.is_dir() else ():
            try:
                if path.stat().st_mtime < limit:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        if self.exists(key):
            return key
        self._write(key, lambda f: self._encode(f, [data], bytes.fromhex(key)))
        return key

    def adopt(self, tmp: Path, key: str, *, durable: bool = True) -> bool:
        """Take a finished, fsynced temporary file whose SHA-256 is ``key`` into the store,
        durably (``durable=False``: the caller flushes the file system afterwards); the
        temporary file is gone afterwards. Returns False when the blob was already stored."""
        check_key(key)
        try:
            if self.exists(key):
                tmp.unlink(missing_ok=True)
                return False
            if self.keyring is None:
                self._adopt_plain(tmp, key, durable)
            else:
                with open(tmp, "rb") as f:
                    self._write(key, lambda out: self._encode(out, plain_chunks(f, self.read_chunk), bytes.fromhex(key)))
            if self.keyring is not None or not self.adopts_by_rename:  # else the rename took it
                tmp.unlink(missing_ok=True)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return True

    def _encode(self, f: BinaryIO, chunks: Iterable[bytes], digest: bytes) -> None:
        if self.keyring is None:
            for chunk in chunks:
                f.write(chunk)
        else:
            encrypt(chunks, f, self.keyring, digest)

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """The blob's bytes, or the range [start, end) of them (frames read without the rest).

        Encrypted blobs are authenticated: a damaged or altered one raises BlobIntegrityError,
        never returns other bytes."""
        if start < 0 or (end is not None and end < 0):
            raise ValueError(f"rango de bytes inválido: {start}-{end}")
        check_key(key)
        with self._open(key) as f:
            encrypted = self._encrypted(f, key)
            if encrypted is None:
                return read_plain(f, start, end)
            try:
                return encrypted.read(start, end)
            except BlobIntegrityError as exc:
                if sha256_of(f, self.read_chunk) == key:  # see _encrypted
                    return read_plain(f, start, end)
                raise BlobIntegrityError(f"el blob {key} está dañado o fue alterado: {exc}") from None

    def _encrypted(self, f: BinaryIO, key: str) -> EncryptedFile | None:
        """The blob opened for decryption, or None when it is a plaintext blob.

        A plaintext blob written before encryption may start like a header by chance; when it
        cannot be opened as encrypted, its content address tells the two apart."""
        try:
            header = read_header(f)
            if header is None:
                return None
            if self.keyring is None:
                raise UnknownKey("el blob está cifrado y no hay llaves configuradas (blob_key o blob_keyring)")
            return EncryptedFile.open(f, header, self.keyring, bytes.fromhex(key))
        except (BlobIntegrityError, UnknownKey) as exc:
            if sha256_of(f, self.read_chunk) == key:
                return None
            if isinstance(exc, UnknownKey):
                raise
            raise BlobIntegrityError(f"el blob {key} está dañado o fue alterado: {exc}") from None

    def key_id_of(self, key: str) -> str | None:
        """The id of the keyring key that encrypts this blob; None for a plaintext blob."""
        check_key(key)
        with self._open(key) as f:
            encrypted = self._encrypted(f, key)
            return encrypted.header.key_id if encrypted is not None else None

    def reencrypt(self, key: str) -> None:
        """Rewrite the blob under the current key (atomic replace), checking its content address."""
        if self.keyring is None:
            raise UnknownKey("no hay llaves configuradas (blob_key o blob_keyring)")
        check_key(key)
        with self._open(key) as f:
            encrypted = self._encrypted(f, key)
            if encrypted is not None:
                source = encrypted.chunks(max(1, self.read_chunk // (encrypted.header.segment_size + TAG)))
            else:
                source = plain_chunks(f, self.read_chunk)
            hasher = hashlib.sha256()

            def hashed() -> Iterator[bytes]:
                for chunk in source:
                    hasher.update(chunk)
                    yield chunk

            def fill(out: BinaryIO) -> None:
                encrypt(hashed(), out, self.keyring, bytes.fromhex(key))
                if hasher.hexdigest() != key:
                    raise BlobIntegrityError("el contenido no corresponde a su clave SHA-256")

            self._write(key, fill)


def read_plain(f: BinaryIO, start: int, end: int | None) -> bytes:
    f.seek(start)
    return f.read() if end is None else f.read(max(0, end - start))


def plain_chunks(f: BinaryIO, size: int = READ_CHUNK) -> Iterator[bytes]:
    f.seek(0)
    while chunk := f.read(size):
        yield chunk


def sha256_of(f: BinaryIO, size: int = READ_CHUNK) -> str:
    hasher = hashlib.sha256()
    for chunk in plain_chunks(f, size):
        hasher.update(chunk)
    return hasher.hexdigest()
