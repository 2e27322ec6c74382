"""A CIE-10 diagnosis must fit the patient: sex and age limits of the catalog are enforced on
Condition writes (single and inside a transaction Bundle), with the reason in Spanish."""

from __future__ import annotations

import pytest

from expediente.mx.systems import CIE10_SYSTEM
from tests.mx_people import mx_patient


def _condition(patient_id: str, code: str, onset: str | None = None) -> dict:
    body = {"resourceType": "Condition", "subject": {"reference": patient_id}, "code": {"coding": [{"system": CIE10_SYSTEM, "code": code}]}}
    if onset:
        body["onsetDateTime"] = onset
    return body


def _register(client, auth, **kw) -> str:
    r = client.post("/fhir/Patient", json=mx_patient(**kw), headers=auth)
    assert r.status_code == 201, r.text
    return "Patient/" + r.json()["id"]


@pytest.mark.parametrize(
    ("who", "code", "onset", "status", "words"),
    [
        ({"given": "Juan", "first": "Pérez", "second": "Soto", "sex": "male", "birth": "1980-01-01"}, "O80", None, 422, "solo aplica a mujeres"),
        ({"sex": "female", "birth": "1980-01-01"}, "O80", None, 201, None),
        ({"sex": "female", "birth": "1980-01-01"}, "N40", None, 422, "solo aplica a hombres"),
        ({"sex": "female", "birth": "2020-06-01"}, "O80", "2026-01-01", 422, "solo aplica a mujeres de"),
        ({"sex": "female", "birth": "1980-01-01"}, "E119", None, 422, "debe escribirse E11.9"),
        ({"sex": "female", "birth": "1980-01-01"}, "E11.9", None, 201, None),
    ],
)
def test_a_diagnosis_outside_the_patients_sex_or_age_is_refused(client, auth, who, code, onset, status, words):
    pid = _register(client, auth, **who)
    r = client.post("/fhir/Condition", json=_condition(pid, code, onset), headers=auth)
    assert r.status_code == status, r.text
    if words:
        issue = r.json()["issue"][0]
        assert words in issue["diagnostics"] and issue["expression"] == ["Condition.code.coding[0].code"]
        assert client.get(f"/fhir/Condition?subject={pid}", headers=auth).json().get("total", 0) == 0


def test_the_rule_sees_a_patient_created_earlier_in_the_same_transaction(client, auth):
    patient = mx_patient(given="Juan", first="Pérez", second="Soto", sex="male")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:8f0d1c56-1111-4e1f-9a55-000000000001", "resource": patient, "request": {"method": "POST", "url": "Patient"}},
            {"resource": _condition("urn:uuid:8f0d1c56-1111-4e1f-9a55-000000000001", "O80"), "request": {"method": "POST", "url": "Condition"}},
        ],
    }
    r = client.post("/fhir", json=bundle, headers=auth)
    assert r.status_code == 422 and "Bundle.entry[1]" in r.text and "mujeres" in r.text
    assert client.get("/fhir/Patient?family=Pérez", headers=auth).json().get("total", 0) == 0
