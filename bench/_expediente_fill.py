"""Fill Expediente's imaging index directly, with the rows its ingest writes for a C-STORE.

The counterpart of ``_orthanc_fill.py`` for the 1,000,000-instance QIDO population: the same
``_dicom_data.population`` rows, written with sqlite3 into ``dicom_study``, ``dicom_series`` and
``dicom_instance`` (and the name words of ``dicom_study_name``) of a stopped server's database, exactly as ``dicom/ingest.py`` leaves them
after storescu stored the instance (``check`` compares a fill with a real ingest of the same
instances: no difference but the reception timestamps): the stored file is Expediente's own
file meta (``ingest.file_preamble``, with the calling AE) followed by the dataset as sent, so
``blob_key`` (its SHA-256), ``size`` and ``pixel_offset`` are what ingest would record; origin
``dimse:BENCHSCU``; institution the AE's. And what the study follower of ``serve`` adds once it
has caught up: each instance's DICOM JSON (``metadata.build_instance_json`` on the same header
bytes), the study marked linked, and its row on the reconciliation list (no record matches these
synthetic patients). A real population is measured after its follower went idle, so a filled
one must not leave it 900,000 instances of work.

Not written: the blob files themselves (Expediente's QIDO answers from the index alone, so a
filled instance is found but cannot be retrieved; Orthanc's QIDO reads one file per study
answered, so its fill writes them).
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from _dicom_data import Row, small_instance
from _dicomweb import dataset_of
from _expediente import INSTITUTION
from _peers import CALLING_AE

from expediente.dicom.ingest import file_preamble
from expediente.dicom.metadata import build_instance_json
from expediente.dicom.names import name_tokens, normalized_name

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
PIXEL_BYTES = 128  # 8x8 16-bit
TIMESTAMPS = {"dicom_study": ("received", "updated", "linked"), "dicom_instance": ("received",), "dicom_reconcile": ("created",)}
# What the study linker records for a study whose patient no record matches (all of these).
UNMATCHED = "ningún expediente coincide con el paciente del estudio"


class _Ref:
    """The fields of an index row that ``build_instance_json`` reads."""

    __slots__ = ("study_uid", "series_uid", "sop_instance_uid", "transfer_syntax", "pixel_offset")

    def __init__(self, r: Row, pixel_offset: int):
        self.study_uid, self.series_uid, self.sop_instance_uid = r.study_uid, r.series_uid, r.sop_uid
        self.transfer_syntax, self.pixel_offset = EXPLICIT_LE, pixel_offset


def _at() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")


def _metadata(r: Row, header: bytes, first: tuple[Row, bytes] | None) -> bytes:
    """What the follower builds (``build_instance_json``: ~2 ms with pydicom); the other
    instances of a study differ from its first only in SOP Instance UID and Instance Number,
    so they are derived from the first's (equal bytes, tested) at a thousandth of the cost."""
    if first is None or first[0].study_uid != r.study_uid:
        return build_instance_json(header, _Ref(r, len(header)))
    row1, doc1 = first
    doc = doc1.replace(f'"{row1.sop_uid}"'.encode(), f'"{r.sop_uid}"'.encode()).replace(f"/instances/{row1.sop_uid}/".encode(), f"/instances/{r.sop_uid}/".encode())
    return doc.replace(b'"00200013":{"vr":"IS","Value":[1]}', b'"00200013":{"vr":"IS","Value":[%d]}' % r.number, 1)


def _rows(r: Row, at: str, first: tuple[Row, bytes] | None = None) -> tuple[tuple, tuple | None, tuple | None, list[tuple]]:
    stored = file_preamble(CT_IMAGE_STORAGE, r.sop_uid, EXPLICIT_LE, CALLING_AE) + dataset_of(small_instance(r))
    pixel_offset = len(stored) - PIXEL_BYTES
    metadata = _metadata(r, stored[:pixel_offset], first)
    instance = (
        r.sop_uid, r.series_uid, r.study_uid, CT_IMAGE_STORAGE, r.number, EXPLICIT_LE, hashlib.sha256(stored).hexdigest(),
        len(stored), pixel_offset, PIXEL_BYTES, 1, 8, 8, at, f"dimse:{CALLING_AE}", metadata, None,
    )  # fmt: skip
    if r.number != 1:
        return instance, None, None, []
    study = (
        r.study_uid, r.patient_id, "", r.name, normalized_name(r.name), r.birth, r.sex, r.study_date, r.study_time, r.accession,
        r.study_id, r.description, "", r.modality, INSTITUTION, 1, 10, None, None, at, at, at,
    )  # fmt: skip
    series = (r.series_uid, r.study_uid, r.modality, 1, "", "", "", 10)
    words = [(t, r.study_uid) for t in name_tokens(normalized_name(r.name))]  # fuzzy name search
    return instance, study, series, words


