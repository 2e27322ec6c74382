"""C-FIND, C-MOVE and C-GET against real dcmtk peers (findscu, movescu to a dcmtk storescp,
getscu): levels, roots, wildcards, date ranges, the AE's institution as scope, refusals."""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.dicom_samples import ct_slice
from tests.dimse_helpers import need_dcmtk, start

STUDY_A = "1.2.826.0.1.3680043.10.1089.501"
STUDY_B = "1.2.826.0.1.3680043.10.1089.502"
STUDY_C = "1.2.826.0.1.3680043.10.1089.503"  # sent by another institution
CURP_B = "LODJ800101HDFPZS09"


@pytest.fixture
def archive(settings, services, tmp_path):
    need_dcmtk()
    handle, peer = start(settings, services, tmp_path)
    try:
        sent = {}
        a = [ct_slice(study_uid=STUDY_A, series_uid=STUDY_A + ".1", sop_uid=f"{STUDY_A}.1.{i}", number=i, study_date="20240315") for i in (1, 2, 3)]
        b = [ct_slice(study_uid=STUDY_B, series_uid=STUDY_B + ".1", sop_uid=f"{STUDY_B}.1.1", patient_id="MRN-0002", name="López Díaz^José", study_date="20251120", modality="MR",
                      other_ids=((CURP_B, "CURP"), ("IMB-4411", "IMSS-BIENESTAR")), requests=(("RP-7", "SPS-7"),))]
        c = [ct_slice(study_uid=STUDY_C, series_uid=STUDY_C + ".1", sop_uid=f"{STUDY_C}.1.1", patient_id="MRN-0003", name="Hernández Ruiz^Ana", study_date="20240601")]
        for name, files, calling in (("a", a, "MODALIDAD"), ("b", b, "MODALIDAD"), ("c", c, "OTRA_INST")):
            paths = [peer.write(f"{name}{i}.dcm", data) for i, data in enumerate(files)]
            peer.run("storescu", files=paths, calling=calling, check=True)
            sent[name] = files
        peer.sent = sent
        yield peer
    finally:
        handle.stop()


def _last_audit(peer) -> dict:
    import sqlalchemy as sa

    from expediente.db.schema import audit_log

    engine = sa.create_engine(peer.settings.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.select(audit_log).where(audit_log.c.action == "dimse").order_by(audit_log.c.seq.desc()).limit(1)).mappings().one())
    finally:
        engine.dispose()


def _find(peer, tmp: Path, *keys: str, root: str = "-S", calling: str = "MODALIDAD") -> tuple[list, subprocess.CompletedProcess]:
    out = tmp / f"find-{time.monotonic_ns()}"
    out.mkdir()
    args = [root, "-v", "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    done = peer.run("findscu", *args, calling=calling)
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))], done


