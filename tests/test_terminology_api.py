"""The FHIR terminology service over HTTP: CodeSystem/ValueSet, $lookup, $validate-code,
$expand, errors as Spanish OperationOutcomes, authentication required."""

from __future__ import annotations

from pathlib import Path

import pytest

from expediente.mx.catalogs import load_file
from expediente.mx.systems import AFFILIATION_SYSTEM, CIE9MC_SYSTEM, CIE10_SYSTEM, RENAPO_STATE_SYSTEM

DGIS = (Path(__file__).parent / "data" / "dgis_cie10.csv").read_bytes()
VS_CIE10 = "http://expediente.mx/fhir/ValueSet/cie10"


def _params(body: dict) -> dict:
    return {p["name"]: p.get("valueBoolean", p.get("valueString", p.get("part"))) for p in body["parameter"]}


def _properties(body: dict) -> dict:
    out = {}
    for p in body["parameter"]:
        if p["name"] == "property":
            parts = {part["name"]: part for part in p["part"]}
            value = parts["value"]
            out[parts["code"]["valueCode"]] = value.get("valueCode", value.get("valueString"))
    return out


def _parameters(*pairs: tuple[str, str, object]) -> dict:
    return {"resourceType": "Parameters", "parameter": [{"name": n, k: v} for n, k, v in pairs]}


def test_unauthenticated_requests_are_refused(client):
    for path in ("/fhir/CodeSystem", "/fhir/CodeSystem/cie10", f"/fhir/CodeSystem/$lookup?system={CIE10_SYSTEM}&code=I10",
                 "/fhir/ValueSet/cie10/$expand", "/fhir/ValueSet/$validate-code"):  # fmt: skip
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.json()["resourceType"] == "OperationOutcome"


def test_code_system_search_and_read(client, auth):
    bundle = client.get("/fhir/CodeSystem", headers=auth).json()
    urls = {e["resource"]["url"]: e["resource"] for e in bundle["entry"]}
    assert set(urls) == {CIE10_SYSTEM, CIE9MC_SYSTEM, RENAPO_STATE_SYSTEM, AFFILIATION_SYSTEM}
    assert urls[CIE10_SYSTEM]["content"] == "fragment" and urls[RENAPO_STATE_SYSTEM]["content"] == "complete"
    assert "concept" not in urls[CIE10_SYSTEM]  # summaries in search results
    one = client.get("/fhir/CodeSystem", params={"url": CIE10_SYSTEM}, headers=auth).json()
    assert [e["resource"]["id"] for e in one["entry"]] == ["cie10"]
    by_name = client.get("/fhir/CodeSystem", params={"name": "deRECHO"}, headers=auth).json()
    assert [e["resource"]["id"] for e in by_name["entry"]] == ["derechohabiencia"]
    assert client.get("/fhir/CodeSystem", params={"url": "http://otro"}, headers=auth).json()["total"] == 0

    r = client.get("/fhir/CodeSystem", params={"color": "rojo"}, headers=auth)
    assert r.status_code == 400 and "Parámetro de búsqueda desconocido" in r.json()["issue"][0]["diagnostics"]

    cs = client.get("/fhir/CodeSystem/entidad-renapo", headers=auth).json()
    assert cs["resourceType"] == "CodeSystem" and cs["count"] == 33 and cs["url"] == RENAPO_STATE_SYSTEM
    jalisco = next(c for c in cs["concept"] if c["code"] == "JC")
    assert jalisco == {"code": "JC", "display": "Jalisco", "property": [{"code": "inegi", "valueString": "14"}]}
    cie10 = client.get("/fhir/CodeSystem/cie10", headers=auth).json()
    o80 = next(c for c in cie10["concept"] if c["code"] == "O80")
    assert o80["property"] == [
        {"code": "sex-limit", "valueCode": "female"},
        {"code": "age-minimum", "valueString": "10 a"},
        {"code": "age-maximum", "valueString": "54 a"},
    ]
    assert {p["code"] for p in cie10["property"]} == {"sex-limit", "age-minimum", "age-maximum"}

    r = client.get("/fhir/CodeSystem/no-existe", headers=auth)
    assert r.status_code == 404 and r.json()["issue"][0]["diagnostics"] == "No existe el recurso CodeSystem/no-existe"


