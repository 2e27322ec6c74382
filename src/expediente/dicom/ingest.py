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
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import orjson
import pydicom
import sqlalchemy as sa
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from expediente.blobs.spool import SpoolFile
from expediente.db.engine import DriverWrites, is_sqlite, write_transaction
from expediente.db.prepared import Prepared, prepare
from expediente.db.schema import dicom_instance, dicom_item, dicom_series, dicom_study, dicom_study_name
from expediente.dicom import sequences
from expediente.dicom.parse import Header, NotDicom, parse_header, valid_uid
from expediente.dicom.status import CANNOT_UNDERSTAND, DATASET_MISMATCH, OUT_OF_RESOURCES, SUCCESS
from expediente.dicom.names import name_tokens, normalized_name

IMPLEMENTATION_VERSION = "EXPEDIENTE_01"
_CHUNK = 1024 * 1024
HEAD_BYTES = 256 * 1024


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
        # Called with each Stored after its commit.
        self.listeners: list[Callable[[Stored], None]] = []
        # Flushes files while their index commits (one thread per instance in flight).
        self.flusher = ThreadPoolExecutor(max_workers=16, thread_name_prefix="dicom-flush")
        # Local blobs made durable by one flush of their file system (blobs/fs_flush.py).
        self.flushes_file_system = blobs.file_system_flush is not None and blobs.adopts_by_rename and blobs.keyring is None
        # Series known to be indexed (series UID -> study UID): their rows need no upsert.
        self._known_series: dict[str, str] = {}
        # SQLite: the hot path's index rows go straight to the driver (db/engine.py).
        self._driver_writes = DriverWrites(engine) if is_sqlite(engine) else None
        self._in_flight = 0  # instances begun and not yet stored or refused, in this process
        self._in_flight_lock = threading.Lock()

    def count_receipt(self, change: int) -> None:
        with self._in_flight_lock:
            self._in_flight += change

    def in_flight(self) -> int:
        return self._in_flight

    # ------------------------------------------------------------------ receiving

    def begin(self, *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, origin: Origin) -> Receipt:
        """A receipt for one instance arriving as a dataset in ``transfer_syntax`` (DIMSE)."""
        for name, value in (("SOP Class UID", sop_class_uid), ("SOP Instance UID", sop_instance_uid), ("Transfer Syntax UID", transfer_syntax)):
            if not valid_uid(value):
                raise Refused(CANNOT_UNDERSTAND, f"{name} inválido: {value[:64]!r}")
        receipt = Receipt(self, origin, expected=(sop_class_uid, sop_instance_uid))
        receipt.write(file_preamble(sop_class_uid, sop_instance_uid, transfer_syntax, origin.calling_ae))
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

    def begin_file(self, *, origin: Origin, study_uid: str | None = None) -> Receipt:
        """A receipt for one whole Part-10 file arriving in pieces (a STOW-RS part); with
        ``study_uid``, an instance of another study is refused."""
        return Receipt(self, origin, expected=None, study=study_uid)

    # ------------------------------------------------------------------ indexing

    def _index(self, header: Header, key: str, origin: Origin, extra: str | None) -> Stored:
        text = header.text
        study_uid, series_uid, sop_uid, sop_class = text("StudyInstanceUID"), text("SeriesInstanceUID"), text("SOPInstanceUID"), text("SOPClassUID")
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
            "extra": extra,
        }
        known = self._known_series.get(series_uid) == study_uid
        if known and self._driver_writes is not None and self._index_known(row, at):
            return Stored(SUCCESS, sop_class, sop_uid, study_uid, series_uid, key)
        with write_transaction(self.engine) as conn:
            if not _insert_instance(conn.dialect, row).run(conn, row):
                return self._duplicate(conn, row)
            new_study = new_series = False
            if not known:
                new_study = _upsert_study(conn, header, origin, at)
                new_series = _upsert_series(conn, header)
            for statement, params in _counts(conn.dialect, row, at, new_series):
                statement.run(conn, params)
            if new_series:
                _add_modality(conn, study_uid, header.text("Modality"))
        if len(self._known_series) > 4096:
            self._known_series.clear()
        self._known_series[series_uid] = study_uid
        return Stored(SUCCESS, sop_class, sop_uid, study_uid, series_uid, key, new_study=new_study)

    def _index_known(self, row: dict, at: datetime) -> bool:
        """The common case on SQLite, an instance of a series already indexed: its row and the
        two counts, prepared statements on a driver connection. False, with nothing written,
        when the SOP Instance UID is already indexed (the full path decides)."""
        dialect = self.engine.dialect
        insert = _insert_instance(dialect, row)
        try:
            with self._driver_writes.transaction() as cursor:
                cursor.execute(insert.sql, insert.args(row))
                if cursor.rowcount != 1:
                    raise _AlreadyIndexed
                for statement, params in _counts(dialect, row, at, new_series=False):
                    cursor.execute(statement.sql, statement.args(params))
        except _AlreadyIndexed:
            return False
        return True

    def close(self) -> None:
        self.flusher.shutdown(wait=True)
        if self._driver_writes is not None:
            self._driver_writes.close()

    def _duplicate(self, conn: sa.Connection, row: dict) -> Stored:
        """A SOP Instance UID already stored: kept as it is, or replaced (dicom_duplicates).
        An index row whose file is missing (a crash before its flush finished; it was never
        acknowledged) is replaced whatever the policy."""
        existing = conn.execute(_EXISTING, {"b_uid": row["sop_instance_uid"]}).one()
        uid, sop_class = row["sop_instance_uid"], row["sop_class_uid"]
        keep = self.duplicates == "keep" and self.blobs.exists(existing.blob_key)
        if keep or existing.blob_key == row["blob_key"]:
            return Stored(SUCCESS, sop_class, uid, existing.study_uid, existing.series_uid, existing.blob_key, duplicate=True)
        if (existing.study_uid, existing.series_uid) != (row["study_uid"], row["series_uid"]):
            raise Refused(DATASET_MISMATCH, "la instancia ya existe en otro estudio o serie; no se reemplaza")
        conn.execute(dicom_instance.update().where(dicom_instance.c.sop_instance_uid == uid).values(**row))
        conn.execute(dicom_study.update().where(dicom_study.c.study_uid == row["study_uid"]).values(updated=row["received"]))
        return Stored(SUCCESS, sop_class, uid, row["study_uid"], row["series_uid"], row["blob_key"], duplicate=True)

    def make_durable(self, spooled: SpoolFile, key: str, durable: bool = True) -> None:
        """Flush the temporary file and move it to its content address (durably), or with
        ``durable=False`` only close and move it: the file-system flush that follows the
        index commit makes both durable at once."""
        try:
            spooled.sync_and_close() if durable else spooled.close()
        except BaseException:
            spooled.discard()
            raise
        self.blobs.adopt(spooled.path, key, durable=durable)

    def _forget(self, stored: Stored) -> None:
        """Undo the index rows of an instance whose file could not be made durable."""
        if stored.duplicate:
            return
        with write_transaction(self.engine) as conn:
            conn.execute(dicom_instance.delete().where(dicom_instance.c.sop_instance_uid == stored.sop_instance_uid))
            conn.execute(_UNCOUNT_SERIES, {"b_series": stored.series_uid})
            conn.execute(_UNCOUNT_STUDY, {"b_study": stored.study_uid})
        self._known_series.pop(stored.series_uid, None)

    def _extra(self, spooled: SpoolFile) -> str | None:
        """The configured extra attributes (any keyword: read with pydicom, off the fast walk)."""
        if not self.extra_tags:
            return None
        spooled.end()
        ds = pydicom.dcmread(spooled.path, stop_before_pixels=True, specific_tags=list(self.extra_tags))
        values = {k: str(ds.get(k)).strip() for k in self.extra_tags if ds.get(k) not in (None, "")}
        return orjson.dumps(values).decode() if values else None

    def _stored(self, stored: Stored) -> None:
        for listener in self.listeners:
            listener(stored)


