"""Every study becomes a FHIR ImagingStudy in the right patient's record, or waits on the
reconciliation list: never attached to the wrong person by guessing."""

from __future__ import annotations

import sqlalchemy as sa

from dicom_samples import ct_slice
from expediente.db.schema import audit_log, dicom_reconcile, dicom_study
from expediente.dicom.ingest import Origin
from mx_people import curp_of, mx_patient, nss_with_check_digit

LUPE = dict(given="María Guadalupe", first="Hernández", second="Cruz", birth="1979-12-03", sex="female", state="DF")
LUPE_CURP = curp_of("María Guadalupe", "Hernández", "Cruz", "1979-12-03", "female", "DF")
LUPE_NSS = nss_with_check_digit("1234567890")


def _register(client, auth, body) -> str:
    r = client.post("/fhir/Patient", json=body, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _store(services, **tags) -> str:
    stored = services.archive.store_file(ct_slice(**tags), origin=Origin("dimse", "CT_URG", institution="DFIMS000011"))
    return stored.study_uid


def _study(services, uid):
    with services.engine.connect() as conn:
        return conn.execute(sa.select(dicom_study).where(dicom_study.c.study_uid == uid)).one()


def _pending(services, uid):
    with services.engine.connect() as conn:
        return conn.execute(sa.select(dicom_reconcile).where(dicom_reconcile.c.study_uid == uid)).first()


def test_a_study_with_the_patients_curp_becomes_an_imaging_study_in_the_record(client, auth, services):
    patient = _register(client, auth, mx_patient(**LUPE))
    study = _store(services, patient_id=LUPE_CURP, name="Hernández Cruz^María Guadalupe", birth="19791203", accession="A-100")
    assert _study(services, study).patient_key is None  # attached by the follower, after the acknowledgement
    services.archive.store_file(ct_slice(patient_id=LUPE_CURP, study_uid=study, number=2), origin=Origin("stow"))
    services.follower.catch_up()

    row = _study(services, study)
    assert row.patient_key == patient and row.imaging_study_id == study
    r = client.get(f"/fhir/ImagingStudy/{study}", headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["subject"] == {"reference": f"Patient/{patient}"}
    assert body["identifier"][0] == {"system": "urn:dicom:uid", "value": f"urn:oid:{study}"}
    assert body["numberOfSeries"] == 2 and body["numberOfInstances"] == 2
    assert body["contained"][0]["address"] == "http://testserver/dicomweb"
    assert body["modality"] == [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}]
    assert {"value": "A-100"}.items() <= body["identifier"][1].items()
    everything = client.get(f"/fhir/Patient/{patient}/$everything", headers=auth).json()
    assert f"ImagingStudy/{study}" in {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in everything["entry"]}


def test_an_issuer_the_record_knows_links_the_study(client, auth, services):
    patient = _register(client, auth, mx_patient(**LUPE, nss=LUPE_NSS))
    study = _store(services, patient_id=LUPE_NSS, issuer="NSS", birth="19791203")
    services.follower.catch_up()
    assert _study(services, study).patient_key == patient


def test_other_patient_ids_and_the_order_accession_number(client, auth, services):
    patient = _register(client, auth, mx_patient(**LUPE))
    order = client.post(
        "/fhir/ServiceRequest",
        json={
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}, "value": "ACC-77"}],
            "code": {"text": "TAC de tórax"}, "subject": {"reference": f"Patient/{patient}"},
        },
        headers=auth,
    )  # fmt: skip
    assert order.status_code == 201, order.text
    study = _store(services, patient_id="RX-55", other_ids=(("X-1", ""), (LUPE_CURP, "CURP")), accession="ACC-77")
    services.follower.catch_up()
    assert _study(services, study).patient_key == patient
    body = client.get(f"/fhir/ImagingStudy/{study}", headers=auth).json()
    assert body["basedOn"] == [{"reference": f"ServiceRequest/{order.json()['id']}"}]