def test_find_study_root_wildcard_name(archive, tmp_path):
    answers, done = _find(archive, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName=HERN*", "StudyInstanceUID", "StudyDate", "NumberOfStudyRelatedInstances")
    assert done.returncode == 0, done.stderr
    # Study C matches the name but was sent by another institution: not visible to MODALIDAD.
    assert [a.StudyInstanceUID for a in answers] == [STUDY_A]
    assert answers[0].StudyDate == "20240315" and int(answers[0].NumberOfStudyRelatedInstances) == 3
    assert str(answers[0].PatientName).startswith("Hern")
    assert "encontradas 1" in _last_audit(archive)["reason"]


def test_find_date_range_and_scope(archive, tmp_path):
    answers, _ = _find(archive, tmp_path, "QueryRetrieveLevel=STUDY", "StudyDate=20240101-20241231", "StudyInstanceUID")
    assert {a.StudyInstanceUID for a in answers} == {STUDY_A}
    answers, _ = _find(archive, tmp_path, "QueryRetrieveLevel=STUDY", "StudyDate=20240101-20241231", "StudyInstanceUID", calling="OTRA_INST")
    assert {a.StudyInstanceUID for a in answers} == {STUDY_C}
    answers, _ = _find(archive, tmp_path, "QueryRetrieveLevel=STUDY", "StudyDate=20250101-", "StudyInstanceUID", "ModalitiesInStudy")
    assert [(a.StudyInstanceUID, a.ModalitiesInStudy) for a in answers] == [(STUDY_B, "MR")]


def test_find_patient_root_levels(archive, tmp_path):
    answers, done = _find(archive, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID=MRN-000?", "PatientName", root="-P")
    assert done.returncode == 0, done.stderr
    assert sorted(a.PatientID for a in answers) == ["MRN-0001", "MRN-0002"]
    answers, _ = _find(archive, tmp_path, "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={STUDY_A}", "SeriesInstanceUID", "Modality")
    assert [(a.SeriesInstanceUID, a.Modality) for a in answers] == [(STUDY_A + ".1", "CT")]
    answers, _ = _find(archive, tmp_path, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={STUDY_A}", f"SeriesInstanceUID={STUDY_A}.1", "SOPInstanceUID", "InstanceNumber")
    assert [a.SOPInstanceUID for a in answers] == [f"{STUDY_A}.1.{i}" for i in (1, 2, 3)]


def test_find_matches_sequence_items(archive, tmp_path):
    """Sequence matching as findscu sends it: the patient by an identifier of another
    institution, the series by the order that caused it; matching items come back."""
    found, _ = _find(archive, tmp_path, "QueryRetrieveLevel=STUDY", "StudyInstanceUID",
                     "OtherPatientIDsSequence[0].PatientID=IMB-*", "OtherPatientIDsSequence[0].IssuerOfPatientID=IMSS-BIENESTAR")
    assert [d.StudyInstanceUID for d in found] == [STUDY_B]
    (item,) = found[0].OtherPatientIDsSequence
    assert item.PatientID == "IMB-4411" and item.IssuerOfPatientID == "IMSS-BIENESTAR"
    found, _ = _find(archive, tmp_path, "QueryRetrieveLevel=STUDY", "StudyInstanceUID",
                     f"OtherPatientIDsSequence[0].PatientID={CURP_B}", "OtherPatientIDsSequence[0].IssuerOfPatientID=IMSS-BIENESTAR")
    assert found == []  # the values exist, but not in one item
    found, _ = _find(archive, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID", f"OtherPatientIDsSequence[0].PatientID={CURP_B}", root="-P")
    assert [d.PatientID for d in found] == ["MRN-0002"]
    found, _ = _find(archive, tmp_path, "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={STUDY_B}", "SeriesInstanceUID",
                     "RequestAttributesSequence[0].RequestedProcedureID=RP-7", "RequestAttributesSequence[0].ScheduledProcedureStepID")
    assert [d.SeriesInstanceUID for d in found] == [STUDY_B + ".1"]
    assert [(i.RequestedProcedureID, i.ScheduledProcedureStepID) for i in found[0].RequestAttributesSequence] == [("RP-7", "SPS-7")]
    found, _ = _find(archive, tmp_path, "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={STUDY_B}", "RequestAttributesSequence[0].RequestedProcedureID=RP-8")
    assert found == []


def test_find_patient_level_in_study_root_is_refused(archive, tmp_path):
    answers, done = _find(archive, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID")
    assert answers == []
    assert "DataSetDoesNotMatchSOPClass" in done.stdout + done.stderr
    archive.echo()


def test_find_not_allowed_and_allowed(archive, tmp_path):
    answers, done = _find(archive, tmp_path, "QueryRetrieveLevel=STUDY", "StudyInstanceUID", calling="SOLO_BUSCA")
    assert len(answers) == 2  # SOLO_BUSCA may find (same institution as MODALIDAD)
    store = archive.run("storescu", "-v", files=[archive.write("x.dcm", ct_slice())], calling="SOLO_BUSCA")
    assert "status: 0x124" in (store.stdout + store.stderr).lower()  # refused: not authorized
    assert archive.counts()[2] == 5


def _dataset_bytes(part10: bytes) -> bytes:
    from expediente.dicom.net.identifier import dataset_of

    return bytes(dataset_of(part10))


def test_move_study_to_storescp(archive, tmp_path):
    received = tmp_path / "visor"
    received.mkdir()
    scp = subprocess.Popen(["storescp", "-aet", "VISOR", "-od", str(received), str(archive.dest_port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        done = archive.run("movescu", "-v", "-S", "-aem", "VISOR", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY_A}")
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout + done.stderr
        assert out.count("(Pending)") == 2 and "Received Final Move Response (Success)" in out
    finally:
        scp.terminate()
        scp.wait(10)
    files = sorted(received.iterdir())
    assert len(files) == 3
    audit = _last_audit(archive)
    assert "movidas 3" in audit["reason"] and f"ImagingStudy/{STUDY_A}" in audit["entities"]
    originals = {dcmread(io.BytesIO(d)).SOPInstanceUID: _dataset_bytes(d) for d in archive.sent["a"]}
    for path in files:
        data = path.read_bytes()
        assert _dataset_bytes(data) == originals[dcmread(path).SOPInstanceUID]  # bit-identical data set


def test_move_refusals(archive, tmp_path):
    done = archive.run("movescu", "-v", "-S", "-aem", "NADIE", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY_A}")
    assert "refused: movedestinationunknown" in (done.stdout + done.stderr).lower()
    done = archive.run("movescu", "-v", "-S", "-aem", "VISOR", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY_A}", calling="SOLO_BUSCA")
    assert "0x0124" in (done.stdout + done.stderr).lower() or "0x124" in (done.stdout + done.stderr).lower(), done.stdout
    archive.echo()


def test_get_series(archive, tmp_path):
    out = tmp_path / "get"
    out.mkdir()
    done = archive.run("getscu", "-S", "-od", str(out), "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={STUDY_A}", "-k", f"SeriesInstanceUID={STUDY_A}.1")
    assert done.returncode == 0, done.stdout + done.stderr
    files = sorted(out.iterdir())
    assert len(files) == 3
    originals = {dcmread(io.BytesIO(d)).SOPInstanceUID: _dataset_bytes(d) for d in archive.sent["a"]}
    for path in files:
        assert _dataset_bytes(path.read_bytes()) == originals[dcmread(path).SOPInstanceUID]


def test_get_other_institution_finds_nothing(archive, tmp_path):
    out = tmp_path / "get2"
    out.mkdir()
    archive.run("getscu", "-S", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY_C}")
    assert list(out.iterdir()) == []
    archive.echo()


def _find_rq(message_id: int, level: str = "STUDY") -> tuple[dict, bytes]:
    from pydicom.dataset import Dataset
    from pynetdicom.dsutils import encode

    from expediente.dicom.net import dimse

    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.StudyInstanceUID = ""
    command = {dimse.COMMAND_FIELD: dimse.C_FIND_RQ, dimse.MESSAGE_ID: message_id, dimse.PRIORITY: 0, dimse.DATASET_TYPE: 0, dimse.AFFECTED_SOP_CLASS: "1.2.840.10008.5.1.4.1.2.2.1"}
    return command, encode(ds, False, True)


def test_find_cancel(archive):
    """A C-CANCEL sent right after the C-FIND ends it with Cancel (0xFE00) before all matches."""
    from expediente.dicom.net import dimse, pdu
    from expediente.dicom.net.scu import Requestor

    scu = Requestor.open("127.0.0.1", archive.port, calling="MODALIDAD", called="EXPEDIENTE", proposals=[("1.2.840.10008.5.1.4.1.2.2.1", ["1.2.840.10008.1.2.1"])])
    ctx = scu.context_for("1.2.840.10008.5.1.4.1.2.2.1")
    command, identifier = _find_rq(5)
    cancel = {dimse.COMMAND_FIELD: dimse.C_CANCEL_RQ, dimse.RESPONDED_TO: 5, dimse.DATASET_TYPE: dimse.NO_DATASET}
    scu.link.sock.sendall(pdu.p_data(ctx, True, True, dimse.encode(command)) + pdu.p_data(ctx, False, True, identifier) + pdu.p_data(ctx, True, True, dimse.encode(cancel)))
    statuses = []
    while True:
        _, rsp = scu.link.command()
        statuses.append(rsp[dimse.STATUS])
        if rsp[dimse.DATASET_TYPE] != dimse.NO_DATASET:
            scu.link.dataset(ctx)
        if rsp[dimse.STATUS] != 0xFF00:
            break
    assert statuses[-1] == 0xFE00 and len(statuses) < 3  # two studies are visible: not all were sent
    # The association goes on: a new C-FIND answers both studies.
    command, identifier = _find_rq(6)
    scu.link.send(ctx, command, identifier)
    pending = 0
    while True:
        _, rsp = scu.link.command()
        if rsp[dimse.DATASET_TYPE] != dimse.NO_DATASET:
            scu.link.dataset(ctx)
        if rsp[dimse.STATUS] != 0xFF00:
            break
        pending += 1
    assert (pending, rsp[dimse.STATUS]) == (2, 0)
    scu.release()


def test_move_to_a_destination_that_is_down(archive):
    done = archive.run("movescu", "-v", "-S", "-aem", "VISOR", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY_A}")
    assert "refused: outofresourcessuboperations" in (done.stdout + done.stderr).lower(), done.stdout  # 0xA702
    archive.echo()


def test_move_without_unique_key_is_refused(archive):
    done = archive.run("movescu", "-v", "-S", "-aem", "VISOR", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=1.2.*")
    assert "identifierdoesnotmatchsopclass" in (done.stdout + done.stderr).lower() or "datasetdoesnotmatchsopclass" in (done.stdout + done.stderr).lower(), done.stdout
    archive.echo()
