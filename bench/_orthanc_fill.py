"""Fill Orthanc's SQLite index directly, the way Orthanc 1.10 itself writes it on a C-STORE.

Why: one storescu association ingests a few hundred small instances a second into Orthanc here,
so a million instances by real ingest would take about an hour. The smaller populations (1,000
and 100,000) are real ingests; the 1,000,000 one is the 100,000 real ingest plus 900,000
instances written by ``fill`` below, while Orthanc is stopped.

What Orthanc writes per stored instance (learned from an index Orthanc populated itself with the
same small instances, and checked by ``compare``, which must find no difference):

- ``Resources`` rows for the instance and, when new, its series, study and patient (created in
  that order: instance first), ``publicId`` = SHA-1 of "PatientID|StudyUID|SeriesUID|SOPUID"
  prefixes, as 5 dash-separated groups of 8 hex digits;
- ``MainDicomTags`` per level (the patient module is repeated at the study level), values as
  in the header without padding;
- ``DicomIdentifiers`` (what /tools/find and QIDO match on): the identifier tags, with names and
  descriptions normalized as Orthanc does (upper case, non-ASCII bytes dropped);
- ``Metadata``: instance IndexInSeries, ReceptionDate, RemoteAET, Origin, TransferSyntax,
  SopClassUid, RemoteIP, CalledAET, PixelDataOffset; series RemoteAET; LastUpdate on series, study
  and patient;
- ``AttachedFiles`` (the DICOM file: uuid, sizes, MD5) and the file itself under
  ``<storage>/<uu>/<id>/<uuid>`` (the DICOMweb plugin reads one instance's file per study
  answered, so the files must exist);
- ``Changes`` (NewInstance, then NewSeries, NewStudy, NewPatient as they appear); the
  ``PatientAdded`` and ``AttachedFileIncrementSize`` triggers keep ``PatientRecyclingOrder`` and
  ``GlobalIntegers`` as Orthanc would.

Not reproduced: Orthanc moves an existing patient to the end of ``PatientRecyclingOrder`` on
each new instance (only recycling reads it; no disk quota here), and ReceptionDate/LastUpdate
are the fill's time, not one per instance.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
import uuid as _uuid
from collections.abc import Iterable
from pathlib import Path

from _dicom_data import Row, small_instance

PATIENT, STUDY, SERIES, INSTANCE = 1, 2, 3, 4
NEW_INSTANCE, NEW_PATIENT, NEW_SERIES, NEW_STUDY = 2, 3, 4, 5
TS_EXPLICIT_LE = "1.2.840.10008.1.2.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
# Orthanc stores the dataset as received behind a file meta group dcmtk writes itself.
DCMTK_367 = ("1.2.276.0.7230010.3.0.3.6.7", "OFFIS_DCMTK_367")


def public_id(*parts: str) -> str:
    h = hashlib.sha1("|".join(parts).encode()).hexdigest()
    return "-".join(h[i : i + 8] for i in range(0, 40, 8))


def pixel_data_offset(blob: bytes) -> int:
    """Orthanc's PixelDataOffset metadata: where the (7FE0,0010) element starts in the file."""
    return blob.rindex(PIXEL_DATA_TAG)


def normalize(value: str) -> str:
    """Orthanc's identifier normalization (what DicomIdentifiers holds): ASCII only, upper case."""
    return "".join(c for c in value if 32 <= ord(c) < 127).strip().upper()


def _patient_tags(r: Row) -> list[tuple[int, int, str]]:
    return [(0x10, 0x10, r.name), (0x10, 0x20, r.patient_id), (0x10, 0x30, r.birth), (0x10, 0x40, r.sex)]


def _patient_ids(r: Row) -> list[tuple[int, int, str]]:
    return [(0x10, 0x20, r.patient_id), (0x10, 0x10, normalize(r.name)), (0x10, 0x30, r.birth)]


def _study_tags(r: Row) -> list[tuple[int, int, str]]:
    return _patient_tags(r) + [
        (0x08, 0x20, r.study_date),
        (0x08, 0x30, r.study_time),
        (0x08, 0x50, r.accession),
        (0x08, 0x90, ""),
        (0x08, 0x1030, r.description),
        (0x20, 0x0D, r.study_uid),
        (0x20, 0x10, r.study_id),
    ]


