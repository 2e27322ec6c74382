"""What WADO-RS reads besides the instances' bytes: whose studies they are (for the audit trail),
the pre-built metadata fragments, and where each frame's bytes lie in a stored file.

Frames are read without decoding: native pixel data is one fixed-size slice per frame (a byte
range from the Pixel Data offset); encapsulated pixel data is walked item by item (8-byte item
headers, never the fragments themselves) and each frame is the fragments the Basic or Extended
Offset Table, or the codestream markers, assign to it.
"""

from __future__ import annotations

import io
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass

import pydicom
import sqlalchemy as sa

from expediente.db.schema import dicom_instance, dicom_study
from expediente.dicom.archive import Archive, InstanceRef, Scope, instance_query
from expediente.dicom.metadata import BASE_MARK, fill_studies
from expediente.dicom.parse import walk_file

_ITEM, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE0DD
# First bytes of a frame's codestream: JPEG (SOI), JPEG 2000 (SOC), JP2 signature box.
_FRAME_STARTS = (b"\xff\xd8", b"\xff\x4f", b"\x00\x00\x00\x0c")


class FrameError(ValueError):
    """A frame or bulk value that cannot be served (Spanish reason)."""


def study_patients(archive: Archive, study_uids: list[str]) -> dict[str, str | None]:
    """The patient key of each existing study (unscoped: what the audit trail records)."""
    if not study_uids:
        return {}
    query = sa.select(dicom_study.c.study_uid, dicom_study.c.patient_key).where(dicom_study.c.study_uid.in_(study_uids))
    with archive.reader.connect() as conn:
        return {r.study_uid: r.patient_key for r in conn.execute(query)}


def metadata(archive: Archive, base: str, *, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None, scope: Scope) -> bytes:
    """The DICOM JSON array of the instances (joined stored fragments, bulk data URIs under
    ``base``), building fragments still missing. Empty array when none is visible."""
    fragments = _fragments(archive, study_uid, series_uid, sop_uid, scope)
    if any(f is None for f in fragments):
        fill_studies(archive.engine, archive.blobs, [study_uid])
        fragments = _fragments(archive, study_uid, series_uid, sop_uid, scope, primary=True)
    joined = b"[" + b",".join(f for f in fragments if f is not None) + b"]"
    return joined.replace(BASE_MARK, base.encode())


def _fragments(archive: Archive, study_uid, series_uid, sop_uid, scope: Scope, primary: bool = False) -> list[bytes | None]:
    query = instance_query((dicom_instance.c.metadata,), study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid, scope=scope)
    with (archive.engine if primary else archive.reader).connect() as conn:
        return [_as_bytes(r[0]) for r in conn.execute(query)]


def _as_bytes(value) -> bytes | None:
    if value is None:
        return None
    return value.encode() if isinstance(value, str) else bytes(value)


# ---------------------------------------------------------------------------------- header


def header(archive: Archive, ref: InstanceRef) -> pydicom.Dataset:
    """The instance's data set up to Pixel Data (parsed once per stored file, then cached)."""
    key = ("header", ref.blob_key)
    if (cached := _CACHE.get(key)) is not None:
        return cached
    ds = _read_header(archive, ref)
    _CACHE.put(key, ds)
    return ds


def _read_header(archive: Archive, ref: InstanceRef) -> pydicom.Dataset:
    end = ref.pixel_offset if ref.pixel_offset is not None else ref.size
    try:
        return pydicom.dcmread(io.BytesIO(archive.read(ref, 0, end)), stop_before_pixels=True, force=True)
    except Exception as exc:  # noqa: BLE001 - a header pydicom cannot read is reported, never a 500
        raise FrameError(f"la cabecera de la instancia no se puede leer ({type(exc).__name__})") from None


def bulk_value(archive: Archive, ref: InstanceRef, tag: int) -> bytes | None:
    """The value bytes, as stored, of a bulk element other than Pixel Data: the first one with
    this tag, top level first, then inside sequences. None when there is none."""
    return _raw_value(_read_header(archive, ref), tag)


def _raw_value(ds: pydicom.Dataset, tag: int) -> bytes | None:
    raw = ds.get_item(tag)
    if raw is not None:
        return raw.value if isinstance(raw.value, (bytes, bytearray)) else None
    for element in ds.elements():
        if element.tag != tag and (element.VR or ds[element.tag].VR) == "SQ":
            for item in ds[element.tag].value or ():
                if (hit := _raw_value(item, tag)) is not None:
                    return hit
    return None


# ---------------------------------------------------------------------------------- frames


@dataclass(frozen=True, slots=True)
class Frame:
    spans: tuple[tuple[int, int], ...]  # byte ranges [start, end) of the stored file
    bit_offset: int = 0  # native 1-bit frames that do not start on a byte
    bits: int = 0


def frames(archive: Archive, ref: InstanceRef) -> list[Frame]:
    """Where every frame of the instance lies in its stored file."""
    if ref.pixel_offset is None:
        raise FrameError("la instancia no tiene datos de píxeles (Pixel Data) con cuadros direccionables")
    key = ("frames", ref.blob_key)
    if (cached := _CACHE.get(key)) is not None:
        return cached
    result = _encapsulated(archive, ref) if ref.pixel_length == -1 else _native(archive, ref)
    _CACHE.put(key, result)
    return result


