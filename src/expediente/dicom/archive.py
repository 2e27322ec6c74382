"""The imaging archive's facade: what DIMSE and DICOMweb call to store, find and read.

The front ends know their protocols and nothing of SQL or files; the archive knows the index
and the blob store and nothing of protocols. Who may see a study is a ``Scope``: the calling
AE's institution for DIMSE, the access policy's row rule for DICOMweb.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import sqlalchemy as sa

from expediente.blobs import fs_flush, make_blob_store
from expediente.config import Settings
from expediente.db.engine import make_engine
from expediente.db.schema import dicom_instance, dicom_study
from expediente.dicom.ingest import Ingest, Origin, Receipt, Refused, Stored

StudyCondition = Callable[[sa.Table], sa.ColumnElement[bool] | None]


@dataclass(frozen=True, slots=True)
class Scope:
    """Which studies a caller may see: ``institution`` (a CLUES: the studies it sent) and/or
    ``condition`` (an SQL condition on dicom_study, e.g. the access policy's row rule)."""

    institution: str | None = None
    condition: StudyCondition | None = None

    def where(self, study: sa.Table = dicom_study) -> sa.ColumnElement[bool] | None:
        parts = []
        if self.institution:
            parts.append(study.c.institution == self.institution)
        if self.condition is not None and (cond := self.condition(study)) is not None:
            parts.append(cond)
        return sa.and_(*parts) if parts else None


EVERYTHING = Scope()


@dataclass(frozen=True, slots=True)
class InstanceRef:
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    blob_key: str
    size: int
    pixel_offset: int | None
    pixel_length: int | None
    number_of_frames: int
    rows: int | None = None
    columns: int | None = None


_REF_COLUMNS = (
    dicom_instance.c.study_uid,
    dicom_instance.c.series_uid,
    dicom_instance.c.sop_instance_uid,
    dicom_instance.c.sop_class_uid,
    dicom_instance.c.transfer_syntax,
    dicom_instance.c.blob_key,
    dicom_instance.c.size,
    dicom_instance.c.pixel_offset,
    dicom_instance.c.pixel_length,
    dicom_instance.c.frames,
    dicom_instance.c.rows,
    dicom_instance.c.columns,
)


def instance_query(columns, *, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None, scope: Scope) -> sa.Select:
    """``columns`` of a study's instances (or one series', or one instance) the scope may see,
    in series and instance-number order."""
    query = (
        sa.select(*columns)
        .select_from(dicom_instance.join(dicom_study, dicom_study.c.study_uid == dicom_instance.c.study_uid))
        .where(dicom_instance.c.study_uid == study_uid)
    )
    if series_uid is not None:
        query = query.where(dicom_instance.c.series_uid == series_uid)
    if sop_uid is not None:
        query = query.where(dicom_instance.c.sop_instance_uid == sop_uid)
    if (cond := scope.where()) is not None:
        query = query.where(cond)
    return query.order_by(dicom_instance.c.series_uid, dicom_instance.c.instance_number, dicom_instance.c.sop_instance_uid)


@functools.cache
def _unscoped_lookup(by_series: bool, by_sop: bool) -> sa.Select:
    """The lookup of an unrestricted caller, built once with bound parameters: a viewer's
    first request pays no statement building nor cache-key walk."""
    query = instance_query(
        (*_REF_COLUMNS, dicom_study.c.patient_key),
        study_uid=sa.bindparam("b_study"),
        series_uid=sa.bindparam("b_series") if by_series else None,
        sop_uid=sa.bindparam("b_sop") if by_sop else None,
        scope=EVERYTHING,
    )
    return query


def _index_engine(engine: sa.Engine, blobs, settings: Settings) -> sa.Engine | None:
    """The ingest's own SQLite engine whose commits skip their fsync, where the file-system
    flush that makes each instance durable also covers the database (same file system);
    None: the ingest writes through ``engine``."""
    if engine.dialect.name != "sqlite" or blobs.file_system_flush is None or settings.database_url:
        return None
    if not fs_flush.same_file_system(settings.data_dir, blobs.root):
        return None
    return make_engine(settings, sqlite_synchronous="NORMAL")


class Archive:
    def __init__(self, engine: sa.Engine, blobs, settings: Settings, reader: sa.Engine | None = None):
        self.engine = engine
        self.reader = reader or engine
        self.blobs = blobs
        self.settings = settings
        extra = tuple(t.strip() for t in settings.dicom_extra_tags.split(",") if t.strip())
        self._index_engine = _index_engine(engine, blobs, settings)
        self.ingest = Ingest(
            self._index_engine or engine, blobs, duplicates=settings.dicom_duplicates, max_bytes=settings.dicom_max_instance_bytes, extra_tags=extra
        )

    @classmethod
    def build(cls, settings: Settings) -> Archive:
        """An archive with its own engine and blob store (a receiving process after fork)."""
        return cls(make_engine(settings), make_blob_store(settings), settings)

    def close(self) -> None:
        self.ingest.close()
        self.engine.dispose()
        if self._index_engine is not None:
            self._index_engine.dispose()

    # ------------------------------------------------------------------ storing

    def begin_store(self, *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, origin: Origin) -> Receipt:
        return self.ingest.begin(sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid, transfer_syntax=transfer_syntax, origin=origin)

    def store_file(self, data: bytes | BinaryIO, *, origin: Origin) -> Stored:
        return self.ingest.store_file(data, origin=origin)

    def begin_file(self, *, origin: Origin, study_uid: str | None = None) -> Receipt:
        """A whole Part-10 file written in pieces as it arrives (STOW-RS), optionally of one study."""
        return self.ingest.begin_file(origin=origin, study_uid=study_uid)

    # ------------------------------------------------------------------ finding

    def find(self, level: str, keys: dict, *, scope: Scope, limit: int | None = None, offset: int = 0, fuzzy: bool = False) -> list[dict]:
        from expediente.dicom import query

        with self.reader.connect() as conn:
            return query.find(conn, level, keys, scope=scope, limit=limit, offset=offset, fuzzy=fuzzy)

    def instances(self, *, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None, scope: Scope = EVERYTHING) -> list[InstanceRef]:
        """The instances of a study (or of one series, or one instance) the scope may see, in
        series and instance-number order."""
        query = instance_query(_REF_COLUMNS, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid, scope=scope)
        with self.reader.connect() as conn:
            return [InstanceRef(*row) for row in conn.execute(query)]

    def lookup(self, *, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None, scope: Scope = EVERYTHING) -> tuple[list[InstanceRef], str | None]:
        """``instances`` and the study's patient key (unscoped: what the audit trail records,
        also when the scope hides the study), in one query when something is visible."""
        params = {"b_study": study_uid, "b_series": series_uid, "b_sop": sop_uid}
        if scope.where() is None:
            query = _unscoped_lookup(series_uid is not None, sop_uid is not None)
        else:
            query = instance_query((*_REF_COLUMNS, dicom_study.c.patient_key), study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid, scope=scope)
        with self.reader.connect() as conn:
            rows = conn.execute(query, {k: v for k, v in params.items() if v is not None}).all()
            if rows:
                return [InstanceRef(*row[:-1]) for row in rows], rows[0][-1]
            patient = conn.execute(sa.select(dicom_study.c.patient_key).where(dicom_study.c.study_uid == study_uid)).scalar()
        return [], patient

    def read(self, ref: InstanceRef, start: int = 0, end: int | None = None) -> bytes:
        """The stored Part-10 bytes (or a byte range of them), exactly as received."""
        return self.blobs.get(ref.blob_key, start, end)


__all__ = ["EVERYTHING", "Archive", "InstanceRef", "Origin", "Receipt", "Refused", "Scope", "Stored"]
