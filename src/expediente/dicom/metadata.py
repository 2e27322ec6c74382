"""DICOM JSON metadata (PS3.18 F.2) of each instance, built once and kept in the index.

Building it (pydicom's JSON encoder) costs a few milliseconds an instance, more than the rest of
a C-STORE: so it is not on the acknowledgement path. Right after instances are stored, the
study follower (``follower.py``) fills it in; a request that arrives first builds what is
missing itself.
A series' metadata is then the stored fragments joined, with no parsing. Bulk data (Pixel Data
and large binary values) appear as BulkDataURI, relative to the DICOMweb base: the placeholder
``BASE_MARK`` is replaced by the server's base URL when served.
"""

from __future__ import annotations

import io
import logging

import orjson
import pydicom
import sqlalchemy as sa

from expediente.db.engine import write_transaction
from expediente.db.schema import dicom_instance

log = logging.getLogger("expediente.dicom")

BASE_MARK = b"@DICOMWEB@"
BULK_THRESHOLD = 1024
_COLUMNS = (
    dicom_instance.c.sop_instance_uid,
    dicom_instance.c.series_uid,
    dicom_instance.c.study_uid,
    dicom_instance.c.blob_key,
    dicom_instance.c.pixel_offset,
    dicom_instance.c.size,
    dicom_instance.c.transfer_syntax,
)


def instance_path(study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"{BASE_MARK.decode()}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


def build_instance_json(header: bytes, row) -> bytes:
    """The instance's DICOM JSON from its header bytes (the file up to Pixel Data)."""
    ds = pydicom.dcmread(io.BytesIO(header), stop_before_pixels=True)
    base = instance_path(row.study_uid, row.series_uid, row.sop_instance_uid)

    def bulk(element) -> str:
        return f"{base}/bulkdata/{element.tag:08X}"

    doc = ds.to_json_dict(bulk_data_threshold=BULK_THRESHOLD, bulk_data_element_handler=bulk)
    doc["00020010"] = {"vr": "UI", "Value": [row.transfer_syntax]}  # what WADO-RS serves by default
    if row.pixel_offset is not None:
        vr = "OB" if row.transfer_syntax not in _NATIVE or ds.get("BitsAllocated", 16) <= 8 else "OW"
        doc["7FE00010"] = {"vr": vr, "BulkDataURI": f"{base}/bulkdata/7FE00010"}
    return orjson.dumps(doc)


_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def fill(engine: sa.Engine, blobs, where: sa.ColumnElement[bool] | None = None, limit: int = 500) -> int:
    """Build the missing metadata of up to ``limit`` instances (those matching ``where``)."""
    query = sa.select(*_COLUMNS).where(dicom_instance.c.metadata.is_(None))
    if where is not None:
        query = query.where(where)
    with engine.connect() as conn:
        rows = conn.execute(query.limit(limit)).all()
    if not rows:
        return 0
    built = []
    for row in rows:
        try:
            header = blobs.get(row.blob_key, 0, row.pixel_offset if row.pixel_offset is not None else row.size)
            built.append({"uid": row.sop_instance_uid, "doc": build_instance_json(header, row)})
        except Exception:  # one unreadable instance must not stop the others; it stays NULL
            log.exception("metadata of instance %s could not be built", row.sop_instance_uid)
    if built:
        with write_transaction(engine) as conn:
            conn.execute(
                dicom_instance.update().where(dicom_instance.c.sop_instance_uid == sa.bindparam("uid")).values(metadata=sa.bindparam("doc")),
                built,
            )
    return len(built)


def fill_studies(engine: sa.Engine, blobs, study_uids: list[str]) -> int:
    """Build whatever metadata these studies still miss (the follower's handler)."""
    done = 0
    for uid in study_uids:
        while built := fill(engine, blobs, dicom_instance.c.study_uid == uid):
            done += built
    return done
