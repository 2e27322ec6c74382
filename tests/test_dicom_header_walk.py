"""The hot path's header walk agrees with pydicom, the reference parser, on every file pydicom
ships (where it declines, the ingest falls back to pydicom, so declining is always safe)."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from expediente.dicom import header_walk
from expediente.dicom.ingest import file_preamble
from expediente.dicom.parse import walk_file
from expediente.dicom.sequences import INDEXED, items_of_dataset

DATA = Path(pydicom.data.__file__).parent
FILES = sorted(p for p in DATA.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc", ".json", ".md", ".txt"))


def _reference(path: Path) -> tuple[dict[str, str], dict, int] | None:
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
    return values, items_of_dataset(ds), pixel_at


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(DATA)) for p in FILES])
def test_the_walk_reads_what_pydicom_reads_or_declines(path: Path):
    data = path.read_bytes()
    walked = walk_file(data, len(data))
    if walked is None:
        return  # declined: pydicom parses this one
    reference = _reference(path)
    assert reference is not None, "the walk accepted a file pydicom cannot read"
    values, items, _syntax, _media, pixel_at = walked
    expected, expected_items, expected_pixel_at = reference
    values = {k: v for k, v in values.items() if k != "SpecificCharacterSet"}
    assert values == expected
    assert items == expected_items
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


_TEXT = st.text(alphabet=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-ñÁé "), max_size=12)
_CODE = st.text(alphabet=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ "), max_size=12)  # CS: ASCII


@st.composite
def _sequence_dataset(draw):
    """A dataset with random items in the indexed sequences (and one nested sequence in some
    items), as a modality could send it."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", "1.2.3.1"
    ds.PatientID = draw(_TEXT)
    for keyword, seq in INDEXED.items():
        if not draw(st.booleans()):
            continue
        items = []
        for _ in range(draw(st.integers(0, 4))):
            item = Dataset()
            for attr in seq.items:
                if draw(st.booleans()):
                    vr = dictionary_VR(attr)
                    setattr(item, attr, "1.2.840.99" if vr == "UI" else draw(_CODE if vr == "CS" else _TEXT))
            if draw(st.booleans()):
                nested = Dataset()
                nested.CodeValue = "X"
                item.PurposeOfReferenceCodeSequence = Sequence([nested])
            items.append(item)
        setattr(ds, keyword, Sequence(items))
        ds[keyword].is_undefined_length = draw(st.booleans())
        for item in ds[keyword].value:
            item.is_undefined_length_sequence_item = draw(st.booleans())
    ds.BitsAllocated = 16
    ds.PixelData = b"\x00\x00"
    return ds


@given(_sequence_dataset(), st.booleans())
@hsettings(max_examples=120, deadline=None)
def test_the_walk_reads_the_indexed_sequences_as_pydicom_does(ds, implicit):
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    walked = walk_file(data, len(data))
    assert walked is not None, "the walk declined a plain little-endian header"
    reference = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    assert walked[1] == items_of_dataset(reference)
    assert walked[0].get("PatientID", "") == ds.PatientID.strip()
