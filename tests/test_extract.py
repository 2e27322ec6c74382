"""Index-value extraction and the Patient-compartment key."""

from __future__ import annotations

import calendar
import time
import unicodedata
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from expediente.db.schema import INDEX_TABLES
from expediente.fhir.search.extract import (
    INDEX_COLUMNS,
    date_range,
    extract_index,
    normalize_text,
    patient_key,
    unsupported_params,
)

pytestmark = pytest.mark.generic_fhir  # minimal resources: Mexican profiles only where declared

CURP_SYSTEM = "urn:oid:2.16.840.1.113883.4.629"
FATHERS = "http://hl7.org/fhir/StructureDefinition/humanname-fathers-family"
MOTHERS = "http://hl7.org/fhir/StructureDefinition/humanname-mothers-family"

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {
        "versionId": "1",
        "lastUpdated": "2024-01-01T00:00:00Z",
        "profile": ["http://example.mx/fhir/StructureDefinition/paciente"],
        "tag": [{"system": "http://example.mx/tags", "code": "prueba", "display": "Prueba"}],
        "source": "http://example.mx/sistema",
    },
    "active": True,
    "identifier": [
        {"system": CURP_SYSTEM, "value": "PEPJ900504HDFXXX01", "type": {"text": "CURP"}},
        {"system": "urn:oid:1.2.3", "value": "EXP-0001"},
    ],
    "telecom": [
        {"system": "phone", "value": "5555555555", "use": "mobile"},
        {"system": "email", "value": "jose@example.mx"},
    ],
    "name": [
        {
            "use": "official",
            "family": "Peña López",
            "_family": {
                "extension": [
                    {"url": FATHERS, "valueString": "Peña"},
                    {"url": MOTHERS, "valueString": "López"},
                ]
            },
            "given": ["José", "Luis"],
            "prefix": ["Sr."],
        }
    ],
    "gender": "male",
    "birthDate": "1990-05-04",
    "deceasedBoolean": False,
    "address": [
        {
            "line": ["Av. Reforma 1"],
            "city": "Ciudad de México",
            "district": "Cuauhtémoc",
            "state": "CDMX",
            "postalCode": "06600",
            "country": "MX",
        }
    ],
    "managingOrganization": {"reference": "Organization/org1"},
    "generalPractitioner": [{"reference": "#gp"}, {"reference": "https://otro.mx/fhir/Practitioner/7"}],
    "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es-MX"}]}}],
}

OBSERVATION = {
    "resourceType": "Observation",
    "id": "o1",
    "meta": {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00Z"},
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                    "display": "Vital Signs",
                }
            ]
        }
    ],
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}], "text": "Frecuencia cardíaca"},
    "subject": {"reference": "Patient/p1"},
    "encounter": {"reference": "Encounter/e1"},
    "effectiveDateTime": "2024-03-01T10:30:00-06:00",
    "issued": "2024-03-01T10:31:00.123-06:00",
    "performer": [{"reference": "Practitioner/pr1"}],
    "valueQuantity": {"value": 72, "unit": "latidos/min", "system": "http://unitsofmeasure.org", "code": "/min"},
}


_OPTIONAL = ("type_system", "type_code")  # identifier type columns, shown only when set


def rows(index, kind, param):
    return [
        {k: v for k, v in r.items() if k != "param" and not (k in _OPTIONAL and v is None)}
        for r in index.get(kind, [])
        if r["param"] == param
    ]


# ---------------------------------------------------------------------------- row shapes


def test_row_columns_match_schema():
    for res in (PATIENT, OBSERVATION):
        for kind, kind_rows in extract_index(res).items():
            table = INDEX_TABLES[kind]
            for r in kind_rows:
                assert set(r) == {"param", *INDEX_COLUMNS[kind]}
                assert set(r) <= set(table.c.keys())
                assert not {"res_type", "res_id", "patient_key"} & set(r)


def test_no_duplicate_rows_and_no_empty_kinds():
    idx = extract_index(PATIENT)
    for kind, kind_rows in idx.items():
        assert kind_rows
        as_tuples = [tuple(sorted(r.items())) for r in kind_rows]
        assert len(as_tuples) == len(set(as_tuples)), kind


def test_not_indexed():
    idx = extract_index(PATIENT)
    params = {r["param"] for kind_rows in idx.values() for r in kind_rows}
    assert "_id" not in params and "_lastUpdated" not in params  # resource-table columns


