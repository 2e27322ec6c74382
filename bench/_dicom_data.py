"""Data for the imaging benchmark, the same bytes for both archives.

- ``ct_series(n, seed)``: a CT series as Part-10 files (explicit VR little endian, 512x512,
  16-bit, ~0.5 MB a slice): ``bench/_ct_series.py`` (the render work's generator) when present,
  else ``phantom_series`` here: an anatomical phantom (body ellipse, lungs, spine, vessels, a
  slowly changing cross-section along z) with Gaussian noise, so the pixels are realistic and
  compress like CT, not zeros.
- ``population(instances, seed)``: the QIDO index population, deterministic from the seed:
  patients (Mexican names with accents), studies of 10 instances (one series), study dates over
  ten years, a few modalities. ``small_instance(row)`` makes an 8x8 Part-10 instance for real
  ingest; ``bench/_orthanc_fill.py`` writes the same rows straight into Orthanc's index.
- ``write_files(blobs, dir)``: files for storescu.
"""

from __future__ import annotations

import datetime as _dt
import io
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

UID_ROOT = "1.2.826.0.1.3680043.10.1107."  # bench-only UIDs; deterministic from the seed
INSTANCES_PER_STUDY = 10
IMPLEMENTATION_UID = UID_ROOT + "0.1"
FIRST_NAMES = ("María", "José", "Guadalupe", "Juan", "Ana", "Luis", "Sofía", "Jesús", "Ximena", "Ángel", "Daniela", "Óscar", "Fernanda", "Raúl", "Itzel", "Joaquín")
SURNAMES = ("Hernández", "García", "Martínez", "López", "González", "Pérez", "Rodríguez", "Sánchez", "Ramírez", "Cruz", "Flores", "Gómez", "Núñez", "Ibáñez", "Peña", "Muñoz", "Díaz", "Reyes", "Morales", "Jiménez")
MODALITIES = ("CT", "CT", "CR", "DX", "MR", "US", "MG")
DESCRIPTIONS = {"CT": "TAC de tórax", "CR": "Radiografía de tórax", "DX": "Radiografía de cadera", "MR": "RM de rodilla", "US": "Ultrasonido abdominal", "MG": "Mastografía"}


# ------------------------------------------------------------------ the CT series


def ct_series(n: int = 300, seed: int = 0) -> tuple[list[bytes], str]:
    """(Part-10 files, the generator used)."""
    try:
        from _ct_series import ct_series as shared  # the render work's generator, when merged

        return list(shared(n=n, seed=seed)), "bench/_ct_series.py"
    except ImportError:
        return phantom_series(n=n, seed=seed), "bench/_dicom_data.py phantom_series"


