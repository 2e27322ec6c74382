"""Mexican profiles: Spanish errors naming the element, $validate, StructureDefinitions, and
enforcement on every write (POST, PUT, transaction Bundle) with nothing stored on refusal."""

from __future__ import annotations

import copy
from datetime import date

import pytest
import sqlalchemy as sa

from expediente.config import Settings
from expediente.db.schema import resource
from expediente.fhir.validation import collect_issues
from expediente.mx.profiles import PROFILES, profile_issues
from expediente.mx.systems import NSS_SYSTEM, PROFILE_BASE
from tests.mx_examples import (
    mx_coverage,
    mx_curp,
    mx_encounter,
    mx_establishment,
    mx_institution,
    mx_patient,
    mx_practitioner,
    unknown_patient,
)


def problems(resource: dict, mode: str = "mx") -> list[tuple[str, str]]:
    assert collect_issues(resource) == [], collect_issues(resource)
    return [(i.path, i.message) for i in profile_issues(resource, mode)]


def changed(base: dict, change) -> dict:
    body = copy.deepcopy(base)
    change(body)
    return body


# (name, resource, expected element, words of the Spanish message)
CASES = [
    ("no identifier", changed(mx_patient(), lambda p: p.pop("identifier")), "Patient.identifier",
     "falta la CURP o un identificador temporal de la institución"),
    ("bad CURP check digit", changed(mx_patient(), lambda p: p["identifier"][0].update(value=p["identifier"][0]["value"][:17] + "9")),
     "Patient.identifier[0].value", "Dígito verificador incorrecto en la CURP"),
    ("sex contradicts CURP", changed(mx_patient(), lambda p: p.update(gender="male")), "Patient.gender",
     "no coincide con la CURP (posición 11: M, mujer"),
    ("birth date contradicts CURP", changed(mx_patient(), lambda p: p.update(birthDate="1985-03-16")), "Patient.birthDate",
     "no coincide con la de la CURP (1985-03-15"),
    ("no birth date", changed(mx_patient(), lambda p: p.pop("birthDate")), "Patient.birthDate", "falta la fecha de nacimiento"),
    ("no given name", changed(mx_patient(), lambda p: p["name"][0].pop("given")), "Patient.name[0].given", "falta el nombre"),
    ("no first surname", changed(mx_patient(), lambda p: (p["name"][0].pop("family"), p["name"][0].pop("_family"))),
     "Patient.name[0].family", "falta el primer apellido"),
    ("birth state contradicts CURP", changed(mx_patient(), lambda p: p["extension"][0]["valueCodeableConcept"]["coding"][0].update(code="DF")),
     "Patient.extension[0]", "la entidad de nacimiento (DF) no coincide con la de la CURP ('JC'"),
    ("temporary id of a bad CLUES", changed(unknown_patient(), lambda p: p["identifier"][0].update(system=p["identifier"][0]["system"][:-2])),
     "Patient.identifier[0].system", "ligado a la CLUES"),
    ("unknown patient without sex", changed(unknown_patient(), lambda p: p.pop("gender")), "Patient.gender", "falta el sexo"),
    ("bad NSS on a patient", changed(mx_patient(), lambda p: p["identifier"].append({"system": NSS_SYSTEM, "value": "12345678904"})),
     "Patient.identifier[1].value", "Dígito verificador incorrecto en el NSS"),
    ("practitioner without cédula", changed(mx_practitioner(), lambda p: p.pop("identifier")), "Practitioner.identifier",
     "falta la cédula profesional"),
    ("practitioner with a bad cédula", changed(mx_practitioner(), lambda p: p["identifier"][0].update(value="12-34")),
     "Practitioner.identifier[0].value", "solo lleva dígitos"),
    ("establishment with a bad CLUES", changed(mx_establishment(), lambda o: o["identifier"][0].update(value="DFIMS0011")),
     "Organization.identifier[0].value", "debe tener 11 caracteres"),
    ("provider without CLUES", {"resourceType": "Organization", "name": "Clínica", "type": [{"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov"}]}]},
     "Organization.identifier", "un establecimiento de salud (type prov) requiere su CLUES"),
    ("organization without CLUES or institution key", {"resourceType": "Organization", "name": "Algo"}, "Organization.identifier",
     "falta la CLUES del establecimiento"),
    ("coverage without affiliation", changed(mx_coverage("p1"), lambda c: c.pop("type")), "Coverage.type", "falta la derechohabiencia"),
    ("coverage with an unknown affiliation", changed(mx_coverage("p1", "ISSSTE"), lambda c: c["type"]["coding"][0].update(code="OTRA")),
     "Coverage.type", "derechohabiencia desconocida: 'OTRA'"),
    ("IMSS coverage without NSS", changed(mx_coverage("p1"), lambda c: c.pop("subscriberId")), "Coverage.subscriberId",
     "la derechohabiencia IMSS requiere el Número de Seguridad Social"),
    ("IMSS coverage with a bad NSS", changed(mx_coverage("p1"), lambda c: c.update(subscriberId="12345678904")), "Coverage.subscriberId",
     "Dígito verificador incorrecto en el NSS"),
    ("encounter of another class", changed(mx_encounter("p1"), lambda e: e["class"].update(code="HH")), "Encounter.class",
     "consulta externa (AMB), urgencias (EMER) u hospitalización (IMP)"),
    ("encounter with a wrong display", changed(mx_encounter("p1", "EMER"), lambda e: e["class"].update(display="Consulta")),
     "Encounter.class.display", "se espera 'Urgencias'"),
    ("encounter without start", changed(mx_encounter("p1"), lambda e: e.pop("period")), "Encounter.period.start",
     "falta la fecha y hora de inicio"),
    ("encounter start without time", mx_encounter("p1", start="2026-01-15"), "Encounter.period.start", "lleva fecha y hora"),
]  # fmt: skip


