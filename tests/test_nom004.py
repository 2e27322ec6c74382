"""NOM-004 documents: each one's required sections (one missing at a time), date with time,
author, encounter, the consent's witnesses, the incapacity's data, and no erasure."""

from __future__ import annotations

import copy

import pytest

from expediente.fhir.validation import collect_issues
from expediente.mx.nom004 import BY_CODE, DOCUMENT_TYPES, document_type_of
from expediente.mx.profiles import profile_issues
from expediente.mx.systems import DOCUMENT_TYPE_SYSTEM, INCAPACITY_BRANCH_URL, INCAPACITY_DAYS_URL
from tests.mx_examples import mx_encounter, mx_patient, mx_practitioner, nom004_document


def problems(body: dict) -> list[tuple[str, str]]:
    assert collect_issues(body) == [], collect_issues(body)
    return [(i.path, i.message) for i in profile_issues(body, "mx")]


@pytest.mark.parametrize("code", sorted(BY_CODE))
def test_a_complete_document_conforms(code):
    assert problems(nom004_document(code)) == []


SECTION_CASES = [(d.code, s.code) for d in DOCUMENT_TYPES for s in d.sections]


@pytest.mark.parametrize("doc_code, section_code", SECTION_CASES, ids=[f"{d}-{s}" for d, s in SECTION_CASES])
def test_each_missing_section_is_an_error_naming_it(doc_code, section_code):
    body = nom004_document(doc_code)
    body["section"] = [s for s in body["section"] if s["code"]["coding"][0]["code"] != section_code]
    if not body["section"]:  # FHIR allows no empty list: the element goes
        body.pop("section")
    section = next(s for s in BY_CODE[doc_code].sections if s.code == section_code)
    found = problems(body)
    assert len(found) == 1, found
    path, message = found[0]
    assert path == "Composition.section"
    assert f"falta la sección «{section.display}»" in message
    if section.article:
        assert f"NOM-004-SSA3-2012, {section.article}" in message


def test_an_empty_section_is_an_error():
    body = nom004_document("nota-evolucion")
    body["section"][1].pop("text")
    assert problems(body) == [("Composition.section[1]", "Composition.section[1]: la sección «Signos vitales» está vacía: registre su contenido o emptyReason")]
    body["section"][1]["emptyReason"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "notasked"}]}
    assert problems(body) == []


@pytest.mark.parametrize(
    "change, path, words",
    [
        (lambda c: c.update(date="2026-01-15"), "Composition.date", "registra fecha y hora, no solo la fecha"),
        (lambda c: c.update(author=[{"reference": "Organization/o1"}]), "Composition.author", "falta el autor de la nota de evolución"),
        (lambda c: c.pop("encounter"), "Composition.encounter", "se refiere a la atención"),
        (lambda c: c.update(subject={"reference": "Group/g1"}), "Composition.subject", "falta el paciente"),
    ],
    ids=["date without time", "author not a practitioner", "no encounter", "subject not a patient"],
)
def test_every_note_has_date_time_author_patient_and_encounter(change, path, words):
    body = nom004_document("nota-evolucion")
    change(body)
    found = problems(body)
    assert any(p == path and words in m for p, m in found), found


def test_historia_clinica_needs_no_encounter_but_urgencias_does():
    assert problems({k: v for k, v in nom004_document("historia-clinica").items() if k != "encounter"}) == []
    found = problems({k: v for k, v in nom004_document("nota-urgencias").items() if k != "encounter"})
    assert [p for p, _ in found] == ["Composition.encounter"]


def test_consent_needs_two_witnesses_and_the_patient():
    body = nom004_document("consentimiento-informado")
    body["attester"] = body["attester"][:2]
    assert problems(body) == [(
        "Composition.attester",
        "Composition.attester: la carta de consentimiento lleva dos testigos (attester con mode 'personal' y party); tiene 1 (NOM-004 10.1.10)",
    )]
    body["attester"] = body["attester"][1:] * 2
    assert [m for _, m in problems(body)] == [
        "Composition.attester: falta la firma del paciente o de su representante legal (attester con mode 'legal' y party) (NOM-004 10.1.8)"
    ]
    body = nom004_document("consentimiento-informado")
    body.pop("custodian")
    assert [p for p, _ in problems(body)] == ["Composition.custodian"]


def test_incapacity_needs_days_branch_and_start():
    body = nom004_document("incapacidad-temporal")
    body["extension"] = [{"url": INCAPACITY_DAYS_URL, "valuePositiveInt": 3}, {"url": INCAPACITY_BRANCH_URL, "valueString": "Vacaciones"}]
    body["event"] = [{"code": [{"text": "incapacidad"}]}]
    found = problems(body)
    assert [p for p, _ in found] == ["Composition.extension", "Composition.event.period.start"]
    assert "ramo de seguro" in found[0][1] and "fecha de inicio" in found[1][1]


