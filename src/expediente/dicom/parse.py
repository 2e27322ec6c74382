"""Header-only parsing of a stored DICOM Part-10 file: the tags the index needs and where the
pixel data sits. Pixels are never decoded to ingest: parsing stops at Pixel Data, whose value
offset and length are read from its element header, so frames can be range-read later."""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID

from expediente.dicom import header_walk, sequences

UNDEFINED = 0xFFFFFFFF
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_LONG_VR = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_ITEM = 0xFFFEE000
_SEQUENCE_END = 0xFFFEE0DD
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


class NotDicom(ValueError):
    """The bytes are not a DICOM instance this archive can keep (the reason is Spanish)."""


@dataclass(frozen=True, slots=True)
class Header:
    values: dict[str, str]  # the indexed attributes (header_walk.WANTED) as DICOM strings
    items: dict[str, list[dict[str, str]]]  # the kept items of the indexed sequences (dicom/sequences.py)
    transfer_syntax: str
    pixel_offset: int | None  # where the Pixel Data value starts in the file
    pixel_length: int | None  # its length; -1 when encapsulated (compressed frames)
    frames: int
    size: int

    def text(self, keyword: str) -> str:
        return self.values.get(keyword, "")

    def number(self, keyword: str) -> int | None:
        value = self.values.get(keyword, "").split("\\")[0].strip()
        try:
            return int(float(value)) if value else None
        except (ValueError, OverflowError):
            return None


def valid_uid(value: str) -> bool:
    """A DICOM UID: digits and dots, no leading zeros, at most 64 characters (so never a path)."""
    return 0 < len(value) <= 64 and _UID.match(value) is not None


def parse_header(path: Path, size: int, head: bytes | bytearray = b"", before_reading: Callable[[], None] | None = None) -> Header:
    """Parse the Part-10 file at ``path`` (``size`` bytes) up to its Pixel Data. ``head``: the
    file's first bytes when the caller holds them; the file is opened only when they do not
    cover what must be read (the common case reads nothing from the disk), after
    ``before_reading`` (a writer finishing the file)."""
    with _Source(path, head, before_reading) as source:
        return _parse(source, size)


def _parse(source: _Source, size: int) -> Header:
    walked = walk_file(source.head, size)
    if walked is None:
        values, items, syntax, media_uid, pixel_at = _parse_with_pydicom(source.file())
    else:
        values, items, syntax, media_uid, pixel_at = walked
    if not syntax:
        raise NotDicom("falta la sintaxis de transferencia (0002,0010) en la cabecera del archivo")
    if not valid_uid(syntax):
        raise NotDicom(f"la sintaxis de transferencia no es un UID válido: {syntax[:70]!r}")
    encoding = _encoding(syntax)
    if encoding is None:  # its byte order and VR encoding are unknown
        raise NotDicom(f"sintaxis de transferencia desconocida: {syntax[:70]}")
    for keyword in REQUIRED_UIDS:
        value = values.get(keyword, "")
        if not value:
            raise NotDicom(f"falta el atributo obligatorio {keyword}")
        if not valid_uid(value):
            raise NotDicom(f"{keyword} no es un UID válido: {value[:70]!r}")
    if media_uid and media_uid != values["SOPInstanceUID"]:
        raise NotDicom("el SOPInstanceUID del conjunto de datos no coincide con el de la cabecera del archivo")
    offset, length = _pixel_value(source, pixel_at if pixel_at is not None else size, size, encoding)
    frames = values.get("NumberOfFrames", "1")
    return Header(values, items, syntax, offset, length, max(int(frames), 1) if frames.isdigit() else 1, size)


