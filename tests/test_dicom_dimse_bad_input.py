"""Bad input over DIMSE: a clear failure status (with a Spanish ErrorComment), nothing partial
stored (index tables and blob directory), and the server keeps serving (an echo after each)."""

from __future__ import annotations

import os
import socket
import struct

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from expediente.dicom.net import dimse, pdu
from expediente.dicom.net.scu import AssociationRefused, Requestor
from expediente.dicom.status import CANNOT_UNDERSTAND, DATASET_MISMATCH, NOT_AUTHORIZED, OUT_OF_RESOURCES, SOP_CLASS_NOT_SUPPORTED
from tests.dicom_samples import ct_slice
from tests.dimse_helpers import AE_TITLE, need_dcmtk, start

VERIFICATION = "1.2.840.10008.1.1"


def dataset_of(part10: bytes) -> bytes:
    """The data set of a Part-10 file (what C-STORE carries): after the file meta group."""
    (group_length,) = struct.unpack_from("<I", part10, 132 + 8)
    return part10[132 + 12 + group_length :]


def uids(part10: bytes) -> tuple[str, str]:
    from pydicom import dcmread
    import io

    ds = dcmread(io.BytesIO(part10))
    return ds.SOPClassUID, ds.SOPInstanceUID


@pytest.fixture
def server(settings, services, tmp_path):
    handle, peer = start(settings, services, tmp_path)
    try:
        yield peer
    finally:
        handle.stop()


def _open(peer, calling="MODALIDAD", proposals=None) -> Requestor:
    proposals = proposals or [(CTImageStorage, [ExplicitVRLittleEndian]), (VERIFICATION, [ExplicitVRLittleEndian])]
    return Requestor.open("127.0.0.1", peer.port, calling=calling, called=AE_TITLE, proposals=proposals)


def _nothing_stored(peer) -> None:
    assert peer.counts() == (0, 0, 0)
    assert peer.blobs() == []  # no stored blob and no temporary file left in the spool


def _still_serving(peer) -> None:
    scu = _open(peer)
    assert scu.echo() == 0
    scu.release()


def _store(peer, dataset: bytes, sop_class=CTImageStorage, sop_uid="1.2.3.4.5", calling="MODALIDAD") -> dict:
    scu = _open(peer, calling)
    try:
        return scu.store(scu.context_for(CTImageStorage), sop_class, sop_uid, dataset)
    finally:
        scu.release()


def _refused(rsp: dict, status: int, words: str) -> None:
    assert rsp[dimse.STATUS] == status, hex(rsp[dimse.STATUS])
    assert words in rsp.get(dimse.ERROR_COMMENT, ""), rsp.get(dimse.ERROR_COMMENT)


def test_truncated_dataset(server):
    part10 = ct_slice()
    sop_class, sop_uid = uids(part10)
    rsp = _store(server, dataset_of(part10)[:-3000], sop_class, sop_uid)
    _refused(rsp, CANNOT_UNDERSTAND, "truncado")
    _nothing_stored(server)
    _still_serving(server)


def test_missing_required_uid(server):
    from pydicom import dcmread
    import io

    ds = dcmread(io.BytesIO(ct_slice()))
    del ds.StudyInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    rsp = _store(server, dataset_of(out.getvalue()), ds.SOPClassUID, ds.SOPInstanceUID)
    _refused(rsp, CANNOT_UNDERSTAND, "StudyInstanceUID")
    _nothing_stored(server)
    _still_serving(server)


def test_garbage_dataset(server):
    rsp = _store(server, b"\x00" * 128 + b"DICM" + os.urandom(5000))
    assert rsp[dimse.STATUS] in (CANNOT_UNDERSTAND, DATASET_MISMATCH)
    assert rsp.get(dimse.ERROR_COMMENT)
    _nothing_stored(server)
    _still_serving(server)


def test_path_traversal_uid(server):
    rsp = _store(server, dataset_of(ct_slice()), CTImageStorage, "../../../../etc/passwd")
    _refused(rsp, CANNOT_UNDERSTAND, "SOP Instance UID inválido")
    _nothing_stored(server)
    _still_serving(server)


def test_dataset_sop_instance_differs_from_command(server):
    rsp = _store(server, dataset_of(ct_slice()), CTImageStorage, "1.2.3.999")
    assert rsp[dimse.STATUS] in (CANNOT_UNDERSTAND, DATASET_MISMATCH)
    assert "no coincide" in rsp[dimse.ERROR_COMMENT]
    _nothing_stored(server)
    _still_serving(server)


def test_sop_class_not_of_the_context(server):
    part10 = ct_slice()
    _, sop_uid = uids(part10)
    rsp = _store(server, dataset_of(part10), MRImageStorage, sop_uid)
    _refused(rsp, SOP_CLASS_NOT_SUPPORTED, "clase SOP")
    _nothing_stored(server)
    _still_serving(server)


def test_service_not_allowed_for_the_ae(server):
    part10 = ct_slice()
    sop_class, sop_uid = uids(part10)
    rsp = _store(server, dataset_of(part10), sop_class, sop_uid, calling="SOLO_BUSCA")
    _refused(rsp, NOT_AUTHORIZED, "no está autorizado")
    _nothing_stored(server)
    _still_serving(server)


def test_unknown_ae_rejected(server):
    with pytest.raises(AssociationRefused) as refused:
        _open(server, calling="INTRUSO")
    assert refused.value.kind == pdu.ASSOCIATE_RJ and refused.value.detail == bytes([0, 1, 1, 3])
    _still_serving(server)


def test_abort_in_the_middle_of_a_dataset(server):
    part10 = ct_slice(size=256)
    sop_class, sop_uid = uids(part10)
    scu = _open(server)
    ctx = scu.context_for(CTImageStorage)
    command = {dimse.COMMAND_FIELD: dimse.C_STORE_RQ, dimse.MESSAGE_ID: 1, dimse.PRIORITY: 0, dimse.DATASET_TYPE: 0, dimse.AFFECTED_SOP_CLASS: sop_class, dimse.AFFECTED_SOP_INSTANCE: sop_uid}
    data = dataset_of(part10)
    scu.link.sock.sendall(pdu.p_data(ctx, True, True, dimse.encode(command)) + pdu.p_data(ctx, False, False, data[:20000]))
    scu.link.sock.sendall(pdu.abort_pdu(0, 0))
    scu.link.sock.close()
    _still_serving(server)
    for _ in range(100):  # the aborted association's thread drops its temporary file
        if not server.blobs():
            break
        __import__("time").sleep(0.05)
    _nothing_stored(server)


def test_garbage_instead_of_a_pdu(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100)[:1] in (b"\x07", b"")  # an A-ABORT, or the connection closed
    _still_serving(server)


def test_oversized_instance(settings, services, tmp_path):
    need_dcmtk()
    handle, peer = start(settings, services, tmp_path, dicom_max_instance_bytes=20_000)
    try:
        part10 = ct_slice(size=256)
        sop_class, sop_uid = uids(part10)
        rsp = _store(peer, dataset_of(part10), sop_class, sop_uid)
        _refused(rsp, OUT_OF_RESOURCES, "excede el tamaño máximo")
        _nothing_stored(peer)
        small = ct_slice(size=16)
        rsp = _store(peer, dataset_of(small), *uids(small))
        assert rsp[dimse.STATUS] == 0
        assert peer.counts() == (1, 1, 1)
        peer.echo()
    finally:
        handle.stop()
