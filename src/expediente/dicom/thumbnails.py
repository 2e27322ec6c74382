"""Thumbnails of studies, series, instances and frames, rendered once and kept.

A thumbnail is a blob (encrypted at rest like the instance) recorded in ``dicom_thumbnail``
under the instance file's SHA-256, the frame, the box size and the media type, so a prior's
preview is served without reading or decoding the instance. ``prepare`` is the priors'
preparer: when a new study or order arrives for a patient, the previews of their earlier
studies are made before anyone asks.

A series is shown by its middle image instance, a study by its first series (lowest series
number); a multi-frame instance by its middle frame.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import sqlalchemy as sa
from pydicom.dataset import Dataset

from expediente.blobs.local import BlobNotFound
from expediente.db.engine import write_transaction
from expediente.db.schema import dicom_series, dicom_thumbnail
from expediente.dicom.archive import EVERYTHING, Archive, InstanceRef, Scope
from expediente.dicom.render import THUMBNAIL_SIZE, frame_dataset, thumbnail

log = logging.getLogger("expediente.dicom")


def _is_image(ref: InstanceRef) -> bool:
    return ref.rows is not None and ref.pixel_offset is not None


def frame_source(archive: Archive, ref: InstanceRef, frame: int) -> tuple[bytes | Dataset, int]:
    """What to render ``frame`` of ``ref`` from, and the frame number in it: for a native
    multi-frame instance the header and that frame's bytes only (a 300-frame enhanced CT is not
    read whole for one frame), else the whole file."""
    if ref.number_of_frames > 1 and ref.pixel_offset and ref.pixel_length not in (None, -1):
        found = frame_dataset(archive.read(ref, 0, ref.pixel_offset), frame, lambda start, end: archive.read(ref, start, end))
        if found is not None:
            return found, 1
    return archive.read(ref), frame


def middle(refs: list[InstanceRef]) -> InstanceRef | None:
    """The representative image of a series' instances (given in instance-number order)."""
    images = [r for r in refs if _is_image(r)]
    return images[(len(images) - 1) // 2] if images else None


class Thumbnails:
    def __init__(self, archive: Archive):
        self.archive = archive

    # ------------------------------------------------------------------ choosing

    def series_order(self, study_uid: str) -> list[str]:
        with self.archive.reader.connect() as conn:
            rows = conn.execute(sa.select(dicom_series.c.series_uid, dicom_series.c.series_number).where(dicom_series.c.study_uid == study_uid)).all()
        return [uid for uid, _ in sorted(rows, key=lambda r: (r.series_number is None, r.series_number or 0, r.series_uid))]

    def representative(self, refs: list[InstanceRef], study_uid: str) -> InstanceRef | None:
        """The instance that shows ``refs`` (a study's, a series' or one instance)."""
        by_series: dict[str, list[InstanceRef]] = {}
        for ref in refs:
            by_series.setdefault(ref.series_uid, []).append(ref)
        if len(by_series) <= 1:
            return middle(refs)
        for series_uid in [*self.series_order(study_uid), *sorted(by_series)]:
            if series_uid in by_series and (found := middle(by_series[series_uid])) is not None:
                return found
        return None

    # ------------------------------------------------------------------ serving

    def get(self, ref: InstanceRef, *, frame: int | None = None, size: int = THUMBNAIL_SIZE, media_type: str = "image/jpeg") -> bytes:
        """The thumbnail of ``ref`` (its middle frame unless ``frame``), from the cache or made
        now and kept. Raises RenderError when the instance cannot be rendered."""
        frame = frame or (max(ref.number_of_frames, 1) + 1) // 2
        key = (dicom_thumbnail.c.instance_key == ref.blob_key) & (dicom_thumbnail.c.frame == frame) & (dicom_thumbnail.c.size == size) & (dicom_thumbnail.c.media_type == media_type)
        with self.archive.engine.connect() as conn:
            cached = conn.execute(sa.select(dicom_thumbnail.c.blob_key).where(key)).scalar()
        if cached is not None:
            try:
                return self.archive.blobs.get(cached)
            except BlobNotFound:
                log.warning("thumbnail blob %s missing; rendering again", cached)
        source, number = frame_source(self.archive, ref, frame)
        data = thumbnail(source, size=size, content_type=media_type, frame=number)
        blob = self.archive.blobs.put(data)
        try:
            with write_transaction(self.archive.engine) as conn:
                conn.execute(sa.delete(dicom_thumbnail).where(key))
                conn.execute(
                    dicom_thumbnail.insert().values(
                        instance_key=ref.blob_key, frame=frame, size=size, media_type=media_type, blob_key=blob, created=datetime.now(UTC).replace(tzinfo=None)
                    )
                )
        except sa.exc.IntegrityError:
            pass  # another request kept the same thumbnail first
        return data

    def is_cached(self, ref: InstanceRef, size: int = THUMBNAIL_SIZE, media_type: str = "image/jpeg") -> bool:
        frame = (max(ref.number_of_frames, 1) + 1) // 2
        with self.archive.engine.connect() as conn:
            query = sa.select(sa.func.count()).where(
                dicom_thumbnail.c.instance_key == ref.blob_key, dicom_thumbnail.c.frame == frame, dicom_thumbnail.c.size == size, dicom_thumbnail.c.media_type == media_type
            )
            return bool(conn.execute(query).scalar())

    # ------------------------------------------------------------------ priors

    def prepare(self, study_uids: list[str], scope: Scope = EVERYTHING) -> int:
        """Make the thumbnails of these studies and of each of their series; how many were
        made or found. A study that cannot be rendered is logged, never stops the rest."""
        done = 0
        for study_uid in study_uids:
            try:
                refs = self.archive.instances(study_uid=study_uid, scope=scope)
                by_series: dict[str, list[InstanceRef]] = {}
                for ref in refs:
                    by_series.setdefault(ref.series_uid, []).append(ref)
                chosen = {r for r in (middle(s) for s in by_series.values()) if r is not None}
                for ref in chosen:  # the study's own thumbnail is one of its series'
                    try:
                        self.get(ref)
                        done += 1
                    except Exception:  # noqa: BLE001 - one bad instance must not stop the priors
                        log.warning("thumbnail of instance %s could not be made", ref.sop_instance_uid, exc_info=True)
            except Exception:  # noqa: BLE001
                log.exception("thumbnails of study %s could not be prepared", study_uid)
        return done


__all__ = ["Thumbnails", "middle"]
