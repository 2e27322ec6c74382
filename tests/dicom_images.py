"""Image instances of every pixel layout the transcoder and renderer must handle: 8/16-bit
monochrome (unsigned and signed), MONOCHROME1, RGB, multi-frame, as Part-10 bytes in explicit
VR little endian, with structured content plus noise (compressors and windows see real data)."""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def pixels(kind: str, rows: int = 48, columns: int = 40, frames: int = 1, seed: int = 0) -> np.ndarray:
    """The array an instance of ``kind`` holds: mono8, mono16, signed16, rgb8, mono1 (16-bit)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:rows, :columns]
    disc = ((x - columns / 2) ** 2 + (y - rows / 2) ** 2) < (min(rows, columns) / 3) ** 2
    out = []
    for f in range(frames):
        noise = rng.integers(0, 16, size=(rows, columns))
        if kind == "mono8":
            out.append((disc * 150 + x * 2 + noise + f).clip(0, 255).astype(np.uint8))
        elif kind in ("mono16", "mono1"):
            out.append((disc * 1800 + y * 10 + noise * 7 + f).clip(0, 4095).astype(np.uint16))
        elif kind == "signed16":
            out.append((disc * 1500 - 1000 + x * 3 + noise + f).astype(np.int16))
        elif kind == "rgb8":
            rgb = np.stack([disc * 200 + noise, x * 5 + noise, y * 4 + f], axis=-1)
            out.append(rgb.clip(0, 255).astype(np.uint8))
        else:
            raise ValueError(kind)
    return out[0] if frames == 1 else np.stack(out)


def image(kind: str = "mono16", rows: int = 48, columns: int = 40, frames: int = 1, seed: int = 0, **tags) -> bytes:
    arr = pixels(kind, rows, columns, frames, seed)
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID = tags.pop("study_uid", None) or generate_uid()
    ds.SeriesInstanceUID = tags.pop("series_uid", None) or generate_uid()
    ds.PatientID = tags.pop("patient_id", "MRN-IMG")
    ds.PatientName = "Prueba^Imagen"
    ds.Modality = "OT"
    ds.InstanceNumber = tags.pop("number", 1)
    ds.Rows, ds.Columns = rows, columns
    if frames > 1:
        ds.NumberOfFrames = frames
    if kind == "rgb8":
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME1" if kind == "mono1" else "MONOCHROME2"
    bits = 8 if kind in ("mono8", "rgb8") else 16
    ds.BitsAllocated = bits
    ds.BitsStored = bits if bits == 8 or kind == "signed16" else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if kind == "signed16" else 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = arr.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)  # the media storage UIDs come from the data set
    return out.getvalue()
