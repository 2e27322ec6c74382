"""C-MOVE and C-GET to peers that do not accept the stored transfer syntax: the instance is
converted losslessly to one they accept (same SOP Instance UID, same pixels); a peer that
accepts the stored syntax still gets the stored bytes. Real dcmtk peers (storescp, getscu)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from expediente.dicom.ingest import Origin
from expediente.dicom.net.identifier import dataset_of
from tests.dimse_helpers import need_dcmtk, start

RLE_MR = get_testdata_file("MR_small_RLE.dcm")


@pytest.fixture
def archive(settings, services, tmp_path):
    need_dcmtk()
    handle, peer = start(settings, services, tmp_path)
    try:
        peer.stored = Path(RLE_MR).read_bytes()
        services.archive.store_file(peer.stored, origin=Origin("dimse", "MODALIDAD", institution="DFIMS000011"))
        peer.study = dcmread(RLE_MR).StudyInstanceUID
        yield peer
    finally:
        handle.stop()


def _move_to_storescp(archive, tmp_path: Path, *scp_options: str) -> tuple[list[Path], str]:
    received = tmp_path / f"visor-{time.monotonic_ns()}"
    received.mkdir()
    scp = subprocess.Popen(["storescp", *scp_options, "-aet", "VISOR", "-od", str(received), str(archive.dest_port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        done = archive.run("movescu", "-v", "-S", "-aem", "VISOR", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={archive.study}")
    finally:
        scp.terminate()
        scp.wait(10)
    return sorted(received.iterdir()), done.stdout + done.stderr


def _same_instance_same_pixels(path: Path) -> str:
    got, original = dcmread(path), dcmread(RLE_MR)
    assert got.SOPInstanceUID == original.SOPInstanceUID
    assert np.array_equal(got.pixel_array, original.pixel_array)
    return got.file_meta.TransferSyntaxUID


def test_move_converts_for_a_destination_that_takes_only_uncompressed(archive, tmp_path):
    files, out = _move_to_storescp(archive, tmp_path)  # storescp's default: uncompressed syntaxes only
    assert "Received Final Move Response (Success)" in out, out
    (path,) = files
    assert _same_instance_same_pixels(path) in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def test_move_sends_the_stored_bytes_where_the_syntax_is_accepted(archive, tmp_path):
    files, out = _move_to_storescp(archive, tmp_path, "+xa", "-B")  # any syntax, written bit-preserving
    assert "Received Final Move Response (Success)" in out, out
    (path,) = files
    assert _same_instance_same_pixels(path) == RLELossless
    got, sent = bytes(dataset_of(path.read_bytes())), bytes(dataset_of(archive.stored))
    # Byte for byte, up to the Data Set Trailing Padding (FFFC,FFFC) that storescp drops when it writes.
    assert sent[: len(got)] == got and sent[len(got) : len(got) + 4] == b"\xfc\xff\xfc\xff"


def test_get_converts_for_a_requestor_that_takes_only_uncompressed(archive, tmp_path):
    out = tmp_path / "get"
    out.mkdir()
    done = archive.run("getscu", "-S", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={archive.study}")
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = sorted(out.iterdir())
    assert _same_instance_same_pixels(path) in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def test_the_offer_prefers_the_stored_syntax_and_says_when_nothing_fits():
    from expediente.dicom.archive import InstanceRef
    from expediente.dicom.net import offer

    ref = InstanceRef("1.2", "1.2.1", "1.2.1.1", "1.2.840.10008.5.1.4.1.1.4", RLELossless, "k", 10, None, None, 1)
    assert offer.proposals([ref, ref]) == [(ref.sop_class_uid, [RLELossless]), (ref.sop_class_uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]
    accepted = {(ref.sop_class_uid, RLELossless): 1, (ref.sop_class_uid, ImplicitVRLittleEndian): 3}
    assert offer.choose(lambda c, t: accepted.get((c, t)), ref) == (1, RLELossless)
    del accepted[(ref.sop_class_uid, RLELossless)]
    assert offer.choose(lambda c, t: accepted.get((c, t)), ref) == (3, ImplicitVRLittleEndian)
    with pytest.raises(offer.NotSendable, match="no aceptó"):
        offer.choose(lambda c, t: None, ref)
