"""Lossless transcoding between transfer syntaxes, for slow links (WADO-RS on request).

An instance is kept exactly as received; a copy in another syntax is made on the way out. Only
lossless encodings are produced (JPEG 2000 lossless, JPEG-LS lossless, RLE, and the native
little-endian syntaxes): a lossy source stays as lossy as it was, never more. Decoding and
encoding go through pydicom's pixel plugins (pylibjpeg-openjpeg, pyjpegls, RLE); a source no
installed plugin can decode (JPEG lossless process 14, MPEG, ...) is not transcoded.

The SOP Instance UID is kept: a lossless transcoding is the same instance (PS3.5 8.2).
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import get_decoder, get_encoder, pack_bits
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

log = logging.getLogger("expediente.dicom")

NATIVE_TARGETS = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
COMPRESSED_TARGETS = frozenset({JPEG2000Lossless, JPEGLSLossless, RLELossless})
TARGETS = NATIVE_TARGETS | COMPRESSED_TARGETS

# Media types of one compressed frame (PS3.18 Table 8.7.3-2), for WADO-RS frames.
FRAME_MEDIA_TYPES = {
    JPEG2000Lossless: "image/jp2",
    JPEGLSLossless: "image/jls",
    RLELossless: "image/dicom-rle",
    ExplicitVRLittleEndian: "application/octet-stream",
    ImplicitVRLittleEndian: "application/octet-stream",
}


MAX_DECODED_BYTES = 2 * 1024**3  # what one instance may decode to (a compressed bomb stops here)


class TranscodeError(Exception):
    """A transcoding that cannot be done; ``reason`` is for the person who asked (Spanish)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _decodable(uid: str) -> bool:
    uid = UID(uid)
    if not uid.is_transfer_syntax:
        return False
    if not uid.is_compressed:
        return True
    try:
        return get_decoder(uid).is_available
    except NotImplementedError:
        return False


def can_transcode(source_uid: str, target_uid: str) -> bool:
    """Whether an instance in ``source_uid`` can be served in ``target_uid`` (by syntax only:
    a given instance may still be refused, e.g. 32-bit samples in JPEG-LS)."""
    if source_uid == target_uid:
        return True
    return target_uid in TARGETS and _decodable(source_uid)


def _read(part10: bytes) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(part10), force=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same answer
        raise TranscodeError(f"El archivo DICOM no se pudo leer para convertirlo: {type(exc).__name__}") from None


def _source_syntax(ds: Dataset) -> UID:
    uid = ds.get("file_meta", Dataset()).get("TransferSyntaxUID")
    if not uid:
        raise TranscodeError("El archivo no declara su sintaxis de transferencia")
    return UID(uid)


def _check(source: UID, target: str) -> None:
    if target not in TARGETS:
        raise TranscodeError(
            f"Sintaxis de transferencia no disponible: {str(target)[:64]}; se ofrecen solo las sin pérdida: "
            + ", ".join(sorted(TARGETS))
        )
    if not _decodable(source):
        raise TranscodeError(f"No se puede decodificar la sintaxis de origen {source} ({source.name}); se entrega sin convertir")


def _to_native(ds: Dataset, source: UID) -> None:
    """Pixel data to native little endian in place (keeping YBR as YBR: no color conversion,
    which would round)."""
    try:
        decoded = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * max(int(ds.BitsAllocated), 8) // 8 * int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise TranscodeError("La descripción de la imagen (filas, columnas, bits) está incompleta") from None
    if decoded > MAX_DECODED_BYTES:
        raise TranscodeError("La imagen descomprimida excedería 2 GiB; se entrega sin convertir")
    if source.is_compressed:
        ds.decompress(as_rgb=False, generate_instance_uid=False)
    elif not source.is_little_endian or ds.get("PhotometricInterpretation") == "YBR_FULL_422":
        ds.pixel_array_options(as_rgb=False)
        _set_native(ds, ds.pixel_array)
    if ds.get("PhotometricInterpretation") == "YBR_FULL_422":
        ds.PhotometricInterpretation = "YBR_FULL"  # decoded chroma is full resolution
    # A lossy source stays declared as lossy (PS3.3 C.7.6.1.1.5).
    if source in _LOSSY:
        ds.LossyImageCompression = "01"


def _set_native(ds: Dataset, arr: np.ndarray) -> None:
    if int(ds.BitsAllocated) == 1:
        ds.PixelData = pack_bits(arr)
    else:
        ds.PixelData = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    ds["PixelData"].VR = "OB" if ds.BitsAllocated <= 8 else "OW"
    if ds.get("SamplesPerPixel", 1) > 1:
        ds.PlanarConfiguration = 0
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