class Receipt:
    """One instance being written: bytes go to a temporary file, hashed as they come."""

    def __init__(self, ingest: Ingest, origin: Origin, expected: tuple[str, str] | None, study: str | None = None):
        self._ingest = ingest
        self._origin = origin
        self._expected = expected
        self._study = study
        self._spooled = ingest.blobs.temporary()
        self._hash = hashlib.sha256()
        self._size = 0
        self._head = bytearray()  # the first bytes, where the header is: parsed from memory
        self._open = True
        ingest.count_receipt(1)
        self._counted = True

    def write(self, chunk: bytes | memoryview) -> None:
        self._size += len(chunk)
        if self._size > self._ingest.max_bytes:
            self.abort()
            raise Refused(OUT_OF_RESOURCES, f"la instancia excede el tamaño máximo de {self._ingest.max_bytes} bytes")
        self._hash.update(chunk)
        if len(self._head) < HEAD_BYTES:
            self._head += chunk[: HEAD_BYTES - len(self._head)]
        self._spooled.write(chunk)

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self._ingest.count_receipt(-1)

    def abort(self) -> None:
        self._uncount()
        if self._open:
            self._open = False
            self._spooled.discard()

    def finish(self) -> Stored:
        """Make the instance durable and indexed, or refuse it leaving nothing stored.

        The header is checked first (a refusal costs no flush). Then the file's flush and
        rename, and the index commit, each wait on the disk: on local storage they run at the
        same time and success is answered only when both are done. A crash in between can
        leave an index row whose file never arrived; nothing was acknowledged, and when the
        sender sends again the duplicate check sees the file missing and stores it anew."""
        ingest = self._ingest
        alone = ingest.in_flight() <= 1
        try:
            # The last buffered bytes are written by the flush, unless the file must be read first.
            header = parse_header(self._spooled.path, self._size, self._head, before_reading=self._spooled.end)
            self._check(header)
            extra = ingest._extra(self._spooled)
            key = self._hash.hexdigest()
            self._open = False  # the temporary file is handed over
            if ingest.blobs.adopts_by_rename and ingest.blobs.keyring is None:
                flush_later = ingest.flushes_file_system
                if flush_later and not alone:
                    # Others are arriving: close and rename here. With the cores busy the
                    # hand-off to a flusher thread costs more CPU than the overlap saves.
                    ingest.make_durable(self._spooled, key, False)
                    stored = _index_or_discard(ingest, header, key, self._origin, extra)
                else:
                    moved = ingest.flusher.submit(ingest.make_durable, self._spooled, key, not flush_later)
                    stored = _index_then_wait(ingest, moved, header, key, self._origin, extra)
                if flush_later:
                    _flush_file_system(ingest, stored)
            else:
                ingest.make_durable(self._spooled, key)
                stored = _index_or_discard(ingest, header, key, self._origin, extra)
            if stored.blob_key != key:  # a duplicate kept as it was: the new bytes are not needed
                ingest.blobs.discard(key)
        except NotDicom as exc:
            self.abort()
            raise Refused(CANNOT_UNDERSTAND, str(exc)) from None
        except OSError as exc:  # disk full or failing, object store down or refusing: nothing indexed
            self.abort()
            raise Refused(OUT_OF_RESOURCES, f"no se pudo guardar la instancia: {exc}") from None
        except BaseException:
            self.abort()
            raise
        self._uncount()
        ingest._stored(stored)
        return stored

    def _check(self, header: Header) -> None:
        if self._study is not None and header.text("StudyInstanceUID") != self._study:
            raise Refused(DATASET_MISMATCH, "el StudyInstanceUID de la instancia no coincide con el estudio de la URL")
        if self._expected is None:
            return
        sop_class, sop_uid = self._expected
        if header.text("SOPInstanceUID") != sop_uid:
            raise Refused(DATASET_MISMATCH, "el SOPInstanceUID del conjunto de datos no coincide con el del comando C-STORE")
        if header.text("SOPClassUID") != sop_class:
            raise Refused(DATASET_MISMATCH, "la clase SOP del conjunto de datos no coincide con la del comando C-STORE")