def _phantom_slice(z: float, rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """Hounsfield units of one axial slice at relative height z in [0, 1]."""
    y, x = np.mgrid[:size, :size].astype(np.float32)
    cx, cy = size / 2, size / 2 + 10
    hu = np.full((size, size), -1000.0, dtype=np.float32)  # air
    a, b = size * (0.40 + 0.03 * np.sin(z * 3)), size * 0.30
    body = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 < 1
    hu[body] = 40  # soft tissue
    fat = body & (((x - cx) / (a - 12)) ** 2 + ((y - cy) / (b - 12)) ** 2 >= 1)
    hu[fat] = -100
    lung_r = size * (0.12 + 0.05 * np.sin(np.pi * z))
    for side in (-1, 1):
        lung = ((x - cx - side * size * 0.17) / lung_r) ** 2 + ((y - cy + 10) / (lung_r * 1.4)) ** 2 < 1
        hu[lung] = -850
    spine = (x - cx) ** 2 + (y - cy - b + 45) ** 2 < 22**2
    hu[spine] = 700
    hu[(x - cx) ** 2 + (y - cy - b + 45) ** 2 < 10**2] = 250  # marrow
    aorta = (x - cx - 20) ** 2 + (y - cy - b + 95) ** 2 < 14**2
    hu[aorta] = 180  # contrast
    heart = ((x - cx + 25) / 60) ** 2 + ((y - cy + 20) / 50) ** 2 < 1
    hu[heart & (z > 0.3) & (z < 0.7)] = 60
    hu += rng.normal(0, 12, hu.shape).astype(np.float32)  # quantum noise
    return hu


def phantom_series(n: int = 300, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    uid = f"{UID_ROOT}9.{seed}"
    study_uid, series_uid = f"{uid}.1", f"{uid}.1.1"
    out = []
    for i in range(n):
        hu = _phantom_slice(i / max(n - 1, 1), rng)
        pixels = np.clip(hu + 1024, 0, 4095).astype(np.uint16)
        ds = _base(
            sop_uid=f"{uid}.1.1.{i + 1}",
            study_uid=study_uid,
            series_uid=series_uid,
            patient_id="BENCH-CT-0001",
            name="Hernández Cruz^María Guadalupe",
            birth="19791203",
            sex="F",
            study_date="20261115",
            accession="ACC-CT-0001",
            modality="CT",
            description="TAC de tórax",
            number=i + 1,
        )
        ds.SliceThickness = 1.0
        ds.ImagePositionPatient = [-250.0, -250.0, -float(i)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.98, 0.98]
        ds.KVP = 120
        _pixels(ds, pixels, window=(40, 400))
        out.append(_part10(ds))
    return out


# ------------------------------------------------------------------ the QIDO population


@dataclass(frozen=True, slots=True)
class Row:
    """One instance of the population, with its patient/study/series attributes."""

    index: int
    patient_id: str
    name: str  # DICOM PN, Family^Given
    birth: str
    sex: str
    study_uid: str
    study_date: str
    study_time: str
    accession: str
    study_id: str
    description: str
    modality: str
    series_uid: str
    sop_uid: str
    number: int


def population(instances: int, seed: int = 0, start: int = 0) -> Iterator[Row]:
    """Instances ``start`` .. ``instances - 1``; a prefix of a larger population is the smaller one."""
    first_study = start // INSTANCES_PER_STUDY
    for s in range(first_study, -(-instances // INSTANCES_PER_STUDY)):
        for row in population_study(s, seed):
            if row.index >= instances:
                return
            if row.index >= start:
                yield row


def population_study(s: int, seed: int = 0) -> Iterator[Row]:
    """The instances of study number ``s`` (0-based)."""
    rng = random.Random(f"{seed}:{s}")
    p = s // 3  # three studies a patient
    prng = random.Random(f"{seed}:patient:{p}")
    name = f"{prng.choice(SURNAMES)} {prng.choice(SURNAMES)}^{prng.choice(FIRST_NAMES)}"
    birth = (_dt.date(1940, 1, 1) + _dt.timedelta(days=prng.randrange(365 * 80))).strftime("%Y%m%d")
    sex = prng.choice("FM")
    modality = rng.choice(MODALITIES)
    date = (_dt.date(2016, 1, 1) + _dt.timedelta(days=rng.randrange(3650))).strftime("%Y%m%d")
    time = f"{rng.randrange(7, 20):02d}{rng.randrange(60):02d}00"
    study_uid = f"{UID_ROOT}{seed}.{s + 1}"
    series_uid = f"{study_uid}.1"
    for k in range(INSTANCES_PER_STUDY):
        yield Row(
            index=s * INSTANCES_PER_STUDY + k,
            patient_id=f"MRN{p:07d}",
            name=name,
            birth=birth,
            sex=sex,
            study_uid=study_uid,
            study_date=date,
            study_time=time,
            accession=f"A{s:08d}",
            study_id=str(s % 10000),
            description=DESCRIPTIONS[modality],
            modality=modality,
            series_uid=series_uid,
            sop_uid=f"{series_uid}.{k + 1}",
            number=k + 1,
        )


def small_instance(row: Row, implementation: tuple[str, str] = (IMPLEMENTATION_UID, "")) -> bytes:
    """An 8x8 CT instance as Part-10 bytes, encoded by hand (1 M of them must be cheap to make;
    ``tests/test_bench_dicom_data.py`` checks pydicom reads back the same attributes)."""
    pixels = (np.arange(64, dtype=np.uint16).reshape(8, 8) + row.index % 1000).astype("<u2").tobytes()
    elements = [
        (0x00080005, "CS", b"ISO_IR 192"),
        (0x00080016, "UI", CTImageStorage.encode()),
        (0x00080018, "UI", row.sop_uid.encode()),
        (0x00080020, "DA", row.study_date.encode()),
        (0x00080030, "TM", row.study_time.encode()),
        (0x00080050, "SH", row.accession.encode()),
        (0x00080060, "CS", row.modality.encode()),
        (0x00080090, "PN", b""),
        (0x00081030, "LO", row.description.encode()),
        (0x00100010, "PN", row.name.encode()),
        (0x00100020, "LO", row.patient_id.encode()),
        (0x00100030, "DA", row.birth.encode()),
        (0x00100040, "CS", row.sex.encode()),
        (0x0020000D, "UI", row.study_uid.encode()),
        (0x0020000E, "UI", row.series_uid.encode()),
        (0x00200010, "SH", row.study_id.encode()),
        (0x00200011, "IS", b"1"),
        (0x00200013, "IS", str(row.number).encode()),
        (0x00280002, "US", struct.pack("<H", 1)),
        (0x00280004, "CS", b"MONOCHROME2"),
        (0x00280010, "US", struct.pack("<H", 8)),
        (0x00280011, "US", struct.pack("<H", 8)),
        (0x00280100, "US", struct.pack("<H", 16)),
        (0x00280101, "US", struct.pack("<H", 12)),
        (0x00280102, "US", struct.pack("<H", 11)),
        (0x00280103, "US", struct.pack("<H", 0)),
        (0x00281050, "DS", b"40"),
        (0x00281051, "DS", b"400"),
        (0x00281052, "DS", b"-1024"),
        (0x00281053, "DS", b"1"),
        (0x7FE00010, "OW", pixels),
    ]
    return _file_meta(CTImageStorage, row.sop_uid, *implementation) + b"".join(_element(t, vr, v) for t, vr, v in elements)


_LONG_VRS = frozenset({"OB", "OW", "OF", "SQ", "UT", "UN"})


def _element(tag: int, vr: str, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr in ("UI", "OB") else b" "
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    if vr in _LONG_VRS:
        return head + struct.pack("<HI", 0, len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _file_meta(sop_class: str, sop_uid: str, implementation_uid: str = IMPLEMENTATION_UID, version_name: str = "") -> bytes:
    parts = [
        _element(0x00020001, "OB", b"\0\1"),
        _element(0x00020002, "UI", sop_class.encode()),
        _element(0x00020003, "UI", sop_uid.encode()),
        _element(0x00020010, "UI", ExplicitVRLittleEndian.encode()),
        _element(0x00020012, "UI", implementation_uid.encode()),
    ]
    if version_name:
        parts.append(_element(0x00020013, "SH", version_name.encode()))
    body = b"".join(parts)
    return b"\0" * 128 + b"DICM" + _element(0x00020000, "UL", struct.pack("<I", len(body))) + body


# ------------------------------------------------------------------ shared pieces


def _base(*, sop_uid, study_uid, series_uid, patient_id, name, birth, sex, study_date, accession, modality, description, number) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CTImageStorage  # every modality stored as CT images: same SOP class on both sides
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = patient_id
    ds.PatientName = name
    ds.PatientBirthDate = birth
    ds.PatientSex = sex
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = accession
    ds.StudyID = "1"
    ds.StudyDescription = description
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    return ds


def _pixels(ds: Dataset, pixels: np.ndarray, window: tuple[int, int]) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype("<u2").tobytes()


def _part10(ds: Dataset) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def series_uids(blobs: list[bytes]) -> dict:
    """Study, series and first instance (InstanceNumber 1) UIDs of a generated series."""
    from pydicom import dcmread

    first = dcmread(io.BytesIO(blobs[0]), stop_before_pixels=True)
    for blob in blobs:
        ds = dcmread(io.BytesIO(blob), stop_before_pixels=True)
        if int(ds.get("InstanceNumber", 0) or 0) == 1:
            first = ds
            break
    return {"study_uid": first.StudyInstanceUID, "series_uid": first.SeriesInstanceUID, "first_sop_uid": first.SOPInstanceUID}


def write_files(blobs: list[bytes] | Iterator[bytes], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, blob in enumerate(blobs):
        path = directory / f"{i:07d}.dcm"
        path.write_bytes(blob)
        paths.append(path)
    return paths
