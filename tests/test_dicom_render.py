"""Rendered images and thumbnails: the grayscale pipeline against a numpy oracle written from
PS3.3 C.11, and the PS3.18 routes with authentication, the access scope, the audit trail, and
thumbnails of the priors ready before anyone asks."""

from __future__ import annotations

import io
import math

import numpy as np
import pydicom
import pytest
import sqlalchemy as sa
from PIL import Image

from dicom_images import image, pixels
from dicom_samples import ct_slice
from expediente.db.schema import audit_log, dicom_thumbnail
from expediente.dicom.ingest import Origin
from expediente.dicom.render import RenderError, fit, render, thumbnail, window_lut
from expediente.dicom.thumbnails import Thumbnails
from mx_people import curp_of, mx_patient

LUPE = dict(given="María Guadalupe", first="Hernández", second="Cruz", birth="1979-12-03", sex="female", state="DF")
LUPE_CURP = curp_of("María Guadalupe", "Hernández", "Cruz", "1979-12-03", "female", "DF")


def _oracle(x: float, c: float, w: float, function: str = "LINEAR") -> float:
    """One value through the VOI function, written straight from PS3.3 C.11.2.1.2 and 3.1."""
    if function == "SIGMOID":
        exponent = -4 * (x - c) / w
        return 0.0 if exponent > 700 else 255 / (1 + math.exp(exponent))
    if function == "LINEAR_EXACT":
        if x <= c - w / 2:
            return 0
        if x > c + w / 2:
            return 255
        return ((x - c) / w + 0.5) * 255
    if x <= c - 0.5 - (w - 1) / 2:
        return 0
    if x > c - 0.5 + (w - 1) / 2:
        return 255
    return ((x - (c - 0.5)) / (w - 1) + 0.5) * 255


def _decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _gray(data: bytes) -> np.ndarray:
    return np.asarray(_decode(data).convert("L"), dtype=np.int16)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_the_window_function_is_the_standards(function):
    values = np.linspace(-1200, 1200, 481)
    for c, w in ((40, 400), (-600, 1500), (0.5, 1 if function == "LINEAR" else 0.5), (300, 2)):
        ours = window_lut(values, c, w, function)
        expected = np.array([_oracle(v, c, w, function) for v in values])
        assert np.allclose(ours, expected, atol=1e-9), (c, w)


def test_a_ct_is_rescaled_then_windowed_exactly():
    data = ct_slice(size=64)  # stored 0..1001, rescale intercept -1024, window 40/400 in the header
    stored = pydicom.dcmread(io.BytesIO(data)).pixel_array.astype(float)
    hu = stored - 1024
    png = _gray(render(data, content_type="image/png"))
    expected = np.clip(np.rint([_oracle(v, 40, 400) for v in hu.ravel()]), 0, 255).reshape(hu.shape)
    assert np.array_equal(png, expected)
    asked = _gray(render(data, content_type="image/png", window=(-1000, 100)))
    expected = np.clip(np.rint([_oracle(v, -1000, 100) for v in hu.ravel()]), 0, 255).reshape(hu.shape)
    assert np.array_equal(asked, expected)
    assert asked.max() == 255 and png.min() == 0 and 0 < png.max() < 255  # air window: the body saturates


def test_without_a_window_the_frame_spans_black_to_white():
    arr = pixels("mono16")
    png = _gray(render(image("mono16"), content_type="image/png"))
    assert (png[arr == arr.min()] == 0).all() and (png[arr == arr.max()] == 255).all()
    expected = np.clip(np.rint([_oracle(v, (arr.min() + arr.max()) / 2, float(arr.max() - arr.min()), "LINEAR_EXACT") for v in arr.ravel().astype(float)]), 0, 255)
    assert np.array_equal(png.ravel(), expected)


def test_monochrome1_is_inverted():
    mono2 = _gray(render(image("mono16"), content_type="image/png", window=(1000, 2000)))
    mono1 = _gray(render(image("mono1"), content_type="image/png", window=(1000, 2000)))
    assert np.array_equal(mono1, 255 - mono2)