def _index_or_discard(ingest: Ingest, header: Header, key: str, origin: Origin, extra: str | None, durable: Future | None = None) -> Stored:
    """Index the stored file; if the index refuses it, the file goes unless a row refers to it."""
    try:
        return ingest._index(header, key, origin, extra)
    except BaseException:
        if durable is not None and durable.exception() is not None:
            raise
        _discard_unless_indexed(ingest, header.text("SOPInstanceUID"), key)
        raise


def _discard_unless_indexed(ingest: Ingest, sop_uid: str, key: str) -> None:
    """Remove the blob ``key`` unless the index refers to it. The bytes carry their SOP Instance
    UID: only that instance's row can."""
    with ingest.engine.connect() as conn:
        existing = conn.execute(_EXISTING, {"b_uid": sop_uid}).first()
    if existing is None or existing.blob_key != key:
        ingest.blobs.discard(key)


def _index_then_wait(ingest: Ingest, durable: Future, header: Header, key: str, origin: Origin, extra: str | None) -> Stored:
    """Index while the file is flushed; a failed flush takes the index rows back."""
    stored = _index_or_discard(ingest, header, key, origin, extra, durable)
    try:
        durable.result()
    except BaseException:
        ingest._forget(stored)
        raise
    return stored


def _flush_file_system(ingest: Ingest, stored: Stored) -> None:
    """The one flush that makes the file, its directories and the index row durable; if it
    fails, nothing was made durable for sure: the index rows go and the sender is refused."""
    try:
        ingest.blobs.file_system_flush.flush()
    except OSError:
        ingest._forget(stored)
        _discard_unless_indexed(ingest, stored.sop_instance_uid, stored.blob_key)
        raise