def test_lookup_get_and_post(client, auth):
    r = client.get("/fhir/CodeSystem/$lookup", params={"system": CIE10_SYSTEM, "code": "O80"}, headers=auth)
    assert r.status_code == 200
    body = r.json()
    assert _params(body)["display"] == "Parto único espontáneo" and _params(body)["name"] == "CIE10"
    assert _properties(body) == {"sex-limit": "female", "age-minimum": "10 a", "age-maximum": "54 a"}

    post = _parameters(("coding", "valueCoding", {"system": RENAPO_STATE_SYSTEM, "code": "DF"}))
    body = client.post("/fhir/CodeSystem/$lookup", json=post, headers=auth).json()
    assert _params(body)["display"] == "Ciudad de México" and _properties(body) == {"inegi": "09"}

    post = _parameters(("system", "valueUri", CIE9MC_SYSTEM), ("code", "valueCode", "74.1"))
    assert _params(client.post("/fhir/CodeSystem/$lookup", json=post, headers=auth).json())["display"] == "Cesárea cervical baja"


@pytest.mark.parametrize(
    ("params", "status", "diagnostics"),
    [
        ({"code": "I10"}, 400, "Falta el parámetro 'system'"),
        ({"system": CIE10_SYSTEM}, 400, "Falta el parámetro 'code'"),
        ({"system": "http://loinc.org", "code": "2345-7"}, 404, "No se conoce el sistema de códigos 'http://loinc.org'"),
        ({"system": CIE10_SYSTEM, "code": "X99.9"}, 404, "El código 'X99.9' no está en el subconjunto cargado del catálogo"),
        ({"system": CIE10_SYSTEM, "code": "I10", "version": "2019"}, 404, "La versión '2019' de urn:oid:2.16.840.1.113883.6.3 no está cargada"),
        ({"system": CIE10_SYSTEM, "code": "I10", "sabor": "fresa"}, 400, "Parámetro desconocido para esta operación: 'sabor'"),
    ],
)
def test_lookup_errors(client, auth, params, status, diagnostics):
    r = client.get("/fhir/CodeSystem/$lookup", params=params, headers=auth)
    assert r.status_code == status
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["diagnostics"].startswith(diagnostics)


def test_malformed_parameters_body_is_400(client, auth):
    r = client.post("/fhir/CodeSystem/$lookup", json={"resourceType": "Patient"}, headers=auth)
    assert r.status_code == 400 and r.json()["issue"][0]["diagnostics"] == "Se esperaba un recurso Parameters"
    r = client.post("/fhir/CodeSystem/$lookup", json={"resourceType": "Parameters", "parameter": [{"name": "code"}]}, headers=auth)
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["Parameters.parameter[0]"]
    r = client.post("/fhir/CodeSystem/$lookup", content=b"{no", headers=auth | {"Content-Type": "application/fhir+json"})
    assert r.status_code == 400