def test_signed_pixels_keep_their_sign():
    arr = pixels("signed16").astype(float)
    png = _gray(render(image("signed16"), content_type="image/png", window=(0, 1000)))
    expected = np.clip(np.rint([_oracle(v, 0, 1000) for v in arr.ravel()]), 0, 255).reshape(arr.shape)
    assert np.array_equal(png, expected)


def test_color_is_rgb_and_a_frame_is_chosen():
    rgb = _decode(render(image("rgb8"), content_type="image/png"))
    assert rgb.mode == "RGB" and np.array_equal(np.asarray(rgb), pixels("rgb8"))
    multi = image("mono16", frames=3)
    frames = [_gray(render(multi, frame=f, content_type="image/png", window=(2000, 4000))) for f in (1, 2, 3)]
    assert not np.array_equal(frames[0], frames[2])
    with pytest.raises(RenderError) as missing:
        render(multi, frame=4)
    assert missing.value.status == 404 and "cuadro 4" in missing.value.reason


def test_the_size_fits_the_viewport_keeping_the_aspect():
    assert fit(512, 256, (128, 128)) == (128, 64)
    assert fit(40, 48, (100, 60)) == (50, 60)
    assert fit(100, 100, (300, 200)) == (200, 200)  # fitted up as well
    assert fit(100, 100, None, aspect=2.0) == (100, 200)  # rows twice as far apart as columns
    jpeg = _decode(render(image("mono16", rows=48, columns=40), size=(100, 60)))
    assert jpeg.format == "JPEG" and jpeg.size == (50, 60)
    small = _decode(thumbnail(ct_slice(size=256), size=64))
    assert small.size == (64, 64)


def test_bad_requests_are_refused_with_a_reason():
    with pytest.raises(RenderError) as media:
        render(ct_slice(), content_type="image/gif")
    assert media.value.status == 406
    with pytest.raises(RenderError) as width:
        render(ct_slice(), window=(40, 0.5))
    assert "ancho" in width.value.reason
    from pydicom.data import get_testdata_file

    with pytest.raises(RenderError) as no_pixels:
        render(open(get_testdata_file("test-SR.dcm"), "rb").read())
    assert "Pixel Data" in no_pixels.value.reason
    with pytest.raises(RenderError):
        render(b"no soy DICOM")


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm"])
def test_every_syntax_of_the_same_image_renders_the_same(name):
    from pydicom.data import get_testdata_file

    reference = _gray(render(open(get_testdata_file("MR_small.dcm"), "rb").read(), content_type="image/png"))
    assert np.array_equal(_gray(render(open(get_testdata_file(name), "rb").read(), content_type="image/png")), reference)


# ---------------------------------------------------------------------- HTTP


def _store(services, data: bytes):
    return services.archive.store_file(data, origin=Origin("stow"))


def _series(services, *, n: int = 3, **tags) -> tuple[str, str, list[str]]:
    from pydicom.uid import generate_uid

    study, series = tags.pop("study_uid", None) or generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(n)]
    for i, sop in enumerate(sops, start=1):
        _store(services, ct_slice(study_uid=study, series_uid=series, sop_uid=sop, number=i, size=64, **tags))
    services.follower.catch_up()
    return study, series, sops


