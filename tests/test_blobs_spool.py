"""The spool file a received blob is written to: direct I/O from aligned buffers on local disks,
the page cache elsewhere; either way the file holds exactly the bytes written, in order."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expediente.blobs.spool import BLOCK, BUFFER, SpoolFile

SIZES = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, BUFFER - 1, BUFFER, BUFFER + 1, 2 * BUFFER + 3 * BLOCK + 17]


def _write(directory: Path, data: bytes, pieces: list[int], direct: bool = True) -> SpoolFile:
    spooled = SpoolFile(directory, direct=direct)
    pos = 0
    for n in pieces:
        spooled.write(data[pos : pos + n])
        pos += n
    spooled.write(memoryview(data)[pos:])
    return spooled


@pytest.mark.parametrize("size", SIZES)
def test_direct_spool_holds_exactly_what_was_written(tmp_path, size):
    data = os.urandom(size)
    spooled = _write(tmp_path, data, [7, BLOCK, 3])
    spooled.sync_and_close()
    assert spooled.path.read_bytes() == data


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 3 * BUFFER), cuts=st.lists(st.integers(0, BUFFER + BLOCK), max_size=12))
def test_any_chunking_gives_the_same_file(tmp_path, size, cuts):
    data = os.urandom(size)
    spooled = _write(tmp_path, data, cuts)
    spooled.end()  # readable before the flush: what the header parse relies on
    assert spooled.path.read_bytes() == data
    spooled.sync_and_close()
    assert spooled.path.read_bytes() == data
    spooled.path.unlink()


def test_a_file_system_without_direct_io_gets_the_same_bytes(tmp_path, monkeypatch):
    real_open = os.open

    def refusing_direct(path, flags, *args):  # what NFS or FUSE may answer: EINVAL
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_direct)
    data = os.urandom(BUFFER + 123)
    for direct in (True, False):
        spooled = _write(tmp_path, data, [BLOCK], direct=direct)
        spooled.sync_and_close()
        assert spooled.path.read_bytes() == data
        spooled.path.unlink()


def test_discard_leaves_nothing(tmp_path):
    spooled = _write(tmp_path, os.urandom(BUFFER + 5), [])
    spooled.discard()
    spooled.discard()  # twice is harmless (an abort after a failed flush)
    assert list(tmp_path.iterdir()) == []
