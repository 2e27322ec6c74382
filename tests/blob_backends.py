"""Blob store back ends for tests: local files, and an S3-compatible server over real HTTP.

The S3 server is moto's (installed from PyPI with the test extra), started once per session in
a thread of the test process on a free loopback port; every store a test makes gets its own
prefix in one bucket, so tests never see each other's blobs. Import the fixtures into a test
module: ``from blob_backends import blob_backend, s3_endpoint  # noqa: F401``.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from expediente.blobs import make_blob_store
from expediente.blobs.base import BlobStore
from expediente.blobs.keyring import Keyring
from expediente.blobs.local import LocalBlobStore
from expediente.blobs.s3 import S3BlobStore
from expediente.config import Settings

BUCKET = "expediente-pruebas"
ACCESS_KEY = "expediente-prueba"
SECRET_KEY = "secreto-de-prueba"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3_client(endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def s3_client(endpoint: str):
    """A plain boto3 client on the test server: to look at what the store wrote, or damage it."""
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}),
    )


@dataclasses.dataclass
class Backend:
    """Makes stores of one back end on fresh locations, and reads or alters their raw bytes."""

    name: str
    tmp: pytest.TempPathFactory
    endpoint: str | None = None
    _client: object = None

    def settings(self, data_dir: Path | None = None, **values) -> Settings:
        return self.apply(Settings(data_dir=data_dir or self.tmp.mktemp("data"), **values))

    def apply(self, settings: Settings) -> Settings:
        """The settings with this back end's blob store (for S3: a fresh prefix in the bucket)."""
        if self.name == "local":
            return dataclasses.replace(settings, blob_backend="local")
        return dataclasses.replace(
            settings, blob_backend="s3", s3_endpoint=self.endpoint, s3_bucket=BUCKET, s3_access_key=ACCESS_KEY,
            s3_secret_key=SECRET_KEY, s3_prefix=f"pruebas/{secrets.token_hex(6)}",
        )

    @staticmethod
    def env(settings: Settings) -> dict[str, str]:
        """The EXPEDIENTE_* variables that give a process these blob settings."""
        names = ("data_dir", "blob_backend", "s3_endpoint", "s3_bucket", "s3_access_key", "s3_secret_key", "s3_prefix")
        return {f"EXPEDIENTE_{n.upper()}": str(getattr(settings, n)) for n in names}

    def new(self, keyring: Keyring | None = None) -> BlobStore:
        """A store on a fresh, empty location (for S3, sharing one client: making one is slow)."""
        if self.name == "local":
            return LocalBlobStore(self.tmp.mktemp("blobs"), keyring)
        if self._client is None:
            self._client = make_blob_store(self.settings()).client
        settings = self.settings()
        return S3BlobStore(self._client, BUCKET, prefix=settings.s3_prefix, spool=settings.blob_dir / "spool", keyring=keyring)

    @staticmethod
    def same(store: BlobStore, keyring: Keyring | None) -> BlobStore:
        """Another store on the same location, with other keys."""
        if isinstance(store, LocalBlobStore):
            return LocalBlobStore(store.root, keyring)
        return S3BlobStore(store.client, store.bucket, prefix=store.prefix, spool=store.spool, keyring=keyring, part_size=store.part_size)

    def raw(self, store: BlobStore, key: str) -> bytes:
        if isinstance(store, LocalBlobStore):
            return store._path(key).read_bytes()
        return s3_client(self.endpoint).get_object(Bucket=store.bucket, Key=store._name(key))["Body"].read()

    def overwrite(self, store: BlobStore, key: str, data: bytes) -> None:
        if isinstance(store, LocalBlobStore):
            store._path(key).write_bytes(data)
        else:
            s3_client(self.endpoint).put_object(Bucket=store.bucket, Key=store._name(key), Body=data)

    def tamper(self, store: BlobStore, key: str, offset: int) -> None:
        data = bytearray(self.raw(store, key))
        data[offset] ^= 0x01
        self.overwrite(store, key, bytes(data))

    def leftovers(self, store: BlobStore) -> list[str]:
        """What unfinished writes left behind: temporary files, incomplete multipart uploads."""
        if isinstance(store, LocalBlobStore):
            return [str(p) for p in store.root.rglob(".tmp-*")]
        found = [str(p) for p in store.spool.glob("*")] if store.spool.exists() else []
        uploads = s3_client(self.endpoint).list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
        return found + [u["Key"] for u in uploads.get("Uploads", ())]


@pytest.fixture(scope="session", params=["local", "s3"])
def blob_backend(request, tmp_path_factory) -> Backend:
    if request.param == "local":
        return Backend("local", tmp_path_factory)
    return Backend("s3", tmp_path_factory, request.getfixturevalue("s3_endpoint"))


@pytest.fixture(scope="session")
def s3_backend(tmp_path_factory, s3_endpoint) -> Backend:
    return Backend("s3", tmp_path_factory, s3_endpoint)
