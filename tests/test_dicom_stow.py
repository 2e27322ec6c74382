"""STOW-RS: what is stored answers its RetrieveURL and retrieves bit-identical; what is refused
says why in Spanish, with its DIMSE status, and leaves nothing behind; the server keeps serving."""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import pydicom
import pydicom.data
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from dicom_samples import ct_slice
from dicomweb_parts import STOW_TYPE, instance_url, seq, split_parts, stow, stow_body, uids, value
from expediente.app import Services, create_app
from expediente.config import Settings
from expediente.db.migrate import upgrade
from expediente.db.schema import audit_log, dicom_instance, dicom_series, dicom_study
from expediente.dicom.status import CANNOT_UNDERSTAND, DATASET_MISMATCH

REFERENCED, FAILED = "00081199", "00081198"
RETRIEVE_URL, SOP_UID, REASON, TEXT = "00081190", "00081155", "00081197", "0040A160"


def _counts(services) -> tuple[int, int, int]:
    with services.engine.connect() as conn:
        return tuple(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() for t in (dicom_study, dicom_series, dicom_instance))


def _blobs(services) -> set[str]:
    return set(services.archive.blobs.keys())


def _spool(services) -> list[Path]:
    spool = services.archive.blobs.root / "spool"
    return list(spool.iterdir()) if spool.exists() else []


def _instance_bytes(client, auth, data: bytes) -> bytes:
    r = client.get(instance_url(data), headers=auth)
    assert r.status_code == 200, r.text
    parts = split_parts(r.headers["content-type"], r.content)
    assert len(parts) == 1
    return parts[0][1]


def test_stored_instances_answer_their_retrieve_urls_and_are_audited(client, auth, services):
    study = pydicom.uid.generate_uid()
    a, b = ct_slice(study_uid=study, number=1), ct_slice(study_uid=study, number=2)
    r = stow(client, auth, a, b, study=study)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/dicom+json")
    doc = r.json()
    assert value(doc, RETRIEVE_URL) == f"http://testserver/dicomweb/studies/{study}"
    refs = seq(doc, REFERENCED)
    assert [value(i, SOP_UID) for i in refs] == [uids(a)[2], uids(b)[2]]
    assert value(refs[0], RETRIEVE_URL) == "http://testserver" + instance_url(a)
    assert FAILED not in doc
    assert _counts(services) == (1, 2, 2)
    assert hashlib.sha256(_instance_bytes(client, auth, a)).digest() == hashlib.sha256(a).digest()
    with services.engine.connect() as conn:
        rows = conn.execute(sa.select(audit_log).where(audit_log.c.res_type == "ImagingStudy", audit_log.c.action == "create")).all()
        origins = {r.origin for r in conn.execute(sa.select(dicom_instance.c.origin))}
    assert len(rows) == 2 and {r.res_id for r in rows} == {study} and {r.outcome for r in rows} == {"allowed"}
    assert all(o.startswith("stow:system.") for o in origins)


def _testdata_files() -> list[str]:
    return sorted(f for f in pydicom.data.get_testdata_files() if Path(f).is_file())  # on disk: no downloads


def test_every_file_pydicom_ships_stores_bit_identical_or_is_refused_in_spanish(client, auth, services):
    files = _testdata_files()
    assert len(files) > 100
    first_of: dict[str, bytes] = {}  # SOP Instance UID -> the first file stored with it (duplicates are kept)
    stored = refused = 0
    refused_hashes = set()
    for path in files:
        data = Path(path).read_bytes()
        r = stow(client, auth, data)
        assert r.status_code in (200, 409), (path, r.status_code, r.text)
        doc = r.json()
        if r.status_code == 200:
            stored += 1
            sop = value(seq(doc, REFERENCED)[0], SOP_UID)
            first_of.setdefault(sop, data)
            got = _instance_bytes(client, auth, first_of[sop])
            assert hashlib.sha256(got).hexdigest() == hashlib.sha256(first_of[sop]).hexdigest(), path
        else:
            refused += 1
            refused_hashes.add(hashlib.sha256(data).hexdigest())
            failure = seq(doc, FAILED)[0]
            assert value(failure, REASON) in (CANNOT_UNDERSTAND, DATASET_MISMATCH), (path, failure)
            reason = value(failure, TEXT)
            assert reason and any(w in reason for w in ("falta", "no es", "inválid", "truncado", "dañados", "no coincide")), (path, reason)
    assert stored > 80 and refused > 0, (stored, refused)
    assert _counts(services)[2] == len(first_of)
    with services.engine.connect() as conn:
        keys = {r.blob_key for r in conn.execute(sa.select(dicom_instance.c.blob_key))}
    assert keys <= _blobs(services) and not refused_hashes & _blobs(services)  # refused files left no blob
    assert _spool(services) == []