def test_unknown_or_bad_resource():
    assert extract_index({"resourceType": "Foo", "id": "1"}) == {}
    assert extract_index({}) == {}
    assert patient_key({}) is None


# ---------------------------------------------------------------------------- token


def test_identifier_token():
    idx = extract_index(PATIENT)
    assert rows(idx, "token", "identifier") == [
        {"system": CURP_SYSTEM, "code": "PEPJ900504HDFXXX01", "text_norm": "curp"},
        {"system": "urn:oid:1.2.3", "code": "EXP-0001", "text_norm": None},
    ]


def test_contactpoint_boolean_code_tokens():
    idx = extract_index(PATIENT)
    assert rows(idx, "token", "phone") == [{"system": None, "code": "5555555555", "text_norm": None}]
    assert rows(idx, "token", "email") == [{"system": None, "code": "jose@example.mx", "text_norm": None}]
    assert len(rows(idx, "token", "telecom")) == 2
    assert rows(idx, "token", "active") == [{"system": None, "code": "true", "text_norm": None}]
    assert rows(idx, "token", "deceased") == [{"system": None, "code": "false", "text_norm": None}]
    assert rows(idx, "token", "gender") == [{"system": None, "code": "male", "text_norm": None}]
    assert rows(idx, "token", "_tag") == [{"system": "http://example.mx/tags", "code": "prueba", "text_norm": "prueba"}]


def test_codeable_concept_token():
    idx = extract_index(OBSERVATION)
    assert rows(idx, "token", "code") == [
        {"system": "http://loinc.org", "code": "8867-4", "text_norm": "heart rate"},
        {"system": None, "code": None, "text_norm": "frecuencia cardiaca"},
    ]
    assert rows(idx, "token", "status") == [{"system": None, "code": "final", "text_norm": None}]


# ---------------------------------------------------------------------------- string


def test_human_name_strings():
    idx = extract_index(PATIENT)
    family = rows(idx, "string", "family")
    assert {r["value_norm"] for r in family} == {"pena lopez", "pena", "lopez"}
    assert {"value_norm": "pena", "value_exact": "Peña"} in family
    name = {r["value_norm"] for r in rows(idx, "string", "name")}
    assert {"pena lopez", "pena", "lopez", "jose", "luis", "sr."} <= name
    assert {r["value_norm"] for r in rows(idx, "string", "given")} == {"jose", "luis"}


def test_address_strings():
    idx = extract_index(PATIENT)
    address = {r["value_norm"] for r in rows(idx, "string", "address")}
    assert address == {"av. reforma 1", "ciudad de mexico", "cuauhtemoc", "cdmx", "06600", "mx"}
    assert rows(idx, "string", "address-city") == [{"value_norm": "ciudad de mexico", "value_exact": "Ciudad de México"}]


def test_address_with_text_and_state_only():
    org = {"resourceType": "Organization", "address": [{"text": "Calle 5, Mérida", "state": "Yucatán"}]}
    assert {r["value_norm"] for r in rows(extract_index(org), "string", "address")} == {"calle 5, merida", "yucatan"}


def test_string_truncated_to_column():
    long = "Á" * 400
    idx = extract_index({"resourceType": "Patient", "name": [{"family": long}]})
    (r,) = rows(idx, "string", "family")
    assert r["value_norm"] == "a" * 255
    assert r["value_exact"] == "Á" * 255


# ---------------------------------------------------------------------------- reference / uri


def test_references():
    idx = extract_index(PATIENT)
    assert rows(idx, "reference", "organization") == [{"target_type": "Organization", "target_id": "org1", "url": None}]
    # contained "#gp" ignored; absolute URL kept as url
    assert rows(idx, "reference", "general-practitioner") == [
        {"target_type": None, "target_id": None, "url": "https://otro.mx/fhir/Practitioner/7"}
    ]
    assert rows(idx, "uri", "_profile") == [{"uri": "http://example.mx/fhir/StructureDefinition/paciente"}]
    assert rows(idx, "uri", "_source") == [{"uri": "http://example.mx/sistema"}]


