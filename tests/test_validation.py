"""Structural validation of FHIR R4 resources (expediente.fhir.validation)."""

from __future__ import annotations

import copy
import datetime
import importlib.util
import json
import string
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expediente.fhir.resource_types import SERVED_TYPES
from expediente.fhir.validation import (
    ResourceInvalid,
    ValidationIssue,
    collect_issues,
    is_valid_id,
    preload_validators,
    validate_resource,
)

REPO = Path(__file__).resolve().parent.parent
CURP_SYSTEM = "urn:oid:2.16.840.1.113883.4.629"
FATHERS = "http://hl7.org/fhir/StructureDefinition/humanname-fathers-family"
MOTHERS = "http://hl7.org/fhir/StructureDefinition/humanname-mothers-family"


# --------------------------------------------------------------------------- sample resources


def patient_mx() -> dict:
    return {
        "resourceType": "Patient",
        "id": "pac-0001",
        "meta": {"profile": ["http://example.mx/fhir/StructureDefinition/paciente-mx"]},
        "extension": [
            {
                "url": "http://example.mx/fhir/StructureDefinition/nacionalidad",
                "valueCodeableConcept": {"coding": [{"system": "urn:iso:std:iso:3166", "code": "MX"}]},
            },
            {"url": "http://example.mx/fhir/StructureDefinition/entidad-nacimiento", "valueCode": "DF"},
        ],
        "identifier": [
            {
                "use": "official",
                "type": {"text": "CURP"},
                "system": CURP_SYSTEM,
                "value": "GOPJ900512HDFMRN05",
            },
            {"use": "usual", "system": "http://hospital.example.mx/expediente", "value": "EXP-123456"},
        ],
        "active": True,
        "name": [
            {
                "use": "official",
                "family": "Gómez Pérez",
                "_family": {
                    "extension": [
                        {"url": FATHERS, "valueString": "Gómez"},
                        {"url": MOTHERS, "valueString": "Pérez"},
                    ]
                },
                "given": ["Juan", "Carlos"],
            }
        ],
        "telecom": [
            {"system": "phone", "value": "+52 55 1234 5678", "use": "mobile"},
            {"system": "email", "value": "juan.gomez@example.mx"},
        ],
        "gender": "male",
        "birthDate": "1990-05-12",
        "address": [
            {
                "use": "home",
                "line": ["Av. Insurgentes Sur 1234", "Col. Del Valle"],
                "city": "Ciudad de México",
                "district": "Benito Juárez",
                "state": "CDMX",
                "postalCode": "03100",
                "country": "MX",
            }
        ],
        "maritalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}]
        },
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">Juan Carlos Gómez Pérez</div>',
        },
    }


def observation() -> dict:
    return {
        "resourceType": "Observation",
        "id": "obs-1",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}],
            "text": "Peso",
        },
        "subject": {"reference": "Patient/pac-0001"},
        "effectiveDateTime": "2024-03-01T10:30:00-06:00",
        "issued": "2024-03-01T10:35:12.250-06:00",
        "valueQuantity": {"value": 72.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    }


def medication_request() -> dict:
    return {
        "resourceType": "MedicationRequest",
        "id": "rx-1",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197361"}],
            "text": "Paracetamol 500 mg tableta",
        },
        "subject": {"reference": "Patient/pac-0001"},
        "authoredOn": "2024-03-01T11:00:00-06:00",
        "requester": {"reference": "Practitioner/med-7", "display": "Dra. Ana López"},
        "dosageInstruction": [
            {
                "text": "1 tableta cada 8 horas por 5 días",
                "timing": {
                    "repeat": {
                        "frequency": 1,
                        "period": 8,
                        "periodUnit": "h",
                        "boundsDuration": {
                            "value": 5, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d",
                        },
                    }
                },
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tableta"}}],
            }
        ],
        "dispenseRequest": {"numberOfRepeatsAllowed": 0, "quantity": {"value": 15, "unit": "tableta"}},
    }


def encounter() -> dict:
    return {
        "resourceType": "Encounter",
        "id": "enc-1",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/pac-0001"},
        "period": {"start": "2024-03-01T10:00:00-06:00", "end": "2024-03-01T10:40:00-06:00"},
        "serviceProvider": {"reference": "Organization/hosp-1"},
        "reasonCode": [{"text": "Control de peso"}],
    }


def bundle() -> dict:
    obs = observation()
    del obs["id"]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0b8f1d3a-6c1e-4f7e-9d9a-2f1c3b4a5d6e",
                "resource": {k: v for k, v in patient_mx().items() if k != "id"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": obs,
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }


