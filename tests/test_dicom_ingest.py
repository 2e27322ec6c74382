"""The ingest pipeline's promises beyond parsing: a duplicate SOP Instance UID is idempotent
(keep or replace), nothing unreferenced is left behind, and what was never made durable is
neither acknowledged nor left in the index."""

from __future__ import annotations

import ctypes
import dataclasses
import os

import pytest
import sqlalchemy as sa

from dicom_samples import ct_slice
from expediente.blobs import fs_flush, make_blob_store
from expediente.db.schema import dicom_instance, dicom_series, dicom_study
from expediente.dicom.archive import Archive
from expediente.dicom.ingest import Origin, Refused
from expediente.dicom.status import DATASET_MISMATCH, OUT_OF_RESOURCES

ORIGIN = Origin("dimse", "CT_URG", institution="DFIMS000011")


def _archive(services, duplicates: str) -> Archive:
    return Archive(services.engine, services.archive.blobs, dataclasses.replace(services.archive.settings, dicom_duplicates=duplicates))


def _rows(services):
    with services.engine.connect() as conn:
        return conn.execute(sa.select(dicom_instance.c.sop_instance_uid, dicom_instance.c.blob_key)).all()


def _counts(services, study_uid):
    with services.engine.connect() as conn:
        study = conn.execute(sa.select(dicom_study.c.instance_count).where(dicom_study.c.study_uid == study_uid)).scalar_one()
        series = conn.execute(sa.select(sa.func.sum(dicom_series.c.instance_count)).where(dicom_series.c.study_uid == study_uid)).scalar_one()
    return study, series


def _blobs(services) -> set[str]:
    return set(services.archive.blobs.keys())


def _read(services, sop_uid: str) -> bytes:
    ref = next(r for r in services.archive.instances(study_uid=_study_of(services, sop_uid)) if r.sop_instance_uid == sop_uid)
    return services.archive.read(ref)


def _study_of(services, sop_uid: str) -> str:
    with services.engine.connect() as conn:
        return conn.execute(sa.select(dicom_instance.c.study_uid).where(dicom_instance.c.sop_instance_uid == sop_uid)).scalar_one()


def test_the_same_instance_twice_is_stored_once(services):
    data = ct_slice(sop_uid="1.2.3.4.1", study_uid="1.2.3.4", series_uid="1.2.3.4.0")
    first = services.archive.store_file(data, origin=ORIGIN)
    again = services.archive.store_file(data, origin=ORIGIN)
    assert not first.duplicate and again.duplicate and again.blob_key == first.blob_key
    assert len(_rows(services)) == 1 and _blobs(services) == {first.blob_key}
    assert _counts(services, "1.2.3.4") == (1, 1)


def test_keep_answers_success_keeps_the_first_bytes_and_leaves_no_stray_file(services):
    first = ct_slice(sop_uid="1.2.3.5.1", study_uid="1.2.3.5", series_uid="1.2.3.5.0", number=1)
    second = ct_slice(sop_uid="1.2.3.5.1", study_uid="1.2.3.5", series_uid="1.2.3.5.0", number=2)
    assert first != second
    stored = services.archive.store_file(first, origin=ORIGIN)
    kept = services.archive.store_file(second, origin=ORIGIN)
    assert kept.duplicate and kept.blob_key == stored.blob_key
    assert _read(services, "1.2.3.5.1") == first
    assert _blobs(services) == {stored.blob_key}  # the second file's bytes were discarded
    assert _counts(services, "1.2.3.5") == (1, 1)


def test_replace_serves_the_new_bytes(services):
    archive = _archive(services, "replace")
    first = ct_slice(sop_uid="1.2.3.6.1", study_uid="1.2.3.6", series_uid="1.2.3.6.0", number=1)
    second = ct_slice(sop_uid="1.2.3.6.1", study_uid="1.2.3.6", series_uid="1.2.3.6.0", number=2)
    archive.store_file(first, origin=ORIGIN)
    replaced = archive.store_file(second, origin=ORIGIN)
    assert replaced.duplicate
    assert _read(services, "1.2.3.6.1") == second
    assert _counts(services, "1.2.3.6") == (1, 1)


