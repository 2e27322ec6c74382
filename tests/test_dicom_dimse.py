"""The DIMSE service class provider against real dcmtk peers: association, C-ECHO, C-STORE."""

from __future__ import annotations

import io
import time

import sqlalchemy as sa

import pytest
from pydicom import dcmread

from expediente.db.schema import audit_log
from tests.dicom_samples import ct_slice
from tests.dimse_helpers import need_dcmtk, start


@pytest.fixture
def dimse(settings, services, tmp_path):
    need_dcmtk()
    handle, peer = start(settings, services, tmp_path)
    try:
        yield peer
    finally:
        handle.stop()


def _audit_rows(settings):
    engine = sa.create_engine(settings.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(audit_log).where(audit_log.c.action == "dimse").order_by(audit_log.c.seq)).mappings().all()
    finally:
        engine.dispose()


def test_echo_and_audit(dimse):
    done = dimse.run("echoscu", check=True)
    assert done.returncode == 0
    rows = _audit_rows(dimse.settings)
    assert rows[-1]["actor"] == "dicom:MODALIDAD" and rows[-1]["outcome"] == "allowed"
    assert rows[-1]["source"] == "127.0.0.1" and "DFIMS000011" in rows[-1]["reason"]


def test_unknown_calling_ae_is_rejected(dimse):
    done = dimse.run("echoscu", calling="DESCONOCIDO")
    assert done.returncode != 0
    assert "Calling AE Title Not Recognized" in done.stdout + done.stderr
    rows = _audit_rows(dimse.settings)
    assert rows[-1]["actor"] == "dicom:DESCONOCIDO" and rows[-1]["outcome"] == "denied"
    dimse.echo()


def test_wrong_called_ae_is_rejected(dimse):
    done = dimse.run("echoscu", called="OTRO_PACS")
    assert done.returncode != 0
    assert "Called AE Title Not Recognized" in done.stdout + done.stderr
    dimse.echo()


def test_store_several_files_bit_identical(dimse, services):
    study = "1.2.826.0.1.3680043.10.1089.77.1"
    files = [dimse.write(f"ct{i}.dcm", ct_slice(study_uid=study, series_uid=study + ".1", number=i)) for i in range(1, 6)]
    dimse.run("storescu", files=files, check=True)
    assert dimse.counts() == (1, 1, 5)
    refs = services.archive.instances(study_uid=study)
    assert len(refs) == 5
    for ref, path in zip(sorted(refs, key=lambda r: r.sop_instance_uid), sorted(files, key=lambda p: dcmread(p).SOPInstanceUID)):
        stored = services.archive.read(ref)
        original = open(path, "rb").read()
        # The data set after the file meta is the one sent, byte for byte.
        assert stored[-len(original) + 400 :] == original[-len(original) + 400 :]
        assert dcmread(path).SOPInstanceUID == ref.sop_instance_uid
    rows = _audit_rows(dimse.settings)
    assert "almacenadas 5" in rows[-1]["reason"] and f"ImagingStudy/{study}" in rows[-1]["entities"]


@pytest.mark.parametrize(
    ("syntax", "option"),
    [("1.2.840.10008.1.2.4.80", "--propose-jls-lossless"), ("1.2.840.10008.1.2.4.90", "--propose-j2k-lossless"), ("1.2.840.10008.1.2.5", "--propose-rle")],
)
def test_store_compressed_syntaxes(dimse, services, syntax, option):
    """A compressed instance is accepted in its own transfer syntax and kept as it came."""
    ds = dcmread(io.BytesIO(ct_slice()))
    ds.compress(syntax)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    path = dimse.write("comprimida.dcm", out.getvalue())
    dimse.run("storescu", option, files=[path], check=True)
    (ref,) = services.archive.instances(study_uid=ds.StudyInstanceUID)
    assert ref.transfer_syntax == syntax and ref.pixel_length == -1
    stored = dcmread(io.BytesIO(services.archive.read(ref)))
    assert stored.PixelData == ds.PixelData
    dimse.echo()


def test_parallel_associations_across_processes(settings, services, tmp_path):
    """Four storescu at once into two receiving processes sharing the listening socket."""
    import os
    import subprocess

    from tests.dimse_helpers import AE_TITLE

    need_dcmtk()
    handle, peer = start(settings, services, tmp_path, dicom_processes=2)
    try:
        assert len(handle.pids) == 2
        study = "1.2.826.0.1.3680043.10.1089.88.1"
        files = [peer.write(f"p{i}.dcm", ct_slice(study_uid=study, series_uid=study + ".1", number=i)) for i in range(12)]
        procs = [
            subprocess.Popen(["storescu", "-aet", "MODALIDAD", "-aec", AE_TITLE, "127.0.0.1", str(peer.port), *files[k::4]], env={**os.environ, "TCP_NODELAY": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for k in range(4)
        ]
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, out
        assert peer.counts() == (1, 1, 12)
        engine = sa.create_engine(peer.settings.sqlalchemy_url)
        with engine.connect() as conn:
            from expediente.db.schema import dicom_series, dicom_study

            assert conn.execute(sa.select(dicom_study.c.instance_count)).scalar() == 12
            assert conn.execute(sa.select(dicom_series.c.instance_count)).scalar() == 12
        engine.dispose()
    finally:
        handle.stop()
    assert all(not os.path.exists(f"/proc/{pid}") for pid in handle.pids)


def test_parallel_associations_spread_evenly_over_the_processes(settings, services, tmp_path):
    """Four associations opened at once into two receiving processes: two each (one
    interpreter lock per process, so an uneven split would slow the busier one)."""
    from expediente.dicom.net.scu import Requestor
    from tests.dimse_helpers import AE_TITLE

    handle, peer = start(settings, services, tmp_path, dicom_processes=2)
    opened = []
    try:
        deadline = time.monotonic() + 30
        while min(handle.associations()) < 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # both processes accepting
        opened = [Requestor.open("127.0.0.1", peer.port, calling="MODALIDAD", called=AE_TITLE, proposals=[("1.2.840.10008.1.1", ["1.2.840.10008.1.2"])])
                  for _ in range(4)]
        deadline = time.monotonic() + 5
        while sum(handle.associations()) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(handle.associations()) == [2, 2]
        assert all(scu.echo() == 0 for scu in opened)
    finally:
        for scu in opened:
            scu.release()
        handle.stop()


def test_serve_without_ae_file_says_dimse_is_off(settings, caplog):
    import logging

    from expediente.cli import _start_dimse

    with caplog.at_level(logging.INFO, logger="expediente.dicom.net"):
        assert _start_dimse(settings) is None
    assert "DIMSE desactivado" in caplog.text and "DIMSE off" in caplog.text