def _study_ids(r: Row) -> list[tuple[int, int, str]]:
    return _patient_ids(r) + [(0x20, 0x0D, r.study_uid), (0x08, 0x50, r.accession), (0x08, 0x1030, normalize(r.description)), (0x08, 0x20, r.study_date)]


class Filler:
    def __init__(self, index_path: Path, storage_dir: Path, calling_ae: str = "BENCHSCU", called_ae: str = "ORTHANC"):
        self.db = sqlite3.connect(index_path, isolation_level=None)
        self.db.execute("PRAGMA synchronous=OFF")  # a bulk fill; os.sync() at the end
        self.storage = storage_dir
        self.calling_ae, self.called_ae = calling_ae, called_ae
        self.when = time.strftime("%Y%m%dT%H%M%S")
        self.next_id = (self.db.execute("SELECT MAX(internalId) FROM Resources").fetchone()[0] or 0) + 1
        self.dirs: set[Path] = set()
        self.known = dict(self.db.execute("SELECT publicId, internalId FROM Resources WHERE resourceType IN (1, 2, 3)").fetchall())
        self._reset()

    def _reset(self) -> None:
        self.resources, self.tags, self.ids, self.meta, self.files, self.changes = [], [], [], [], [], []

    def add(self, r: Row) -> None:
        blob = small_instance(r, implementation=DCMTK_367)
        pat_pid = public_id(r.patient_id)
        study_pid = public_id(r.patient_id, r.study_uid)
        series_pid = public_id(r.patient_id, r.study_uid, r.series_uid)
        inst_pid = public_id(r.patient_id, r.study_uid, r.series_uid, r.sop_uid)
        # Orthanc creates the instance first, then whatever parents are missing, in this order.
        inst = self.next_id
        self.next_id += 1
        created = []
        series = self.known.get(series_pid)
        if series is None:
            series = self.next_id
            self.next_id += 1
            created.append((SERIES, series_pid, series))
            study = self.known.get(study_pid)
            if study is None:
                study = self.next_id
                self.next_id += 1
                created.append((STUDY, study_pid, study))
                patient = self.known.get(pat_pid)
                if patient is None:
                    patient = self.next_id
                    self.next_id += 1
                    created.append((PATIENT, pat_pid, patient))
        self.resources.append((inst, INSTANCE, inst_pid, series))
        self.changes.append((NEW_INSTANCE, inst, INSTANCE))
        self.tags += [(inst, 0x08, 0x18, r.sop_uid), (inst, 0x20, 0x13, str(r.number))]
        self.ids.append((inst, 0x08, 0x18, r.sop_uid))
        self.meta += [
            (inst, 1, str(r.number)),
            (inst, 2, self.when),
            (inst, 3, self.calling_ae),
            (inst, 8, "DicomProtocol"),
            (inst, 9, TS_EXPLICIT_LE),
            (inst, 10, CT_IMAGE_STORAGE),
            (inst, 11, "127.0.0.1"),
            (inst, 12, self.called_ae),
            (inst, 14, str(pixel_data_offset(blob))),
        ]
        for kind, pid, rid in created:
            self.known[pid] = rid
        for kind, pid, rid in created:
            parent = {SERIES: self.known[study_pid], STUDY: self.known[pat_pid], PATIENT: None}[kind]
            self.resources.append((rid, kind, pid, parent))
            self.changes.append(({SERIES: NEW_SERIES, STUDY: NEW_STUDY, PATIENT: NEW_PATIENT}[kind], rid, kind))
            self.meta.append((rid, 7, self.when))
            if kind == SERIES:
                self.tags += [(rid, 0x08, 0x60, r.modality), (rid, 0x20, 0x0E, r.series_uid), (rid, 0x20, 0x11, "1")]
                self.ids.append((rid, 0x20, 0x0E, r.series_uid))
                self.meta.append((rid, 3, self.calling_ae))
            elif kind == STUDY:
                self.tags += [(rid, g, e, v) for g, e, v in _study_tags(r)]
                self.ids += [(rid, g, e, v) for g, e, v in _study_ids(r)]
            else:
                self.tags += [(rid, g, e, v) for g, e, v in _patient_tags(r)]
                self.ids += [(rid, g, e, v) for g, e, v in _patient_ids(r)]
        file_uuid = str(_uuid.uuid4())
        md5 = hashlib.md5(blob).hexdigest()
        self.files.append((inst, 1, file_uuid, len(blob), len(blob), 1, md5, md5))
        directory = self.storage / file_uuid[0:2] / file_uuid[2:4]
        if directory not in self.dirs:
            directory.mkdir(parents=True, exist_ok=True)
            self.dirs.add(directory)
        with open(directory / file_uuid, "wb") as f:
            f.write(blob)

    def flush(self) -> None:
        db = self.db
        db.execute("BEGIN")
        self.resources.sort()
        db.executemany("INSERT INTO Resources (internalId, resourceType, publicId, parentId) VALUES (?, ?, ?, ?)", self.resources)
        db.executemany("INSERT INTO MainDicomTags (id, tagGroup, tagElement, value) VALUES (?, ?, ?, ?)", self.tags)
        db.executemany("INSERT INTO DicomIdentifiers (id, tagGroup, tagElement, value) VALUES (?, ?, ?, ?)", self.ids)
        db.executemany("INSERT INTO Metadata (id, type, value) VALUES (?, ?, ?)", self.meta)
        db.executemany(
            "INSERT INTO AttachedFiles (id, fileType, uuid, compressedSize, uncompressedSize, compressionType, uncompressedMD5, compressedMD5) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            self.files,
        )
        db.executemany("INSERT INTO Changes (changeType, internalId, resourceType, date) VALUES (?, ?, ?, ?)", [(*c, self.when) for c in self.changes])
        db.execute("COMMIT")
        self._reset()

    def close(self) -> None:
        self.flush()
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()
        os.sync()


