"""WADO-RS and WADO-URI: instances come back exactly as stored (or transcoded when asked),
metadata points at working bulk data URIs, frames equal what pydicom extracts, every retrieval
is audited and a study the caller may not see answers 404."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
import requests
import sqlalchemy as sa
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from access_world import CLUES, encounter, post
from blob_backends import s3_backend, s3_endpoint  # noqa: F401 - fixtures
from dicom_samples import ct_slice
from dicomweb_parts import instance_url, split_parts, stow, uids
from expediente.db.schema import audit_log
from expediente.security.accounts import add_account
from mx_examples import mx_practitioner
from mx_people import curp_of, mx_patient
from served import free_port, serving

CLUES_A = "DFIMS000011"


def _file(name: str) -> bytes:
    path = pydicom.data.get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} no está entre los archivos de prueba de pydicom disponibles sin red")
    return Path(path).read_bytes()


def _multiframe(*, frames: int, samples: int, bits: int, syntax=ExplicitVRLittleEndian, charset: str | None = None) -> bytes:
    """A native multi-frame instance with random pixels."""
    ds = _ds(ct_slice())
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.NumberOfFrames, ds.SamplesPerPixel, ds.Rows, ds.Columns = frames, samples, 6, 10
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    if samples == 3:
        ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0
    dtype = {8: np.uint8, 16: np.uint16, 32: np.uint32}[bits]
    pixels = np.random.default_rng(frames).integers(0, 2 ** min(bits, 16), size=(frames, 6, 10, samples)).astype(dtype)
    ds.PixelData = pixels.tobytes()
    ds.file_meta.TransferSyntaxUID = syntax
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True, implicit_vr=syntax == "1.2.840.10008.1.2", little_endian=True)
    return buf.getvalue()


_SYNTHETIC = {
    "native-16bit-4frames": lambda: _multiframe(frames=4, samples=1, bits=16),
    "native-rgb-3frames": lambda: _multiframe(frames=3, samples=3, bits=8),
    "implicit-32bit-5frames": lambda: _multiframe(frames=5, samples=1, bits=32, syntax="1.2.840.10008.1.2"),
    # A character set the fast header walk declines: the frame geometry comes from pydicom.
    "iso2022-16bit-2frames": lambda: _multiframe(frames=2, samples=1, bits=16, charset="ISO 2022 IR 100"),
}


def _stored(client, auth, *datas: bytes) -> None:
    r = stow(client, auth, *datas)
    assert r.status_code == 200, r.text


def _parts(r) -> list[tuple[dict, bytes]]:
    assert r.status_code == 200, r.text
    return split_parts(r.headers["content-type"], r.content)


def _ds(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


# ---------------------------------------------------------------------------------- instances


def test_study_series_and_instance_come_back_bit_identical(client, auth):
    study, series = generate_uid(), generate_uid()
    slices = [ct_slice(study_uid=study, series_uid=series, number=n) for n in (1, 2, 3)]
    other_series = ct_slice(study_uid=study, number=4)
    _stored(client, auth, *slices, other_series)
    digests = {hashlib.sha256(d).hexdigest() for d in slices + [other_series]}
    parts = _parts(client.get(f"/dicomweb/studies/{study}", headers=auth))
    assert {hashlib.sha256(p).hexdigest() for _, p in parts} == digests
    assert all(h["content-type"] == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}" for h, _ in parts)
    series_parts = _parts(client.get(f"/dicomweb/studies/{study}/series/{series}", headers=auth))
    assert [p for _, p in series_parts] == slices  # instance-number order
    r = client.get(instance_url(slices[1]), headers=auth)
    assert [p for _, p in _parts(r)] == [slices[1]]
    assert r.headers["cache-control"] == "no-store"  # patient images stay out of shared caches


def test_a_single_instance_as_application_dicom_honours_range(client, auth):
    data = ct_slice()
    _stored(client, auth, data)
    headers = {**auth, "Accept": "application/dicom"}
    whole = client.get(instance_url(data), headers=headers)
    assert whole.status_code == 200 and whole.content == data and whole.headers["accept-ranges"] == "bytes"
    r = client.get(instance_url(data), headers={**headers, "Range": "bytes=128-131"})
    assert r.status_code == 206 and r.content == b"DICM" and r.headers["content-range"] == f"bytes 128-131/{len(data)}"
    r = client.get(instance_url(data), headers={**headers, "Range": "bytes=-100"})
    assert r.status_code == 206 and r.content == data[-100:]
    r = client.get(instance_url(data), headers={**headers, "Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"


def test_transfer_syntax_negotiation(client, auth):
    data = ct_slice()
    _stored(client, auth, data)
    url = instance_url(data)
    # Stored syntax whenever it is acceptable (with q values, the best acceptable wins).
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50; q=0.9, multipart/related; type="application/dicom"; transfer-syntax=*; q=0.5'
    assert [p for _, p in _parts(client.get(url, headers={**auth, "Accept": accept}))] == [data]
    # Another lossless syntax is made on the way out, same pixels.
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={JPEG2000Lossless}'
    parts = _parts(client.get(url, headers={**auth, "Accept": accept}))
    assert parts[0][0]["content-type"] == f"application/dicom; transfer-syntax={JPEG2000Lossless}"
    got = _ds(parts[0][1])
    assert got.file_meta.TransferSyntaxUID == JPEG2000Lossless and got.SOPInstanceUID == _ds(data).SOPInstanceUID
    assert np.array_equal(got.pixel_array, _ds(data).pixel_array)
    # A lossy target is never made: 406 in Spanish.
    r = client.get(url, headers={**auth, "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'})
    assert r.status_code == 406 and "Accept" in r.json()["issue"][0]["diagnostics"]
    r = client.get(url, headers={**auth, "Accept": "application/dicom+xml"})
    assert r.status_code == 406


# ---------------------------------------------------------------------------------- metadata, bulk


def test_metadata_points_at_working_bulk_data(client, auth):
    study, series = generate_uid(), generate_uid()
    slices = [ct_slice(study_uid=study, series_uid=series, number=n) for n in (1, 2)]
    _stored(client, auth, *slices)  # metadata not built yet: the request builds it
    for url in (f"/dicomweb/studies/{study}/metadata", f"/dicomweb/studies/{study}/series/{series}/metadata", instance_url(slices[0]) + "/metadata"):
        r = client.get(url, headers=auth)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/dicom+json")
        assert b"@DICOMWEB@" not in r.content
    docs = client.get(f"/dicomweb/studies/{study}/metadata", headers=auth).json()
    assert [d["00080018"]["Value"][0] for d in docs] == [uids(s)[2] for s in slices]
    first = docs[0]
    assert first["00100010"]["Value"][0]["Alphabetic"] == "Hernández Cruz^María Guadalupe"
    uri = first["7FE00010"]["BulkDataURI"]
    assert uri == "http://testserver" + instance_url(slices[0]) + "/bulkdata/7FE00010"
    parts = _parts(client.get(uri.removeprefix("http://testserver"), headers=auth))
    assert parts[0][1] == _ds(slices[0]).PixelData
    r = client.get(uri.removeprefix("http://testserver"), headers={**auth, "Accept": "application/octet-stream"})
    assert r.status_code == 200 and r.content == _ds(slices[0]).PixelData


def test_bulk_data_other_than_pixels(client, auth):
    data = _file("examples_overlay.dcm")  # Overlay Data (6000,3000) is bulk data
    _stored(client, auth, data)
    doc = client.get(instance_url(data) + "/metadata", headers=auth).json()[0]
    uri = doc["60003000"]["BulkDataURI"]
    parts = _parts(client.get(uri.removeprefix("http://testserver"), headers=auth))
    assert parts[0][1] == _ds(data)[0x60003000].value
    assert client.get(instance_url(data) + "/bulkdata/0011XYZ0", headers=auth).status_code == 400
    assert client.get(instance_url(data) + "/bulkdata/00091234", headers=auth).status_code == 404


# ---------------------------------------------------------------------------------- frames


def _expected_frames(data: bytes) -> list[bytes]:
    ds = _ds(data)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return list(generate_frames(ds.PixelData, number_of_frames=count))
    arr = ds.pixel_array.reshape((count, *ds.pixel_array.shape[-3 if count > 1 and ds.SamplesPerPixel > 1 else -2 :]) if count > 1 else (1, *ds.pixel_array.shape))
    if ds.BitsAllocated == 1:
        return [np.packbits(frame.ravel(), bitorder="little").tobytes() for frame in arr]
    return [frame.astype(frame.dtype.newbyteorder("<")).tobytes() for frame in arr]


@pytest.mark.parametrize(
    "name",
    [*_SYNTHETIC, "rtdose_rle.dcm", "SC_rgb_rle_2frame.dcm", "SC_rgb_rle_16bit_2frame.dcm", "examples_ybr_color.dcm", "liver_1frame.dcm", "CT_small.dcm", "JPEG2000.dcm"],
)
def test_frames_equal_what_pydicom_extracts(client, auth, name):
    data = _SYNTHETIC[name]() if name in _SYNTHETIC else _file(name)
    _stored(client, auth, data)
    expected = _expected_frames(data)
    numbers = list(range(1, len(expected) + 1))
    r = client.get(instance_url(data) + "/frames/" + ",".join(map(str, numbers)), headers=auth)
    frames = [p for _, p in _parts(r)]
    assert frames == expected
    if len(expected) > 2:  # a subset, out of order
        r = client.get(instance_url(data) + f"/frames/{len(expected)},1", headers=auth)
        assert [p for _, p in _parts(r)] == [expected[-1], expected[0]]


def test_one_bit_frames_that_do_not_start_on_a_byte(client, auth):
    ds = _ds(ct_slice())
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    ds.Rows = ds.Columns = 5  # 25 bits a frame
    ds.NumberOfFrames = 3
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    del ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2, size=(3, 5, 5), dtype=np.uint8)
    ds.PixelData = np.packbits(bits.ravel(), bitorder="little").tobytes() + b"\x00"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    _stored(client, auth, data)
    frames = [p for _, p in _parts(client.get(instance_url(data) + "/frames/1,2,3", headers=auth))]
    assert frames == [np.packbits(bits[i].ravel(), bitorder="little").tobytes() for i in range(3)]


def test_frames_decoded_or_recompressed_on_request(client, auth):
    data = _file("SC_rgb_rle_2frame.dcm")
    _stored(client, auth, data)
    url = instance_url(data) + "/frames/1,2"
    r = client.get(url, headers={**auth, "Accept": f'multipart/related; type="application/octet-stream"; transfer-syntax={ExplicitVRLittleEndian}'})
    parts = _parts(r)
    assert all(h["content-type"] == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}" for h, _ in parts)
    arr = _ds(data).pixel_array
    assert [p for _, p in parts] == [arr[i].tobytes() for i in range(2)]
    r = client.get(url, headers={**auth, "Accept": 'multipart/related; type="image/dicom-rle"'})
    assert [p for _, p in _parts(r)] == _expected_frames(data)  # the stored frames as they are
    r = client.get(instance_url(ct_slice()) + "/frames/1", headers=auth)
    assert r.status_code == 404
    r = client.get(instance_url(data) + "/frames/3", headers=auth)
    assert r.status_code == 400 and "2 cuadro" in r.json()["issue"][0]["diagnostics"]
    r = client.get(instance_url(data) + "/frames/0,x", headers=auth)
    assert r.status_code == 400


# ---------------------------------------------------------------------------------- WADO-URI


def test_wado_uri(client, auth):
    data = ct_slice()
    _stored(client, auth, data)
    study, series, sop, _ = uids(data)
    base = f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}"
    r = client.get(base + "&contentType=application/dicom", headers=auth)
    assert r.status_code == 200 and r.content == data and r.headers["content-type"] == "application/dicom"
    r = client.get(base + f"&contentType=application/dicom&transferSyntax={JPEG2000Lossless}", headers=auth)
    assert r.status_code == 200 and _ds(r.content).file_meta.TransferSyntaxUID == JPEG2000Lossless
    r = client.get(base, headers=auth)  # image/jpeg by default: a rendered frame
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8" and r.headers["content-type"] == "image/jpeg"
    r = client.get(base + "&contentType=image/png&rows=16&columns=16&windowCenter=40&windowWidth=400", headers=auth)
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(io.BytesIO(r.content)).size == (16, 16)
    r = client.get(base + "&frameNumber=2", headers=auth)
    assert r.status_code == 404 and "cuadro" in r.json()["issue"][0]["diagnostics"]
    r = client.get(base + "&contentType=image/tiff", headers=auth)
    assert r.status_code == 406
    assert client.get(f"/wado?studyUID={study}&seriesUID={series}&objectUID={sop}", headers=auth).status_code == 400
    assert client.get(f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}", headers=auth).status_code == 400
    assert client.get(f"/wado?requestType=WADO&studyUID=../../etc&seriesUID={series}&objectUID={sop}", headers=auth).status_code == 400


# ---------------------------------------------------------------------------------- access


def test_retrieval_needs_a_token_and_is_audited(client, auth, services):
    data = ct_slice()
    _stored(client, auth, data)
    study = uids(data)[0]
    for url in (f"/dicomweb/studies/{study}", instance_url(data) + "/metadata", instance_url(data) + "/frames/1", "/wado?requestType=WADO"):
        r = client.get(url)
        assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"
    _parts(client.get(f"/dicomweb/studies/{study}", headers=auth))
    with services.engine.connect() as conn:
        reads = conn.execute(sa.select(audit_log).where(audit_log.c.action == "read", audit_log.c.res_type == "ImagingStudy", audit_log.c.res_id == study)).all()
    assert len(reads) == 1 and reads[0].outcome == "allowed"
    assert client.get(f"/dicomweb/studies/{generate_uid()}", headers=auth).status_code == 404



def test_no_audit_entry_no_pixels(client, auth, services):
    """Fail closed: the frame path reads while its audit entry commits, but a trail that cannot
    write means 503 and not one pixel byte, for frames and whole instances alike."""
    data = ct_slice()
    _stored(client, auth, data)
    pixels = _ds(data).PixelData
    with services.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE audit_log RENAME TO audit_log_away"))
    try:
        for url in (instance_url(data) + "/frames/1", instance_url(data), f"/dicomweb/studies/{uids(data)[0]}"):
            r = client.get(url, headers=auth)
            assert r.status_code == 503 and r.json()["resourceType"] == "OperationOutcome", url
            assert pixels[:64] not in r.content
    finally:
        with services.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE audit_log_away RENAME TO audit_log"))
    assert client.get(instance_url(data) + "/frames/1", headers=auth).status_code == 200

LUPE = dict(given="María Guadalupe", first="Hernández", second="Cruz", birth="1979-12-03", sex="female", state="DF")


def test_a_clinician_sees_the_studies_of_patients_in_their_care_only(client, auth, services):
    org = post(client, auth, {"resourceType": "Organization", "name": "Hospital A", "identifier": [{"system": CLUES, "value": CLUES_A}]})
    carer, stranger = (post(client, auth, mx_practitioner(n, cedula=c)) for n, c in (("Ruiz", "7654321"), ("Soto", "7654322")))
    patient = post(client, auth, mx_patient(**LUPE))
    post(client, auth, encounter(patient, org, carer))
    data = ct_slice(patient_id=curp_of("María Guadalupe", "Hernández", "Cruz", "1979-12-03", "female", "DF"), birth="19791203")
    _stored(client, auth, data)
    services.follower.catch_up()  # the study joins the patient's record
    study = uids(data)[0]

    def token(who: str, prac: str, org_clues: str) -> dict:
        username = f"{who}.{generate_uid()[-6:]}"
        add_account(services.engine, username, "contraseña-de-prueba-segura", "physician", organization=org_clues, practitioner_ref=f"Practitioner/{prac}")
        r = client.post("/auth/token", data={"grant_type": "password", "username": username, "password": "contraseña-de-prueba-segura"})
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    mine, theirs = token("ruiz", carer, CLUES_A), token("soto", stranger, "JCSSA000022")
    assert [p for _, p in _parts(client.get(f"/dicomweb/studies/{study}", headers=mine))] == [data]
    for url in (f"/dicomweb/studies/{study}", instance_url(data) + "/metadata", instance_url(data) + "/frames/1"):
        r = client.get(url, headers=theirs)
        assert r.status_code == 404, (url, r.text)
    _, series, sop, _ = uids(data)
    r = client.get(f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}&contentType=application/dicom", headers=theirs)
    assert r.status_code == 404
    with services.engine.connect() as conn:
        rows = conn.execute(sa.select(audit_log).where(audit_log.c.res_type == "ImagingStudy", audit_log.c.res_id == study, audit_log.c.action == "read")).all()
    denied = [r for r in rows if r.outcome == "denied"]
    assert len(denied) == 4 and all(r.patient_key == patient for r in denied)  # the patient can see who tried
    assert any(r.outcome == "allowed" and r.patient_key == patient for r in rows)


# ---------------------------------------------------------------------------------- a real server


@pytest.fixture
def served(settings, services, tmp_path):
    """`expediente serve` in its own process on the test's database, with a system client."""
    add_account(services.engine, "pacs.integracion", "contraseña-de-prueba-segura", "system", kind="system")
    with serving(settings, free_port(), "pacs.integracion", "contraseña-de-prueba-segura", settings.data_dir.parent) as served:
        yield served