def test_an_unknown_patient_waits_and_a_person_attaches_it(client, auth, services):
    study = _store(services, patient_id="URG-999", name="Desconocido", birth="", sex="O")
    services.follower.catch_up()
    assert _study(services, study).patient_key is None
    assert client.get(f"/fhir/ImagingStudy/{study}", headers=auth).status_code == 404
    listed = client.get("/imaging/reconciliation", headers=auth)
    assert listed.status_code == 200, listed.text
    entry = next(e for e in listed.json()["pending"] if e["study"] == study)
    assert "identificador conocido" in entry["reason"] and entry["header"]["PatientID"] == "URG-999"

    patient = _register(client, auth, mx_patient(**LUPE))
    r = client.post(f"/imaging/reconciliation/{study}", json={"patient": f"Patient/{patient}"}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["subject"] == {"reference": f"Patient/{patient}"}
    assert _pending(services, study).status == "resolved"
    assert _study(services, study).patient_key == patient
    assert all(e["study"] != study for e in client.get("/imaging/reconciliation", headers=auth).json()["pending"])


def test_a_contradicting_birth_date_is_never_attached(client, auth, services):
    _register(client, auth, mx_patient(**LUPE))
    study = _store(services, patient_id=LUPE_CURP, birth="19800101")
    services.follower.catch_up()
    assert _study(services, study).patient_key is None
    assert "fecha de nacimiento 1979-12-03 en el expediente, 1980-01-01 en el estudio" in _pending(services, study).reason


def test_identifiers_of_two_different_people_wait_for_a_person(client, auth, services):
    _register(client, auth, mx_patient(**LUPE))
    other = dict(given="Rosa", first="Pérez", second="Luna", birth="1979-12-03", sex="female", state="JC")
    _register(client, auth, mx_patient(**other, curp=False, nss=LUPE_NSS, temporary=("DFIMS000011", "URG-0002")))
    study = _store(services, patient_id=LUPE_CURP, other_ids=((LUPE_NSS, "NSS"),))
    services.follower.catch_up()
    assert _study(services, study).patient_key is None
    assert _pending(services, study).reason == "los identificadores corresponden a personas distintas"


def test_without_identifiers_a_certain_mpi_match_attaches_and_a_near_one_waits(client, auth, services):
    patient = _register(client, auth, mx_patient(**LUPE))
    same = _store(services, patient_id="OTRO-1", name="Hernandez Cruz^Maria Guadalupe", birth="19791203", sex="F")
    sister = _store(services, patient_id="OTRO-2", name="Hernandez Cruz^Rosa Maria", birth="19791203", sex="F")
    services.follower.catch_up()
    assert _study(services, same).patient_key == patient  # the MPI is certain: same name, birth date, sex
    assert _study(services, sister).patient_key is None  # a twin sister's study is not hers
    assert _pending(services, sister).status == "pending"


def test_the_reconciliation_list_needs_the_right_to_write_imaging(client, services, make_token):
    _store(services, patient_id="URG-1")
    services.follower.catch_up()
    assert client.get("/imaging/reconciliation").status_code == 401
    auditor = {"Authorization": f"Bearer {make_token('auditor')}"}
    assert client.get("/imaging/reconciliation", headers=auditor).status_code == 403
    with services.engine.connect() as conn:
        denied = conn.execute(sa.select(audit_log.c.outcome).where(audit_log.c.res_type == "ImagingStudy", audit_log.c.outcome == "denied")).all()
    assert denied


def test_the_links_lookups_are_audited_under_the_imaging_service(client, auth, services):
    _register(client, auth, mx_patient(**LUPE))
    _store(services, patient_id=LUPE_CURP, birth="19791203")
    services.follower.catch_up()
    with services.engine.connect() as conn:
        actors = {r.actor for r in conn.execute(sa.select(audit_log.c.actor).where(audit_log.c.res_type.in_(["Patient", "ImagingStudy"])))}
    assert "imaging" in actors


def _metadata_missing(services, study_uid) -> int:
    from expediente.db.schema import dicom_instance

    with services.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(dicom_instance.c.study_uid == study_uid, dicom_instance.c.metadata.is_(None))
        ).scalar()


def _forget_metadata(services, study_uid) -> None:
    from expediente.db.schema import dicom_instance

    with services.engine.begin() as conn:
        conn.execute(dicom_instance.update().where(dicom_instance.c.study_uid == study_uid).values(metadata=None))


def test_a_new_study_makes_the_patients_priors_ready(client, auth, services):
    patient = _register(client, auth, mx_patient(**LUPE))
    prior = _store(services, patient_id=LUPE_CURP, study_date="20251110")
    services.follower.catch_up()
    _forget_metadata(services, prior)  # e.g. a study migrated from the old PACS
    prepared = []
    services.priors.preparers.append(prepared.append)
    _store(services, patient_id=LUPE_CURP, study_date="20261115")
    services.follower.catch_up()
    assert _metadata_missing(services, prior) == 0
    assert prepared == [[prior]]
    assert services.priors.studies_of(patient)[-1] == prior  # newest first


def test_a_new_order_makes_the_patients_priors_ready(client, auth, services):
    patient = _register(client, auth, mx_patient(**LUPE))
    prior = _store(services, patient_id=LUPE_CURP)
    services.follower.catch_up()
    _forget_metadata(services, prior)
    services.follower.catch_up()  # the first look only starts watching orders
    order = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "code": {"text": "Rx de cadera"}, "subject": {"reference": f"Patient/{patient}"}}
    assert client.post("/fhir/ServiceRequest", json=order, headers=auth).status_code == 201
    services.follower.catch_up()
    assert _metadata_missing(services, prior) == 0
