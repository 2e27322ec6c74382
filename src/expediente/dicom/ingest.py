"""The one ingest pipeline behind C-STORE and STOW-RS.

An instance is written to a temporary file in the blob store while it arrives (hashed on the
way), fsynced, parsed up to its Pixel Data (never decoded), moved into the content-addressed
store and indexed in one transaction. Only then is success answered, so an acknowledged
instance survives a crash; a refused one leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import orjson
import sqlalchemy as sa
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from expediente.db.engine import write_transaction
from expediente.db.schema import dicom_instance, dicom_series, dicom_study
from expediente.dicom.parse import Header, NotDicom, parse_header, valid_uid
from expediente.dicom.status import CANNOT_UNDERSTAND, DATASET_MISMATCH, OUT_OF_RESOURCES, SUCCESS
from expediente.dicom.names import normalized_name

IMPLEMENTATION_VERSION = "EXPEDIENTE_01"
_CHUNK = 1024 * 1024


class Refused(Exception):
    """An instance (or request) the archive does not accept: a DIMSE status and a Spanish reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Origin:
    kind: str  # dimse | stow | import
    calling_ae: str | None = None
    institution: str | None = None  # CLUES of the sender
    subject: str | None = None  # the authenticated principal (STOW)

    @property
    def label(self) -> str:
        return f"{self.kind}:{(self.calling_ae or self.subject or '')[:64]}"


@dataclass(frozen=True, slots=True)
class Stored:
    status: int
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    blob_key: str
    duplicate: bool = False
    new_study: bool = False


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Ingest:
    """Stores instances into ``blobs`` and indexes them on ``engine``."""

    def __init__(self, engine: sa.Engine, blobs, *, duplicates: str = "keep", max_bytes: int = 2**31, extra_tags: tuple[str, ...] = ()):
        if duplicates not in ("keep", "replace"):
            raise ValueError(f"dicom_duplicates debe ser 'keep' o 'replace', no {duplicates!r}")
        self.engine = engine
        self.blobs = blobs
        self.duplicates = duplicates
        self.max_bytes = max_bytes
        self.extra_tags = extra_tags
        # Called with (study_uid, new_study) after each stored instance's commit.
        self.listeners: list[Callable[[Stored], None]] = []

    # ------------------------------------------------------------------ receiving

    def begin(self, *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, origin: Origin) -> Receipt:
        """A receipt for one instance arriving as a dataset in ``transfer_syntax`` (DIMSE)."""
        for name, value in (("SOP Class UID", sop_class_uid), ("SOP Instance UID", sop_instance_uid), ("Transfer Syntax UID", transfer_syntax)):
            if not valid_uid(value):
                raise Refused(CANNOT_UNDERSTAND, f"{name} inválido: {value[:64]!r}")
        receipt = Receipt(self, origin, expected=(sop_class_uid, sop_instance_uid))
        receipt.write(_file_preamble(sop_class_uid, sop_instance_uid, transfer_syntax, origin.calling_ae))
        return receipt

    def store_file(self, data: bytes | BinaryIO, *, origin: Origin) -> Stored:
        """Store one whole Part-10 file (STOW-RS, imports)."""
        receipt = Receipt(self, origin, expected=None)
        try:
            if isinstance(data, (bytes, bytearray, memoryview)):
                receipt.write(data)
            else:
                while chunk := data.read(_CHUNK):
                    receipt.write(chunk)
        except BaseException:
            receipt.abort()
            raise
        return receipt.finish()

    # ------------------------------------------------------------------ indexing

    def _index(self, header: Header, key: str, origin: Origin) -> Stored:
        ds = header.dataset
        study_uid, series_uid, sop_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        sop_class = str(ds.SOPClassUID)
        at = now()
        row = {
            "sop_instance_uid": sop_uid,
            "series_uid": series_uid,
            "study_uid": study_uid,
            "sop_class_uid": sop_class,
            "instance_number": header.number("InstanceNumber"),
            "transfer_syntax": header.transfer_syntax,
            "blob_key": key,
            "size": header.size,
            "pixel_offset": header.pixel_offset,
            "pixel_length": header.pixel_length,
            "frames": header.frames,
            "rows": header.number("Rows"),
            "columns": header.number("Columns"),
            "received": at,
            "origin": origin.label,
            "metadata": None,
            "extra": self._extra(header),
        }
        with write_transaction(self.engine) as conn:
            existing = conn.execute(
                sa.select(dicom_instance.c.study_uid, dicom_instance.c.series_uid, dicom_instance.c.blob_key).where(
                    dicom_instance.c.sop_instance_uid == sop_uid
                )
            ).first()
            if existing is not None:
                if self.duplicates == "keep" or existing.blob_key == key:
                    return Stored(SUCCESS, sop_class, sop_uid, existing.study_uid, existing.series_uid, existing.blob_key, duplicate=True)
                if (existing.study_uid, existing.series_uid) != (study_uid, series_uid):
                    raise Refused(DATASET_MISMATCH, "la instancia ya existe en otro estudio o serie; no se reemplaza")
                conn.execute(dicom_instance.update().where(dicom_instance.c.sop_instance_uid == sop_uid).values(**row))
                conn.execute(dicom_study.update().where(dicom_study.c.study_uid == study_uid).values(updated=at))
                return Stored(SUCCESS, sop_class, sop_uid, study_uid, series_uid, key, duplicate=True)
            new_study = _upsert_study(conn, header, origin, at)
            new_series = _upsert_series(conn, header)
            conn.execute(dicom_instance.insert().values(**row))
            conn.execute(
                dicom_study.update()
                .where(dicom_study.c.study_uid == study_uid)
                .values(
                    instance_count=dicom_study.c.instance_count + 1,
                    series_count=dicom_study.c.series_count + (1 if new_series else 0),
                    updated=at,
                )
            )
            if new_series:
                _add_modality(conn, study_uid, header.text("Modality"))
        return Stored(SUCCESS, sop_class, sop_uid, study_uid, series_uid, key, new_study=new_study)

    def _extra(self, header: Header) -> str | None:
        if not self.extra_tags:
            return None
        values = {k: header.text(k) for k in self.extra_tags if header.text(k)}
        return orjson.dumps(values).decode() if values else None

    def _stored(self, stored: Stored) -> None:
        for listener in self.listeners:
            listener(stored)