def test_observation_references():
    idx = extract_index(OBSERVATION)
    assert rows(idx, "reference", "subject") == [{"target_type": "Patient", "target_id": "p1", "url": None}]
    assert rows(idx, "reference", "patient") == [{"target_type": "Patient", "target_id": "p1", "url": None}]
    assert rows(idx, "reference", "encounter") == [{"target_type": "Encounter", "target_id": "e1", "url": None}]


def test_versioned_and_canonical_references():
    cp = {
        "resourceType": "CarePlan",
        "subject": {"reference": "Patient/p1/_history/3"},
        "instantiatesCanonical": ["http://example.mx/PlanDefinition/diabetes|1.0"],
    }
    idx = extract_index(cp)
    assert rows(idx, "reference", "subject") == [{"target_type": "Patient", "target_id": "p1", "url": None}]
    assert rows(idx, "reference", "instantiates-canonical") == [
        {"target_type": None, "target_id": None, "url": "http://example.mx/PlanDefinition/diabetes|1.0"}
    ]


# ---------------------------------------------------------------------------- date


def test_birthdate_range():
    idx = extract_index(PATIENT)
    assert rows(idx, "date", "birthdate") == [
        {"low": datetime(1990, 5, 4), "high": datetime(1990, 5, 4, 23, 59, 59, 999999)}
    ]


def test_datetime_with_offset_to_utc():
    idx = extract_index(OBSERVATION)
    assert rows(idx, "date", "date") == [
        {"low": datetime(2024, 3, 1, 16, 30), "high": datetime(2024, 3, 1, 16, 30, 0, 999999)}
    ]


def test_partial_dates():
    assert date_range("1990") == (datetime(1990, 1, 1), datetime(1990, 12, 31, 23, 59, 59, 999999))
    assert date_range("2024-02") == (datetime(2024, 2, 1), datetime(2024, 2, 29, 23, 59, 59, 999999))
    assert date_range("2024-02-03T04:05:06Z") == (datetime(2024, 2, 3, 4, 5, 6), datetime(2024, 2, 3, 4, 5, 6, 999999))
    assert date_range("2024-02-03T04:05:06.5") == (
        datetime(2024, 2, 3, 4, 5, 6, 500000),
        datetime(2024, 2, 3, 4, 5, 6, 599999),
    )
    assert date_range("2024-01-01T00:30:00+01:00") == (datetime(2023, 12, 31, 23, 30), datetime(2023, 12, 31, 23, 30, 0, 999999))
    for bad in ("", "90", "2024-13", "2024-02-30", "2024-01-01T25:00:00", "ayer", "2024-01-01 10:00"):
        assert date_range(bad) is None, bad


def test_period_and_timing():
    enc = {"resourceType": "Encounter", "period": {"start": "2024-01-01T08:00:00Z"}}
    assert rows(extract_index(enc), "date", "date") == [{"low": datetime(2024, 1, 1, 8), "high": None}]
    enc = {"resourceType": "Encounter", "period": {"end": "2024-01-02"}}
    assert rows(extract_index(enc), "date", "date") == [{"low": None, "high": datetime(2024, 1, 2, 23, 59, 59, 999999)}]
    # MedicationRequest.dosageInstruction.timing.event: one row per event
    mr = {
        "resourceType": "MedicationRequest",
        "dosageInstruction": [{"timing": {"event": ["2024-01-05", "2024-01-02"]}}],
    }
    assert rows(extract_index(mr), "date", "date") == [
        {"low": datetime(2024, 1, 5), "high": datetime(2024, 1, 5, 23, 59, 59, 999999)},
        {"low": datetime(2024, 1, 2), "high": datetime(2024, 1, 2, 23, 59, 59, 999999)},
    ]
    # A Timing value (Observation.effectiveTiming): its outer limits
    obs = {
        "resourceType": "Observation",
        "effectiveTiming": {
            "event": ["2024-01-05"],
            "repeat": {"boundsPeriod": {"start": "2024-01-03", "end": "2024-01-04"}},
        },
    }
    assert rows(extract_index(obs), "date", "date") == [
        {"low": datetime(2024, 1, 3), "high": datetime(2024, 1, 5, 23, 59, 59, 999999)}
    ]


# ---------------------------------------------------------------------------- quantity


def test_quantity_code_and_unit():
    idx = extract_index(OBSERVATION)
    assert rows(idx, "quantity", "value-quantity") == [
        {"value": 72.0, "system": "http://unitsofmeasure.org", "code": "/min"},
        {"value": 72.0, "system": None, "code": "latidos/min"},
    ]


