"""A synthetic but realistic CT series for benchmarks: a body phantom (soft tissue, fat, lungs,
spine, ribs, aorta, liver, a couch) with correlated noise, 512x512 16-bit (12 bits stored),
Hounsfield units through rescale intercept -1024, as Part-10 files in explicit VR little endian.

Zeros or smooth gradients compress far better than real images and would flatter every lossless
codec; this phantom's noise (sigma ~12 HU, correlated over a few pixels like filtered back
projection) and its air-filled field of view outside a padded reconstruction circle give ratios
in the range real CT gets (about 2-3x for lossless codecs).

    from _ct_series import ct_series
    files = ct_series(n=300, seed=0)   # list[bytes], deterministic for a seed
"""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

SIZE = 512
SPACING = 0.7  # mm per pixel: a 358 mm field of view
THICKNESS = 1.0


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[:size, :size].astype(np.float32)
    return (x - size / 2) * SPACING, (y - size / 2) * SPACING  # mm from the center


def _ellipse(x, y, cx, cy, rx, ry) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def _correlated_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    white = rng.normal(0.0, 1.0, size=shape).astype(np.float32)
    # A 3x3 box filter: CT noise is correlated over neighbouring pixels.
    padded = np.pad(white, 1, mode="edge")
    smooth = sum(padded[dy : dy + shape[0], dx : dx + shape[1]] for dy in range(3) for dx in range(3)) / 3.0
    return smooth * sigma


def phantom_hu(z: float, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """One axial slice in HU at ``z`` in 0..1 (head of the series to its foot)."""
    x, y = _grid(size)
    hu = np.full((size, size), -1000.0, dtype=np.float32)  # air
    rx, ry = 160 - 10 * z, 110 - 5 * z
    body = _ellipse(x, y, 0, 0, rx, ry)
    hu[body] = -100  # subcutaneous fat
    inner = _ellipse(x, y, 0, 0, rx - 14, ry - 12)
    hu[inner] = 40  # muscle and soft tissue
    lung_scale = max(0.0, 1.0 - 1.4 * z)  # lungs shrink toward the abdomen
    if lung_scale > 0:
        for side in (-1, 1):
            hu[_ellipse(x, y, side * 60, -5, 48 * lung_scale + 1, 70 * lung_scale + 1)] = -850
    liver_scale = max(0.0, z - 0.3)
    if liver_scale > 0:
        hu[_ellipse(x, y, -45, 10, 70 * liver_scale + 5, 55 * liver_scale + 5)] = 60
    hu[_ellipse(x, y, 0, 62, 17, 15)] = 700  # vertebral body
    hu[_ellipse(x, y, 0, 62, 9, 8)] = 250  # its cancellous bone
    hu[_ellipse(x, y, 0, 85, 6, 10)] = 900  # spinous process
    hu[_ellipse(x, y, 18, 35, 11, 11)] = 180 + 40 * np.sin(z * 7)  # aorta with contrast
    ring = _ellipse(x, y, 0, 0, rx - 18, ry - 16) & ~_ellipse(x, y, 0, 0, rx - 26, ry - 22)
    ribs = ring & (np.sin(np.arctan2(y, x) * 12 + z * 20) > 0.6) & (lung_scale > 0)
    hu[ribs] = 650
    hu[(np.abs(y - (ry + 25)) < 4) & (np.abs(x) < 190)] = 200  # the couch
    hu += _correlated_noise(rng, hu.shape, 12.0)
    hu[x**2 + y**2 > (size / 2 * SPACING) ** 2] = -1024  # outside the reconstruction circle
    return hu


def ct_series(n: int = 300, seed: int = 0, size: int = SIZE, study_uid: str | None = None, patient_id: str = "BENCH-CT-0001") -> list[bytes]:
    """``n`` slices of one CT series as Part-10 bytes (about 0.5 MB each at 512x512)."""
    rng = np.random.default_rng(seed)
    study_uid = study_uid or generate_uid(entropy_srcs=[f"bench-ct-study-{seed}"])
    series_uid = generate_uid(entropy_srcs=[f"bench-ct-series-{seed}-{study_uid}"])
    files = []
    for i in range(n):
        hu = phantom_hu(i / max(n - 1, 1), rng, size)
        stored = np.clip(np.rint(hu + 1024), 0, 4095).astype(np.uint16)
        files.append(_slice(stored, i, n, study_uid, series_uid, patient_id, seed))
    return files


def _slice(stored: np.ndarray, i: int, n: int, study_uid: str, series_uid: str, patient_id: str, seed: int) -> bytes:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[f"bench-ct-{seed}-{series_uid}-{i}"])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[f"bench-ct-for-{series_uid}"])
    ds.PatientID = patient_id
    ds.PatientName = "Prueba^Tomografía"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = "20261115"
    ds.StudyTime = ds.SeriesTime = "101500"
    ds.AccessionNumber = f"BENCH-{seed}"
    ds.StudyID = "1"
    ds.StudyDescription = "TAC de tórax y abdomen"
    ds.SeriesDescription = "Axial 1 mm"
    ds.Modality = "CT"
    ds.Manufacturer = "Expediente bench phantom"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = THICKNESS
    ds.KVP = 120
    ds.SeriesNumber = 1
    ds.InstanceNumber = i + 1
    ds.ImagePositionPatient = [-stored.shape[1] / 2 * SPACING, -stored.shape[0] / 2 * SPACING, -i * THICKNESS]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = -i * THICKNESS
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.PixelSpacing = [SPACING, SPACING]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.PixelData = stored.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)  # the media storage UIDs come from the data set
    return out.getvalue()