def test_replace_refuses_an_instance_moved_to_another_study_and_keeps_nothing_of_it(services):
    archive = _archive(services, "replace")
    original = archive.store_file(ct_slice(sop_uid="1.2.3.7.1", study_uid="1.2.3.7", series_uid="1.2.3.7.0"), origin=ORIGIN)
    with pytest.raises(Refused) as refused:
        archive.store_file(ct_slice(sop_uid="1.2.3.7.1", study_uid="1.2.3.8", series_uid="1.2.3.8.0"), origin=ORIGIN)
    assert refused.value.status == DATASET_MISMATCH and "otro estudio" in refused.value.reason
    assert _blobs(services) == {original.blob_key}
    assert _rows(services) == [("1.2.3.7.1", original.blob_key)]


def test_an_index_row_whose_file_never_arrived_is_stored_anew(services):
    """A crash after the index commit and before the file's flush finished (nothing was
    acknowledged): the sender sends again and the instance is whole, even under keep."""
    data = ct_slice(sop_uid="1.2.3.9.1", study_uid="1.2.3.9", series_uid="1.2.3.9.0")
    stored = services.archive.store_file(data, origin=ORIGIN)
    services.archive.blobs.discard(stored.blob_key)  # the state such a crash leaves
    again = services.archive.store_file(data, origin=ORIGIN)
    assert again.blob_key == stored.blob_key and services.archive.blobs.exists(stored.blob_key)
    assert _read(services, "1.2.3.9.1") == data


@pytest.mark.parametrize("arriving", [False, True], ids=["alone", "others-arriving"])
@pytest.mark.parametrize("sync", ["auto", "files"])
def test_a_file_that_cannot_be_flushed_is_refused_and_takes_its_index_rows_back(services, settings, monkeypatch, sync, arriving):
    """Alone, the file is closed and renamed on a flusher thread while the index commits; with
    other instances arriving, on the receiving thread. Either way a failed flush leaves nothing."""
    if sync == "auto" and not fs_flush.available():
        pytest.skip("syncfs (Linux) is not available here: blob_sync 'auto' flushes file by file")
    archive = Archive(services.engine, make_blob_store(dataclasses.replace(settings, blob_sync=sync)), settings)
    assert archive.ingest.flushes_file_system is (sync == "auto")
    archive.store_file(ct_slice(sop_uid="1.2.3.10.1", study_uid="1.2.3.10", series_uid="1.2.3.10.0"), origin=ORIGIN)
    before_rows, before_blobs = _rows(services), _blobs(services)

    def failing_disk(fd):
        raise OSError(5, "Input/output error")

    def failing_syncfs(fd):
        ctypes.set_errno(5)
        return -1

    # The disk fails: fault injection below our code (the flush of one file, or of the file system).
    monkeypatch.setattr(os, "fdatasync", failing_disk)
    monkeypatch.setattr(fs_flush, "_SYNCFS", failing_syncfs)
    other = archive.ingest.begin_file(origin=ORIGIN) if arriving else None
    assert archive.ingest.in_flight() == (1 if arriving else 0)
    with pytest.raises(Refused) as refused:
        archive.store_file(ct_slice(sop_uid="1.2.3.10.2", study_uid="1.2.3.10", series_uid="1.2.3.10.0", number=2), origin=ORIGIN)
    monkeypatch.undo()
    if other is not None:
        other.abort()
    assert archive.ingest.in_flight() == 0
    assert refused.value.status == OUT_OF_RESOURCES and "no se pudo guardar" in refused.value.reason
    assert _rows(services) == before_rows and _blobs(services) == before_blobs
    assert _counts(services, "1.2.3.10") == (1, 1)
    assert not list(archive.blobs.spool.glob("*"))
    # and the archive goes on
    archive.store_file(ct_slice(sop_uid="1.2.3.10.2", study_uid="1.2.3.10", series_uid="1.2.3.10.0", number=2), origin=ORIGIN)
    assert _counts(services, "1.2.3.10") == (2, 2)
    archive.close()
