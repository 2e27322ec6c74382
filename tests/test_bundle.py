"""Batch and transaction Bundles (POST /fhir) end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa

from expediente.db.schema import INDEX_TABLES, audit_log, resource, resource_history
from expediente.synth.bundles import SHARED_TYPES, references, split_patients, transaction_bundle
from expediente.synth.generator import generate

pytestmark = pytest.mark.generic_fhir  # minimal resources: Mexican profiles only where declared

CURP_SYSTEM = "urn:oid:2.16.840.1.113883.4.629"
CEDULA_SYSTEM = "urn:oid:2.16.840.1.113883.3.215.12.18"


# ------------------------------------------------------------------------------ builders


def patient(curp: str = "PEGJ900504HDFXRN07", family: str = "Peña García") -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": CURP_SYSTEM, "value": curp}],
        "name": [{"family": family, "given": ["José"]}],
        "gender": "male",
        "birthDate": "1990-05-04",
    }


def observation(subject: str, text: str = "Glucosa") -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"text": text}, "subject": {"reference": subject}}


def practitioner(cedula: str) -> dict:
    return {"resourceType": "Practitioner", "identifier": [{"system": CEDULA_SYSTEM, "value": cedula}], "name": [{"family": "Ruiz"}]}


def post(resource: dict, full_url: str | None = None, **request) -> dict:
    entry = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"], **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def transaction(*entries: dict, kind: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def batch(*entries: dict) -> dict:
    return transaction(*entries, kind="batch")


def rows(services, table=resource) -> int:
    with services.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def stored_counts(services) -> dict[str, int]:
    """Rows in every table a write touches except the audit trail."""
    tables = {"resource": resource, "resource_history": resource_history, **INDEX_TABLES}
    return {name: rows(services, table) for name, table in tables.items()}


def api_count(client, auth, res_type: str) -> int:
    bundle = client.get(f"/fhir/{res_type}?_count=500", headers=auth).json()
    return len([e for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"])


def read(client, auth, reference: str) -> dict:
    r = client.get(f"/fhir/{reference}", headers=auth)
    assert r.status_code == 200, (reference, r.text)
    return r.json()


def assert_outcome(r, status: int, *fragments: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    text = " ".join(i["diagnostics"] + " " + " ".join(i.get("expression", [])) for i in body["issue"])
    for fragment in fragments:
        assert fragment in text, (fragment, body)
    return body


# ------------------------------------------------------------------------------ transaction


def test_transaction_resolves_urn_uuid_references(client, auth):
    bundle = transaction(
        post(patient(), "urn:uuid:0f0c6b1e-1111-4d1c-9a2e-000000000001"),
        post(observation("urn:uuid:0f0c6b1e-1111-4d1c-9a2e-000000000001"), "urn:uuid:0f0c6b1e-1111-4d1c-9a2e-000000000002"),
        post(
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": "urn:uuid:0f0c6b1e-1111-4d1c-9a2e-000000000001"},
                # nested: an extension holding a Reference
                "extension": [
                    {"url": "http://example.org/obs", "valueReference": {"reference": "urn:uuid:0f0c6b1e-1111-4d1c-9a2e-000000000002"}}
                ],
            }
        ),
    )
    r = client.post("/fhir", json=bundle, headers=auth)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["resourceType"] == "Bundle" and out["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses == ["201 Created"] * 3
    pid, oid, eid = (e["resource"]["id"] for e in out["entry"])
    assert out["entry"][0]["response"]["location"] == f"Patient/{pid}/_history/1"
    assert out["entry"][0]["response"]["etag"] == 'W/"1"'
    assert out["entry"][0]["fullUrl"] == f"http://testserver/fhir/Patient/{pid}"
    assert read(client, auth, f"Observation/{oid}")["subject"] == {"reference": f"Patient/{pid}"}
    encounter = read(client, auth, f"Encounter/{eid}")
    assert encounter["subject"]["reference"] == f"Patient/{pid}"
    assert encounter["extension"][0]["valueReference"]["reference"] == f"Observation/{oid}"
    # The rewritten reference is indexed: searching by the new id finds the Observation.
    found = client.get(f"/fhir/Observation?subject=Patient/{pid}", headers=auth).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [oid]


def test_failing_entry_leaves_nothing_stored(client, services, auth):
    before_api = api_count(client, auth, "Patient")
    before = stored_counts(services)
    entries = [post(patient(curp=f"PEGJ900504HDFXRN{i:02d}", family=f"Familia{i}")) for i in range(50)]
    entries[40]["resource"]["birthDate"] = "1990-13-45"  # invalid
    r = client.post("/fhir", json=transaction(*entries), headers=auth)
    body = assert_outcome(r, 400, "Bundle.entry[40]", "birthDate")
    assert body["issue"][0]["expression"][0].startswith("Bundle.entry[40].resource.birthDate")
    assert stored_counts(services) == before and before["resource"] == 0
    assert api_count(client, auth, "Patient") == before_api == 0


def test_failure_inside_the_job_rolls_back_every_earlier_write(client, services, auth):
    existing = client.post("/fhir/Patient", json=patient(curp="MAHL850101MJCRRS09"), headers=auth).json()
    before = stored_counts(services)
    entries = [post(patient(curp=f"PEGJ900504HDFXRN{i:02d}")) for i in range(45)]
    stale = {**existing, "gender": "female"}
    entries.insert(40, {"resource": stale, "request": {"method": "PUT", "url": f"Patient/{existing['id']}", "ifMatch": 'W/"9"'}})
    r = client.post("/fhir", json=transaction(*entries), headers=auth)
    assert_outcome(r, 412, "Bundle.entry[40]", "versión")
    assert stored_counts(services) == before
    assert api_count(client, auth, "Patient") == 1
    assert read(client, auth, f"Patient/{existing['id']}")["gender"] == "male"


def test_conditional_references_resolve_by_search(client, auth):
    doctor = client.post("/fhir/Practitioner", json=practitioner("1234567"), headers=auth).json()
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"code": "AMB"},
        "subject": {"reference": "urn:uuid:p"},
        "participant": [{"individual": {"reference": f"Practitioner?identifier={CEDULA_SYSTEM}|1234567"}}],
    }
    r = client.post("/fhir", json=transaction(post(patient(), "urn:uuid:p"), post(encounter)), headers=auth)
    assert r.status_code == 200, r.text
    eid = r.json()["entry"][1]["resource"]["id"]
    stored = read(client, auth, f"Encounter/{eid}")
    assert stored["participant"][0]["individual"]["reference"] == f"Practitioner/{doctor['id']}"
    found = client.get(f"/fhir/Encounter?participant=Practitioner/{doctor['id']}", headers=auth).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [eid]


@pytest.mark.parametrize("doctors, status, fragment", [(0, 400, "ningún recurso"), (2, 412, "varios recursos")])
def test_conditional_reference_must_match_exactly_one(client, services, auth, doctors, status, fragment):
    for _ in range(doctors):
        client.post("/fhir/Practitioner", json=practitioner("7654321"), headers=auth)
    before = stored_counts(services)
    obs = observation("urn:uuid:p")
    obs["performer"] = [{"reference": f"Practitioner?identifier={CEDULA_SYSTEM}|7654321"}]
    r = client.post("/fhir", json=transaction(post(patient(), "urn:uuid:p"), post(obs)), headers=auth)
    assert_outcome(r, status, "Bundle.entry[1]", fragment, "Practitioner?identifier=")
    assert stored_counts(services) == before


def test_conditional_reference_to_a_conditional_create_of_the_same_transaction(client, auth):
    ref = f"Practitioner?identifier={CEDULA_SYSTEM}|5550001"
    obs = observation("urn:uuid:p")
    obs["performer"] = [{"reference": ref}]
    cond = {"ifNoneExist": f"identifier={CEDULA_SYSTEM}|5550001"}
    # The referencing entry comes first in the Bundle: the server still creates the
    # Practitioner before resolving the reference.
    bundle = transaction(post(obs), post(patient(), "urn:uuid:p"), post(practitioner("5550001"), **cond))
    r = client.post("/fhir", json=bundle, headers=auth)
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    doctor_id = out[2]["resource"]["id"]
    assert out[2]["response"]["status"] == "201 Created"
    assert read(client, auth, f"Observation/{out[0]['resource']['id']}")["performer"][0]["reference"] == f"Practitioner/{doctor_id}"
    # Again: the conditional create now matches (200) and the reference resolves to the same one.
    again = client.post("/fhir", json=bundle, headers=auth).json()["entry"]
    assert again[2]["response"]["status"] == "200 OK" and again[2]["resource"]["id"] == doctor_id
    assert again[0]["resource"]["performer"][0]["reference"] == f"Practitioner/{doctor_id}"
    assert api_count(client, auth, "Practitioner") == 1


def test_references_to_a_conditional_create_fullurl_follow_its_match(client, auth):
    doctor = client.post("/fhir/Practitioner", json=practitioner("8880001"), headers=auth).json()
    role = {"resourceType": "PractitionerRole", "practitioner": {"reference": "urn:uuid:doc"}}
    bundle = transaction(
        post(role),
        post(practitioner("8880001"), "urn:uuid:doc", ifNoneExist=f"identifier={CEDULA_SYSTEM}|8880001"),
    )
    r = client.post("/fhir", json=bundle, headers=auth)
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    assert out[1]["response"]["status"] == "200 OK" and out[1]["resource"]["id"] == doctor["id"]
    assert out[0]["resource"]["practitioner"]["reference"] == f"Practitioner/{doctor['id']}"


def test_reference_resolved_in_the_transaction_wins_over_the_look_ahead(client, auth):
    """The conditional reference matches A before the transaction; inside it A is deleted and B
    created first, so the Observation must point at B (and be indexed so)."""
    a = client.post("/fhir/Practitioner", json=practitioner("4440001"), headers=auth).json()
    obs = observation("urn:uuid:p")
    obs["performer"] = [{"reference": f"Practitioner?identifier={CEDULA_SYSTEM}|4440001"}]
    bundle = transaction(
        post(obs),
        post(patient(), "urn:uuid:p"),
        post(practitioner("4440001")),
        {"request": {"method": "DELETE", "url": f"Practitioner/{a['id']}"}},
    )
    r = client.post("/fhir", json=bundle, headers=auth)
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    b_id = out[2]["resource"]["id"]
    assert b_id != a["id"]
    assert read(client, auth, f"Observation/{out[0]['resource']['id']}")["performer"][0]["reference"] == f"Practitioner/{b_id}"
    found = client.get(f"/fhir/Observation?performer=Practitioner/{b_id}", headers=auth).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [out[0]["resource"]["id"]]


def test_reference_used_before_its_conditional_update_resolved_differently_fails(client, services, auth):
    old = client.post("/fhir/Patient", json=patient(), headers=auth).json()
    before = stored_counts(services)
    cond = f"Patient?identifier={CURP_SYSTEM}|PEGJ900504HDFXRN07"
    bundle = transaction(
        post(observation("urn:uuid:who")),  # a POST: runs before the PUT it references
        {"fullUrl": "urn:uuid:who", "resource": patient(), "request": {"method": "PUT", "url": cond}},
        {"request": {"method": "DELETE", "url": f"Patient/{old['id']}"}},
    )
    assert_outcome(client.post("/fhir", json=bundle, headers=auth), 409, "Bundle.entry[1]", "urn:uuid:who")
    assert stored_counts(services) == before


def test_processing_order_deletes_before_creates(client, auth):
    old = client.post("/fhir/Patient", json=patient(), headers=auth).json()
    bundle = transaction(
        post(patient(), ifNoneExist=f"identifier={CURP_SYSTEM}|PEGJ900504HDFXRN07"),
        {"request": {"method": "DELETE", "url": f"Patient/{old['id']}"}},
    )
    r = client.post("/fhir", json=bundle, headers=auth)
    assert r.status_code == 200, r.text
    created, deleted = r.json()["entry"]
    # Processed as DELETE then POST: the conditional create no longer matches the old one.
    assert created["response"]["status"] == "201 Created" and created["resource"]["id"] != old["id"]
    assert deleted["response"] == {"status": "204 No Content", "etag": 'W/"2"'}
    assert client.get(f"/fhir/Patient/{old['id']}", headers=auth).status_code == 410


def test_reads_inside_a_transaction_see_its_writes(client, auth):
    existing = client.post("/fhir/Patient", json=patient(curp="MAHL850101MJCRRS09"), headers=auth).json()
    bundle = transaction(
        {"request": {"method": "GET", "url": f"Patient?identifier={CURP_SYSTEM}|PEGJ900504HDFXRN07"}},
        {"request": {"method": "GET", "url": f"Patient/{existing['id']}"}},
        {"request": {"method": "GET", "url": f"Patient/{existing['id']}/_history/1"}},
        {"request": {"method": "HEAD", "url": f"Patient/{existing['id']}"}},
        {"request": {"method": "GET", "url": "Observation?subject=urn:uuid:new"}},
        post(patient(), "urn:uuid:new"),
        post(observation("urn:uuid:new")),
    )
    r = client.post("/fhir", json=bundle, headers=auth)
    assert r.status_code == 200, r.text
    search, read_one, vread, head, by_urn, created, obs = r.json()["entry"]
    assert search["response"]["status"] == "200 OK"
    assert [e["resource"]["id"] for e in search["resource"]["entry"]] == [created["resource"]["id"]]
    # A search value naming a fullUrl of the Bundle searches for what it became.
    assert [e["resource"]["id"] for e in by_urn["resource"]["entry"]] == [obs["resource"]["id"]]
    assert read_one["resource"]["id"] == existing["id"] and read_one["response"]["etag"] == 'W/"1"'
    assert vread["resource"]["meta"]["versionId"] == "1"
    assert "resource" not in head and head["response"]["status"] == "200 OK"


def test_read_of_a_missing_resource_fails_the_transaction(client, services, auth):
    bundle = transaction(post(patient()), {"request": {"method": "GET", "url": "Patient/no-existe"}})
    assert_outcome(client.post("/fhir", json=bundle, headers=auth), 404, "Bundle.entry[1]", "Patient/no-existe")
    assert rows(services) == 0


def test_conditional_update_and_conditional_delete(client, auth):
    first = client.post("/fhir/Patient", json=patient(), headers=auth).json()
    client.post("/fhir/Patient", json=patient(curp="MAHL850101MJCRRS09"), headers=auth)
    bundle = transaction(
        {"resource": {**patient(), "gender": "other"}, "request": {"method": "PUT", "url": f"Patient?identifier={CURP_SYSTEM}|PEGJ900504HDFXRN07"}},
        {"request": {"method": "DELETE", "url": f"Patient?identifier={CURP_SYSTEM}|MAHL850101MJCRRS09"}},
        {"request": {"method": "DELETE", "url": f"Patient?identifier={CURP_SYSTEM}|NADA000000HDFXXX00"}},
    )
    r = client.post("/fhir", json=bundle, headers=auth)
    assert r.status_code == 200, r.text
    updated, deleted, nothing = r.json()["entry"]
    assert updated["response"]["status"] == "200 OK" and updated["resource"]["id"] == first["id"]
    assert read(client, auth, f"Patient/{first['id']}")["gender"] == "other"
    assert deleted["response"] == {"status": "204 No Content", "etag": 'W/"2"'}
    assert nothing["response"] == {"status": "204 No Content"}
    assert api_count(client, auth, "Patient") == 1


def test_two_writes_to_one_resource_fail(client, services, auth):
    body = {**patient(), "id": "curp-pegj900504"}
    entry = {"resource": body, "request": {"method": "PUT", "url": "Patient/curp-pegj900504"}}
    assert_outcome(client.post("/fhir", json=transaction(entry, entry), headers=auth), 400, "Bundle.entry[1]", "dos veces")
    assert rows(services) == 0


def test_prefer_return_minimal(client, auth):
    r = client.post("/fhir", json=transaction(post(patient())), headers={**auth, "Prefer": "return=minimal"})
    entry = r.json()["entry"][0]
    assert "resource" not in entry and entry["response"]["status"] == "201 Created"
    assert entry["response"]["location"].startswith("Patient/")
    r = client.post("/fhir", json=transaction(post(patient())), headers={**auth, "Prefer": "return=OperationOutcome"})
    assert r.json()["entry"][0]["response"]["outcome"]["resourceType"] == "OperationOutcome"


def test_denied_entry_stores_nothing_and_is_audited(client, services, make_token, auth):
    own = client.post("/fhir/Patient", json=patient(), headers=auth).json()["id"]
    as_patient = {"Authorization": f"Bearer {make_token('patient', patient_ref=f'Patient/{own}')}"}
    before = stored_counts(services)
    bundle = transaction({"request": {"method": "GET", "url": f"Patient/{own}"}}, post(observation(f"Patient/{own}")))
    assert_outcome(client.post("/fhir", json=bundle, headers=as_patient), 403, "Bundle.entry[1]", "Acceso denegado")
    assert stored_counts(services) == before
    with services.engine.connect() as conn:
        trail = conn.execute(
            sa.select(audit_log.c.action, audit_log.c.outcome, audit_log.c.res_type).where(audit_log.c.role == "patient", audit_log.c.action != "login")
        ).all()
    # The denied create is on record; the read of the rolled-back transaction is not.
    assert [tuple(t) for t in trail] == [("create", "denied", "Observation")]


def test_size_limit(client, services, auth):
    client.app.state.settings = dataclasses.replace(client.app.state.settings, bundle_max_entries=3)
    body = assert_outcome(
        client.post("/fhir", json=transaction(*[post(patient()) for _ in range(4)]), headers=auth), 413, "4 entradas", "como máximo 3"
    )
    assert body["issue"][0]["code"] == "too-costly"
    assert rows(services) == 0
    assert client.post("/fhir", json=transaction(*[post(patient()) for _ in range(3)]), headers=auth).status_code == 200


def test_default_size_limit_is_a_setting():
    from expediente.config import Settings, load_settings

    assert Settings().bundle_max_entries == 5000
    assert load_settings(config_file="/nonexistent.toml", bundle_max_entries=7).bundle_max_entries == 7


MALFORMED = [
    ("not an object", [1, 2], 400, "objeto JSON"),
    ("not a Bundle", {"resourceType": "Patient"}, 400, "Bundle"),
    ("wrong type", {"resourceType": "Bundle", "type": "collection", "entry": []}, 400, "Bundle.type"),
    ("no type", {"resourceType": "Bundle", "entry": []}, 400, "Bundle.type"),
    ("entry not a list", {"resourceType": "Bundle", "type": "transaction", "entry": {"x": 1}}, 400, "Bundle.entry"),
    ("entry not an object", transaction("Patient"), 400, "Bundle.entry[0]"),
    ("entry without request", transaction({"resource": patient()}), 400, "request"),
    ("request not an object", transaction({"resource": patient(), "request": "POST Patient"}), 400, "request"),
    ("unknown method", transaction({"resource": patient(), "request": {"method": "FETCH", "url": "Patient"}}), 400, "FETCH"),
    ("no method", transaction({"resource": patient(), "request": {"url": "Patient"}}), 400, "request.method"),
    ("patch", transaction({"request": {"method": "PATCH", "url": "Patient/1"}}), 501, "PATCH"),
    ("empty url", transaction({"resource": patient(), "request": {"method": "POST", "url": ""}}), 400, "request.url"),
    ("url not text", transaction({"resource": patient(), "request": {"method": "POST", "url": 7}}), 400, "request.url"),
    ("unknown type", transaction({"resource": patient(), "request": {"method": "POST", "url": "Unicorn"}}), 400, "Unicorn"),
    ("too many segments", transaction({"request": {"method": "GET", "url": "Patient/1/2/3/4"}}), 400, "request.url"),
    ("bad id", transaction({"request": {"method": "DELETE", "url": "Patient/bad$id!"}}), 400, "request.url"),
    ("other server", transaction({"request": {"method": "GET", "url": "http://elsewhere.example/fhir/Patient/1"}}), 400, "elsewhere"),
    ("post with id", transaction({"resource": patient(), "request": {"method": "POST", "url": "Patient/1"}}), 400, "request.url"),
    ("put without id", transaction({"resource": patient(), "request": {"method": "PUT", "url": "Patient"}}), 400, "request.url"),
    ("post without resource", transaction({"request": {"method": "POST", "url": "Patient"}}), 400, "resource"),
    ("type mismatch", transaction({"resource": patient(), "request": {"method": "POST", "url": "Observation"}}), 400, "resourceType"),
    ("server-written type", transaction({"resource": {"resourceType": "AuditEvent"}, "request": {"method": "POST", "url": "AuditEvent"}}), 405, "servidor"),
    ("duplicate fullUrl", transaction(post(patient(), "urn:uuid:a"), post(patient(), "urn:uuid:a")), 400, "repetido"),
    ("dangling urn", transaction(post(observation("urn:uuid:nadie"))), 400, "urn:uuid:nadie"),
    ("bad ifMatch", transaction({"resource": {**patient(), "id": "a"}, "request": {"method": "PUT", "url": "Patient/a", "ifMatch": "x"}}), 400, "If-Match"),
    ("empty condition", transaction({"request": {"method": "DELETE", "url": "Patient?"}}), 400, "condición"),
    ("bad conditional reference", transaction(post(observation("Unicorn?x=1"))), 400, "Unicorn"),
    ("history", transaction({"request": {"method": "GET", "url": "Patient/1/_history"}}), 400, "historial"),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_bundles_are_a_clear_4xx(client, services, auth, case):
    _, body, status, fragment = case
    r = client.post("/fhir", json=body, headers=auth)
    assert_outcome(r, status, fragment)
    assert "Traceback" not in r.text
    assert rows(services) == 0


def test_empty_transaction(client, auth):
    r = client.post("/fhir", json=transaction(), headers=auth)
    assert r.status_code == 200 and r.json() == {"resourceType": "Bundle", "type": "transaction-response", "entry": []}


# ------------------------------------------------------------------------------ batch


def test_batch_stores_the_good_entries_and_reports_the_bad(client, services, auth):
    bad = patient(curp="MAHL850101MJCRRS09")
    bad["gender"] = "hombre"
    bundle = batch(
        post(patient()),
        post(bad),
        {"request": {"method": "FETCH", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/no-existe"}},
        post(observation("urn:uuid:otra"), "urn:uuid:obs"),
        post(patient(curp="GOLM700101HDFXXX01"), "urn:uuid:otra"),
    )
    r = client.post("/fhir", json=bundle, headers=auth)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses == ["201 Created", "400 Bad Request", "400 Bad Request", "404 Not Found", "400 Bad Request", "201 Created"]
    outcome = out["entry"][1]["response"]["outcome"]
    assert outcome["resourceType"] == "OperationOutcome" and "gender" in outcome["issue"][0]["diagnostics"]
    assert "Bundle.entry[1]" in outcome["issue"][0]["diagnostics"]
    assert "transaction" in out["entry"][4]["response"]["outcome"]["issue"][0]["diagnostics"]
    assert api_count(client, auth, "Patient") == 2 and rows(services) == 2


def test_batch_entries_commit_independently(client, services, auth):
    existing = client.post("/fhir/Patient", json=patient(), headers=auth).json()
    stale = {**existing, "gender": "female"}
    bundle = batch(
        post(patient(curp="MAHL850101MJCRRS09")),
        {"resource": stale, "request": {"method": "PUT", "url": f"Patient/{existing['id']}", "ifMatch": 'W/"5"'}},
        {"request": {"method": "DELETE", "url": f"Patient/{existing['id']}"}},
    )
    out = client.post("/fhir", json=bundle, headers=auth).json()["entry"]
    assert [e["response"]["status"] for e in out] == ["201 Created", "412 Precondition Failed", "204 No Content"]
    assert client.get(f"/fhir/Patient/{existing['id']}", headers=auth).status_code == 410
    assert api_count(client, auth, "Patient") == 1


def test_batch_denied_entry(client, services, make_token, auth):
    researcher = {"Authorization": f"Bearer {make_token('researcher')}"}
    out = client.post("/fhir", json=batch(post(patient())), headers=researcher).json()["entry"]
    assert out[0]["response"]["status"] == "403 Forbidden"
    assert rows(services) == 0
    with services.engine.connect() as conn:
        outcomes = conn.execute(sa.select(audit_log.c.outcome).where(audit_log.c.action == "create")).scalars().all()
    assert outcomes == ["denied"]


def test_batch_size_limit(client, auth):
    client.app.state.settings = dataclasses.replace(client.app.state.settings, bundle_max_entries=1)
    assert_outcome(client.post("/fhir", json=batch(post(patient()), post(patient())), headers=auth), 413, "como máximo 1")


# ------------------------------------------------------------------------------ Synthea-style


def synthea_style_bundles(min_entries: int = 200) -> tuple[dict, dict, int]:
    """One synthetic patient as Synthea sends it: a transaction that conditionally creates the
    organizations and practitioners, then the patient's transaction, whose own resources
    reference each other by urn:uuid and the shared ones by conditional references."""
    resources = next(rs for seed in range(1, 200) if len(rs := list(generate(1, seed))) >= min_entries)
    (group,) = split_patients(resources)
    hospital = transaction_bundle(include=group.shared)
    record = transaction_bundle(group.own, shared=group.shared)
    return hospital, record, len(group.own)


def test_synthea_style_patient_bundle(client, services, auth):
    import orjson

    hospital, record, own = synthea_style_bundles()
    assert own >= 200
    first = client.post("/fhir", json=hospital, headers=auth)
    assert first.status_code == 200, first.text
    assert {e["response"]["status"] for e in first.json()["entry"]} == {"201 Created"}
    # Sent again (the next patient's hospital bundle): every conditional create matches.
    again = client.post("/fhir", json=hospital, headers=auth)
    assert {e["response"]["status"] for e in again.json()["entry"]} == {"200 OK"}
    shared = rows(services)
    assert shared == len(hospital["entry"])

    r = client.post("/fhir", json=record, headers=auth)
    assert r.status_code == 200, r.text[:2000]
    out = r.json()["entry"]
    assert len(out) == own and {e["response"]["status"] for e in out} == {"201 Created"}
    assert rows(services) == shared + own

    with services.engine.connect() as conn:
        stored = {(t, i): b for t, i, b in conn.execute(sa.select(resource.c.res_type, resource.c.res_id, resource.c.body))}
    refs = [ref for body in stored.values() for ref in references(orjson.loads(body))]
    assert len(refs) > own
    dangling = [ref for ref in refs if tuple(ref.split("/", 1)) not in stored]
    assert dangling == []
    # Every clinical resource belongs to the patient's compartment.
    patient_id = next(i for t, i in stored if t == "Patient")
    with services.engine.connect() as conn:
        keys = conn.execute(sa.select(resource.c.patient_key).where(resource.c.res_type.not_in(SHARED_TYPES))).scalars().all()
    assert set(keys) == {patient_id}


def test_capability_statement_declares_batch_and_transaction(client):
    interactions = {i["code"] for i in client.get("/fhir/metadata").json()["rest"][0]["interaction"]}
    assert {"transaction", "batch"} <= interactions
