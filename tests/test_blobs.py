import hashlib

import pytest
from hypothesis import given, settings, strategies as st

from expediente.blobs.local import BlobNotFound, LocalBlobStore


def test_put_get_is_content_addressed_and_idempotent(tmp_path):
    store = LocalBlobStore(tmp_path)
    key = store.put(b"DICM bytes")
    assert key == hashlib.sha256(b"DICM bytes").hexdigest()
    assert store.put(b"DICM bytes") == key
    assert store.get(key) == b"DICM bytes"
    assert store.get(key, 5, 8) == b"byt"
    assert not list(tmp_path.rglob(".tmp-*"))


def test_missing_and_malformed_keys(tmp_path):
    store = LocalBlobStore(tmp_path)
    with pytest.raises(BlobNotFound):
        store.get("0" * 64)
    with pytest.raises(ValueError):
        store.get("../../etc/passwd")


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=4096), start=st.integers(0, 5000), length=st.integers(0, 5000))
def test_range_reads_match_slicing(tmp_path_factory, data, start, length):
    store = LocalBlobStore(tmp_path_factory.mktemp("blobs"))
    key = store.put(data)
    assert store.get(key, start, start + length) == data[start : start + length]