def test_age_quantity_and_money():
    cond = {"resourceType": "Condition", "onsetAge": {"value": 40, "system": "http://unitsofmeasure.org", "code": "a"}}
    assert rows(extract_index(cond), "quantity", "onset-age") == [
        {"value": 40.0, "system": "http://unitsofmeasure.org", "code": "a"}
    ]


# ---------------------------------------------------------------------------- patient key


def test_patient_key():
    assert patient_key(PATIENT) == "p1"
    assert patient_key(OBSERVATION) == "p1"
    assert patient_key({"resourceType": "Organization", "id": "x"}) is None
    # Group subject: not a Patient; the performer is.
    obs = {
        "resourceType": "Observation",
        "subject": {"reference": "Group/g"},
        "performer": [{"reference": "Practitioner/1"}, {"reference": "Patient/p9"}],
    }
    assert patient_key(obs) == "p9"
    # absolute or contained references do not give a key
    obs = {"resourceType": "Observation", "subject": {"reference": "http://x.org/fhir/Patient/1"}}
    assert patient_key(obs) is None
    assert patient_key({"resourceType": "Observation"}) is None
    # Provenance / AuditEvent use where(resolve() is Patient)
    prov = {"resourceType": "Provenance", "target": [{"reference": "Observation/o"}, {"reference": "Patient/p2"}]}
    assert patient_key(prov) == "p2"
    ae = {"resourceType": "AuditEvent", "entity": [{"what": {"reference": "Patient/p3/_history/1"}}]}
    assert patient_key(ae) == "p3"
    cov = {"resourceType": "Coverage", "beneficiary": {"reference": "Patient/p4"}, "payor": [{"reference": "Organization/o"}]}
    assert patient_key(cov) == "p4"


# ---------------------------------------------------------------------------- robustness


def test_odd_content_never_raises():
    weird = {
        "resourceType": "Observation",
        "code": "no es un CodeableConcept",
        "subject": ["Patient/1"],
        "valueQuantity": {"value": "setenta"},
        "effectiveDateTime": 20240101,
        "identifier": [None, 5, {"system": 7}],
        "category": {"coding": "x"},
        "performer": {"reference": None},
        "meta": {"tag": [{"code": ["a"]}]},
    }
    extract_index(weird)
    patient_key(weird)


def test_everything_compiles():
    assert unsupported_params() == {}


def test_extraction_is_fast():
    for res in (PATIENT, OBSERVATION):
        extract_index(res)
        n = 300
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(n):
                extract_index(res)
                patient_key(res)
            best = min(best, (time.perf_counter() - t0) / n)
        # Target: well under 0.3 ms; generous bound against noisy CI machines.
        assert best < 0.001, (res["resourceType"], best)


# ---------------------------------------------------------------------------- properties

SPANISH = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZáéíóúüñÁÉÍÓÚÜÑ '-."
_PLAIN = str.maketrans("áéíóúüñÁÉÍÓÚÜÑ", "aeiouunAEIOUUN")


@given(st.text(alphabet=SPANISH, max_size=40))
def test_normalize_spanish(s):
    assert normalize_text(s) == " ".join(s.translate(_PLAIN).lower().split())


@given(st.text(max_size=40))
@settings(max_examples=500)
def test_normalize_properties(s):
    n = normalize_text(s)
    assert normalize_text(n) == n  # idempotent
    assert not any(unicodedata.combining(c) for c in n)
    assert n == n.strip() and "  " not in n
    if s.isascii():
        assert normalize_text(s.upper()) == n


@given(st.text(alphabet="aeiouAEIOU", min_size=1, max_size=10))
def test_accents_and_case_do_not_matter(s):
    accented = s.translate(str.maketrans("aeiouAEIOU", "áéíóúÁÉÍÓÚ"))
    assert normalize_text(accented) == normalize_text(s) == s.lower()


