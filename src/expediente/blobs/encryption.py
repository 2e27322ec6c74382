"""Segmented AES-256-GCM encryption of blob files, readable by byte range.

File layout (version 1, integers big-endian)::

    magic "\\x89EXPBLB" (8) | version 1 (1) | segment size S (4) | salt (32) | nonce prefix (7)
    | key id length n (1) | key id (n) | segment 0 | segment 1 | ... | final segment

Each segment is S plaintext bytes (the final one 0..S) encrypted with AES-256-GCM, so it is
S + 16 bytes with its tag. The file key is HKDF-SHA256(keyring key, salt): a fresh key per
file, so GCM's 96-bit nonces never repeat however many blobs one keyring key protects. Segment
i's nonce is prefix || i (4) || final flag (1), and its associated data is the header, the
blob's content address (SHA-256 of the plaintext), i and the final flag: a segment moved to
another position or another file, a file cut at a segment boundary, a changed header or a
file swapped for another blob's all fail the tag check. A range read decrypts only the
segments the range touches (plus the final one when it reaches the end, which proves the
length). The plaintext length follows from the file size.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from expediente.blobs.keyring import Keyring

MAGIC = b"\x89EXPBLB"
VERSION = 1
SEGMENT_SIZE = 64 * 1024
TAG = 16
_FIXED = struct.Struct(">8sBI32s7sB")  # magic, version, segment size, salt, nonce prefix, id length
_HKDF_INFO = b"expediente blob file key v1"
_MAX_SEGMENT = 16 * 1024 * 1024


class BlobIntegrityError(Exception):
    """The stored file is not what was written: damaged, cut short or altered."""


@dataclass(frozen=True)
class Header:
    segment_size: int
    salt: bytes
    nonce_prefix: bytes
    key_id: str
    raw: bytes

    @property
    def size(self) -> int:
        return len(self.raw)


def pack_header(key_id: str, segment_size: int = SEGMENT_SIZE) -> Header:
    kid = key_id.encode()
    salt, prefix = os.urandom(32), os.urandom(7)
    raw = _FIXED.pack(MAGIC, VERSION, segment_size, salt, prefix, len(kid)) + kid
    return Header(segment_size, salt, prefix, key_id, raw)


def read_header(f: BinaryIO) -> Header | None:
    """The header at the start of `f`; None if the file does not start like an encrypted blob,
    BlobIntegrityError if it does but the header cannot be one this code wrote."""
    f.seek(0)
    fixed = f.read(_FIXED.size)
    if len(fixed) < _FIXED.size or not fixed.startswith(MAGIC):
        return None
    magic, version, segment_size, salt, prefix, id_len = _FIXED.unpack(fixed)
    kid = f.read(id_len)
    if version != VERSION or not 0 < segment_size <= _MAX_SEGMENT or len(kid) != id_len:
        raise BlobIntegrityError("cabecera de cifrado inválida")
    try:
        key_id = kid.decode()
    except UnicodeDecodeError:
        raise BlobIntegrityError("cabecera de cifrado inválida") from None
    return Header(segment_size, salt, prefix, key_id, fixed + kid)


def _cipher(keyring: Keyring, header: Header) -> AESGCM:
    master = keyring.key(header.key_id)
    file_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=header.salt, info=_HKDF_INFO).derive(master)
    return AESGCM(file_key)


def _nonce_and_aad(header: Header, digest: bytes, index: int, final: bool) -> tuple[bytes, bytes]:
    position = struct.pack(">IB", index, final)
    return header.nonce_prefix + position, header.raw + digest + position


def _pieces(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Full `size` pieces of the stream, then the remainder (possibly empty)."""
    pending = bytearray()
    for chunk in chunks:
        view, pos = memoryview(chunk), 0
        if pending:
            pos = size - len(pending)
            pending += view[:pos]
            if len(pending) < size:
                continue
            yield bytes(pending)
            pending = bytearray()
        while len(view) - pos >= size:
            yield bytes(view[pos : pos + size])
            pos += size
        pending += view[pos:]
    yield bytes(pending)


def _segments(chunks: Iterable[bytes], size: int) -> Iterator[tuple[bytes, bool]]:
    """The stream cut into segments, the last flagged final (an empty stream is one empty segment)."""
    previous: bytes | None = None
    for piece in _pieces(chunks, size):
        if previous is not None:
            if not piece:
                break
            yield previous, False
        previous = piece
    yield previous, True


def encrypt(chunks: Iterable[bytes], out: BinaryIO, keyring: Keyring, digest: bytes, segment_size: int = SEGMENT_SIZE) -> None:
    """Write the plaintext stream `chunks` to `out` encrypted under the keyring's current key."""
    header = pack_header(keyring.current, segment_size)
    cipher = _cipher(keyring, header)
    out.write(header.raw)
    for index, (piece, final) in enumerate(_segments(chunks, segment_size)):
        nonce, aad = _nonce_and_aad(header, digest, index, final)
        out.write(cipher.encrypt(nonce, piece, aad))


@dataclass(frozen=True)
class EncryptedFile:
    """An opened encrypted blob: its header and geometry, ready for range reads."""

    f: BinaryIO
    header: Header
    cipher: AESGCM
    digest: bytes
    segments: int
    length: int

    @classmethod
    def open(cls, f: BinaryIO, header: Header, keyring: Keyring, digest: bytes) -> EncryptedFile:
        body = f.seek(0, os.SEEK_END) - header.size
        stride = header.segment_size + TAG
        count = max(1, -(-body // stride))
        last = body - (count - 1) * stride
        if body < TAG or last < TAG:
            raise BlobIntegrityError("archivo cifrado incompleto")
        return cls(f, header, _cipher(keyring, header), digest, count, body - count * TAG)

    def _decrypt(self, index: int, data: bytes) -> bytes:
        final = index == self.segments - 1
        nonce, aad = _nonce_and_aad(self.header, self.digest, index, final)
        try:
            return self.cipher.decrypt(nonce, data, aad)
        except InvalidTag:
            raise BlobIntegrityError(f"el segmento {index} no pasó la verificación de autenticidad") from None

    def _segments(self, first: int, last: int, per_read: int = 128) -> Iterator[bytes]:
        """Segments first..last decrypted, `per_read` (8 MiB) at a time: each batch is one
        contiguous read (one request on an object store), and memory stays bounded."""
        stride = self.header.segment_size + TAG
        for batch in range(first, last + 1, per_read):
            count = min(per_read, last + 1 - batch)
            self.f.seek(self.header.size + batch * stride)
            data = memoryview(self.f.read(count * stride))
            for n in range(count):
                yield self._decrypt(batch + n, bytes(data[n * stride : (n + 1) * stride]))

    def read(self, start: int = 0, end: int | None = None) -> bytes:
        """Plaintext bytes [start, end), like slicing, decrypting only the segments needed."""
        stop = self.length if end is None else min(end, self.length)
        size = self.header.segment_size
        if end is None or end >= self.length:
            last = self.segments - 1  # reaching the end: the final segment vouches for the length
        else:
            last = max(0, stop - 1) // size
        first = min(start // size, last) if start < stop else last
        plain = b"".join(self._segments(first, last))
        if start >= stop:
            return b""
        offset = first * size
        return plain[start - offset : stop - offset]

    def chunks(self, per_read: int = 16) -> Iterator[bytes]:
        """The whole plaintext in order, `per_read` segments per read."""
        return self._segments(0, self.segments - 1, per_read)