def test_validate_code_on_the_shipped_subset(client, auth):
    def validate(path, **params):
        r = client.get(path, params=params, headers=auth)
        assert r.status_code == 200, r.text
        return _params(r.json())

    ok = validate("/fhir/CodeSystem/$validate-code", url=CIE10_SYSTEM, code="N40")
    assert ok == {"result": True, "display": "Hiperplasia de la próstata"}
    # A subset cannot say a well-formed code is wrong; a malformed one is.
    unsure = validate("/fhir/CodeSystem/$validate-code", url=CIE10_SYSTEM, code="X99.9")
    assert unsure["result"] is True and "solo un subconjunto" in unsure["message"]
    bad = validate("/fhir/CodeSystem/$validate-code", url=CIE10_SYSTEM, code="E119")
    assert bad["result"] is False and "no tiene la forma de un código" in bad["message"]
    # Complete shipped catalogs do say so.
    state = validate("/fhir/CodeSystem/entidad-renapo/$validate-code", code="XX")
    assert state["result"] is False and state["message"].startswith("El código 'XX' no existe en Entidades federativas")
    wrong_text = validate("/fhir/ValueSet/$validate-code", url="http://expediente.mx/fhir/ValueSet/entidad-renapo", system=RENAPO_STATE_SYSTEM, code="JC", display="Guadalajara")
    assert wrong_text["result"] is True and "no coincide" in wrong_text["message"] and wrong_text["display"] == "Jalisco"
    assert validate("/fhir/ValueSet/derechohabiencia/$validate-code", system=AFFILIATION_SYSTEM, code="IMSS-BIENESTAR")["result"] is True
    other = validate("/fhir/ValueSet/derechohabiencia/$validate-code", system=CIE10_SYSTEM, code="I10")
    assert other["result"] is False and "no pertenece al ValueSet" in other["message"]

    post = {"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUri": VS_CIE10},
        {"name": "codeableConcept", "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}, {"system": CIE10_SYSTEM, "code": "I10"}]}},
    ]}  # fmt: skip
    body = client.post("/fhir/ValueSet/$validate-code", json=post, headers=auth).json()
    assert _params(body) == {"result": True, "display": "Hipertensión esencial (primaria)"}


def test_validate_code_errors(client, auth):
    r = client.get("/fhir/CodeSystem/$validate-code", params={"code": "I10"}, headers=auth)
    assert r.status_code == 400 and r.json()["issue"][0]["diagnostics"].startswith("Falta el parámetro 'url'")
    r = client.get("/fhir/ValueSet/$validate-code", params={"url": "http://hl7.org/fhir/ValueSet/x", "code": "I10"}, headers=auth)
    assert r.status_code == 404 and "No se conoce el ValueSet" in r.json()["issue"][0]["diagnostics"]
    r = client.get("/fhir/ValueSet/cie10/$validate-code", headers=auth)
    assert r.status_code == 400 and r.json()["issue"][0]["diagnostics"].startswith("Falta el parámetro 'code'")


def test_validate_code_on_a_loaded_catalog(client, auth, services):
    load_file(services.engine, "cie10", DGIS, version="2024")
    r = client.get("/fhir/CodeSystem/$validate-code", params={"url": CIE10_SYSTEM, "code": "X99.9"}, headers=auth)
    body = _params(r.json())
    assert body["result"] is False and body["message"].endswith("no existe en Clasificación Internacional de Enfermedades, décima revisión (CIE-10) (versión 2024)")
    cs = client.get("/fhir/CodeSystem/cie10", headers=auth).json()
    assert (cs["content"], cs["version"], cs["count"]) == ("complete", "2024", 33)
    r = client.get("/fhir/CodeSystem/$validate-code", params={"url": CIE10_SYSTEM, "code": "A00.0", "version": "2024"}, headers=auth)
    assert _params(r.json())["result"] is True


