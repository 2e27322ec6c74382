"""Rendered images: one frame of an instance as a JPEG or PNG a browser shows (PS3.18 rendered
resources), and thumbnails.

The pipeline is the standard grayscale one (PS3.3 C.11): stored values -> Modality LUT (rescale
slope/intercept, or the LUT) -> VOI (the window asked for, else the header's first window, else
its VOI LUT, else the frame's min/max) -> 8 bits -> MONOCHROME1 inverted. Color is shown as RGB
(YBR converted, palette applied). Only the frame asked for is decoded where pydicom can (native
syntaxes read one frame's bytes; encapsulated ones decode one fragment set).
"""

from __future__ import annotations

import io
import math

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import UID

MEDIA_TYPES = ("image/jpeg", "image/png")
FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
THUMBNAIL_SIZE = 128
MAX_FRAME_PIXELS = 8192 * 8192  # a decoded frame larger than this is refused, not allocated


class RenderError(Exception):
    """A rendering that cannot be made; ``reason`` in Spanish, ``status`` the HTTP answer."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.reason = reason
        self.status = status


def window_lut(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """PS3.3 C.11.2.1.2: modality values to 0..255 through the window (float result)."""
    x = values.astype(np.float64, copy=False)
    function = function.upper()
    if function == "SIGMOID":
        return 255.0 / (1.0 + np.exp(np.clip(-4.0 * (x - center) / width, -700, 700)))  # no overflow far out
    if function == "LINEAR_EXACT":
        low, high = center - width / 2, center + width / 2
        middle = ((x - center) / width + 0.5) * 255.0
    else:
        if width < 1:
            raise RenderError("El ancho de ventana debe ser al menos 1 con la función lineal")
        low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
        middle = ((x - (center - 0.5)) / max(width - 1, 1e-12) + 0.5) * 255.0
    return np.where(x <= low, 0.0, np.where(x > high, 255.0, middle))


def _to_byte(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _read(part10: bytes | Dataset) -> Dataset:
    if isinstance(part10, Dataset):
        ds = part10
        if "PixelData" not in ds:
            raise RenderError("La instancia no contiene una imagen (no tiene Pixel Data)", 400)
        return ds
    try:
        ds = pydicom.dcmread(io.BytesIO(part10))
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same answer
        raise RenderError(f"El archivo DICOM no se pudo leer: {type(exc).__name__}", 422) from None
    if "PixelData" not in ds:
        raise RenderError("La instancia no contiene una imagen (no tiene Pixel Data)", 400)
    return ds


def frame_count(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _frame_item(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """An enhanced multi-frame's functional group item for ``frame`` (per-frame, else shared)."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame - 1), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items and len(items) > index and sequence in items[index] and items[index][sequence].value:
            return items[index][sequence].value[0]
    return None


def _decode(ds: Dataset, frame: int) -> np.ndarray:
    uid = UID(ds.get("file_meta", Dataset()).get("TransferSyntaxUID", ""))
    if not uid:
        raise RenderError("El archivo no declara su sintaxis de transferencia", 422)
    try:
        arr, _ = get_decoder(uid).as_array(ds, index=frame - 1, as_rgb=True)
    except NotImplementedError:
        raise RenderError(f"No hay decodificador para la sintaxis {uid} ({uid.name})", 422) from None
    except Exception as exc:  # noqa: BLE001 - plugin errors vary
        raise RenderError(f"La imagen no se pudo decodificar ({type(exc).__name__})", 422) from None
    return arr