def _bad_inputs() -> dict[str, bytes]:
    good = ct_slice()
    out = {"truncated": good[: len(good) - 500], "garbage_after_preamble": b"\x00" * 128 + b"DICM" + b"\xde\xad\xbe\xef" * 300}
    for name, keyword, bad in (("missing_sop_uid", "SOPInstanceUID", None), ("missing_study_uid", "StudyInstanceUID", None), ("traversal", "SOPInstanceUID", "../../etc/passwd")):
        ds = pydicom.dcmread(io.BytesIO(good))
        if bad is None:
            delattr(ds, keyword)
            if keyword == "SOPInstanceUID":
                ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                setattr(ds, keyword, bad)
                ds.file_meta.MediaStorageSOPInstanceUID = bad
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(buf, enforce_file_format=False)
        out[name] = buf.getvalue()
    return out


def test_bad_parts_are_refused_with_reasons_and_nothing_of_them_stays(client, auth, services):
    bad = _bad_inputs()
    good = ct_slice()
    r = stow(client, auth, good, *bad.values())
    assert r.status_code == 202, r.text  # some stored, some refused
    doc = r.json()
    assert [value(i, SOP_UID) for i in seq(doc, REFERENCED)] == [uids(good)[2]]
    failed = seq(doc, FAILED)
    assert len(failed) == len(bad)
    reasons = dict(zip(bad, (value(f, TEXT) for f in failed), strict=True))
    assert all(value(f, REASON) == CANNOT_UNDERSTAND for f in failed)
    assert "truncado" in reasons["truncated"]
    assert "no es un archivo DICOM válido" in reasons["garbage_after_preamble"] or "falta" in reasons["garbage_after_preamble"]
    assert "SOPInstanceUID" in reasons["missing_sop_uid"] and "StudyInstanceUID" in reasons["missing_study_uid"]
    assert "no es un UID válido" in reasons["traversal"]
    sops = dict(zip(bad, (value(f, SOP_UID) for f in failed), strict=True))
    assert sops["traversal"] is None  # an invalid UID is never echoed as one
    assert sops["truncated"] == uids(bad["truncated"])[2] and sops["garbage_after_preamble"] is None
    assert _counts(services) == (1, 1, 1)
    assert len(_blobs(services)) == 1 and _spool(services) == []
    assert not any("etc" in str(p) for p in services.settings.data_dir.rglob("*"))
    # All refused: 409; and the server keeps serving.
    r = stow(client, auth, bad["truncated"], bad["traversal"])
    assert r.status_code == 409 and len(seq(r.json(), FAILED)) == 2
    assert stow(client, auth, ct_slice()).status_code == 200


def test_an_instance_of_another_study_than_the_urls_is_refused(client, auth, services):
    study = pydicom.uid.generate_uid()
    mine, other = ct_slice(study_uid=study), ct_slice()
    r = stow(client, auth, mine, other, study=study)
    assert r.status_code == 202, r.text
    failed = seq(r.json(), FAILED)
    assert value(failed[0], SOP_UID) == uids(other)[2] and value(failed[0], REASON) == DATASET_MISMATCH
    assert "no coincide con el estudio de la URL" in value(failed[0], TEXT)
    with services.engine.connect() as conn:
        assert conn.execute(sa.select(dicom_study.c.study_uid)).scalars().all() == [study]
    assert client.post("/dicomweb/studies/..%2F..%2Fetc", content=stow_body(mine), headers={**auth, "Content-Type": STOW_TYPE}).status_code in (400, 404)