def test_dicomweb_client_against_a_real_server(served):
    from dicomweb_client.api import DICOMwebClient

    base, token = served
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    dw = DICOMwebClient(url=f"{base}/dicomweb", session=session)
    study = generate_uid()
    datasets = [_ds(ct_slice(study_uid=study, number=n, size=128)) for n in (1, 2, 3)]
    rle = _ds(_file("SC_rgb_rle_2frame.dcm"))
    rle.StudyInstanceUID = study
    result = dw.store_instances(datasets + [rle], study_instance_uid=study)
    assert len(result.ReferencedSOPSequence) == 4 and "FailedSOPSequence" not in result
    assert result.ReferencedSOPSequence[0].RetrieveURL.startswith(f"{base}/dicomweb/studies/{study}/series/")

    got = {str(ds.SOPInstanceUID): ds for ds in dw.retrieve_study(study)}
    assert set(got) == {str(ds.SOPInstanceUID) for ds in datasets + [rle]}
    for ds in datasets:
        assert got[str(ds.SOPInstanceUID)].PixelData == ds.PixelData
    one = datasets[1]
    meta = dw.retrieve_instance_metadata(study, str(one.SeriesInstanceUID), str(one.SOPInstanceUID))
    assert meta["00080018"]["Value"] == [str(one.SOPInstanceUID)]
    assert meta["7FE00010"]["BulkDataURI"].startswith(f"{base}/dicomweb/studies/{study}/")
    frames = dw.retrieve_instance_frames(study, str(one.SeriesInstanceUID), str(one.SOPInstanceUID), frame_numbers=[1])
    assert frames == [one.PixelData]
    rle_frames = dw.retrieve_instance_frames(study, str(rle.SeriesInstanceUID), str(rle.SOPInstanceUID), frame_numbers=[2, 1])
    stored = list(generate_frames(rle.PixelData, number_of_frames=2))
    assert rle_frames == [stored[1], stored[0]]
    # No token: refused; the server keeps serving.
    assert requests.get(f"{base}/dicomweb/studies/{study}").status_code == 401
    assert requests.get(f"{base}/health").status_code == 200


