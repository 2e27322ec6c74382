"""Content negotiation of WADO-RS (PS3.18 8.7): the Accept header's media types, their
``type`` and ``transfer-syntax`` parameters and q values, against what is stored.

The stored bytes are preferred whenever the caller accepts them (no transfer-syntax asked,
``*``, or the stored one): retrieval is then bit-identical and costs no decoding. Otherwise a
lossless transcoding is offered when the transcoder can make it; if nothing the caller accepts
can be served, 406.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from expediente.dicom.web.multipart import media_params, split_list
from expediente.fhir.errors import FhirError

EXPLICIT_LE = "1.2.840.10008.1.2.1"
NATIVE = frozenset({"1.2.840.10008.1.2", EXPLICIT_LE, "1.2.840.10008.1.2.2"})
# The media type of one compressed frame of each transfer syntax (PS3.18 Table 8.7.3-2).
FRAME_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg2",
    "1.2.840.10008.1.2.4.101": "video/mpeg2",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
}
# The lossless syntax a frame media type asks for when no transfer-syntax is given.
_DEFAULT_FOR_MEDIA = {
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
    "image/x-dicom-rle": "1.2.840.10008.1.2.5",
    "image/jpeg": "1.2.840.10008.1.2.4.70",
    "application/octet-stream": EXPLICIT_LE,
}
_ANY = {None, "", "*/*"}

CanTranscode = Callable[[str, str], bool]


@dataclass(frozen=True, slots=True)
class Wanted:
    media: str  # e.g. multipart/related, application/dicom, */*
    part_type: str | None  # the multipart ``type`` parameter
    syntax: str | None  # the ``transfer-syntax`` parameter
    q: float


def parse_accept(header: str | None) -> list[Wanted]:
    """The acceptable media ranges, best q first (ties keep the caller's order); none → */*."""
    if not header or not header.strip():
        return [Wanted("*/*", None, None, 1.0)]
    out = []
    for item in split_list(header):
        media, params = media_params(item)
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 1.0
        if q <= 0:
            continue
        part_type = params.get("type")
        out.append(Wanted(media, part_type.lower() if part_type else None, params.get("transfer-syntax"), q))
    return sorted(out, key=lambda w: -w.q)


def not_acceptable(what: str) -> FhirError:
    return FhirError.of(406, f"No se puede entregar {what} en ningún tipo de medio o sintaxis de transferencia que acepta la petición (Accept)", "not-supported")


def instance_form(wanted: list[Wanted], stored: str, can: CanTranscode, *, single_allowed: bool) -> tuple[str | None, bool]:
    """For one stored instance: (target syntax or None for the stored bytes, single part?)."""
    for w in wanted:
        if w.media == "multipart/related":
            if w.part_type not in _ANY | {"application/dicom", "application/*"}:
                continue
            single = False
        elif w.media == "application/dicom":
            single = single_allowed
        elif w.media in ("*/*", "multipart/*", "application/*"):
            single = False
        else:
            continue
        target = _syntax(w.syntax, stored, can)
        if target is not _NO:
            return target, single
    raise not_acceptable("la instancia")


_NO = object()


def _syntax(asked: str | None, stored: str, can: CanTranscode):
    if asked in (None, "", "*") or asked == stored:
        return None
    return asked if can(stored, asked) else _NO


def frame_form(wanted: list[Wanted], stored: str, can: CanTranscode) -> tuple[str | None, str]:
    """For the frames of one instance: (target syntax or None for the stored bytes, the media
    type of each part)."""
    stored_media = "application/octet-stream" if stored in NATIVE else FRAME_MEDIA.get(stored, "application/octet-stream")
    for w in wanted:
        part = w.part_type if w.media == "multipart/related" else None if w.media in ("*/*", "multipart/*") else w.media
        if part in _ANY:
            if w.syntax in (None, "", "*", stored):
                return None, stored_media
            if can(stored, w.syntax):
                return w.syntax, FRAME_MEDIA.get(w.syntax, "application/octet-stream")
            continue
        if part == "application/octet-stream":
            if w.syntax == "*" or w.syntax == stored or (stored in NATIVE and stored != "1.2.840.10008.1.2.2" and w.syntax in (None, "", EXPLICIT_LE)):
                return None, part
            target = w.syntax or EXPLICIT_LE
            if can(stored, target):
                return target, part
            continue
        if part in ("image/*",) and stored_media.startswith("image/"):
            return None, stored_media
        if part == stored_media and w.syntax in (None, "", "*", stored):
            return None, stored_media
        target = w.syntax or _DEFAULT_FOR_MEDIA.get(part or "")
        if target and FRAME_MEDIA.get(target, "application/octet-stream") == _canonical(part) and can(stored, target):
            return target, _canonical(part)
    raise not_acceptable("los cuadros")


def _canonical(media: str | None) -> str:
    return {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}.get(media or "", media or "")