def fill(index_path: Path, storage_dir: Path, rows: Iterable[Row], batch: int = 20000, progress=None) -> int:
    """Write ``rows`` into a stopped Orthanc's index and storage; returns instances written."""
    filler = Filler(index_path, storage_dir)
    n = 0
    for n, row in enumerate(rows, 1):
        filler.add(row)
        if n % batch == 0:
            filler.flush()
            if progress:
                progress(n)
    filler.close()
    return n


# ------------------------------------------------------------------ verification


def canonical(index_path: Path) -> dict:
    """What an index says about each resource, without the ids, uuids and dates that differ
    between two runs, keyed by publicId: compares a filled index with a real ingest.
    Files are compared by size and MD5, which covers their bytes."""
    db = sqlite3.connect(f"file:{index_path}?mode=ro", uri=True)
    pub = dict(db.execute("SELECT internalId, publicId FROM Resources"))
    out: dict[str, dict] = {}
    for rid, kind, pid, parent in db.execute("SELECT internalId, resourceType, publicId, parentId FROM Resources"):
        out[pid] = {"type": kind, "parent": pub.get(parent), "tags": set(), "ids": set(), "meta": set(), "files": set(), "changes": []}
    for table, key in (("MainDicomTags", "tags"), ("DicomIdentifiers", "ids")):
        for rid, g, e, v in db.execute(f"SELECT id, tagGroup, tagElement, value FROM {table}"):
            out[pub[rid]][key].add((g, e, v))
    for rid, t, v in db.execute("SELECT id, type, value FROM Metadata"):
        out[pub[rid]]["meta"].add((t, "<date>" if t in (2, 7) else v))
    for rid, ft, cs, us, ct, md5 in db.execute("SELECT id, fileType, compressedSize, uncompressedSize, compressionType, uncompressedMD5 FROM AttachedFiles"):
        out[pub[rid]]["files"].add((ft, cs, us, ct, md5))
    for change, rid, kind in db.execute("SELECT changeType, internalId, resourceType FROM Changes ORDER BY seq"):
        if rid in pub:
            out[pub[rid]]["changes"].append((change, kind))
    db.close()
    return out


def compare(real_index: Path, filled_index: Path) -> list[str]:
    """Differences between a real ingest's index and a fill of the same instances ([] = none)."""
    real, filled = canonical(real_index), canonical(filled_index)
    diffs = []
    for pid in sorted(set(real) | set(filled)):
        a, b = real.get(pid), filled.get(pid)
        if a != b:
            diffs.append(f"{pid}: real={a} filled={b}")
            if len(diffs) >= 5:
                break
    return diffs
