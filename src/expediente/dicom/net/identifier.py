"""C-FIND/MOVE/GET identifiers: decoded and encoded with pydicom (off the C-STORE hot path)."""

from __future__ import annotations

import struct
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pynetdicom.dsutils import decode, encode

from expediente.dicom.net.association import EXPLICIT_BE, IMPLICIT_LE

UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
ORDER = ("PATIENT", "STUDY", "SERIES", "IMAGE")


class BadIdentifier(ValueError):
    pass


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(_text(v) for v in value)
    return str(value)


def _keys(ds: Dataset) -> dict:
    keys: dict = {}
    for elem in ds:
        if not elem.keyword or elem.tag.group in (0x0000, 0x0002) or elem.tag.is_private:
            continue
        if elem.VR == "SQ":
            keys[elem.keyword] = [_keys(item) for item in elem.value]
        else:
            keys[elem.keyword] = _text(elem.value)
    return keys


def decode_identifier(data: bytes, transfer_syntax: str) -> tuple[str, dict]:
    """(QueryRetrieveLevel, keys keyword -> match value) of an identifier."""
    try:
        ds = decode(BytesIO(bytes(data)), transfer_syntax == IMPLICIT_LE, transfer_syntax != EXPLICIT_BE)
        keys = _keys(ds)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the peer's malformed identifier
        raise BadIdentifier(f"identificador ilegible: {str(exc)[:120]}") from None
    level = keys.pop("QueryRetrieveLevel", "").strip().upper()
    keys.pop("SpecificCharacterSet", None)
    if level not in UNIQUE:
        raise BadIdentifier(f"QueryRetrieveLevel inválido: {level[:16]!r} (PATIENT, STUDY, SERIES o IMAGE)")
    return level, keys


def encode_identifier(answer: dict, level: str, transfer_syntax: str, *, requested: dict, ae_title: str) -> bytes:
    """A C-FIND response identifier: the requested keys and the unique keys down to ``level``."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = level
    wanted = set(requested) | {UNIQUE[lv] for lv in ORDER[: ORDER.index(level) + 1]}
    for keyword in sorted(wanted):
        if keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        if keyword == "RetrieveAETitle":
            ds.RetrieveAETitle = ae_title
            continue
        value = answer.get(keyword)
        if keyword not in answer and keyword not in requested:
            continue
        if isinstance(value, list):
            setattr(ds, keyword, Sequence([_item(i) for i in value]))
        elif value is None or value == "":
            setattr(ds, keyword, None)
        else:
            setattr(ds, keyword, value)
    return encode(ds, transfer_syntax == IMPLICIT_LE, transfer_syntax != EXPLICIT_BE)


def _item(values: dict) -> Dataset:
    """A matching sequence item: its requested attributes (empty ones present, zero length)."""
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value if value != "" else None)
    return item


def dataset_of(part10: bytes) -> memoryview:
    """The data set of a stored Part-10 file (what a C-STORE sends), without its file meta."""
    view = memoryview(part10)
    pos = 132
    if bytes(view[128:132]) != b"DICM":
        raise ValueError("no es un archivo Part-10")
    if bytes(view[pos : pos + 6]) == b"\x02\x00\x00\x00UL":
        (length,) = struct.unpack_from("<I", view, pos + 8)
        return view[pos + 12 + length :]
    while bytes(view[pos : pos + 2]) == b"\x02\x00":  # no group length: walk the meta elements
        vr = bytes(view[pos + 4 : pos + 6])
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR"):
            (length,) = struct.unpack_from("<I", view, pos + 8)
            pos += 12 + length
        else:
            (length,) = struct.unpack_from("<H", view, pos + 6)
            pos += 8 + length
    return view[pos:]