def test_rendered_routes_answer_images(client, auth, services):
    study, series, sops = _series(services)
    base = f"/dicomweb/studies/{study}/series/{series}/instances/{sops[0]}"
    r = client.get(base + "/rendered", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert _decode(r.content).size == (64, 64)
    r = client.get(base + "/rendered?window=-1000,100,linear&viewport=32,32", headers={**auth, "Accept": "image/png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    png = _gray(r.content)
    assert png.shape == (32, 32) and png.max() == 255  # the body is far above an air window
    frame = client.get(base + "/frames/1/rendered?accept=image/png", headers=auth)
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/png"
    whole = client.get(f"/dicomweb/studies/{study}/series/{series}/rendered", headers=auth)
    assert whole.status_code == 200 and whole.headers["content-type"].startswith('multipart/related; type="image/jpeg"')
    assert whole.content.count(b"\xff\xd8\xff") == 3  # one JPEG per instance
    assert client.get(f"/dicomweb/studies/{study}/rendered", headers=auth).content.count(b"Content-Location: ") == 3
    png = client.get(f"/dicomweb/studies/{study}/rendered", headers={**auth, "Accept": 'multipart/related; type="image/png"'})
    assert png.status_code == 200 and png.headers["content-type"].startswith('multipart/related; type="image/png"')
    assert png.content.count(b"\x89PNG") == 3


def test_bad_parameters_are_a_spanish_400_or_406(client, auth, services):
    study, series, sops = _series(services, n=1)
    base = f"/dicomweb/studies/{study}/series/{series}/instances/{sops[0]}/rendered"
    for query in ("window=40", "window=40,abc", "window=40,0", "window=40,400,cubic", "viewport=0,10", "viewport=10,10,0,0,5,5", "quality=0", "quality=alto"):
        r = client.get(f"{base}?{query}", headers=auth)
        assert r.status_code == 400, query
        assert r.json()["resourceType"] == "OperationOutcome"
    r = client.get(base, headers={**auth, "Accept": "image/gif"})
    assert r.status_code == 406 and "imágenes" in r.json()["issue"][0]["diagnostics"]
    missing = client.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sops[0]}/frames/9/rendered", headers=auth)
    assert missing.status_code == 404 and "cuadro 9" in missing.json()["issue"][0]["diagnostics"]


def test_without_a_token_401_and_out_of_scope_an_audited_404(client, auth, services, make_token):
    client.post("/fhir/Patient", json=mx_patient(**LUPE), headers=auth)
    study, series, sops = _series(services, patient_id=LUPE_CURP, name="Hernández Cruz^María Guadalupe", birth="19791203")
    unreconciled, _, _ = _series(services, patient_id="URG-9", n=1)
    paths = [f"/dicomweb/studies/{study}/thumbnail", f"/dicomweb/studies/{study}/series/{series}/instances/{sops[1]}/rendered"]
    for path in paths:
        assert client.get(path).status_code == 401
    physician = {"Authorization": f"Bearer {make_token('physician')}"}  # no care relationship with her
    for path in [*paths, f"/dicomweb/studies/{unreconciled}/thumbnail"]:
        r = client.get(path, headers=physician)
        assert r.status_code == 404, path
        assert client.get(path, headers=auth).status_code == 200  # the institution's system sees it
    with services.engine.connect() as conn:
        entries = conn.execute(sa.select(audit_log.c.res_id, audit_log.c.outcome, audit_log.c.patient_key).where(audit_log.c.res_type == "ImagingStudy", audit_log.c.action == "read")).all()
    assert {(study, "denied"), (study, "allowed"), (unreconciled, "denied")} <= {(e.res_id, e.outcome) for e in entries}
    assert any(e.res_id == study and e.outcome == "allowed" and e.patient_key for e in entries)
    assert client.get("/dicomweb/studies/1.2.3.999/rendered", headers=auth).status_code == 404


def test_thumbnails_show_the_middle_instance_and_are_kept(client, auth, services):
    study, series, sops = _series(services, n=5)
    r = client.get(f"/dicomweb/studies/{study}/series/{series}/thumbnail", headers={**auth, "Accept": "image/png"})
    assert r.status_code == 200 and _decode(r.content).size == (128, 128)
    ref = services.archive.instances(study_uid=study, sop_uid=sops[2])[0]  # instance number 3 of 5
    expected = Thumbnails(services.archive).get(ref, media_type="image/png")
    assert r.content == expected
    with services.engine.connect() as conn:
        kept = conn.execute(sa.select(dicom_thumbnail).where(dicom_thumbnail.c.instance_key == ref.blob_key)).all()
    assert [(k.frame, k.size, k.media_type) for k in kept] == [(1, 128, "image/png")]
    assert services.archive.blobs.get(kept[0].blob_key) == r.content
    small = client.get(f"/dicomweb/studies/{study}/thumbnail?viewport=48,64", headers=auth)
    assert small.status_code == 200 and _decode(small.content).size == (48, 48)
    frame = client.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sops[0]}/frames/1/thumbnail", headers=auth)
    assert frame.status_code == 200 and _decode(frame.content).format == "JPEG"


def test_a_new_study_makes_the_priors_thumbnails(client, auth, services, monkeypatch):
    patient = client.post("/fhir/Patient", json=mx_patient(**LUPE), headers=auth).json()["id"]
    tags = dict(patient_id=LUPE_CURP, name="Hernández Cruz^María Guadalupe", birth="19791203")
    prior, _, sops = _series(services, n=3, study_date="20251110", **tags)
    thumbnails = Thumbnails(services.archive)
    middle = services.archive.instances(study_uid=prior, sop_uid=sops[1])[0]
    with services.engine.begin() as conn:
        conn.execute(dicom_thumbnail.delete())  # as if the prior came from the old PACS
    assert not thumbnails.is_cached(middle)
    _series(services, n=1, study_date="20261115", **tags)  # today's study arrives
    assert thumbnails.is_cached(middle)
    assert services.priors.studies_of(patient)[-1] == prior

    import expediente.dicom.thumbnails as module

    def no_decoding(*args, **kwargs):
        raise AssertionError("a prepared thumbnail is served without decoding")

    monkeypatch.setattr(module, "thumbnail", no_decoding)
    r = client.get(f"/dicomweb/studies/{prior}/thumbnail", headers=auth)
    assert r.status_code == 200 and _decode(r.content).size == (128, 128)


def test_a_new_order_makes_the_priors_thumbnails(client, auth, services):
    patient = client.post("/fhir/Patient", json=mx_patient(**LUPE), headers=auth).json()["id"]
    prior, _, sops = _series(services, n=2, patient_id=LUPE_CURP, name="Hernández Cruz^María Guadalupe", birth="19791203")
    middle = services.archive.instances(study_uid=prior, sop_uid=sops[0])[0]  # the first of two
    with services.engine.begin() as conn:
        conn.execute(dicom_thumbnail.delete())
    services.follower.catch_up()  # the first look only starts watching orders
    order = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "code": {"text": "TAC de control"}, "subject": {"reference": f"Patient/{patient}"}}
    assert client.post("/fhir/ServiceRequest", json=order, headers=auth).status_code == 201
    assert not Thumbnails(services.archive).is_cached(middle)
    services.follower.catch_up()
    assert Thumbnails(services.archive).is_cached(middle)


