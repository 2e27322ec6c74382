"""Lossless transcoding for slow links: every lossless syntax gives back the very same pixels,
the instance keeps its identity, and what cannot be done is refused with a reason."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, strategies as st
from hypothesis import settings as examples
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

from dicom_images import image, pixels
from dicom_samples import ct_slice
from expediente.dicom.transcode import TranscodeError, can_transcode, transcode, transcode_frames

LOSSLESS = [JPEG2000Lossless, JPEGLSLossless, RLELossless]
KINDS = [("mono8", 1), ("mono16", 1), ("signed16", 1), ("rgb8", 1), ("mono16", 3), ("rgb8", 2)]


def _dataset(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _array(data: bytes) -> np.ndarray:
    ds = _dataset(data)
    ds.pixel_array_options(as_rgb=False)
    return ds.pixel_array


@pytest.mark.parametrize("target", LOSSLESS)
@pytest.mark.parametrize(("kind", "frames"), KINDS)
def test_each_lossless_syntax_gives_back_the_same_pixels(kind, frames, target):
    original = image(kind, frames=frames, seed=frames)
    compressed = transcode(original, target)
    ds, before = _dataset(compressed), _dataset(original)
    assert ds.file_meta.TransferSyntaxUID == target
    assert ds.SOPInstanceUID == before.SOPInstanceUID  # lossless: the same instance
    assert "LossyImageCompression" not in ds or ds.LossyImageCompression == "00"
    assert np.array_equal(_array(compressed), pixels(kind, frames=frames, seed=frames))
    back = transcode(compressed, ExplicitVRLittleEndian)
    assert _dataset(back).PixelData == before.PixelData  # byte for byte


def test_a_ct_compresses_and_returns_to_both_native_syntaxes():
    original = ct_slice(size=128)
    for target in LOSSLESS:
        compressed = transcode(original, target)
        assert len(compressed) < len(original)
        for native in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            back = _dataset(transcode(compressed, native))
            assert back.file_meta.TransferSyntaxUID == native
            assert back.PixelData == _dataset(original).PixelData
            assert back.PatientName == "Hernández Cruz^María Guadalupe"


def test_the_same_syntax_is_the_same_bytes():
    original = ct_slice()
    assert transcode(original, ExplicitVRLittleEndian) is original
    assert can_transcode(ExplicitVRLittleEndian, ExplicitVRLittleEndian)


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm", "SC_rgb_rle_2frame.dcm", "SC_rgb_rle_16bit.dcm", "examples_palette.dcm",
        "SC_ybr_full_422_uncompressed.dcm", "image_dfl.dcm", "liver_expb_1frame.dcm", "GDCMJ2K_TextGBR.dcm",
    ],
)  # fmt: skip
def test_pydicom_files_in_other_syntaxes_decode_to_the_same_pixels(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = open(get_testdata_file(name), "rb").read()
        reference = _array(data)
        targets = [ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless] if _dataset(data).BitsAllocated > 1 else [ExplicitVRLittleEndian]
        for target in targets:
            assert np.array_equal(_array(transcode(data, target)), reference), target


def test_a_lossy_source_stays_declared_lossy_and_is_not_degraded_further():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = open(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"), "rb").read()  # JPEG baseline
        decoded = _array(data)
        for target in (ExplicitVRLittleEndian, JPEGLSLossless):
            out = _dataset(transcode(data, target))
            assert out.LossyImageCompression == "01"
            out.pixel_array_options(as_rgb=False)
            assert np.array_equal(out.pixel_array, decoded)


def test_what_cannot_be_done_is_refused_with_a_reason():
    assert not can_transcode(ExplicitVRLittleEndian, "1.2.840.10008.1.2.4.50")  # never to lossy
    assert not can_transcode("1.2.840.10008.1.2.4.70", ExplicitVRLittleEndian)  # no decoder installed
    assert can_transcode("1.2.840.10008.1.2.4.50", JPEG2000Lossless)
    with pytest.raises(TranscodeError) as lossy:
        transcode(ct_slice(), "1.2.840.10008.1.2.4.50")
    assert "sin pérdida" in lossy.value.reason
    with pytest.raises(TranscodeError) as garbage:
        transcode(b"DICM" + b"\x00" * 40, JPEGLSLossless)
    assert garbage.value.reason
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dose = open(get_testdata_file("rtdose_1frame.dcm"), "rb").read()  # 32-bit samples
    with pytest.raises(TranscodeError) as wide:
        transcode(dose, JPEGLSLossless)
    assert "bits" in wide.value.reason
    with pytest.raises(TranscodeError) as small:
        transcode(image("mono8", rows=8, columns=8), JPEG2000Lossless)
    assert "pequeña" in small.value.reason


@pytest.mark.parametrize("target", [*LOSSLESS, ExplicitVRLittleEndian])
def test_frames_are_encoded_one_by_one(target):
    original = image("mono16", frames=4, seed=3)
    expected = pixels("mono16", frames=4, seed=3)
    encoded = transcode_frames(original, target, [2, 4])
    assert len(encoded) == 2
    if target == ExplicitVRLittleEndian:
        assert encoded[0] == expected[1].tobytes()
    else:  # each codestream alone decodes to its frame
        ds = _dataset(original)
        ds.PixelData, ds.NumberOfFrames = pydicom.encaps.encapsulate(encoded), 2
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = target
        assert np.array_equal(ds.pixel_array, expected[[1, 3]])
    with pytest.raises(TranscodeError) as missing:
        transcode_frames(original, target, [5])
    assert "cuadro 5" in missing.value.reason


def test_frames_of_a_compressed_source_in_its_own_syntax_are_its_fragments():
    compressed = transcode(image("mono8", frames=3), RLELossless)
    frames = transcode_frames(compressed, RLELossless)
    assert frames == list(pydicom.encaps.generate_frames(_dataset(compressed).PixelData, number_of_frames=3))


@examples(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(32, 48),
    columns=st.integers(32, 48),
    bits=st.sampled_from([8, 12, 16]),
    signed=st.booleans(),
    seed=st.integers(0, 2**16),
    target=st.sampled_from(LOSSLESS),
)
def test_random_images_round_trip_exactly(rows, columns, bits, signed, seed, target):
    rng = np.random.default_rng(seed)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    dtype = (np.int8 if signed else np.uint8) if bits == 8 else (np.int16 if signed else np.uint16)
    arr = rng.integers(lo, hi + 1, size=(rows, columns)).astype(dtype)
    ds = _dataset(image("mono8" if bits == 8 else "mono16", rows=rows, columns=columns))
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, int(signed)
    ds.PixelData = arr.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    assert np.array_equal(_array(transcode(out.getvalue(), target)), arr)


def test_an_image_that_would_decode_too_large_is_refused_before_decoding():
    ds = _dataset(image("mono16"))
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 2
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    with pytest.raises(TranscodeError) as big:
        transcode(out.getvalue(), JPEGLSLossless)
    assert "2 GiB" in big.value.reason