def _gray(ds: Dataset, arr: np.ndarray, frame: int, window: tuple | None) -> np.ndarray:
    transform = _frame_item(ds, frame, "PixelValueTransformationSequence")
    source = transform if transform is not None and "RescaleSlope" in transform else ds
    values = apply_modality_lut(arr, source) if ("RescaleSlope" in source or "ModalityLUTSequence" in source) else arr.astype(np.float64)
    if window is not None:
        center, width, *function = window
        out = window_lut(values, float(center), float(width), (function[0] if function else "LINEAR"))
    else:
        voi = _frame_item(ds, frame, "FrameVOILUTSequence") or ds
        if "WindowCenter" in voi and "WindowWidth" in voi:
            center, width = _first(voi.WindowCenter), _first(voi.WindowWidth)
            function = str(voi.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
            out = window_lut(values, center, width, function if function in FUNCTIONS else "LINEAR")
        elif "VOILUTSequence" in ds and ds.VOILUTSequence:
            lut = apply_voi_lut(values.astype(np.int64) if np.all(np.mod(values, 1) == 0) else values, ds, index=0)
            bits = int(ds.VOILUTSequence[0].LUTDescriptor[2]) or 16
            out = lut.astype(np.float64) * 255.0 / (2**bits - 1)
        else:
            low, high = float(values.min()), float(values.max())
            out = window_lut(values, (low + high) / 2, max(high - low, 1e-6), "LINEAR_EXACT")
    out = _to_byte(out)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        out = 255 - out
    return out


def _first(value) -> float:
    return float(value[0]) if isinstance(value, pydicom.multival.MultiValue) else float(value)


def _color(ds: Dataset, arr: np.ndarray) -> np.ndarray:
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return _to_byte(rgb.astype(np.float64) * 255.0 / (2**bits - 1)) if bits > 8 else rgb.astype(np.uint8)
    bits = int(ds.get("BitsStored", 8) or 8)
    if arr.dtype == np.uint8 or bits <= 8:
        return arr.astype(np.uint8)
    return _to_byte(arr.astype(np.float64) * 255.0 / (2**bits - 1))


def _pixel_aspect(ds: Dataset) -> float:
    """Height of one pixel relative to its width (PixelSpacing is row, column spacing)."""
    for key in ("PixelSpacing", "ImagerPixelSpacing", "PixelAspectRatio"):
        value = ds.get(key)
        try:
            if value is not None and len(value) == 2 and float(value[0]) > 0 and float(value[1]) > 0:
                ratio = float(value[0]) / float(value[1])
                return ratio if 0.1 < ratio < 10 else 1.0
        except (TypeError, ValueError):
            continue
    return 1.0


def fit(columns: int, rows: int, viewport: tuple[int, int] | None, aspect: float = 1.0) -> tuple[int, int]:
    """(width, height) of the image shown in ``viewport`` with its aspect ratio kept."""
    width, height = columns, rows * aspect
    if viewport is None:
        return columns, max(1, round(height))
    scale = min(viewport[0] / width, viewport[1] / height)
    return max(1, math.floor(width * scale + 1e-9)), max(1, math.floor(height * scale + 1e-9))


def _encode(image: Image.Image, content_type: str, quality: int) -> bytes:
    out = io.BytesIO()
    if content_type == "image/png":
        image.save(out, format="PNG", compress_level=6)
    else:
        image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def render(
    part10: bytes | Dataset,
    frame: int = 1,
    content_type: str = "image/jpeg",
    window: tuple | None = None,
    size: tuple[int, int] | None = None,
    quality: int = 90,
) -> bytes:
    """One frame (1-based) as ``content_type``; ``part10`` is the file or a dataset read from it
    (e.g. ``frame_dataset``: the header and one frame's bytes). ``window``: (center, width[, function]) in
    modality units (function LINEAR | LINEAR_EXACT | SIGMOID); ``size``: the viewport
    (width, height) the image is fitted into, aspect kept."""
    if content_type not in MEDIA_TYPES:
        raise RenderError(f"Tipo de imagen no disponible: {content_type[:64]}; se ofrecen {', '.join(MEDIA_TYPES)}", 406)
    if not 1 <= quality <= 100:
        raise RenderError("La calidad debe estar entre 1 y 100")
    if size is not None and not (0 < size[0] <= 8192 and 0 < size[1] <= 8192):
        raise RenderError("El tamaño pedido debe estar entre 1 y 8192 píxeles por lado")
    ds = _read(part10)
    if not 1 <= frame <= (count := frame_count(ds)):
        raise RenderError(f"La instancia tiene {count} cuadro(s); no existe el cuadro {frame}", 404)
    if int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) > MAX_FRAME_PIXELS:
        raise RenderError("La imagen es demasiado grande para mostrarla como vista previa", 422)
    arr = _decode(ds, frame)
    color = int(ds.get("SamplesPerPixel", 1) or 1) > 1 or ds.get("PhotometricInterpretation") == "PALETTE COLOR"
    if color:
        pixels = _color(ds, arr)
    else:
        pixels = _gray(ds, arr, frame, window)
    image = Image.fromarray(pixels)
    target = fit(image.width, image.height, size, _pixel_aspect(ds))
    if target != image.size:
        image = image.resize(target, Image.Resampling.LANCZOS if target[0] < image.width else Image.Resampling.BICUBIC)
    return _encode(image, content_type, quality)


def thumbnail(part10: bytes | Dataset, size: int = THUMBNAIL_SIZE, content_type: str = "image/jpeg", frame: int | None = None) -> bytes:
    """A small preview fitted in ``size`` x ``size``: the middle frame unless one is named."""
    if frame is None:
        part10 = _read(part10)
        frame = (frame_count(part10) + 1) // 2
    return render(part10, frame=frame, content_type=content_type, size=(size, size), quality=80)


def frame_dataset(header: bytes, frame: int, read_range) -> Dataset | None:
    """A native multi-frame instance reduced to one frame without reading the others:
    ``header`` is the file up to the Pixel Data value (the index's pixel offset),
    ``read_range(start, end)`` reads bytes of the file. None when the layout does not allow it
    (bit-packed or encapsulated pixels): the caller renders from the whole file."""
    ds = pydicom.dcmread(io.BytesIO(header), stop_before_pixels=True)
    uid = UID(ds.file_meta.get("TransferSyntaxUID", ""))
    if not uid or uid.is_compressed or not uid.is_little_endian or int(ds.get("BitsAllocated", 0) or 0) < 8:
        return None
    if not 1 <= frame <= (count := frame_count(ds)):
        raise RenderError(f"La instancia tiene {count} cuadro(s); no existe el cuadro {frame}", 404)
    length = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.BitsAllocated) // 8
    start = len(header) + (frame - 1) * length
    ds.PixelData = read_range(start, start + length)
    if len(ds.PixelData) != length:
        raise RenderError("El archivo de la instancia está incompleto", 422)
    ds["PixelData"].VR = "OB" if int(ds.BitsAllocated) == 8 else "OW"
    if items := ds.get("PerFrameFunctionalGroupsSequence"):
        ds.PerFrameFunctionalGroupsSequence = [items[frame - 1]] if len(items) >= frame else []
    ds.NumberOfFrames = 1
    return ds


__all__ = ["MEDIA_TYPES", "RenderError", "fit", "frame_dataset", "render", "thumbnail", "window_lut"]