def test_document_reference_of_a_nom004_type():
    ref = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [BY_CODE["incapacidad-temporal"].coding()]},
        "subject": {"reference": "Patient/p1"},
        "date": "2026-01-15T10:00:00-06:00",
        "author": [{"reference": "Practitioner/m1"}],
        "content": [{"attachment": {"contentType": "application/pdf"}}],
        "context": {"period": {"start": "2026-01-15"}},
    }
    found = problems(ref)
    assert [p for p, _ in found] == ["DocumentReference.extension", "DocumentReference.extension"]
    ref["extension"] = [{"url": INCAPACITY_DAYS_URL, "valuePositiveInt": 7}, {"url": INCAPACITY_BRANCH_URL, "valueString": "Riesgo de trabajo"}]
    assert problems(ref) == []
    ref.pop("author")
    assert [p for p, _ in problems(ref)] == ["DocumentReference.author"]


def test_the_loinc_code_alone_names_the_document_and_other_compositions_are_not_nom004():
    assert document_type_of({"coding": [{"system": "http://loinc.org", "code": "11506-3"}]}) is BY_CODE["nota-evolucion"]
    assert document_type_of({"coding": [{"system": DOCUMENT_TYPE_SYSTEM, "code": "nota-egreso"}]}) is BY_CODE["nota-egreso"]
    other = {"resourceType": "Composition", "status": "final", "type": {"text": "Nota preoperatoria"}, "subject": {"reference": "Patient/p1"},
             "date": "2026-01-15", "author": [{"display": "Dr. X"}], "title": "Nota"}  # fmt: skip
    assert problems(other) == []


# ------------------------------------------------------------------------------ over HTTP


@pytest.fixture
def record(client, auth) -> dict:
    def post(body):
        r = client.post(f"/fhir/{body['resourceType']}", json=body, headers=auth)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    pid = post(mx_patient())
    mid = post(mx_practitioner())
    eid = post(mx_encounter(pid))
    return {"patient": pid, "practitioner": mid, "encounter": eid}


def note(record, code="nota-evolucion") -> dict:
    body = nom004_document(code, record["patient"], record["practitioner"], record["encounter"])
    body.pop("custodian")
    return body


def test_a_note_missing_a_section_is_refused_over_http(client, auth, record):
    body = note(record)
    body["section"] = body["section"][:-1]
    r = client.post("/fhir/Composition", json=body, headers=auth)
    assert r.status_code == 422
    assert r.json()["issue"] == [{
        "severity": "error", "code": "required", "expression": ["Composition.section"],
        "diagnostics": "Composition.section: falta la sección «Tratamiento e indicaciones médicas» (NOM-004-SSA3-2012, 6.2.6) "
                       "(http://expediente.mx/fhir/CodeSystem/seccion-nom004|tratamiento)",
    }]  # fmt: skip


def test_delete_of_a_nota_de_evolucion_is_refused_and_corrections_are_versions(client, auth, record):
    created = client.post("/fhir/Composition", json=note(record), headers=auth).json()
    r = client.delete(f"/fhir/Composition/{created['id']}", headers=auth)
    assert r.status_code == 409
    assert "no se elimina (NOM-004-SSA3-2012)" in r.json()["issue"][0]["diagnostics"]
    assert "entered-in-error" in r.json()["issue"][0]["diagnostics"]
    assert client.get(f"/fhir/Composition/{created['id']}", headers=auth).status_code == 200
    amended = {**created, "status": "amended"}
    amended["section"][0]["text"]["div"] = '<div xmlns="http://www.w3.org/1999/xhtml"><p>Corrección: evolución favorable.</p></div>'
    assert client.put(f"/fhir/Composition/{created['id']}", json=amended, headers=auth).status_code == 200
    withdrawn = {**amended, "status": "entered-in-error"}
    assert client.put(f"/fhir/Composition/{created['id']}", json=withdrawn, headers=auth).status_code == 200
    history = client.get(f"/fhir/Composition/{created['id']}/_history", headers=auth).json()
    assert [e["resource"]["status"] for e in history["entry"]] == ["entered-in-error", "amended", "final"]


def test_a_delete_inside_a_transaction_is_refused_too(client, auth, record):
    created = client.post("/fhir/Composition", json=note(record, "nota-urgencias"), headers=auth).json()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "DELETE", "url": f"Composition/{created['id']}"}}]}
    r = client.post("/fhir", json=bundle, headers=auth)
    assert r.status_code == 409
    assert client.get(f"/fhir/Composition/{created['id']}", headers=auth).status_code == 200


def test_other_compositions_may_still_be_deleted(client, auth, record):
    other = {"resourceType": "Composition", "status": "preliminary", "type": {"text": "Borrador"}, "subject": {"reference": f"Patient/{record['patient']}"},
             "date": "2026-01-15T10:00:00Z", "author": [{"reference": f"Practitioner/{record['practitioner']}"}], "title": "Borrador"}  # fmt: skip
    cid = client.post("/fhir/Composition", json=other, headers=auth).json()["id"]
    assert client.delete(f"/fhir/Composition/{cid}", headers=auth).status_code == 204


def test_validate_reminds_that_a_final_document_is_signed(client, auth, record):
    r = client.post("/fhir/Composition/$validate", json=note(record), headers=auth)
    issues = r.json()["issue"]
    assert [i["severity"] for i in issues] == ["information", "information"]
    assert "$sign" in issues[1]["diagnostics"]


def test_copy_is_untouched():
    a = nom004_document("nota-egreso")
    b = copy.deepcopy(a)
    problems(a)
    assert a == b  # the checks never modify what they check