@given(st.integers(1, 9999), st.integers(1, 12), st.data())
def test_partial_date_ranges(year, month, data):
    y = date_range(f"{year:04d}")
    m = date_range(f"{year:04d}-{month:02d}")
    day = data.draw(st.integers(1, calendar.monthrange(year, month)[1]))
    d = date_range(f"{year:04d}-{month:02d}-{day:02d}")
    assert y and m and d
    # nested: year contains month contains day; each range is well-formed
    assert y[0] <= m[0] <= d[0] <= d[1] <= m[1] <= y[1]
    assert y[0] == datetime(year, 1, 1) and y[1] == datetime(year, 12, 31, 23, 59, 59, 999999)
    assert m[0] == datetime(year, month, 1)
    assert d[0] == datetime(year, month, day) and d[1] == datetime(year, month, day, 23, 59, 59, 999999)


@given(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(-12, 14),
)
def test_datetime_offsets(dt, hours):
    sign = "+" if hours >= 0 else "-"
    text = dt.strftime("%Y-%m-%dT%H:%M:%S") + f"{sign}{abs(hours):02d}:00"
    low, high = date_range(text)
    from datetime import timedelta

    assert low == dt.replace(microsecond=0) - timedelta(hours=hours)
    assert high - low == timedelta(microseconds=999999)


# ---------------------------------------------------------------------------- fuzzing

import logging  # noqa: E402
import re  # noqa: E402

from expediente.fhir.resource_types import SERVED_TYPES  # noqa: E402
from expediente.fhir.search.registry import choice_elements, params_for  # noqa: E402


def _element_names() -> list[str]:
    names: set[str] = set()
    for t in SERVED_TYPES:
        for sp in params_for(t).values():
            names.update(re.findall(r"[a-z][A-Za-z]*", sp.expression))
    for name, suffixes in choice_elements().items():
        if name in names:
            names.update(name + s for s in suffixes[:6])
    return sorted(names | {"reference", "system", "code", "value", "display", "text", "start", "end", "family"})


_NAMES = _element_names()
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["Patient/1", "#x", "http://x/Patient/2", "1990", "2024-02-30", "2020-01-01T10:00:00Z", "", "Peña"]),
    st.text(max_size=8),
)
_json = st.recursive(
    _leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(_NAMES), children, max_size=4),
    ),
    max_leaves=20,
)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@given(st.sampled_from(SERVED_TYPES), st.dictionaries(st.sampled_from(_NAMES), _json, max_size=8))
@settings(max_examples=400, deadline=None)
def test_random_content_extracts_without_errors(res_type, body):
    handler = _Collect()
    logger = logging.getLogger("expediente.fhir.search.extract")
    logger.addHandler(handler)
    try:
        resource = {**body, "resourceType": res_type}
        idx = extract_index(resource)
        key = patient_key(resource)
    finally:
        logger.removeHandler(handler)
    assert handler.records == [], [r.getMessage() for r in handler.records]
    assert key is None or isinstance(key, str)
    for kind, kind_rows in idx.items():
        for r in kind_rows:
            assert set(r) == {"param", *INDEX_COLUMNS[kind]}


def test_identifier_type_rows_for_of_type():
    mr = {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
    ni = {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}
    patient = {"resourceType": "Patient", "id": "t", "identifier": [{"system": "urn:x", "value": "42", "type": {"coding": [mr, ni]}}]}
    assert rows(extract_index(patient), "token", "identifier") == [
        {"system": "urn:x", "code": "42", "text_norm": None, "type_system": mr["system"], "type_code": "MR"},
        {"system": "urn:x", "code": "42", "text_norm": None, "type_system": ni["system"], "type_code": "NI"},
    ]


def test_composite_rows_pair_values_of_the_same_element():
    obs = {
        "resourceType": "Observation",
        "id": "bp",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, "valueQuantity": {"value": 120, "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]}, "valueQuantity": {"value": 80, "code": "mm[Hg]"}},
        ],
    }
    got = {(r["code1"], r["value2"]) for r in rows(extract_index(obs), "composite", "component-code-value-quantity")}
    # Systolic with 120 and diastolic with 80, never systolic with 80.
    assert got == {("8480-6", 120.0), ("8462-4", 80.0)}


def test_expressions_with_a_value_when_the_element_is_absent_still_run():
    # "Patient.deceased.exists() and Patient.deceased != false": a Patient without deceased[x]
    # is indexed deceased=false, so "deceased=false" finds the living.
    assert rows(extract_index({"resourceType": "Patient", "id": "vivo"}), "token", "deceased") == [
        {"system": None, "code": "false", "text_norm": None}
    ]