# ---------------------------------------------------------------------------------- on S3


def test_store_and_retrieve_over_an_s3_object_store(settings, s3_backend):
    """The same STOW-RS and WADO-RS over the S3 back end (encrypted): instances, ranges and
    frames come from ranged reads of the objects."""
    import base64
    import dataclasses

    from starlette.testclient import TestClient

    from expediente.app import Services, create_app
    from expediente.db.migrate import upgrade

    settings = s3_backend.apply(dataclasses.replace(settings, blob_key=base64.b64encode(os.urandom(32)).decode()))
    services = Services.build(settings)
    upgrade(services.engine)
    try:
        with TestClient(create_app(settings, services)) as client:
            add_account(services.engine, "s3.sistema", "contraseña-de-prueba-segura", "system", kind="system")
            r = client.post("/auth/token", data={"grant_type": "client_credentials", "client_id": "s3.sistema", "client_secret": "contraseña-de-prueba-segura"})
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            ct, jpeg = ct_slice(size=256), _file("examples_ybr_color.dcm")
            _stored(client, auth, ct, jpeg)
            for data in (ct, jpeg):
                assert [p for _, p in _parts(client.get(instance_url(data), headers=auth))] == [data]
            r = client.get(instance_url(ct), headers={**auth, "Accept": "application/dicom", "Range": "bytes=128-131"})
            assert r.status_code == 206 and r.content == b"DICM"
            frames = [p for _, p in _parts(client.get(instance_url(jpeg) + "/frames/30,1,15", headers=auth))]
            expected = _expected_frames(jpeg)
            assert frames == [expected[29], expected[0], expected[14]]
            doc = client.get(instance_url(ct) + "/metadata", headers=auth).json()[0]
            bulk = _parts(client.get(doc["7FE00010"]["BulkDataURI"].removeprefix("http://testserver"), headers=auth))
            assert bulk[0][1] == _ds(ct).PixelData
    finally:
        services.close()