VALID = {
    "Patient": patient_mx,
    "Observation": observation,
    "MedicationRequest": medication_request,
    "Encounter": encounter,
    "Bundle": bundle,
}


def issues_of(resource) -> list[ValidationIssue]:
    with pytest.raises(ResourceInvalid) as exc_info:
        validate_resource(resource)
    issues = exc_info.value.issues
    assert issues and all(isinstance(i, ValidationIssue) for i in issues)
    return issues


def issue_at(resource, path: str) -> ValidationIssue:
    issues = issues_of(resource)
    found = [i for i in issues if i.path == path]
    assert found, f"no issue at {path}: {issues}"
    return found[0]


# --------------------------------------------------------------------------- valid resources


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_resources_pass(name):
    validate_resource(VALID[name]())
    assert collect_issues(VALID[name]()) == []


def test_patient_mx_two_surnames_and_curp():
    p = patient_mx()
    exts = p["name"][0]["_family"]["extension"]
    assert [e["url"] for e in exts] == [FATHERS, MOTHERS]
    assert p["identifier"][0]["system"] == CURP_SYSTEM
    validate_resource(p)


def test_primitive_with_only_extension_passes():
    # _birthDate without birthDate (e.g. data-absent-reason), _status satisfying status 1..1
    p = {"resourceType": "Patient", "_birthDate": {"extension": [
        {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]}}
    validate_resource(p)
    o = observation()
    del o["status"]
    o["_status"] = {"extension": [
        {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]}
    validate_resource(o)


def test_repeating_primitive_aligned_with_nulls_passes():
    p = {"resourceType": "Patient", "name": [{
        "given": ["Juan", None],
        "_given": [None, {"extension": [{"url": "http://example.mx/ext", "valueString": "x"}]}],
    }]}
    validate_resource(p)


def test_contained_resource_and_leap_day_pass():
    p = patient_mx()
    p["birthDate"] = "2000-02-29"
    p["contained"] = [{"resourceType": "Organization", "id": "org1", "name": "IMSS"}]
    p["managingOrganization"] = {"reference": "#org1"}
    validate_resource(p)


def test_unicode_text_with_nbsp_passes():
    p = patient_mx()
    p["name"][0]["family"] = "Gómez\u00a0Pérez"
    validate_resource(p)


# --------------------------------------------------------------------------- invalid resources


def test_unknown_element():
    p = patient_mx()
    p["foo"] = 1
    issue = issue_at(p, "Patient.foo")
    assert issue.message == "Elemento desconocido 'foo' en Patient"
    assert issue.code == "structure"


def test_unknown_element_nested():
    p = patient_mx()
    p["name"][0]["apellidoPaterno"] = "Gómez"
    issue = issue_at(p, "Patient.name[0].apellidoPaterno")
    assert issue.message == "Elemento desconocido 'apellidoPaterno' en Patient.name[0]"


def test_unknown_element_in_recursive_extension():
    p = patient_mx()
    p["extension"].append({"url": "http://a", "extension": [{"url": "http://b", "extension": [
        {"url": "http://c", "valueFoo": 1}]}]})
    issue = issue_at(p, "Patient.extension[2].extension[0].extension[0].valueFoo")
    assert issue.code == "structure"


def test_wrong_type_string_where_array_expected():
    p = patient_mx()
    p["name"] = "Juan Gómez"
    issue = issue_at(p, "Patient.name")
    assert issue.code == "structure"
    assert issue.message.startswith("Tipo inválido para Patient.name: se esperaba una lista")
    assert "cadena de texto" in issue.message


def test_wrong_type_string_where_object_expected():
    o = observation()
    o["code"] = "29463-7"
    issue = issue_at(o, "Observation.code")
    assert "objeto CodeableConcept" in issue.message


def test_wrong_primitive_type():
    p = patient_mx()
    p["active"] = "true"
    issue = issue_at(p, "Patient.active")
    assert issue.code == "structure"
    assert "true o false" in issue.message


def test_bad_date():
    p = patient_mx()
    p["birthDate"] = "1990-13-45"
    issue = issue_at(p, "Patient.birthDate")
    assert issue.message == (
        "Valor inválido para Patient.birthDate: '1990-13-45' no es una fecha FHIR válida "
        "(AAAA, AAAA-MM o AAAA-MM-DD)"
    )
    assert issue.code == "value"


def test_nonexistent_calendar_date():
    p = patient_mx()
    p["birthDate"] = "2023-02-29"
    issue = issue_at(p, "Patient.birthDate")
    assert "fecha de calendario" in issue.message


def test_datetime_without_timezone():
    o = observation()
    o["effectiveDateTime"] = "2024-03-01T10:30:00"
    issue = issue_at(o, "Observation.effectiveDateTime")
    assert "fecha/hora FHIR" in issue.message


def test_bad_enum():
    p = patient_mx()
    p["gender"] = "hombre"
    issue = issue_at(p, "Patient.gender")
    assert issue.message == "Patient.gender debe ser uno de: male, female, other, unknown"
    assert issue.code == "value"


def test_bad_enum_observation_status():
    o = observation()
    o["status"] = "final "
    issue = issue_at(o, "Observation.status")
    assert issue.message.startswith("Observation.status debe ser uno de: registered, preliminary, final")


def test_missing_required():
    o = observation()
    del o["status"]
    del o["code"]
    issues = issues_of(o)
    by_path = {i.path: i for i in issues}
    assert by_path["Observation.status"].message == "Falta el elemento obligatorio Observation.status"
    assert by_path["Observation.code"].message == "Falta el elemento obligatorio Observation.code"
    assert {i.code for i in issues} == {"required"}


def test_missing_required_choice_element():
    m = medication_request()
    del m["medicationCodeableConcept"]
    issue = issue_at(m, "MedicationRequest.medication[x]")
    assert issue.message == "Falta el elemento obligatorio MedicationRequest.medication[x]"


def test_missing_required_in_backbone_element():
    b = bundle()
    del b["entry"][0]["request"]["url"]
    issue = issue_at(b, "Bundle.entry[0].request.url")
    assert issue.code == "required"


def test_bad_id():
    p = patient_mx()
    p["id"] = "pac 0001"
    issues = issues_of(p)
    assert [i.path for i in issues] == ["Patient.id"]  # reported once
    assert "no es un id FHIR válido" in issues[0].message
    p["id"] = "x" * 65
    assert issue_at(p, "Patient.id").code == "value"
    p["id"] = 12
    assert issue_at(p, "Patient.id").code == "structure"


def test_bad_code_and_uri():
    p = patient_mx()
    p["identifier"][0]["system"] = "urn:oid:2.16.840.1.113883.4.629 "
    p["extension"][1]["valueCode"] = " DF"
    issues = {i.path: i for i in issues_of(p)}
    assert "no es un URI válido" in issues["Patient.identifier[0].system"].message
    assert "no es un código FHIR válido" in issues["Patient.extension[1].valueCode"].message


def test_empty_string_array_and_object_rejected():
    p = patient_mx()
    p["name"][0]["family"] = "  "
    p["telecom"] = []
    p["address"][0] = {}
    issues = {i.path: i for i in issues_of(p)}
    assert set(issues) == {"Patient.name[0].family", "Patient.telecom", "Patient.address[0]"}


def test_unknown_resource_type():
    issues = issues_of({"resourceType": "Foo"})
    assert issues == [ValidationIssue(
        "resourceType", "Tipo de recurso desconocido o no soportado: 'Foo'", "not-supported")]
    # a real FHIR type the server does not serve
    assert issues_of({"resourceType": "Questionnaire"})[0].code == "not-supported"


def test_missing_or_non_string_resource_type():
    assert issues_of({"id": "x"})[0].message == "Falta el elemento obligatorio resourceType"
    assert issues_of({"resourceType": ["Patient"]})[0].code == "structure"


@pytest.mark.parametrize("body", [[], "Patient", None, 3, [patient_mx()]])
def test_non_dict(body):
    issues = issues_of(body)
    assert len(issues) == 1
    assert issues[0].code == "structure"
    assert issues[0].message.startswith("El recurso debe ser un objeto JSON")


def test_several_issues_reported():
    p = patient_mx()
    p["foo"] = 1
    p["gender"] = "hombre"
    p["birthDate"] = "1990-13-45"
    paths = {i.path for i in issues_of(p)}
    assert {"Patient.foo", "Patient.gender", "Patient.birthDate"} <= paths


def test_bundle_entry_errors_point_inside_entry():
    b = bundle()
    b["entry"][1]["resource"]["status"] = "terminado"
    b["entry"][0]["resource"]["foo"] = True
    paths = {i.path for i in issues_of(b)}
    assert paths == {"Bundle.entry[1].resource.status", "Bundle.entry[0].resource.foo"}


def test_bundle_entry_unknown_type():
    b = bundle()
    b["entry"][0]["resource"] = {"resourceType": "Foo"}
    issue = issue_at(b, "Bundle.entry[0].resource.resourceType")
    assert issue.code == "not-supported"


def test_contained_is_validated():
    p = patient_mx()
    p["contained"] = [
        {"resourceType": "Practitioner", "gender": "mujer"},
        {"resourceType": "Organization", "contained": [{"resourceType": "Organization"}]},
    ]
    paths = {i.path: i for i in issues_of(p)}
    assert "Patient.contained[0].gender" in paths
    assert paths["Patient.contained[1].contained"].code == "invariant"


def test_non_json_values_do_not_crash():
    o = observation()
    o["issued"] = datetime.datetime(2024, 3, 1)
    assert issues_of(o)[0].code == "structure"


def test_operation_outcome():
    p = patient_mx()
    p["gender"] = "x"
    with pytest.raises(ResourceInvalid) as exc_info:
        validate_resource(p)
    oo = exc_info.value.to_operation_outcome()
    assert oo["resourceType"] == "OperationOutcome"
    assert oo["issue"][0]["expression"] == ["Patient.gender"]
    assert oo["issue"][0]["severity"] == "error"
    assert "Patient.gender" in str(exc_info.value)
    # the outcome itself is valid FHIR (accepted nested, e.g. in a batch-response Bundle)
    validate_resource({"resourceType": "Bundle", "type": "batch-response",
                       "entry": [{"response": {"status": "400", "outcome": oo}}]})
    oo["issue"][0]["severity"] = "grave"
    bad = {"resourceType": "Bundle", "type": "batch-response",
           "entry": [{"response": {"status": "400", "outcome": oo}}]}
    assert issue_at(bad, "Bundle.entry[0].response.outcome.issue[0].severity").code == "value"


def test_input_not_mutated():
    p = patient_mx()
    p["foo"] = 1
    before = copy.deepcopy(p)
    issues_of(p)
    assert p == before


# --------------------------------------------------------------------------- every served type


@pytest.mark.parametrize("rtype", SERVED_TYPES)
def test_every_served_type_compiles(rtype):
    issues = collect_issues({"resourceType": rtype})
    assert all(i.code == "required" for i in issues), issues
    bad = collect_issues({"resourceType": rtype, "zzz": 1})
    assert ValidationIssue(f"{rtype}.zzz", f"Elemento desconocido 'zzz' en {rtype}", "structure") in bad


def test_is_valid_id():
    assert is_valid_id("a-B.9")
    assert is_valid_id("x" * 64)
    assert not is_valid_id("x" * 65)
    assert not is_valid_id("")
    assert not is_valid_id("a_b")
    assert not is_valid_id("ab\n")
    assert not is_valid_id(5)


# --------------------------------------------------------------------------- properties

PATIENT_ELEMENTS = set(json.loads(
    (REPO / "src/expediente/fhir/definitions/fhir-r4-validation.schema.json").read_text("utf-8")
)["definitions"]["Patient"]["properties"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=string.ascii_letters + string.digits + "_-:áñ", min_size=1, max_size=30)
       .filter(lambda k: k not in PATIENT_ELEMENTS))
def test_random_unknown_keys_always_rejected(key):
    p = patient_mx()
    p[key] = "x"
    issues = collect_issues(p)
    assert ValidationIssue(f"Patient.{key}", f"Elemento desconocido '{key}' en Patient", "structure") in issues


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9\-\.]{1,64}", fullmatch=True))
def test_valid_ids_accepted(rid):
    p = patient_mx()
    p["id"] = rid
    validate_resource(p)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=70).filter(lambda s: not is_valid_id(s)))
def test_invalid_ids_rejected(rid):
    p = patient_mx()
    p["id"] = rid
    assert [i.path for i in collect_issues(p)] == ["Patient.id"]


@settings(max_examples=200, deadline=None)
@given(st.dates())
def test_calendar_dates_accepted(d):
    p = patient_mx()
    p["birthDate"] = f"{d.year:04d}-{d.month:02d}-{d.day:02d}"
    validate_resource(p)


# --------------------------------------------------------------------------- generated schema / speed

SOURCE = Path("/work/shared/fhir-r4/fhir.schema.json")


@pytest.mark.skipif(not SOURCE.exists(), reason="official FHIR schema not available here")
def test_generated_schema_is_up_to_date():
    spec = importlib.util.spec_from_file_location("derive_fhir_schema", REPO / "tools/derive_fhir_schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check", "--source", str(SOURCE)]) == 0


def test_validation_is_fast():
    preload_validators()
    resources = [patient_mx(), observation()]
    for r in resources:
        validate_resource(r)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        for r in resources:
            validate_resource(r)
    per_resource = (time.perf_counter() - start) / (2 * n)
    assert per_resource < 0.0005, f"{per_resource * 1e6:.0f} µs per resource"