def test_wrong_content_types_and_malformed_bodies(client, auth, services):
    data = ct_slice()
    r = client.post("/dicomweb/studies", content=data, headers={**auth, "Content-Type": "application/dicom"})
    assert r.status_code == 415 and "multipart/related" in r.json()["issue"][0]["diagnostics"]
    r = client.post("/dicomweb/studies", content=stow_body(data), headers={**auth, "Content-Type": 'multipart/related; type="application/dicom+xml"; boundary=x'})
    assert r.status_code == 415
    r = client.post("/dicomweb/studies", content=stow_body(data), headers={**auth, "Content-Type": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 400 and "boundary" in r.json()["issue"][0]["diagnostics"]
    unfinished = stow_body(data)[: -len("--\r\n") - 40]
    r = client.post("/dicomweb/studies", content=unfinished, headers={**auth, "Content-Type": STOW_TYPE})
    assert r.status_code == 400 and "multipart" in r.json()["issue"][0]["diagnostics"]
    r = client.post("/dicomweb/studies", content=b"", headers={**auth, "Content-Type": STOW_TYPE})
    assert r.status_code == 400
    r = client.post("/dicomweb/studies", content=stow_body(data, content_type="application/json"), headers={**auth, "Content-Type": STOW_TYPE})
    assert r.status_code == 409 and "application/dicom" in value(seq(r.json(), FAILED)[0], TEXT)
    assert _counts(services) == (0, 0, 0) and _spool(services) == []


@pytest.fixture
def small_limits(settings: Settings):
    limited = Settings(**{**settings.__dict__, "max_body_bytes": 64 * 1024, "dicom_max_instance_bytes": 20 * 1024})
    services = Services.build(limited)
    upgrade(services.engine)
    with TestClient(create_app(limited, services)) as c:
        yield c, services
    services.close()


def _system_token(client, services) -> dict:
    from expediente.security.accounts import add_account

    add_account(services.engine, "stow.sistema", "contraseña-de-prueba-segura", "system", kind="system")
    r = client.post("/auth/token", data={"grant_type": "client_credentials", "client_id": "stow.sistema", "client_secret": "contraseña-de-prueba-segura"})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_oversized_uploads_answer_413_in_spanish_and_keep_nothing(small_limits):
    client, services = small_limits
    auth = _system_token(client, services)
    big = ct_slice(size=128)  # 32 KB of pixels: over the instance limit, under the body limit
    r = stow(client, auth, big)
    assert r.status_code == 413 and "excede el tamaño máximo" in r.json()["issue"][0]["diagnostics"]
    body = stow_body(*(ct_slice() for _ in range(10)))  # ~90 KB announced: refused before reading
    r = client.post("/dicomweb/studies", content=body, headers={**auth, "Content-Type": STOW_TYPE})
    assert r.status_code == 413 and "excede el máximo permitido" in r.json()["issue"][0]["diagnostics"]
    assert _counts(services) == (0, 0, 0) and _blobs(services) == set() and _spool(services) == []

    def chunked():  # no Content-Length: cut by the running count, the part being received is dropped
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    r = client.post("/dicomweb/studies", content=chunked(), headers={**auth, "Content-Type": STOW_TYPE})
    assert r.status_code == 413
    assert _spool(services) == []
    with services.engine.connect() as conn:
        keys = {r.blob_key for r in conn.execute(sa.select(dicom_instance.c.blob_key))}
    assert _blobs(services) == keys and len(keys) < 10  # only whole instances received before the cut
    assert stow(client, auth, ct_slice()).status_code == 200  # still serving


def test_storing_needs_a_token_and_the_right_to_create_imaging_studies(client, services, make_token):
    data = ct_slice()
    r = client.post("/dicomweb/studies", content=stow_body(data), headers={"Content-Type": STOW_TYPE})
    assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"
    auditor = {"Authorization": f"Bearer {make_token('auditor')}"}
    r = stow(client, auditor, data)
    assert r.status_code == 403
    technician = {"Authorization": f"Bearer {make_token('imaging_technician', organization='DFIMS000011')}"}
    assert stow(client, technician, data).status_code == 200
    with services.engine.connect() as conn:
        denied = conn.execute(sa.select(audit_log).where(audit_log.c.res_type == "ImagingStudy", audit_log.c.outcome == "denied")).all()
        institution = conn.execute(sa.select(dicom_study.c.institution)).scalar()
    assert len(denied) == 1 and denied[0].role == "auditor" and denied[0].action == "create"
    assert institution == "DFIMS000011"  # the study is the technician's institution's
    assert _counts(services) == (1, 1, 1)
