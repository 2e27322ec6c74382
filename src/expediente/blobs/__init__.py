"""Blob storage: content-addressed bytes (DICOM instances, documents) on local files or an
S3-compatible object store, optionally encrypted at rest. `make_blob_store` picks the back end
from the settings; both offer the interface of `blobs.base.BlobStore`."""

from __future__ import annotations

from expediente.blobs.base import BlobConfigError, BlobNotFound, BlobStore, BlobStoreError
from expediente.config import Settings

BACKENDS = ("local", "s3")


def make_blob_store(settings: Settings) -> BlobStore:
    """The configured store (no network call: `check()` reaches it)."""
    backend = settings.blob_backend.strip().lower()
    if backend == "local":
        from expediente.blobs.local import LocalBlobStore

        return LocalBlobStore.from_settings(settings)
    if backend == "s3":
        from expediente.blobs.s3 import S3BlobStore  # boto3 is imported only when used

        return S3BlobStore.from_settings(settings)
    raise BlobConfigError(f"blob_backend desconocido {settings.blob_backend!r}: use \"local\" o \"s3\"")


def check_blob_store(settings: Settings) -> BlobStore:
    """The configured store, reached once: bad settings fail here, said in Spanish."""
    store = make_blob_store(settings)
    store.check()
    return store


__all__ = ["BACKENDS", "BlobConfigError", "BlobNotFound", "BlobStore", "BlobStoreError", "check_blob_store", "make_blob_store"]
