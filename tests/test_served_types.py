"""Every served resource type can be written, read and versioned through the API."""

from __future__ import annotations

import pytest

from expediente.fhir.resource_types import SERVED_TYPES, SERVER_WRITTEN_ONLY

pytestmark = pytest.mark.generic_fhir  # minimal resources: Mexican profiles only where declared

P = {"reference": "Patient/p1"}
CC = {"coding": [{"system": "http://loinc.org", "code": "2345-7"}], "text": "Glucosa"}

MINIMAL: dict[str, dict] = {
    "Patient": {"gender": "female"},
    "Practitioner": {"name": [{"family": "Núñez"}]},
    "PractitionerRole": {"active": True},
    "Organization": {"name": "Hospital General de Zona 1"},
    "Location": {"name": "Urgencias"},
    "Encounter": {"status": "finished", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}, "subject": P},
    "EpisodeOfCare": {"status": "active", "patient": P},
    "Condition": {"subject": P, "code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.3", "code": "E11.9"}]}},
    "Observation": {"status": "final", "code": CC, "subject": P, "valueQuantity": {"value": 98, "unit": "mg/dL"}},
    "DiagnosticReport": {"status": "final", "code": CC, "subject": P},
    "ServiceRequest": {"status": "active", "intent": "order", "subject": P},
    "MedicationRequest": {"status": "active", "intent": "order", "medicationCodeableConcept": {"text": "Metformina 850 mg"}, "subject": P},
    "MedicationDispense": {"status": "completed", "medicationCodeableConcept": {"text": "Metformina 850 mg"}, "subject": P},
    "Medication": {"code": {"text": "Metformina 850 mg"}},
    "Procedure": {"status": "completed", "subject": P},
    "AllergyIntolerance": {"patient": P},
    "Immunization": {"status": "completed", "vaccineCode": {"text": "BCG"}, "patient": P, "occurrenceDateTime": "2026-01-15"},
    "CarePlan": {"status": "active", "intent": "plan", "subject": P},
    "CareTeam": {"subject": P},
    "ImagingStudy": {"status": "available", "subject": P},
    "DocumentReference": {"status": "current", "subject": P, "content": [{"attachment": {"contentType": "application/pdf"}}]},
    "Composition": {"status": "final", "type": {"text": "Nota de evolución"}, "subject": P, "date": "2026-01-15T10:00:00-06:00", "author": [{"reference": "Practitioner/m1"}], "title": "Nota de evolución"},
    "Binary": {"contentType": "text/plain", "data": "SG9sYQ=="},
    "Coverage": {"status": "active", "beneficiary": P, "payor": [{"reference": "Organization/imss"}]},
    "Consent": {"status": "active", "scope": {"text": "tratamiento"}, "category": [{"text": "consentimiento informado"}], "patient": P},
    "Provenance": {"target": [P], "recorded": "2026-01-15T10:00:00Z", "agent": [{"who": {"reference": "Practitioner/m1"}}]},
    "Bundle": {"type": "collection", "entry": [{"resource": {"resourceType": "Patient", "gender": "male"}}]},
}


def test_the_table_covers_every_writable_type():
    assert set(MINIMAL) == set(SERVED_TYPES) - SERVER_WRITTEN_ONLY


@pytest.mark.parametrize("res_type", sorted(MINIMAL))
def test_create_read_update(client, auth, res_type):
    body = {"resourceType": res_type, **MINIMAL[res_type]}
    r = client.post(f"/fhir/{res_type}", json=body, headers=auth)
    assert r.status_code == 201, r.text
    created = r.json()
    r = client.get(f"/fhir/{res_type}/{created['id']}", headers=auth)
    assert r.status_code == 200 and r.json() == created
    r = client.put(f"/fhir/{res_type}/{created['id']}", json={**created, "meta": {"tag": [{"code": "revisado"}]}}, headers=auth)
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2"


def test_clinical_rows_carry_the_patient_key(client, auth, services):
    import sqlalchemy as sa

    from expediente.db.schema import resource

    obs = client.post("/fhir/Observation", json={"resourceType": "Observation", **MINIMAL["Observation"]}, headers=auth).json()
    with services.engine.connect() as conn:
        key = conn.execute(sa.select(resource.c.patient_key).where(resource.c.res_id == obs["id"])).scalar()
    assert key == "p1"