@pytest.mark.parametrize("name, body, path, words", CASES, ids=[c[0] for c in CASES])
def test_profile_errors_name_the_element_in_spanish(name, body, path, words):
    found = problems(body)
    assert any(p == path and m.startswith(f"{path}: ") and words in m for p, m in found), found


@pytest.mark.parametrize(
    "body",
    [mx_patient(), mx_patient(sex="H", given="José", born=date(2001, 2, 3), state="NE", homoclave=3), unknown_patient(),
     mx_practitioner(), mx_establishment(), mx_institution(), mx_coverage("p1"), mx_coverage("p1", "NINGUNA"),
     mx_encounter("p1", "IMP"), changed(mx_encounter("p1", "AMB"), lambda e: e["class"].update(display="Consulta externa")),
     changed(mx_encounter("p1", "EMER"), lambda e: e["class"].update(display="URGENCIAS"))],
    ids=lambda b: b["resourceType"],
)  # fmt: skip
def test_valid_mexican_resources_conform(body):
    assert problems(body) == []


def test_declared_mode_checks_only_resources_that_name_the_profile():
    bare = {"resourceType": "Patient", "gender": "female"}
    assert problems(bare, "declared") == []
    assert problems(bare, "mx") != []
    declared = {**bare, "meta": {"profile": [PROFILE_BASE + "mx-patient"]}}
    assert [p for p, _ in problems(declared, "declared")] == ["Patient.identifier"]
    unknown = {**bare, "meta": {"profile": [PROFILE_BASE + "no-existe"]}}
    assert problems(unknown, "declared") == [("Patient.meta.profile[0]", f"Patient.meta.profile[0]: perfil desconocido: '{PROFILE_BASE}no-existe'")]
    assert problems({**bare, "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]}}, "declared") == []


# ------------------------------------------------------------------------------ over HTTP


def rows(services) -> int:
    with services.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(resource)).scalar_one()


def test_structure_definitions_are_served(client, auth):
    r = client.get("/fhir/StructureDefinition", headers=auth)
    assert r.status_code == 200
    bundle = r.json()
    ids = {e["resource"]["id"] for e in bundle["entry"]}
    assert ids == set(PROFILES) and bundle["total"] == len(PROFILES)
    r = client.get("/fhir/StructureDefinition/mx-nota-evolucion", headers=auth)
    sd = r.json()
    assert sd["resourceType"] == "StructureDefinition" and sd["url"] == PROFILE_BASE + "mx-nota-evolucion"
    assert sd["derivation"] == "constraint" and sd["baseDefinition"] == "http://hl7.org/fhir/StructureDefinition/Composition"
    paths = {e["id"] for e in sd["differential"]["element"]}
    assert {"Composition.date", "Composition.author", "Composition.section:signos-vitales", "Composition.encounter"} <= paths
    only = client.get("/fhir/StructureDefinition", params={"type": "Patient"}, headers=auth).json()
    assert [e["resource"]["id"] for e in only["entry"]] == ["mx-patient"]
    assert client.get("/fhir/StructureDefinition/nada", headers=auth).status_code == 404
    assert client.get("/fhir/StructureDefinition", params={"publisher": "x"}, headers=auth).status_code == 400
    assert client.get("/fhir/StructureDefinition").status_code == 401  # authenticated callers only


def test_validate_answers_an_outcome_and_stores_nothing(client, services, auth):
    before = rows(services)
    bad = changed(mx_patient(), lambda p: p.update(gender="male"))
    r = client.post("/fhir/Patient/$validate", json=bad, headers=auth)
    assert r.status_code == 200
    issue = r.json()["issue"][0]
    assert issue["severity"] == "error" and issue["expression"] == ["Patient.gender"] and "no coincide con la CURP" in issue["diagnostics"]
    ok = client.post("/fhir/Patient/$validate", json=mx_patient(), headers=auth).json()
    assert ok["issue"] == [{"severity": "information", "code": "informational", "diagnostics": "El recurso es válido"}]
    # Parameters form, and ?profile= on a resource the mode would not check
    bare = {"resourceType": "Patient", "gender": "female"}
    params = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": bare}, {"name": "profile", "valueUri": PROFILE_BASE + "mx-patient"}]}
    r = client.post("/fhir/Patient/$validate", json=params, headers=auth)
    assert r.json()["issue"][0]["expression"] == ["Patient.identifier"]
    r = client.post("/fhir/Patient/$validate", params={"profile": PROFILE_BASE + "mx-encounter"}, json=bare, headers=auth)
    assert r.status_code == 400 and "es para Encounter" in r.text
    # structural errors come first, named like the write would name them
    r = client.post("/fhir/Patient/$validate", json={"resourceType": "Patient", "gender": "hombre"}, headers=auth)
    assert r.json()["issue"][0]["expression"] == ["Patient.gender"]
    assert rows(services) == before


def test_validate_an_instance_reads_it_through_the_store(client, auth):
    pid = client.post("/fhir/Patient", json=mx_patient(), headers=auth).json()["id"]
    r = client.post(f"/fhir/Patient/{pid}/$validate", headers=auth)
    assert r.status_code == 200 and r.json()["issue"][0]["diagnostics"] == "El recurso es válido"
    proposed = {**changed(mx_patient(), lambda p: p.update(birthDate="1990-01-01")), "id": pid}
    r = client.post(f"/fhir/Patient/{pid}/$validate", json=proposed, headers=auth)
    assert r.json()["issue"][0]["expression"] == ["Patient.birthDate"]
    assert client.post("/fhir/Patient/no-existe/$validate", headers=auth).status_code == 404


def test_post_and_put_are_refused_with_422_and_nothing_is_stored(client, services, auth):
    before = rows(services)
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "female"}, headers=auth)
    assert r.status_code == 422
    assert r.json()["issue"][0]["expression"] == ["Patient.identifier"]
    assert rows(services) == before
    created = client.post("/fhir/Patient", json=mx_patient(), headers=auth).json()
    r = client.put(f"/fhir/Patient/{created['id']}", json={**created, "birthDate": "1985-03-16"}, headers=auth)
    assert r.status_code == 422 and "Patient.birthDate" in r.text
    assert client.get(f"/fhir/Patient/{created['id']}", headers=auth).json()["meta"]["versionId"] == "1"
    r = client.put("/fhir/Organization/o1", json={**mx_establishment(clues="DFIMS1"), "id": "o1"}, headers=auth)
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Organization.identifier[0].value"]
    assert rows(services) == before + 1


