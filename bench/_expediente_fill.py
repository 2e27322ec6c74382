"""Fill Expediente's imaging index directly, with the rows its ingest writes for a C-STORE.

The counterpart of ``_orthanc_fill.py`` for the 1,000,000-instance QIDO population: the same
``_dicom_data.population`` rows, written with sqlite3 into ``dicom_study``, ``dicom_series`` and
``dicom_instance`` (and the name words of ``dicom_study_name``) of a stopped server's database, exactly as ``dicom/ingest.py`` leaves them
after storescu stored the instance (``check`` compares a fill with a real ingest of the same
instances: no difference but the reception timestamps): the stored file is Expediente's own
file meta (``ingest.file_preamble``, with the calling AE) followed by the dataset as sent, so
``blob_key`` (its SHA-256), ``size`` and ``pixel_offset`` are what ingest would record; origin
``dimse:BENCHSCU``; institution the AE's; ``metadata`` NULL until first asked (as after a real
ingest: no follower runs in ``serve``).

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
from expediente.dicom.names import name_tokens, normalized_name

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
PIXEL_BYTES = 128  # 8x8 16-bit
TIMESTAMPS = {"dicom_study": ("received", "updated"), "dicom_instance": ("received",)}


def _at() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")


def _rows(r: Row, at: str) -> tuple[tuple, tuple | None, tuple | None, list[tuple]]:
    stored = file_preamble(CT_IMAGE_STORAGE, r.sop_uid, EXPLICIT_LE, CALLING_AE) + dataset_of(small_instance(r))
    instance = (
        r.sop_uid, r.series_uid, r.study_uid, CT_IMAGE_STORAGE, r.number, EXPLICIT_LE, hashlib.sha256(stored).hexdigest(),
        len(stored), len(stored) - PIXEL_BYTES, PIXEL_BYTES, 1, 8, 8, at, f"dimse:{CALLING_AE}", None, None,
    )  # fmt: skip
    if r.number != 1:
        return instance, None, None, []
    study = (
        r.study_uid, r.patient_id, "", r.name, normalized_name(r.name), r.birth, r.sex, r.study_date, r.study_time, r.accession,
        r.study_id, r.description, "", r.modality, INSTITUTION, 1, 10, None, None, at, at, None,
    )  # fmt: skip
    series = (r.series_uid, r.study_uid, r.modality, 1, "", "", "", 10)
    words = [(t, r.study_uid) for t in name_tokens(normalized_name(r.name))]  # fuzzy name search
    return instance, study, series, words


_INSERT = {
    "dicom_instance": "INSERT INTO dicom_instance (sop_instance_uid, series_uid, study_uid, sop_class_uid, instance_number, transfer_syntax, blob_key, size, pixel_offset, pixel_length, frames, rows, columns, received, origin, metadata, extra) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "dicom_study": "INSERT INTO dicom_study (study_uid, patient_id, issuer, patient_name, patient_name_norm, patient_birth_date, patient_sex, study_date, study_time, accession_number, study_id, study_description, referring_physician, modalities, institution, series_count, instance_count, patient_key, imaging_study_id, received, updated, linked) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "dicom_study_name": "INSERT INTO dicom_study_name (token, study_uid) VALUES (?,?)",
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
        for table in ("dicom_study", "dicom_study_name", "dicom_series", "dicom_instance"):
            db.executemany(_INSERT[table], pending[table])
            pending[table].clear()
        db.execute("COMMIT")

    for n, r in enumerate(rows, 1):
        instance, study, series, words = _rows(r, at)
        pending["dicom_instance"].append(instance)
        pending["dicom_study_name"] += words
        if study is not None:
            pending["dicom_study"].append(study)
            pending["dicom_series"].append(series)
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
    for table in ("dicom_instance", "dicom_series", "dicom_study_name", "dicom_study"):
        dst.execute(f"DELETE FROM {table}")
    dst.commit()
    dst.close()
    fill(scratch, rows)
    real = sqlite3.connect(f"file:{real_dir / 'expediente.db'}?mode=ro", uri=True)
    filled = sqlite3.connect(scratch / "expediente.db")
    diffs = []
    for table in ("dicom_study", "dicom_study_name", "dicom_series", "dicom_instance"):
        a, b = _table(real, table), _table(filled, table)
        if a != b:
            diffs.append(f"{table}: {len(a - b)} real rows not in the fill, e.g. {sorted(a - b)[:1]}; {len(b - a)} filled rows not real, e.g. {sorted(b - a)[:1]}")
    real.close()
    filled.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return diffs
