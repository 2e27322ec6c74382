"""The hot path's header walk agrees with pydicom, the reference parser, on every file pydicom
ships (where it declines, the ingest falls back to pydicom, so declining is always safe)."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.multival import MultiValue

from expediente.dicom import header_walk
from expediente.dicom.ingest import file_preamble
from expediente.dicom.parse import walk_file

DATA = Path(pydicom.data.__file__).parent
FILES = sorted(p for p in DATA.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc", ".json", ".md", ".txt"))


def _reference(path: Path) -> tuple[dict[str, str], int] | None:
    try:
        with open(path, "rb") as f:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            pixel_at = f.tell()
    except Exception:
        return None
    values = {}
    for keyword in header_walk.WANTED.values():
        value = ds.get(keyword)
        if value is not None and keyword != "SpecificCharacterSet":
            text = ("\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)).strip()
            if keyword in ("PatientName", "ReferringPhysicianName"):
                text = text.rstrip("=^")  # trailing empty components are the same name
            if text:
                values[keyword] = text
    return values, pixel_at


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(DATA)) for p in FILES])
def test_the_walk_reads_what_pydicom_reads_or_declines(path: Path):
    data = path.read_bytes()
    walked = walk_file(data, len(data))
    if walked is None:
        return  # declined: pydicom parses this one
    reference = _reference(path)
    assert reference is not None, "the walk accepted a file pydicom cannot read"
    values, _syntax, _media, pixel_at = walked
    expected, expected_pixel_at = reference
    values = {k: v for k, v in values.items() if k != "SpecificCharacterSet"}
    assert values == expected
    if pixel_at is not None:
        assert pixel_at == expected_pixel_at


def test_most_files_take_the_fast_path():
    walked = [p for p in FILES if walk_file(p.read_bytes(), p.stat().st_size) is not None]
    assert len(walked) >= len(FILES) // 2, f"only {len(walked)} of {len(FILES)} took the fast walk"


def test_the_file_meta_encoded_by_hand_is_what_pydicom_reads():
    meta = file_preamble("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1", "CT_URG")
    ds = pydicom.dcmread(io.BytesIO(meta + b"\x08\x00\x16\x00UI\x1a\x001.2.840.10008.5.1.4.1.1.2\x00"), force=False)
    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.file_meta.SourceApplicationEntityTitle == "CT_URG"
    assert ds.file_meta.FileMetaInformationGroupLength == len(meta) - 132 - 12
