"""Content-addressed blob store on any S3-compatible object store (MinIO, Ceph RGW, AWS S3).

Objects are named <prefix>ab/cd/<sha256>, the same relative names the local store uses, so a
local store moves to a bucket with a plain copy. A blob is stored when its PUT (or the
completion of its multipart upload, above `part_size`) has returned: the object store then
holds all of it, and S3 never shows a partial object. Reads are HTTP Range requests: the first
`HEAD_BYTES` come with the object's size and ETag in one request, and every later range of
the same read names that ETag (If-Match), so a read never mixes two versions of a blob that
key rotation replaced meanwhile (it starts again instead).

The ingest writes an instance into a local spool file first (`temporary`), and `adopt`
uploads it and removes it. Content addressing and encryption: `blobs/base.py`.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import boto3
import botocore.exceptions as bex
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from expediente.blobs.base import BlobConfigError, BlobNotFound, BlobStore, BlobStoreError, check_key, is_key
from expediente.blobs.keyring import Keyring, load_keyring
from expediente.blobs.spool import SpoolFile
from expediente.config import Settings

HEAD_BYTES = 64 * 1024
PART_SIZE = 8 * 1024 * 1024
_READ_ATTEMPTS = 3
_MISSING = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "AllAccessDisabled"}


class _Replaced(BlobStoreError):
    """The object changed between two range requests of one read (key rotation replaced it)."""


class S3BlobStore(BlobStore):
    read_chunk = PART_SIZE  # streaming reads (rotation, checks): one request per 8 MB

    def __init__(self, client, bucket: str, *, prefix: str = "", spool: Path, keyring: Keyring | None = None, part_size: int = PART_SIZE):
        if not bucket:
            raise BlobConfigError("blob_backend = \"s3\" necesita s3_bucket (el nombre del bucket)")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.spool = Path(spool)
        self.keyring = keyring
        self.part_size = part_size
        self._transfer = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=4)

    @classmethod
    def from_settings(cls, settings: Settings) -> S3BlobStore:
        return cls(make_client(settings), settings.s3_bucket, prefix=settings.s3_prefix, spool=settings.blob_dir / "spool", keyring=load_keyring(settings))

    @property
    def endpoint(self) -> str:
        return self.client.meta.endpoint_url

    def describe(self) -> str:
        return f"S3 {self.endpoint} bucket {self.bucket!r}" + (f" prefijo {self.prefix!r}" if self.prefix else "")

    def check(self) -> None:
        """Reach the bucket once, so bad settings are told at startup and not on a first store."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except bex.ClientError as exc:
            if _code(exc) in {"404", "NoSuchBucket", "NotFound"}:
                raise BlobStoreError(f"no existe el bucket {self.bucket!r} en {self.endpoint} (s3_bucket); créelo o corrija el nombre") from None
            raise self._error(exc) from None
        except bex.BotoCoreError as exc:
            raise self._error(exc) from None

    # ------------------------------------------------------------ names and errors

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}{key[:2]}/{key[2:4]}/{key}"

    def _error(self, exc: Exception, key: str | None = None) -> Exception:
        """Our exception for a boto error: BlobNotFound, or BlobStoreError saying why in Spanish."""
        if isinstance(exc, bex.ClientError):
            code = _code(exc)
            if code in _MISSING and key is not None:
                return BlobNotFound(key)
            if code == "NoSuchBucket":
                return BlobStoreError(f"no existe el bucket {self.bucket!r} en {self.endpoint} (s3_bucket)")
            if code in {"PreconditionFailed", "412"}:
                return _Replaced(f"el blob {key} cambió durante la lectura")
            if code in _DENIED:
                return BlobStoreError(
                    f"el almacén S3 en {self.endpoint} rechazó las credenciales o no dan permiso sobre el bucket {self.bucket!r} "
                    f"({code}); revise s3_access_key y s3_secret_key"
                )
            message = exc.response.get("Error", {}).get("Message", "")
            return BlobStoreError(f"el almacén S3 en {self.endpoint} respondió {code}: {message}".rstrip(": "))
        if isinstance(exc, bex.NoCredentialsError):
            return BlobStoreError("faltan las credenciales de S3: configure s3_access_key y s3_secret_key (o las variables AWS_*)")
        if isinstance(exc, (bex.EndpointConnectionError, bex.ConnectionClosedError, bex.ReadTimeoutError, bex.ConnectTimeoutError)):
            return BlobStoreError(f"no se puede conectar con el almacén S3 en {self.endpoint} (s3_endpoint): {exc}")
        return BlobStoreError(f"error del almacén S3 en {self.endpoint}: {exc}")

    def _call(self, operation: str, key: str | None = None, **params):
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **params)
        except (bex.ClientError, bex.BotoCoreError) as exc:
            raise self._error(exc, key) from None

    # ------------------------------------------------------------ reading

    @contextmanager
    def _open(self, key: str) -> Iterator[BinaryIO]:
        yield _Object(self, key)

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        return _again_if_replaced(lambda: super(S3BlobStore, self).get(key, start, end))

    def key_id_of(self, key: str) -> str | None:
        return _again_if_replaced(lambda: super(S3BlobStore, self).key_id_of(key))

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", key, Key=self._name(key))
        except BlobNotFound:
            return False
        return True

    def discard(self, key: str) -> None:
        self._call("delete_object", key, Key=self._name(check_key(key)))

    def keys(self) -> Iterator[str]:
        """Every stored blob's key (objects under the prefix named as blobs; nothing else)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    parts = item["Key"][len(self.prefix) :].split("/")
                    if len(parts) == 3 and is_key(parts[2]) and parts[0] == parts[2][:2] and parts[1] == parts[2][2:4]:
                        yield parts[2]
        except (bex.ClientError, bex.BotoCoreError) as exc:
            raise self._error(exc) from None

    # ------------------------------------------------------------ writing

    def temporary(self) -> SpoolFile:
        """A new local spool file (through the page cache: ``adopt`` reads it right back to
        upload it)."""
        self.spool.mkdir(parents=True, exist_ok=True)
        return SpoolFile(self.spool, direct=False)

    def _adopt_plain(self, tmp: Path, key: str, durable: bool = True) -> None:
        self._upload(tmp, key)  # stored once the upload is answered: durable either way

    def _write(self, key: str, fill: Callable[[BinaryIO], None]) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.spool, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
            self._upload(Path(tmp), key)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _upload(self, path: Path, key: str) -> None:
        """One PUT, or a multipart upload above part_size (aborted by boto3 if a part fails)."""
        name = self._name(key)
        size = path.stat().st_size
        try:
            if size < self.part_size:
                with open(path, "rb") as f:
                    self.client.put_object(Bucket=self.bucket, Key=name, Body=f, ContentLength=size)
            else:
                self.client.upload_file(str(path), self.bucket, name, Config=self._transfer)
        except (bex.ClientError, bex.BotoCoreError) as exc:
            raise self._error(exc) from None
        except Exception as exc:  # s3transfer wraps failures of a multipart upload
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, (bex.ClientError, bex.BotoCoreError)):
                raise self._error(cause) from None
            raise


class _Object(io.RawIOBase):
    """A stored object read by HTTP Range requests, seekable like a file."""

    def __init__(self, store: S3BlobStore, key: str):
        super().__init__()
        self._store, self._key, self._name = store, key, store._name(key)
        self._pos = 0
        client, bucket = store.client, store.bucket
        try:
            try:
                answer = client.get_object(Bucket=bucket, Key=self._name, Range=f"bytes=0-{HEAD_BYTES - 1}")
            except bex.ClientError as exc:
                if _code(exc) != "InvalidRange":
                    raise
                answer = client.get_object(Bucket=bucket, Key=self._name)  # an empty object
        except (bex.ClientError, bex.BotoCoreError) as exc:
            raise store._error(exc, key) from None
        self._etag = answer["ETag"]
        self._head = answer["Body"].read()
        content_range = answer.get("ContentRange")  # "bytes 0-65535/1234567"
        self.size = int(content_range.rsplit("/", 1)[1]) if content_range else len(self._head)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self._pos + n)
        start = self._pos
        if start >= end:
            return b""
        if end <= len(self._head):
            data = self._head[start:end]
        else:
            answer = self._store._call("get_object", self._key, Key=self._name, Range=f"bytes={start}-{end - 1}", IfMatch=self._etag)
            data = answer["Body"].read()
            if len(data) != end - start:
                raise BlobStoreError(f"el almacén S3 devolvió {len(data)} bytes de {end - start} pedidos del blob {self._key}")
        self._pos = end
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _again_if_replaced(read):
    for attempt in range(_READ_ATTEMPTS):
        try:
            return read()
        except _Replaced:
            if attempt == _READ_ATTEMPTS - 1:
                raise


def _code(exc: bex.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def make_client(settings: Settings):
    """A boto3 S3 client for the settings (thread-safe; one per process)."""
    session = boto3.session.Session(
        aws_access_key_id=settings.s3_access_key or None,
        aws_secret_access_key=settings.s3_secret_key or None,
        region_name=settings.s3_region or None,
    )
    config = Config(
        # MinIO and Ceph RGW are addressed by path; AWS by virtual host.
        s3={"addressing_style": "path" if settings.s3_endpoint else "auto"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=32,
    )
    return session.client("s3", endpoint_url=settings.s3_endpoint or None, region_name=session.region_name or "us-east-1", config=config)
