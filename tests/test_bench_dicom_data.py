"""The imaging benchmark's data and report (bench/dicom_vs_orthanc.py): fast, no Orthanc, no server.

What is checked is what the benchmark's honesty rests on: the instances are valid DICOM with
the attributes the population says, the CT is a real image (not zeros), the index fills write
what the archives' own ingest writes (the rows, the file bytes), the answers are checked
against what was sent, and the report says when a target is missed.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import _dicom_data as data  # noqa: E402
import _dicomweb  # noqa: E402
import _orthanc_fill  # noqa: E402
from _dicom_report import report  # noqa: E402


def test_small_instance_is_valid_dicom_with_the_rows_attributes():
    row = next(r for r in data.population(200) if not r.name.isascii())
    ds = pydicom.dcmread(io.BytesIO(data.small_instance(row)))
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == row.sop_uid
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID) == (row.study_uid, row.series_uid)
    assert str(ds.PatientName) == row.name  # UTF-8 (ISO_IR 192), accents intact
    assert (ds.PatientID, ds.PatientBirthDate, ds.StudyDate, ds.AccessionNumber, ds.Modality) == (row.patient_id, row.birth, row.study_date, row.accession, row.modality)
    assert ds.InstanceNumber == row.number
    assert ds.pixel_array.shape == (8, 8)


def test_population_is_deterministic_and_a_prefix_of_a_larger_one():
    small = list(data.population(1000))
    larger = list(data.population(1500))
    assert small == larger[:1000]
    assert list(data.population(1500, start=1000)) == larger[1000:]
    assert len({r.study_uid for r in small}) == 1000 // data.INSTANCES_PER_STUDY
    assert len({r.sop_uid for r in small}) == 1000
    assert len({r.patient_id for r in small}) == 34  # three studies a patient
    assert list(data.population(1000, seed=1)) != small


def test_phantom_ct_is_an_image_not_zeros():
    blobs = data.phantom_series(n=3, seed=0)
    slices = [pydicom.dcmread(io.BytesIO(b)) for b in blobs]
    first = slices[0]
    assert (first.Rows, first.Columns, first.BitsAllocated) == (512, 512, 16)
    assert 500_000 < len(blobs[0]) < 560_000
    hu = first.pixel_array.astype(np.int32) - 1024
    assert (hu < -900).mean() > 0.2  # air around the body
    assert ((hu > -200) & (hu < 200)).mean() > 0.2  # soft tissue
    assert (hu > 500).sum() > 500  # bone (spine)
    assert hu[256, 0:50].std() > 5  # noise, not a flat value
    assert not np.array_equal(slices[0].pixel_array, slices[1].pixel_array)
    assert len({s.SOPInstanceUID for s in slices}) == 3 and len({s.SeriesInstanceUID for s in slices}) == 1
    assert data.series_uids(blobs)["first_sop_uid"] == slices[0].SOPInstanceUID


def test_orthanc_identifiers_as_orthanc_writes_them():
    # Values read from an index Orthanc 1.10.1 populated itself with these instances.
    assert _orthanc_fill.public_id("MRN0000000") == "88851ae2-7aa6a60a-f693fa5a-a81ca577-785b45f7"
    assert _orthanc_fill.normalize("Muñoz Gómez^Luis") == "MUOZ GMEZ^LUIS"
    assert _orthanc_fill.normalize("RM de rodilla") == "RM DE RODILLA"


def test_orthanc_fill_file_is_the_dataset_behind_dcmtk_file_meta():
    row = next(iter(data.population(1)))
    blob = data.small_instance(row, implementation=_orthanc_fill.DCMTK_367)
    ds = pydicom.dcmread(io.BytesIO(blob))
    assert ds.file_meta.ImplementationClassUID == "1.2.276.0.7230010.3.0.3.6.7"
    assert _dicomweb.dataset_of(blob) == _dicomweb.dataset_of(data.small_instance(row))
    offset = _orthanc_fill.pixel_data_offset(blob)
    assert blob[offset : offset + 4] == b"\xe0\x7f\x10\x00" and len(blob) - offset == 12 + 128


def test_expediente_fill_rows_match_the_stored_file():
    pytest.importorskip("expediente.dicom.ingest")
    import _expediente_fill
    from expediente.dicom.ingest import file_preamble

    row = next(iter(data.population(1)))
    instance, study, series, words = _expediente_fill._rows(row, "2026-01-01 00:00:00")
    stored = file_preamble(_expediente_fill.CT_IMAGE_STORAGE, row.sop_uid, _expediente_fill.EXPLICIT_LE, "BENCHSCU") + _dicomweb.dataset_of(data.small_instance(row))
    ds = pydicom.dcmread(io.BytesIO(stored))
    size, pixel_offset, pixel_length = instance[7], instance[8], instance[9]
    assert size == len(stored) and stored[pixel_offset - 12 : pixel_offset - 8] == b"\xe0\x7f\x10\x00"
    assert stored[pixel_offset : pixel_offset + pixel_length] == ds.PixelData
    assert study[0] == row.study_uid and study[4] == "munoz gomez^luis" and series[0] == row.series_uid
    assert sorted(t for t, _uid in words) == ["gomez", "luis", "munoz"]


def _multipart(parts: list[bytes], boundary: str = "b0undary") -> tuple[bytes, str]:
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts)
    return body + b"--" + boundary.encode() + b"--\r\n", f'multipart/related; type="application/dicom"; boundary="{boundary}"'


def test_study_check_compares_datasets_not_file_meta():
    rows = list(data.population(3))
    sent = [data.small_instance(r) for r in rows]
    rewritten = [data.small_instance(r, implementation=_orthanc_fill.DCMTK_367) for r in rows]  # as Orthanc returns them
    body, ctype = _multipart(rewritten)
    assert _dicomweb.check_study(body, ctype, sent) == {"parts": 3, "instances_sent": 3, "datasets_identical": True}
    body, ctype = _multipart(rewritten[:2] + [rewritten[2][:-2] + b"\x00\x00"])
    assert _dicomweb.check_study(body, ctype, sent)["datasets_identical"] is False


def test_percentile_and_speedup():
    import dicom_vs_orthanc as bench

    values = list(range(1, 101))
    assert bench.percentile(values, 95) == 95 and bench.percentile(values, 50) == 50 and bench.percentile([7.0], 95) == 7.0
    assert bench.speedup(True, 100.0, 150.0) == 1.5  # throughput: Expediente / Orthanc
    assert bench.speedup(False, 10.0, 5.0) == 2.0  # latency: Orthanc / Expediente
    assert bench.speedup(True, None, 5.0) is None


def test_qido_queries_have_answers_on_both_sides():
    import dicom_vs_orthanc as bench

    kinds = bench.qido_queries(1000, 30, seed=0)
    assert set(kinds) == {"patient_id", "name_prefix", "accession", "date_month", "date_month_modality"}
    assert all(len(q) == 30 for q in kinds.values())
    assert all(q["PatientName"].endswith("*") and q["PatientName"].isascii() for q in kinds["name_prefix"])
    patients = {r.patient_id for r in data.population(1000)}
    assert {q["PatientID"] for q in kinds["patient_id"]} <= patients
    assert kinds == bench.qido_queries(1000, 30, seed=0)


def _result(ingest_speedup: float) -> dict:
    side = {"instances_per_s": 100.0, "mb_per_s": 52.4}
    q = {"orthanc": {"p95_ms": 80.0, "by_kind_p95_ms": {"patient_id": 70.0}}, "expediente": {"p95_ms": 20.0, "by_kind_p95_ms": {"patient_id": 9.5}}, "speedup": 4.0, "answers_agree": {"patient_id": "20/20"}}
    return {
        "started": "2026-12-02T17:20:00Z",
        "args": {"repeat": 3},
        "machine": {"nproc": 2, "orthanc": "1.10.1", "dcmtk": "3.6.7"},
        "ingest": {"1_association": {"orthanc": side, "expediente": {"instances_per_s": 100 * ingest_speedup, "mb_per_s": 52.4 * ingest_speedup}, "speedup": ingest_speedup, "target": 1.5, "met": ingest_speedup >= 1.5}},
        "wado": {
            "study": {"orthanc": {"mb_per_s": 300.0}, "expediente": {"mb_per_s": 600.0}, "speedup": 2.0, "target": 1.0, "met": True},
            "first_frame": {"orthanc": {"ms": 8.0}, "expediente": {"ms": 16.0}, "speedup": 0.5, "target": 1.0, "met": False},
        },
        "qido": {"1000000": {**q, "target_p95_ms": 50.0, "met": True}},
    }


def test_report_table_states_each_target():
    text = report(_result(ingest_speedup=0.8))
    lines = text.splitlines()
    ingest = next(line for line in lines if line.startswith("| C-STORE ingest, 1 association"))
    assert "100.0; 52.4" in ingest and "0.80x" in ingest and ingest.endswith("| **no** |")
    frame = next(line for line in lines if "first frame" in line)
    assert "0.50x" in frame and "**no**" in frame
    qido = next(line for line in lines if "QIDO-RS study search p95 at 1,000,000" in line)
    assert "< 50 ms" in qido and qido.endswith("| yes |")
    assert "| 1,000,000 | 70.0 / 9.5 | patient_id 20/20 |" in text
    assert "Orthanc 1.10.1" in text
    assert "| yes |" in report(_result(ingest_speedup=2.0)).splitlines()[2]


def test_expediente_fill_derived_metadata_equals_the_built_one():
    pytest.importorskip("expediente.dicom.metadata")
    import _expediente_fill

    first = None
    for row in data.population(20):  # two studies
        derived = _expediente_fill._rows(row, "t", first)[0]
        built = _expediente_fill._rows(row, "t", None)[0]
        assert derived[15] == built[15] and row.sop_uid.encode() in derived[15]
        if row.number == 1:
            first = (row, built[15])