_WALKABLE_IMPLICIT = "1.2.840.10008.1.2"
_NOT_WALKABLE = {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"}  # big endian, deflate


def walk_file(head: bytes, size: int) -> tuple[dict[str, str], dict[str, list[dict[str, str]]], str, str, int | None] | None:
    """The fast path: file meta and dataset walked in memory (values, sequence items, transfer
    syntax, media SOP Instance UID, Pixel Data element offset); None to fall back to pydicom."""
    if len(head) < 144 or head[128:132] != b"DICM":
        return None
    meta = header_walk.walk_meta(head, 132)
    if meta is None:
        return None
    syntax, media_uid, dataset_at = meta
    if syntax in _NOT_WALKABLE or not syntax:
        return None
    walked = header_walk.walk(head, dataset_at, syntax == _WALKABLE_IMPLICIT)
    if walked is None:
        return None
    values, items, pixel_at = walked
    if pixel_at is None and len(head) < size:
        return None  # the header goes on past what we hold
    return values, items, syntax, media_uid, pixel_at


def _parse_with_pydicom(f: BinaryIO) -> tuple[dict[str, str], dict[str, list[dict[str, str]]], str, str, int | None]:
    f.seek(0)
    try:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        pixel_at = f.tell()
        values = {}
        for keyword in header_walk.WANTED.values():
            value = ds.get(keyword)
            if value is None:
                continue
            text = ("\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)).strip()
            if keyword in ("PatientName", "ReferringPhysicianName"):
                text = text.rstrip("=^")  # as the fast walk keeps names
            if text:
                values[keyword] = text
        items = sequences.items_of_dataset(ds)
        # Inside the try: a damaged file meta element (an unknown VR) fails when it is read.
        meta = getattr(ds, "file_meta", None)
        syntax = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
        media_uid = str(meta.get("MediaStorageSOPInstanceUID", "") or "") if meta is not None else ""
    except InvalidDicomError:
        raise NotDicom("no es un archivo DICOM Part 10: faltan el preámbulo con 'DICM' y la metainformación del archivo (grupo 0002)") from None
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: pydicom fails in many ways (BytesLengthException...)
        raise NotDicom(f"no es un archivo DICOM válido: {_short(exc)}") from None
    return values, items, syntax, media_uid, pixel_at


@dataclass(frozen=True, slots=True)
class _Encoding:
    little: bool
    implicit: bool
    deflated: bool


@functools.lru_cache(maxsize=64)
def _encoding(syntax: str) -> _Encoding | None:
    """How a transfer syntax encodes the data set; None when it is not a known one. Asked once
    a syntax: pydicom's UID builds and validates an object on each use."""
    uid = UID(syntax)
    if not uid.is_transfer_syntax:
        return None
    return _Encoding(uid.is_little_endian, uid.is_implicit_VR, uid.is_deflated)


def _pixel_value(source: _Source, at: int, size: int, syntax: _Encoding) -> tuple[int | None, int | None]:
    """Offset and length of the Pixel Data value, checking the file holds all of it."""
    if at >= size:
        return None, None
    if syntax.deflated:
        return None, None  # the dataset is compressed as a whole: no byte offsets
    head = source.read(at, 12)
    little = syntax.little
    tag_format = "<HH" if little else ">HH"
    if len(head) < 8:
        raise NotDicom("el archivo está truncado en el elemento Pixel Data")
    group, element = struct.unpack(tag_format, head[:4])
    if (group, element) != (0x7FE0, 0x0010):
        return None, None  # something after the pixels' place but no Pixel Data
    if syntax.implicit:
        (length,), value_at = struct.unpack("<I" if little else ">I", head[4:8]), at + 8
    elif head[4:6] in _LONG_VR:
        if len(head) < 12:
            raise NotDicom("el archivo está truncado en el elemento Pixel Data")
        (length,), value_at = struct.unpack("<I" if little else ">I", head[8:12]), at + 12
    else:
        (length,), value_at = struct.unpack("<H" if little else ">H", head[6:8]), at + 8
    if length == UNDEFINED:
        _check_fragments(source.file(), value_at, size)
        return value_at, -1
    if value_at + length > size:
        raise NotDicom(f"el archivo está truncado: Pixel Data declara {length} bytes y faltan {value_at + length - size}")
    return value_at, length


def _check_fragments(f: BinaryIO, at: int, size: int) -> None:
    """Walk the item headers of encapsulated pixel data (without reading the frames) up to the
    sequence delimiter: a truncated compressed instance is refused, not half-kept."""
    position = at
    while position + 8 <= size:
        f.seek(position)
        tag, length = struct.unpack("<II", f.read(8))
        tag = (tag & 0xFFFF) << 16 | tag >> 16  # (group, element) read as one little-endian word each
        if tag == _SEQUENCE_END:
            return
        if tag != _ITEM:
            raise NotDicom("los fragmentos de Pixel Data encapsulados están dañados")
        position += 8 + length
    raise NotDicom("el archivo está truncado: faltan fragmentos de Pixel Data encapsulados")


class _Source:
    """A file's bytes: from the head held in memory where it covers them, else from the file
    (opened once, when first needed)."""

    def __init__(self, path: Path, head: bytes, before_reading: Callable[[], None] | None):
        self.path = path
        self.head = head
        self._before_reading = before_reading
        self._file: BinaryIO | None = None

    def read(self, at: int, n: int) -> bytes:
        if at + n <= len(self.head):
            return bytes(self.head[at : at + n])
        f = self.file()
        f.seek(at)
        return f.read(n)

    def file(self) -> BinaryIO:
        if self._file is None:
            if self._before_reading is not None:
                self._before_reading()
            self._file = open(self.path, "rb", buffering=64 * 1024)
        return self._file

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text[:160]