def test_a_transaction_with_one_nonconforming_entry_stores_nothing(client, services, auth):
    before = rows(services)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111", "resource": mx_patient(), "request": {"method": "POST", "url": "Patient"}},
            {"resource": changed(mx_encounter("p1"), lambda e: e.pop("period")), "request": {"method": "POST", "url": "Encounter"}},
        ],
    }
    bundle["entry"][1]["resource"]["subject"] = {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"}
    r = client.post("/fhir", json=bundle, headers=auth)
    assert r.status_code == 422, r.text
    assert any("Bundle.entry[1]" in e and "period.start" in e for i in r.json()["issue"] for e in i.get("expression", [])), r.text
    assert rows(services) == before
    bundle["entry"][1]["resource"]["period"] = {"start": "2026-01-15T10:00:00-06:00"}
    assert client.post("/fhir", json=bundle, headers=auth).status_code == 200
    assert rows(services) == before + 2


def test_bulk_load_applies_the_profiles(services):
    from expediente.fhir.errors import FhirError
    from expediente.fhir.store import Caller
    from expediente.security.principal import Principal

    caller = Caller(Principal("carga", "system", "system"), "pruebas")
    with pytest.raises(FhirError) as err:
        list(services.store.bulk_load(caller, [{"resourceType": "Practitioner", "id": "m1", "name": [{"family": "X"}]}]))
    assert err.value.status == 422 and "cédula" in str(err.value)


def test_the_setting_comes_from_the_environment(monkeypatch):
    from expediente.config import load_settings

    assert Settings().profiles == "mx"
    monkeypatch.setenv("EXPEDIENTE_PROFILES", "declared")
    assert load_settings().profiles == "declared"


def test_curp_helper_is_valid():
    from expediente.mx.curp import is_valid_curp

    assert is_valid_curp(mx_curp())


def test_an_unknown_mode_is_refused_at_start():
    from expediente.mx.profiles import check_mode

    check_mode("mx")
    with pytest.raises(ValueError, match="EXPEDIENTE_PROFILES"):
        check_mode("estricto")