_INSERT = {
    "dicom_instance": "INSERT INTO dicom_instance (sop_instance_uid, series_uid, study_uid, sop_class_uid, instance_number, transfer_syntax, blob_key, size, pixel_offset, pixel_length, frames, rows, columns, received, origin, metadata, extra) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "dicom_study": "INSERT INTO dicom_study (study_uid, patient_id, issuer, patient_name, patient_name_norm, patient_birth_date, patient_sex, study_date, study_time, accession_number, study_id, study_description, referring_physician, modalities, institution, series_count, instance_count, patient_key, imaging_study_id, received, updated, linked) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "dicom_study_name": "INSERT INTO dicom_study_name (token, study_uid) VALUES (?,?)",
    "dicom_reconcile": "INSERT INTO dicom_reconcile (study_uid, reason, candidates, status, created, resolved, resolved_by) VALUES (?,?,?,?,?,?,?)",
    "dicom_series": "INSERT INTO dicom_series (series_uid, study_uid, modality, series_number, series_description, body_part, series_date, instance_count) VALUES (?,?,?,?,?,?,?,?)",
}


def fill(data_dir: Path, rows: Iterable[Row], batch: int = 50_000, progress=None) -> int:
    """Write ``rows`` (whole studies: the population's studies are never split) into a stopped
    server's index; returns the instances written."""
    db = sqlite3.connect(data_dir / "expediente.db", isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")  # a bulk fill; checkpointed and synced at the end
    at = _at()
    pending: dict[str, list] = {t: [] for t in _INSERT}
    n = 0

    def flush() -> None:
        db.execute("BEGIN")
        for table in ("dicom_study", "dicom_study_name", "dicom_reconcile", "dicom_series", "dicom_instance"):
            db.executemany(_INSERT[table], pending[table])
            pending[table].clear()
        db.execute("COMMIT")

    first = None
    for n, r in enumerate(rows, 1):
        instance, study, series, words = _rows(r, at, first)
        if r.number == 1:
            first = (r, instance[15])
        pending["dicom_instance"].append(instance)
        pending["dicom_study_name"] += words
        if study is not None:
            pending["dicom_study"].append(study)
            pending["dicom_series"].append(series)
            pending["dicom_reconcile"].append((r.study_uid, UNMATCHED, "[]", "pending", at, None, None))
        if n % batch == 0:
            flush()
            if progress:
                progress(n)
    flush()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return n


def _table(db: sqlite3.Connection, table: str) -> set[tuple]:
    cols = [c[1] for c in db.execute(f"PRAGMA table_info({table})") if c[1] not in TIMESTAMPS.get(table, ())]
    return set(db.execute(f"SELECT {', '.join(cols)} FROM {table}"))


def check(real_dir: Path, scratch: Path, rows: Iterable[Row]) -> list[str]:
    """Fill ``rows`` into a copy of a real ingest's database emptied of imaging rows and compare
    the three tables with the real ones (timestamps aside). [] = identical."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    src = sqlite3.connect(f"file:{real_dir / 'expediente.db'}?mode=ro", uri=True)
    dst = sqlite3.connect(scratch / "expediente.db")
    src.backup(dst)
    src.close()
    for table in ("dicom_instance", "dicom_series", "dicom_study_name", "dicom_reconcile", "dicom_study"):
        dst.execute(f"DELETE FROM {table}")
    dst.commit()
    dst.close()
    fill(scratch, rows)
    real = sqlite3.connect(f"file:{real_dir / 'expediente.db'}?mode=ro", uri=True)
    filled = sqlite3.connect(scratch / "expediente.db")
    diffs = []
    for table in ("dicom_study", "dicom_study_name", "dicom_reconcile", "dicom_series", "dicom_instance"):
        a, b = _table(real, table), _table(filled, table)
        if a != b:
            diffs.append(f"{table}: {len(a - b)} real rows not in the fill, e.g. {sorted(a - b)[:1]}; {len(b - a)} filled rows not real, e.g. {sorted(b - a)[:1]}")
    real.close()
    filled.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return diffs