def test_a_frame_of_a_multi_frame_instance_is_read_alone(client, auth, services):
    from pydicom.dataset import Dataset

    from expediente.dicom.thumbnails import frame_source

    data = image("mono16", rows=48, columns=40, frames=4, seed=7)
    stored = _store(services, data)
    services.follower.catch_up()
    ref = services.archive.instances(study_uid=stored.study_uid)[0]
    source, number = frame_source(services.archive, ref, 3)
    assert isinstance(source, Dataset) and number == 1 and len(source.PixelData) == 48 * 40 * 2  # one frame's bytes
    path = f"/dicomweb/studies/{ref.study_uid}/series/{ref.series_uid}/instances/{ref.sop_instance_uid}/frames/3/rendered?window=2000,4000"
    r = client.get(path, headers={**auth, "Accept": "image/png"})
    assert r.status_code == 200
    assert np.array_equal(_gray(r.content), _gray(render(data, frame=3, content_type="image/png", window=(2000, 4000))))
    both = client.get(path.replace("/frames/3/", "/frames/2,3/"), headers=auth)
    assert both.status_code == 200 and both.content.count(b"\xff\xd8\xff") == 2
    thumb = client.get(path.replace("/frames/3/rendered?window=2000,4000", "/thumbnail"), headers={**auth, "Accept": "image/png"})
    assert np.array_equal(_gray(thumb.content), _gray(thumbnail(data, content_type="image/png")))  # middle frame: 2 of 4


def test_a_frame_too_large_to_preview_is_refused_before_decoding():
    ds = pydicom.dcmread(io.BytesIO(image("mono16")))
    ds.Rows = ds.Columns = 9000
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    with pytest.raises(RenderError) as big:
        render(out.getvalue())
    assert big.value.status == 422 and "grande" in big.value.reason
