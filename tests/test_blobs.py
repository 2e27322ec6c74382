"""The blob store interface, on each back end (local files and an S3 server over HTTP)."""

import hashlib
import os

import pytest
from blob_backends import blob_backend, s3_endpoint  # noqa: F401 - fixtures
from hypothesis import given, settings, strategies as st

from expediente.blobs.base import BlobNotFound


def test_put_get_is_content_addressed_and_idempotent(blob_backend):
    store = blob_backend.new()
    key = store.put(b"DICM bytes")
    assert key == hashlib.sha256(b"DICM bytes").hexdigest()
    assert store.put(b"DICM bytes") == key
    assert store.get(key) == b"DICM bytes"
    assert store.get(key, 5, 8) == b"byt"
    assert store.exists(key) and not store.exists("0" * 64)
    assert list(store.keys()) == [key]
    assert store.key_id_of(key) is None
    assert blob_backend.raw(store, key) == b"DICM bytes"
    assert not blob_backend.leftovers(store)


def test_missing_and_malformed_keys(blob_backend):
    store = blob_backend.new()
    with pytest.raises(BlobNotFound):
        store.get("0" * 64)
    with pytest.raises(BlobNotFound):
        store.key_id_of("0" * 64)
    for bad in ("../../etc/passwd", "A" * 64, "0" * 63):
        with pytest.raises(ValueError, match="clave de blob inválida"):
            store.get(bad)
        with pytest.raises(ValueError):
            store.exists(bad)


def test_temporary_then_adopt_stores_once_and_leaves_nothing(blob_backend):
    store = blob_backend.new()
    data = os.urandom(300_000)
    key = hashlib.sha256(data).hexdigest()
    for expected in (True, False):  # the second time: already stored, the file is dropped
        spooled = store.temporary()
        spooled.write(data)
        spooled.sync_and_close()
        assert store.adopt(spooled.path, key) is expected
        assert not spooled.path.exists()
    assert store.get(key) == data and store.get(key, 299_990) == data[299_990:]
    assert list(store.keys()) == [key]
    assert not blob_backend.leftovers(store)
    with pytest.raises(ValueError):
        store.adopt(spooled.path, "../x")


def test_sweep_removes_only_what_a_crash_left_in_the_spool(blob_backend):
    store = blob_backend.new()
    old, new = store.temporary(), store.temporary()
    old.sync_and_close()
    new.sync_and_close()
    old, new = old.path, new.path
    os.utime(old, (0, 0))
    assert store.sweep_spool() == 1
    assert not old.exists() and new.exists()


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=4096), start=st.integers(0, 5000), length=st.integers(0, 5000))
def test_range_reads_match_slicing(blob_backend, data, start, length):
    store = blob_backend.new()
    key = store.put(data)
    assert store.get(key, start, start + length) == data[start : start + length]
    assert store.get(key, start) == data[start:]