def file_preamble(sop_class: str, sop_uid: str, syntax: str, calling_ae: str | None) -> bytes:
    """The 128-byte preamble, 'DICM' and the file meta group (PS3.10 7.1) for a dataset received
    over DIMSE. Encoded by hand: it is on every C-STORE's path and is eight short elements."""
    elements = [
        _meta_element(0x0001, b"OB", b"\x00\x01"),
        _meta_element(0x0002, b"UI", _uid(sop_class)),
        _meta_element(0x0003, b"UI", _uid(sop_uid)),
        _meta_element(0x0010, b"UI", _uid(syntax)),
        _meta_element(0x0012, b"UI", _uid(PYDICOM_IMPLEMENTATION_UID)),
        _meta_element(0x0013, b"SH", _text(IMPLEMENTATION_VERSION)),
    ]
    if calling_ae and calling_ae.strip():
        elements.append(_meta_element(0x0016, b"AE", _text(calling_ae.strip()[:16])))
    body = b"".join(elements)
    return b"\x00" * 128 + b"DICM" + _meta_element(0x0000, b"UL", struct.pack("<I", len(body))) + body


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":  # long form: 2 reserved bytes and a 4-byte length
        return struct.pack("<HH", 0x0002, element) + vr + b"\x00\x00" + struct.pack("<I", len(value)) + value
    return struct.pack("<HH", 0x0002, element) + vr + struct.pack("<H", len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    raw = value.encode("ascii", errors="replace")
    return raw + b" " if len(raw) % 2 else raw


# Built once: the per-instance statements are the hot path's SQL.
_EXISTING = sa.select(dicom_instance.c.study_uid, dicom_instance.c.series_uid, dicom_instance.c.blob_key).where(
    dicom_instance.c.sop_instance_uid == sa.bindparam("b_uid")
)
_COUNT_SERIES = (
    dicom_series.update().where(dicom_series.c.series_uid == sa.bindparam("b_series")).values(instance_count=dicom_series.c.instance_count + 1)
)
_UNCOUNT_SERIES = (
    dicom_series.update().where(dicom_series.c.series_uid == sa.bindparam("b_series")).values(instance_count=dicom_series.c.instance_count - 1)
)
_UNCOUNT_STUDY = dicom_study.update().where(dicom_study.c.study_uid == sa.bindparam("b_study")).values(instance_count=dicom_study.c.instance_count - 1)
_COUNT_STUDY = (
    dicom_study.update()
    .where(dicom_study.c.study_uid == sa.bindparam("b_study"))
    .values(
        instance_count=dicom_study.c.instance_count + 1,
        series_count=dicom_study.c.series_count + sa.bindparam("b_new_series", type_=sa.Integer),
        updated=sa.bindparam("b_at", type_=sa.DateTime),
    )
)
_INSERT_IGNORING: dict[tuple[str, str], sa.Insert] = {}


class _AlreadyIndexed(Exception):
    pass


def _insert_instance(dialect: sa.Dialect, row: dict) -> Prepared:
    """The instance's index row, skipped (row count 0) when its SOP Instance UID exists."""
    return prepare(dialect, _insert_ignoring(dialect.name, dicom_instance), tuple(row))


def _counts(dialect: sa.Dialect, row: dict, at: datetime, new_series: bool) -> tuple[tuple[Prepared, dict], ...]:
    """The series' and the study's counts for one more instance: what every stored instance runs
    after its row, on whichever connection wrote it."""
    return (
        (prepare(dialect, _COUNT_SERIES), {"b_series": row["series_uid"]}),
        (prepare(dialect, _COUNT_STUDY), {"b_study": row["study_uid"], "b_new_series": int(new_series), "b_at": at}),
    )


def _insert_ignoring(dialect_name: str, table: sa.Table) -> sa.Insert:
    """INSERT ... ON CONFLICT DO NOTHING for this database (rowcount 0: the row existed)."""
    key = (dialect_name, table.name)
    if key not in _INSERT_IGNORING:
        if dialect_name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        # preserve_rowcount: SQLAlchemy 2.1 with psycopg reports -1 for an INSERT otherwise.
        _INSERT_IGNORING[key] = insert(table).on_conflict_do_nothing().execution_options(preserve_rowcount=True)
    return _INSERT_IGNORING[key]


def _insert_ignoring_conflict(conn: sa.Connection, table: sa.Table, values: dict) -> bool:
    """True when the row was new."""
    return conn.execute(_insert_ignoring(conn.dialect.name, table), values).rowcount == 1


def _upsert_study(conn: sa.Connection, header: Header, origin: Origin, at: datetime) -> bool:
    text = header.text
    name = text("PatientName")
    new = _insert_ignoring_conflict(
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
    if new and (tokens := name_tokens(normalized_name(name)[:324])):  # for fuzzy name search
        conn.execute(dicom_study_name.insert(), [{"token": t, "study_uid": text("StudyInstanceUID")} for t in tokens])
    if new and (items := sequences.rows(text("StudyInstanceUID"), header.items, "study")):
        conn.execute(dicom_item.insert(), items)
    return new


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
    if new and (items := sequences.rows(text("SeriesInstanceUID"), header.items, "series")):
        conn.execute(dicom_item.insert(), items)
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
