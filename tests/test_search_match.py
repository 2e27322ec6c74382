"""Equality search over the index tables (conditional create / update), on a real database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import orjson
import pytest
import sqlalchemy as sa

from expediente.db import schema
from expediente.fhir.search.clauses import SearchError, split_token, split_values
from expediente.fhir.search.engine import match_query
from expediente.fhir.search.extract import extract_index, patient_key

pytestmark = pytest.mark.generic_fhir  # minimal resources: Mexican profiles only where declared

CURP = "urn:oid:2.16.840.1.113883.4.629"
FATHERS = "http://hl7.org/fhir/StructureDefinition/humanname-fathers-family"
MOTHERS = "http://hl7.org/fhir/StructureDefinition/humanname-mothers-family"

RESOURCES = [
    {
        "resourceType": "Patient",
        "id": "1",
        "identifier": [{"system": CURP, "value": "PEPJ900504HDFXXX01"}, {"system": "urn:oid:1.2.3", "value": "A,1|x"}],
        "name": [
            {
                "family": "Peña López",
                "_family": {"extension": [{"url": FATHERS, "valueString": "Peña"}, {"url": MOTHERS, "valueString": "López"}]},
                "given": ["José", "Luis"],
            }
        ],
        "gender": "male",
        "birthDate": "1990-05-04",
        "active": True,
        "telecom": [{"system": "email", "value": "jose@example.mx"}],
        "address": [{"city": "Ciudad de México", "state": "CDMX"}],
        "managingOrganization": {"reference": "Organization/org1"},
        "meta": {"tag": [{"system": "http://example.mx/tags", "code": "prueba"}], "profile": ["http://example.mx/P"]},
    },
    {
        "resourceType": "Patient",
        "id": "2",
        "identifier": [{"system": CURP, "value": "GAMA850101MDFXXX02"}],
        "name": [{"family": "García", "given": ["María", "Josefina"]}],
        "gender": "female",
        "birthDate": "1985-01-01",
        "active": False,
        "telecom": [{"system": "phone", "value": "5512345678"}],
    },
    {
        "resourceType": "Patient",
        "id": "3",
        "identifier": [{"value": "SIN-SISTEMA"}],
        "name": [{"family": "Peñaloza", "given": ["Ana"]}],
        "birthDate": "1990-12",
    },
    {
        "resourceType": "Patient",
        "id": "4",  # deleted below: never found
        "identifier": [{"system": CURP, "value": "PEPJ900504HDFXXX01"}],
        "name": [{"family": "Peña"}],
    },
    {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}], "text": "Frecuencia cardíaca"},
        "subject": {"reference": "Patient/1"},
        "effectiveDateTime": "2024-03-01T10:30:00-06:00",
        "valueQuantity": {"value": 72, "unit": "lpm", "system": "http://unitsofmeasure.org", "code": "/min"},
    },
    {
        "resourceType": "Observation",
        "id": "o2",
        "status": "preliminary",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
        "subject": {"reference": "Patient/2"},
        "effectivePeriod": {"start": "2024-02-01", "end": "2024-02-02"},
        "valueQuantity": {"value": 36.5, "system": "http://unitsofmeasure.org", "code": "Cel"},
    },
    {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "subject": {"reference": "Patient/1"},
        "period": {"start": "2024-01-10T08:00:00Z", "end": "2024-01-12T08:00:00Z"},
    },
    {
        "resourceType": "Encounter",
        "id": "e2",
        "status": "in-progress",
        "subject": {"reference": "Patient/2"},
        "period": {"start": "2024-02-01T08:00:00Z"},
    },
    {
        "resourceType": "CarePlan",
        "id": "cp1",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/1"},
        "instantiatesCanonical": ["http://example.mx/PlanDefinition/diabetes"],
        "instantiatesUri": ["http://example.mx/protocolos/diabetes"],
    },
]

DELETED = {("Patient", "4")}


def _load(engine: sa.Engine) -> None:
    schema.metadata.create_all(engine)
    now = datetime(2024, 6, 1, 12, 0, 0)
    with engine.begin() as conn:
        for res in RESOURCES:
            rt, rid = res["resourceType"], res["id"]
            key = patient_key(res)
            deleted = (rt, rid) in DELETED
            conn.execute(
                schema.resource.insert(),
                {
                    "res_type": rt,
                    "res_id": rid,
                    "version_id": 1,
                    "patient_key": key,
                    "last_updated": now,
                    "deleted": deleted,
                    "body": b"" if deleted else orjson.dumps(res),
                },
            )
            for kind, rows in extract_index(res).items():
                conn.execute(
                    schema.INDEX_TABLES[kind].insert(),
                    [{**r, "res_type": rt, "res_id": rid, "patient_key": key} for r in rows],
                )


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        eng = sa.create_engine("sqlite://")
        _load(eng)
        yield eng
        eng.dispose()
        return
    from conftest import postgres_database  # the shared PostgreSQL helper (skips without a server)

    gen = postgres_database()
    url = next(gen)
    eng = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        _load(eng)
        yield eng
    finally:
        eng.dispose()
        gen.close()


def find(engine: sa.Engine, res_type: str, params: list[tuple[str, str]] | str) -> set[str]:
    if isinstance(params, str):
        params = [tuple(p.split("=", 1)) for p in params.split("&")]  # type: ignore[misc]
    with engine.connect() as conn:
        return set(conn.execute(match_query(res_type, params)).scalars())


@pytest.mark.parametrize(
    ("res_type", "query", "expected"),
    [
        # _id
        ("Patient", "_id=1", {"1"}),
        ("Patient", "_id=1,2,4", {"1", "2"}),
        ("Patient", "_lastUpdated=2024-06", {"1", "2", "3"}),
        ("Patient", "_lastUpdated=2024-05", set()),
        # token
        ("Patient", f"identifier={CURP}|PEPJ900504HDFXXX01", {"1"}),
        ("Patient", "identifier=PEPJ900504HDFXXX01", {"1"}),
        ("Patient", f"identifier={CURP}|", {"1", "2"}),
        ("Patient", "identifier=|SIN-SISTEMA", {"3"}),
        ("Patient", "identifier=|PEPJ900504HDFXXX01", set()),
        ("Patient", "identifier=urn:oid:9.9|PEPJ900504HDFXXX01", set()),
        ("Patient", r"identifier=urn:oid:1.2.3|A\,1\|x", {"1"}),
        ("Patient", f"identifier={CURP}|PEPJ900504HDFXXX01,{CURP}|GAMA850101MDFXXX02", {"1", "2"}),
        ("Patient", "gender=female", {"2"}),
        ("Patient", "active=true", {"1"}),
        ("Patient", "active=false", {"2"}),
        ("Patient", "email=jose@example.mx", {"1"}),
        ("Patient", "phone=5512345678", {"2"}),
        ("Patient", "_tag=http://example.mx/tags|prueba", {"1"}),
        ("Observation", "code=http://loinc.org|8867-4", {"o1"}),
        ("Observation", "code:text=frecuencia cardiaca", {"o1"}),
        ("Observation", "code:text=heart", {"o1"}),
        ("Observation", "status=final,preliminary", {"o1", "o2"}),
        # string
        ("Patient", "family=pena", {"1", "3"}),
        ("Patient", "family=PEÑA", {"1", "3"}),
        ("Patient", "family=lopez", {"1"}),  # maternal surname, from the extension
        ("Patient", "family:exact=Peña", {"1"}),
        ("Patient", "family:exact=peña", set()),
        ("Patient", "family:contains=aloz", {"3"}),
        ("Patient", "name=jose", {"1", "2"}),  # José; Josefina starts with jose
        ("Patient", "given=josé luis", set()),
        ("Patient", "name=maria", {"2"}),
        ("Patient", "address-city=ciudad de mexico", {"1"}),
        ("Patient", "address=cdmx", {"1"}),
        ("Patient", "family=pe%", set()),  # LIKE wildcards are literal
        ("Patient", "family=pen_", set()),
        # date
        ("Patient", "birthdate=1990", {"1", "3"}),
        ("Patient", "birthdate=1990-05", {"1"}),
        ("Patient", "birthdate=1990-05-04", {"1"}),
        ("Patient", "birthdate=eq1990-05-04", {"1"}),
        ("Patient", "birthdate=1990-12-25", set()),  # eq: the stored month is not inside that day
        ("Patient", "birthdate=1991", set()),
        ("Patient", "birthdate=1985,1990-05", {"1", "2"}),
        ("Observation", "date=2024-03-01", {"o1"}),
        ("Observation", "date=2024-03-01T16:30:00Z", {"o1"}),
        ("Observation", "date=2024-03-01T10:30:00-06:00", {"o1"}),
        ("Observation", "date=2024-03-01T10:30:00Z", set()),
        ("Observation", "date=2024-02", {"o2"}),
        ("Observation", "date=2024-02-03", set()),
        ("Encounter", "date=2024-01-11", set()),  # eq: the period must lie inside the day
        ("Encounter", "date=2024-01", {"e1"}),
        ("Encounter", "date=ge2024-01-11", {"e1", "e2"}),
        ("Encounter", "date=sa2024-01-31", {"e2"}),
        ("Encounter", "date=2024-01-13", set()),
        ("Encounter", "date=2030", set()),  # an open-ended period is inside no year
        ("Encounter", "date=gt2030", {"e2"}),  # ...but it goes beyond any
        ("Encounter", "date=2024-02-01T07:00:00Z", set()),
        # reference
        ("Observation", "subject=Patient/1", {"o1"}),
        ("Observation", "subject=1", {"o1"}),
        ("Observation", "subject:Patient=2", {"o2"}),
        ("Observation", "patient=Patient/2", {"o2"}),
        ("Observation", "subject=Patient/1,Patient/2", {"o1", "o2"}),
        ("Observation", "subject=Group/1", set()),
        ("Encounter", "subject=Patient/1", {"e1"}),
        ("Patient", "organization=Organization/org1", {"1"}),
        ("CarePlan", "instantiates-canonical=http://example.mx/PlanDefinition/diabetes", {"cp1"}),
        # uri
        ("CarePlan", "instantiates-uri=http://example.mx/protocolos/diabetes", {"cp1"}),
        ("CarePlan", "instantiates-uri:below=http://example.mx/protocolos", {"cp1"}),
        ("CarePlan", "instantiates-uri=http://example.mx/protocolos", set()),
        ("Patient", "_profile=http://example.mx/P", {"1"}),
        # quantity
        ("Observation", "value-quantity=72", {"o1"}),
        ("Observation", "value-quantity=72|http://unitsofmeasure.org|/min", {"o1"}),
        ("Observation", "value-quantity=72||lpm", {"o1"}),
        ("Observation", "value-quantity=36.5||Cel", {"o2"}),
        ("Observation", "value-quantity=36.6", set()),
        ("Observation", "value-quantity=72|http://unitsofmeasure.org|Cel", set()),
        # :missing
        ("Patient", "gender:missing=true", {"3"}),
        ("Patient", "gender:missing=false", {"1", "2"}),
        # AND of several parameters, and result-shaping parameters ignored
        ("Patient", f"identifier={CURP}|PEPJ900504HDFXXX01&family=pena&birthdate=1990", {"1"}),
        ("Patient", "family=pena&birthdate=1990-12", {"3"}),
        ("Patient", "family=pena&gender=female", set()),
        ("Patient", "family=garcia&_count=1&_format=json", {"2"}),
    ],
)
def test_match(engine, res_type, query, expected):
    assert find(engine, res_type, query) == expected


def test_no_criteria_matches_every_live_resource(engine):
    assert find(engine, "Patient", []) == {"1", "2", "3"}
    assert find(engine, "Patient", [("_count", "1")]) == {"1", "2", "3"}


def test_deleted_never_found(engine):
    assert find(engine, "Patient", "_id=4") == set()
    assert find(engine, "Patient", f"identifier={CURP}|PEPJ900504HDFXXX01") == {"1"}


def test_type_scoped(engine):
    # Patient 1 and Observation o1 share nothing; the type filters the index rows too.
    assert find(engine, "Observation", "_id=1") == set()


@pytest.mark.parametrize(
    ("res_type", "params", "fragment"),
    [
        ("Patient", [("foo", "1")], "Parámetro de búsqueda desconocido para Patient: 'foo'"),
        ("Patient", [("family:sounds", "x")], "':sounds'"),
        ("Patient", [("identifier:of-type", "x")], "of-type"),
        ("Patient", [("birthdate", "xx1990")], "Fecha inválida"),
        ("Patient", [("birthdate", "mayo")], "Fecha inválida"),
        ("Patient", [("family", "")], "no tiene valor"),
        ("Patient", [("family", "   ")], "no tiene valor"),
        ("Patient", [("general-practitioner.name.family", "x")], "un nivel"),
        ("Foo", [("_id", "1")], "Tipo de recurso no soportado"),
        ("Location", [("near", "1|2|3|km")], "no soportado"),
        ("Observation", [("code-value-quantity", "x")], "primero$segundo"),
        ("Observation", [("subject:Foo", "1")], "no puede referirse a Foo"),
        ("Observation", [("value-quantity", "abc")], "Número inválido"),
        ("Patient", [("gender:missing", "quizas")], ":missing"),
    ],
)
def test_errors(res_type, params, fragment):
    with pytest.raises(SearchError) as info:
        match_query(res_type, params)
    assert fragment in info.value.message
    assert str(info.value) == info.value.message


def test_unknown_parameter_code():
    with pytest.raises(SearchError) as info:
        match_query("Patient", [("foo", "1")])
    assert info.value.code == "not-supported"
    assert info.value.message == "Parámetro de búsqueda desconocido para Patient: 'foo'"


def test_query_selects_res_id():
    q = match_query("Patient", [("family", "pena")])
    assert [c.name for c in q.selected_columns] == ["res_id"]


def test_value_splitting():
    assert split_values("a,b") == ["a", "b"]
    assert split_values(r"a\,b,c") == [r"a\,b", "c"]
    assert split_token("s|c") == ("s", "c")
    assert split_token("|c") == ("", "c")
    assert split_token("s|") == ("s", "")
    assert split_token("c") == (None, "c")
    assert split_token(r"a\|b|c") == ("a|b", "c")