class Receipt:
    """One instance being written: bytes go to a temporary file, hashed as they come."""

    def __init__(self, ingest: Ingest, origin: Origin, expected: tuple[str, str] | None):
        self._ingest = ingest
        self._origin = origin
        self._expected = expected
        self._fd, self._tmp = ingest.blobs.temporary()
        self._hash = hashlib.sha256()
        self._size = 0
        self._open = True

    def write(self, chunk: bytes | memoryview) -> None:
        self._size += len(chunk)
        if self._size > self._ingest.max_bytes:
            self.abort()
            raise Refused(OUT_OF_RESOURCES, f"la instancia excede el tamaño máximo de {self._ingest.max_bytes} bytes")
        self._hash.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view) :]

    def abort(self) -> None:
        if self._open:
            self._open = False
            os.close(self._fd)
            self._tmp.unlink(missing_ok=True)

    def finish(self) -> Stored:
        """Make the instance durable and indexed, or refuse it leaving nothing stored."""
        try:
            os.fdatasync(self._fd)
            with open(self._tmp, "rb", buffering=64 * 1024) as f:
                header = parse_header(f, self._size)
            self._check(header)
            key = self._hash.hexdigest()
            os.close(self._fd)
            self._open = False
            self._ingest.blobs.adopt(self._tmp, key)
            stored = self._ingest._index(header, key, self._origin)
        except NotDicom as exc:
            self.abort()
            raise Refused(CANNOT_UNDERSTAND, str(exc)) from None
        except BaseException:
            self.abort()
            raise
        self._ingest._stored(stored)
        return stored

    def _check(self, header: Header) -> None:
        if self._expected is None:
            return
        sop_class, sop_uid = self._expected
        ds = header.dataset
        if str(ds.SOPInstanceUID) != sop_uid:
            raise Refused(DATASET_MISMATCH, "el SOPInstanceUID del conjunto de datos no coincide con el del comando C-STORE")
        if str(ds.SOPClassUID) != sop_class:
            raise Refused(DATASET_MISMATCH, "la clase SOP del conjunto de datos no coincide con la del comando C-STORE")


def _file_preamble(sop_class: str, sop_uid: str, syntax: str, calling_ae: str | None) -> bytes:
    """The 128-byte preamble, 'DICM' and the file meta group for a dataset received over DIMSE."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if calling_ae:
        meta.SourceApplicationEntityTitle = calling_ae.strip()[:16]
    out = io.BytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    return out.getvalue()


def _insert_ignoring_conflict(conn: sa.Connection, table: sa.Table, values: dict) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING on either engine; True when the row was new."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return conn.execute(insert(table).values(**values).on_conflict_do_nothing()).rowcount == 1


def _upsert_study(conn: sa.Connection, header: Header, origin: Origin, at: datetime) -> bool:
    text = header.text
    name = text("PatientName")
    return _insert_ignoring_conflict(
        conn,
        dicom_study,
        {
            "study_uid": text("StudyInstanceUID"),
            "patient_id": text("PatientID")[:64],
            "issuer": text("IssuerOfPatientID")[:64],
            "patient_name": name[:324],
            "patient_name_norm": normalized_name(name)[:324],
            "patient_birth_date": text("PatientBirthDate")[:8],
            "patient_sex": text("PatientSex")[:16],
            "study_date": text("StudyDate")[:8],
            "study_time": text("StudyTime")[:16],
            "accession_number": text("AccessionNumber")[:64],
            "study_id": text("StudyID")[:16],
            "study_description": text("StudyDescription")[:255],
            "referring_physician": text("ReferringPhysicianName")[:324],
            "modalities": "",
            "institution": (origin.institution or "")[:32],
            "series_count": 0,
            "instance_count": 0,
            "received": at,
            "updated": at,
        },
    )


def _upsert_series(conn: sa.Connection, header: Header) -> bool:
    text = header.text
    new = _insert_ignoring_conflict(
        conn,
        dicom_series,
        {
            "series_uid": text("SeriesInstanceUID"),
            "study_uid": text("StudyInstanceUID"),
            "modality": text("Modality")[:16],
            "series_number": header.number("SeriesNumber"),
            "series_description": text("SeriesDescription")[:255],
            "body_part": text("BodyPartExamined")[:64],
            "series_date": text("SeriesDate")[:8],
            "instance_count": 0,
        },
    )
    conn.execute(
        dicom_series.update()
        .where(dicom_series.c.series_uid == text("SeriesInstanceUID"))
        .values(instance_count=dicom_series.c.instance_count + 1)
    )
    return new


def _add_modality(conn: sa.Connection, study_uid: str, modality: str) -> None:
    if not modality:
        return
    current = conn.execute(sa.select(dicom_study.c.modalities).where(dicom_study.c.study_uid == study_uid)).scalar() or ""
    values = [m for m in current.split("\\") if m]
    if modality not in values:
        values.append(modality)
        conn.execute(dicom_study.update().where(dicom_study.c.study_uid == study_uid).values(modalities="\\".join(values)[:64]))


__all__ = ["Ingest", "Origin", "Receipt", "Refused", "Stored", "Path"]