_BINARY_WIDTH = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _little_endian(ds: Dataset) -> None:
    """Swap the other binary values of a big-endian dataset (numbers pydicom parsed are
    already values; Pixel Data was converted by ``_to_native``)."""
    for elem in ds.iterall():
        width = _BINARY_WIDTH.get(elem.VR)
        if width and elem.tag != 0x7FE00010 and isinstance(elem.value, bytes) and len(elem.value) % width == 0:
            elem.value = np.frombuffer(elem.value, dtype=f">u{width}").astype(f"<u{width}").tobytes()


_LOSSY = {
    UID("1.2.840.10008.1.2.4.50"),
    UID("1.2.840.10008.1.2.4.51"),
    UID("1.2.840.10008.1.2.4.81"),
    UID("1.2.840.10008.1.2.4.91"),
    UID("1.2.840.10008.1.2.4.203"),
}


def transcode(part10: bytes, target_uid: str) -> bytes:
    """A new Part-10 file of the same instance in ``target_uid`` (the input itself when it is
    already in that syntax). Raises TranscodeError with the reason when it cannot be done."""
    ds = _read(part10)
    source = _source_syntax(ds)
    if source == target_uid:
        return part10
    _check(source, target_uid)
    target = UID(target_uid)
    try:
        if "PixelData" in ds:
            _to_native(ds, source)
            if target.is_compressed:
                # A source that declares a signed or odd layout pydicom cannot encode raises here.
                ds.compress(target, generate_instance_uid=False)
        # Without Pixel Data the syntax only changes how the rest is written.
        return _write(ds, source, target)
    except TranscodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises ValueError/RuntimeError/... by plugin
        log.info("transcode %s -> %s failed: %s", source, target, exc)
        raise TranscodeError(_why(exc, target)) from None


def _write(ds: Dataset, source: UID, target: UID) -> bytes:
    if not source.is_little_endian:
        _little_endian(ds)
    else:
        for _ in ds.iterall():  # every raw element parsed, so each has its VR to write
            pass
    ds.file_meta.TransferSyntaxUID = target
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True, implicit_vr=target == ImplicitVRLittleEndian, little_endian=True)
    return out.getvalue()


def _why(exc: Exception, target: UID) -> str:
    text = str(exc)
    if "resolutions is too high" in text or "opj_start_compress" in text or "destination buffer is too small" in text:
        return f"La imagen es demasiado pequeña para {target.name}; pídala sin comprimir"
    if any(s in text for s in ("not valid for pixel data encoded with", "outside the allowable range", "Invalid 'bits_stored'")):
        return f"Las características de la imagen (bits, muestras o interpretación fotométrica) no admiten {target.name}"
    return f"No se pudo convertir la imagen a {target.name} ({type(exc).__name__})"


def transcode_frames(part10: bytes, target_uid: str, frames: list[int] | None = None) -> list[bytes]:
    """The frames (1-based numbers; all when None) of an instance, each encoded alone in
    ``target_uid``: the codestream of a compressed frame, or the raw little-endian bytes of a
    native one (what a WADO-RS frames response carries). Only the frames asked for are
    decoded and encoded."""
    ds = _read(part10)
    source = _source_syntax(ds)
    if "PixelData" not in ds:
        raise TranscodeError("La instancia no tiene datos de píxeles (Pixel Data)")
    if source != target_uid:
        _check(source, target_uid)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    numbers = list(range(1, count + 1)) if frames is None else list(frames)
    if bad := [n for n in numbers if not 1 <= n <= count]:
        raise TranscodeError(f"La instancia tiene {count} cuadro(s); no existe el cuadro {bad[0]}")
    target = UID(target_uid)
    try:
        if source == target and source.is_compressed:
            every = list(generate_frames(ds.PixelData, number_of_frames=count))
            return [every[n - 1] for n in numbers]
        native = ds  # native little endian: frames are fixed-size slices, nothing to decode
        if source.is_compressed or not source.is_little_endian:
            _to_native(native, source)
        if int(native.BitsAllocated) < 8:
            raise TranscodeError("Los cuadros de 1 bit no se entregan por separado en esta sintaxis")
        if not target.is_compressed:
            length = int(native.Rows) * int(native.Columns) * int(native.get("SamplesPerPixel", 1)) * (int(native.BitsAllocated) // 8)
            data = native.PixelData
            return [bytes(data[(n - 1) * length : n * length]) for n in numbers]
        encoder = get_encoder(target)
        return [bytes(encoder.encode(native, index=n - 1)) for n in numbers]
    except TranscodeError:
        raise
    except Exception as exc:  # noqa: BLE001
        log.info("transcode_frames %s -> %s failed: %s", source, target, exc)
        raise TranscodeError(_why(exc, target)) from None


__all__ = ["COMPRESSED_TARGETS", "FRAME_MEDIA_TYPES", "TARGETS", "TranscodeError", "can_transcode", "transcode", "transcode_frames"]