def read_frame(archive: Archive, ref: InstanceRef, frame: Frame) -> bytes:
    data = b"".join(archive.read(ref, start, end) for start, end in frame.spans)
    if frame.bits:
        import numpy as np

        bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[frame.bit_offset : frame.bit_offset + frame.bits]
        data = np.packbits(bits, bitorder="little").tobytes()
    return data


def _native(archive: Archive, ref: InstanceRef) -> list[Frame]:
    rows, columns, samples, bits = _geometry(archive, ref)
    count = ref.number_of_frames or 1
    frame_bits = rows * columns * samples * bits
    if frame_bits * count > ref.pixel_length * 8 or frame_bits == 0:
        raise FrameError("Pixel Data es más corto que los cuadros que declara la instancia")
    out = []
    for n in range(count):
        first_bit = n * frame_bits
        start = ref.pixel_offset + first_bit // 8
        if frame_bits % 8 == 0 and first_bit % 8 == 0:
            out.append(Frame(((start, start + frame_bits // 8),)))
        else:
            end = ref.pixel_offset + -(-(first_bit + frame_bits) // 8)
            out.append(Frame(((start, end),), bit_offset=first_bit % 8, bits=frame_bits))
    return out


def _geometry(archive: Archive, ref: InstanceRef) -> tuple[int, int, int, int]:
    """Rows, Columns, SamplesPerPixel and BitsAllocated: from the fast header walk (a viewer's
    first frame should not wait ~0.4 ms for pydicom), from pydicom where the walk declines."""
    walked = walk_file(archive.read(ref, 0, ref.pixel_offset), ref.pixel_offset)
    if walked is not None and (dimensions := _dimensions(walked[0])) is not None:
        return dimensions
    ds = header(archive, ref)
    if (dimensions := _dimensions({k: ds.get(k) for k in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated")})) is None:
        raise FrameError("faltan Rows, Columns o BitsAllocated: no se pueden separar los cuadros")
    return dimensions


def _dimensions(values: dict) -> tuple[int, int, int, int] | None:
    try:
        return int(values["Rows"]), int(values["Columns"]), int(values.get("SamplesPerPixel") or 1), int(values["BitsAllocated"])
    except (KeyError, TypeError, ValueError):
        return None


def _items(archive: Archive, ref: InstanceRef) -> list[tuple[int, int]]:
    """(value offset, length) of every item of the encapsulated Pixel Data, BOT first."""
    items, at = [], ref.pixel_offset
    while at + 8 <= ref.size:
        group, element, length = struct.unpack("<HHI", archive.read(ref, at, at + 8))
        tag = group << 16 | element
        if tag == _SEQUENCE_END:
            return items
        if tag != _ITEM or at + 8 + length > ref.size:
            break
        items.append((at + 8, length))
        at += 8 + length
    raise FrameError("los fragmentos de Pixel Data encapsulados están dañados")


def _encapsulated(archive: Archive, ref: InstanceRef) -> list[Frame]:
    items = _items(archive, ref)
    if not items:
        raise FrameError("Pixel Data encapsulado sin tabla de desplazamientos")
    (bot_at, bot_length), fragments = items[0], items[1:]
    count = ref.number_of_frames or 1
    if not fragments:
        raise FrameError("Pixel Data encapsulado sin fragmentos")
    base = fragments[0][0] - 8  # offsets count from the first fragment's item tag
    starts = None
    ds = header(archive, ref)
    if bot_length >= 4 * count and bot_length:
        raw = archive.read(ref, bot_at, bot_at + bot_length)
        starts = list(struct.unpack(f"<{bot_length // 4}I", raw))[:count]
    elif 0x7FE00001 in ds:  # Extended Offset Table (uint64 offsets)
        raw = bytes(ds[0x7FE00001].value)
        starts = list(struct.unpack(f"<{len(raw) // 8}Q", raw))[:count]
    if starts is not None and len(starts) == count:
        bounds = starts + [1 << 62]
        spans = [tuple((v, v + n) for v, n in fragments if bounds[i] <= v - 8 - base < bounds[i + 1]) for i in range(count)]
    elif count == 1:
        spans = [tuple((v, v + n) for v, n in fragments)]
    elif len(fragments) == count:
        spans = [((v, v + n),) for v, n in fragments]
    else:  # no table and more fragments than frames: a frame starts where a codestream does
        spans = []
        for v, n in fragments:
            if archive.read(ref, v, v + 4).startswith(_FRAME_STARTS) or not spans:
                spans.append([])
            spans[-1].append((v, v + n))
        spans = [tuple(s) for s in spans]
    if len(spans) != count or any(not s for s in spans):
        raise FrameError(f"no se pudieron delimitar los {count} cuadros en los fragmentos de Pixel Data")
    return [Frame(s) for s in spans]


class _LRU:
    def __init__(self, size: int):
        self._size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return None

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


# Keyed by the stored file's content address: a cached entry can never describe other bytes.
_CACHE = _LRU(512)