def test_value_set_read_search_and_expand(client, auth):
    vs = client.get("/fhir/ValueSet/cie10", headers=auth).json()
    assert vs["url"] == VS_CIE10 and vs["compose"]["include"][0]["system"] == CIE10_SYSTEM
    found = client.get("/fhir/ValueSet", params={"url": VS_CIE10}, headers=auth).json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["cie10"]

    exp = client.get("/fhir/ValueSet/cie10/$expand", params={"filter": "diabetes", "count": 2}, headers=auth).json()["expansion"]
    assert exp["total"] == 6 and len(exp["contains"]) == 2
    assert exp["contains"][0] == {"system": CIE10_SYSTEM, "version": "expediente-2026.12", "code": "E10.9", "display": "Diabetes mellitus insulinodependiente, sin mención de complicación"}
    page2 = client.get("/fhir/ValueSet/cie10/$expand", params={"filter": "diabetes", "count": 2, "offset": 2}, headers=auth).json()["expansion"]
    assert [c["code"] for c in page2["contains"]] == ["E11.6", "E11.9"]
    # Accent- and case-insensitive, every word a prefix; codes too.
    by_words = client.get("/fhir/ValueSet/$expand", params={"url": VS_CIE10, "filter": "PARTO espont"}, headers=auth).json()["expansion"]
    assert [c["code"] for c in by_words["contains"]] == ["O80", "O80.0", "O80.9"]
    by_code = client.get("/fhir/ValueSet/cie10/$expand", params={"filter": "e11"}, headers=auth).json()["expansion"]
    assert [c["code"] for c in by_code["contains"]] == ["E11", "E11.6", "E11.9"]
    accents = client.get("/fhir/ValueSet/cie10/$expand", params={"filter": "neumonia"}, headers=auth).json()["expansion"]
    assert [c["code"] for c in accents["contains"]] == ["J18.9"]
    everything = client.get("/fhir/ValueSet/entidad-renapo/$expand", headers=auth).json()["expansion"]
    assert everything["total"] == 33 and len(everything["contains"]) == 33
    post = _parameters(("url", "valueUri", "http://expediente.mx/fhir/ValueSet/derechohabiencia"), ("filter", "valueString", "marina"))
    assert [c["code"] for c in client.post("/fhir/ValueSet/$expand", json=post, headers=auth).json()["expansion"]["contains"]] == ["SEMAR"]


@pytest.mark.parametrize(
    ("params", "status", "diagnostics"),
    [
        ({"count": "5000"}, 400, "'count' debe estar entre 0 y 1000"),
        ({"count": "muchos"}, 400, "El parámetro 'count' debe ser un número entero"),
        ({"offset": "-1"}, 400, "'offset' no puede ser negativo"),
    ],
)
def test_expand_is_bounded(client, auth, params, status, diagnostics):
    r = client.get("/fhir/ValueSet/cie10/$expand", params=params, headers=auth)
    assert r.status_code == status and r.json()["issue"][0]["diagnostics"] == diagnostics


def test_expand_unknown_value_set(client, auth):
    r = client.get("/fhir/ValueSet/$expand", headers=auth)
    assert r.status_code == 400 and r.json()["issue"][0]["diagnostics"].startswith("Falta el parámetro 'url'")
    r = client.get("/fhir/ValueSet/nada/$expand", headers=auth)
    assert r.status_code == 404 and r.json()["issue"][0]["diagnostics"] == "No existe el recurso ValueSet/nada"


def test_any_authenticated_role_may_read_catalogs(client, make_token):
    token = make_token("patient")
    r = client.get("/fhir/CodeSystem/$lookup", params={"system": AFFILIATION_SYSTEM, "code": "ISSSTE"}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and _params(r.json())["display"].startswith("Instituto de Seguridad y Servicios Sociales")


def test_catalog_writes_are_not_accepted(client, auth):
    r = client.put("/fhir/CodeSystem/cie10", json={"resourceType": "CodeSystem", "id": "cie10"}, headers=auth)
    assert r.status_code in (404, 405) and r.json()["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/CodeSystem/cie10", headers=auth).json()["content"] == "fragment"


def test_capability_statement_lists_terminology(client):
    resources = {r["type"]: r for r in client.get("/fhir/metadata").json()["rest"][0]["resource"]}
    assert {o["name"] for o in resources["CodeSystem"]["operation"]} == {"lookup", "validate-code"}
    assert {o["name"] for o in resources["ValueSet"]["operation"]} == {"expand", "validate-code"}
    assert [i["code"] for i in resources["ValueSet"]["interaction"]] == ["read", "search-type"]
