"""The FHIR REST API end to end (HTTP in, SQL out) on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from starlette.testclient import TestClient

from expediente.db.schema import audit_log, resource, resource_history
from tests.mx_examples import mx_patient

CURP_SYSTEM = "urn:oid:2.16.840.1.113883.4.629"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def patient(curp: str = "PEGJ900504HDFXRN08", family: str = "Peña García", given: str = "José") -> dict:
    """A Mexican Patient (mx profile): sex and birth date as its CURP encodes them."""
    return {
        "resourceType": "Patient",
        "identifier": [{"system": CURP_SYSTEM, "value": curp}],
        "name": [{"family": family, "given": [given]}],
        "gender": {"H": "male", "M": "female"}[curp[10]],
        "birthDate": f"19{curp[4:6]}-{curp[6:8]}-{curp[8:10]}",
    }


def rows(services, table=resource) -> int:
    with services.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_metadata_is_open_and_declares_r4(client):
    r = client.get("/fhir/metadata")
    assert r.status_code == 200
    body = r.json()
    assert body["resourceType"] == "CapabilityStatement" and body["fhirVersion"] == "4.0.1"
    types = {res["type"] for res in body["rest"][0]["resource"]}
    assert {"Patient", "Observation", "MedicationRequest", "AuditEvent", "Binary", "Bundle"} <= types
    patient_cap = next(res for res in body["rest"][0]["resource"] if res["type"] == "Patient")
    assert {"name": "family", "type": "string"} in patient_cap["searchParam"]
    assert "Patient:organization" in patient_cap["searchInclude"]
    assert patient_cap["operation"][0]["name"] == "everything"
    assert {"code": "transaction"} in body["rest"][0]["interaction"]


def test_patient_data_requires_a_token(client, auth):
    pid = client.post("/fhir/Patient", json=patient(), headers=auth).json()["id"]
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic dXNlcjpwYXNz"}):
        r = client.get(f"/fhir/Patient/{pid}", headers=headers)
        assert r.status_code == 401
        assert r.json()["resourceType"] == "OperationOutcome"
        assert "Bearer" in r.headers["www-authenticate"]
        assert "Peña" not in r.text
    assert client.get("/fhir/Patient", headers={}).status_code == 401
    assert client.get("/fhir/_history", headers={}).status_code == 401


def test_create_read_update_vread_history(client, auth):
    r = client.post("/fhir/Patient", json=patient(), headers=auth)
    assert r.status_code == 201
    created = r.json()
    pid = created["id"]
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["location"].endswith(f"/fhir/Patient/{pid}/_history/1")
    assert created["meta"]["versionId"] == "1" and created["meta"]["lastUpdated"].endswith("Z")

    r = client.get(f"/fhir/Patient/{pid}", headers=auth)
    assert r.status_code == 200 and r.json() == created
    assert r.headers["content-type"].startswith("application/fhir+json")
    assert r.headers["last-modified"].endswith("GMT")

    changed = {**created, "active": False}
    r = client.put(f"/fhir/Patient/{pid}", json=changed, headers=auth)
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2"
    assert client.get(f"/fhir/Patient/{pid}/_history/1", headers=auth).json().get("active") is None
    assert client.get(f"/fhir/Patient/{pid}/_history/2", headers=auth).json()["active"] is False
    assert client.get(f"/fhir/Patient/{pid}/_history/3", headers=auth).status_code == 404

    bundle = client.get(f"/fhir/Patient/{pid}/_history", headers=auth).json()
    assert bundle["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == ["2", "1"]
    assert [e["request"]["method"] for e in bundle["entry"]] == ["PUT", "POST"]


def test_update_without_changes_keeps_the_version(client, auth):
    created = client.post("/fhir/Patient", json=patient(), headers=auth).json()
    r = client.put(f"/fhir/Patient/{created['id']}", json=created, headers=auth)
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "1"


def test_put_with_client_id_creates_then_updates(client, auth):
    r = client.put("/fhir/Patient/curp-pegj900504", json={**patient(), "id": "curp-pegj900504"}, headers=auth)
    assert r.status_code == 201 and r.json()["id"] == "curp-pegj900504"
    r = client.put("/fhir/Patient/curp-pegj900504", json={**patient(), "id": "curp-pegj900504", "active": False}, headers=auth)
    assert r.status_code == 200 and r.headers["etag"] == 'W/"2"'


def test_if_match_optimistic_locking(client, services, auth):
    created = client.post("/fhir/Patient", json=patient(), headers=auth).json()
    pid = created["id"]
    stale = {**created, "active": False}
    r = client.put(f"/fhir/Patient/{pid}", json=stale, headers={**auth, "If-Match": 'W/"7"'})
    assert r.status_code == 412
    assert r.json()["issue"][0]["code"] == "conflict"
    assert "active" not in client.get(f"/fhir/Patient/{pid}", headers=auth).json()
    assert rows(services, resource_history) == 1
    r = client.put(f"/fhir/Patient/{pid}", json=stale, headers={**auth, "If-Match": 'W/"1"'})
    assert r.status_code == 200 and r.headers["etag"] == 'W/"2"'
    r = client.put(f"/fhir/Patient/{pid}", json={**stale, "active": True}, headers={**auth, "If-Match": 'W/"1"'})
    assert r.status_code == 412
    assert client.put(f"/fhir/Patient/{pid}", json=stale, headers={**auth, "If-Match": "garbage"}).status_code == 400


def test_delete_is_logical_and_history_remains(client, services, auth):
    created = client.post("/fhir/Patient", json=patient(), headers=auth).json()
    pid = created["id"]
    client.put(f"/fhir/Patient/{pid}", json={**created, "active": False}, headers=auth)
    r = client.delete(f"/fhir/Patient/{pid}", headers=auth)
    assert r.status_code == 204 and r.headers["etag"] == 'W/"3"'
    r = client.get(f"/fhir/Patient/{pid}", headers=auth)
    assert r.status_code == 410 and r.json()["issue"][0]["code"] == "deleted"
    assert client.get(f"/fhir/Patient/{pid}/_history/1", headers=auth).json()["name"][0]["family"] == "Peña García"
    assert client.get(f"/fhir/Patient/{pid}/_history/3", headers=auth).status_code == 410
    history = client.get(f"/fhir/Patient/{pid}/_history", headers=auth).json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "PUT", "POST"]
    assert "resource" not in history["entry"][0]
    # Nothing was erased: every version is still a row.
    assert rows(services, resource_history) == 3
    # Deleting again or deleting what never existed is not an error (idempotent).
    assert client.delete(f"/fhir/Patient/{pid}", headers=auth).status_code == 204
    assert client.delete("/fhir/Patient/never-existed", headers=auth).status_code == 204
    # Writing again brings it back as a new version.
    r = client.put(f"/fhir/Patient/{pid}", json={**patient(), "id": pid}, headers=auth)
    assert r.status_code == 201 and r.headers["etag"] == 'W/"4"'


def test_conditional_create(client, services, auth):
    cond = {**auth, "If-None-Exist": f"identifier={CURP_SYSTEM}|PEGJ900504HDFXRN08"}
    first = client.post("/fhir/Patient", json=patient(), headers=cond)
    assert first.status_code == 201
    second = client.post("/fhir/Patient", json=patient(), headers=cond)
    assert second.status_code == 200 and second.json()["id"] == first.json()["id"]
    assert rows(services) == 1
    client.post("/fhir/Patient", json=patient(given="Josefa"), headers=auth)
    r = client.post("/fhir/Patient", json=patient(), headers=cond)
    assert r.status_code == 412 and rows(services) == 2
    bad = client.post("/fhir/Patient", json=patient(), headers={**auth, "If-None-Exist": "nonsense=1"})
    assert bad.status_code == 400 and "nonsense" in bad.json()["issue"][0]["diagnostics"]
    assert rows(services) == 2


def test_conditional_update(client, services, auth):
    url = f"/fhir/Patient?identifier={CURP_SYSTEM}|MAHL850101MJCRRS00"
    r = client.put(url, json=patient(curp="MAHL850101MJCRRS00"), headers=auth)
    assert r.status_code == 201
    pid = r.json()["id"]
    r = client.put(url, json={**patient(curp="MAHL850101MJCRRS00"), "active": False}, headers=auth)
    assert r.status_code == 200 and r.json()["id"] == pid and r.json()["meta"]["versionId"] == "2"
    r = client.put(url, json={**patient(curp="MAHL850101MJCRRS00"), "id": "otro-id"}, headers=auth)
    assert r.status_code == 400
    client.post("/fhir/Patient", json=patient(curp="MAHL850101MJCRRS00"), headers=auth)
    assert client.put(url, json=patient(curp="MAHL850101MJCRRS00"), headers=auth).status_code == 412
    assert client.put("/fhir/Patient", json=patient(), headers=auth).status_code == 400


def test_prefer_header(client, auth):
    r = client.post("/fhir/Patient", json=patient(), headers={**auth, "Prefer": "return=minimal"})
    assert r.status_code == 201 and r.content == b"" and "location" in r.headers
    r = client.post("/fhir/Patient", json=patient(), headers={**auth, "Prefer": "return=OperationOutcome"})
    assert r.status_code == 201 and r.json()["resourceType"] == "OperationOutcome"


def test_bad_input_is_a_clear_4xx_and_stores_nothing(client, services, auth):
    cases = [
        ("post", "/fhir/Patient", b"{not json", FHIR_JSON, 400, "JSON mal formado"),
        ("post", "/fhir/Patient", b"[1,2]", FHIR_JSON, 400, "objeto JSON"),
        ("post", "/fhir/Patient", b"", FHIR_JSON, 400, "vacío"),
        ("post", "/fhir/Patient", b'{"resourceType":"Observation","status":"final","code":{"text":"x"}}', FHIR_JSON, 400, "no corresponde"),
        ("post", "/fhir/Unicorn", b'{"resourceType":"Unicorn"}', FHIR_JSON, 404, "Unicorn"),
        ("post", "/fhir/AuditEvent", b'{"resourceType":"AuditEvent"}', FHIR_JSON, 405, "servidor"),
        ("put", "/fhir/Patient/abc", b'{"resourceType":"Patient","id":"xyz"}', FHIR_JSON, 400, "no coincide"),
        ("put", "/fhir/Patient/bad$id!", b'{"resourceType":"Patient","id":"bad$id!"}', FHIR_JSON, 400, "inválido"),
        ("get", "/fhir/Patient/" + "a" * 65, b"", {}, 400, "inválido"),
        ("post", "/fhir/Patient", b'{"resourceType":"Patient","colorFavorito":"azul"}', FHIR_JSON, 400, "colorFavorito"),
        ("post", "/fhir/Patient", b'{"resourceType":"Patient","birthDate":"1990-13-45"}', FHIR_JSON, 400, "birthDate"),
        ("post", "/fhir/Patient", b'{"resourceType":"Patient","gender":"hombre"}', FHIR_JSON, 400, "gender"),
        ("post", "/fhir/Patient", b"<Patient/>", {"Content-Type": "application/fhir+xml"}, 415, "application/fhir+json"),
        ("get", "/fhir/Patient/x/_history/uno", b"", {}, 400, "Versión"),
        ("get", "/fhir/_history?_since=ayer", b"", {}, 400, "_since"),
        ("get", "/fhir/_history?_count=-1", b"", {}, 400, "_count"),
    ]
    for method, url, body, headers, status, fragment in cases:
        r = client.request(method, url, content=body or None, headers={**auth, **headers})
        assert r.status_code == status, (url, body, r.status_code, r.text)
        outcome = r.json()
        assert outcome["resourceType"] == "OperationOutcome", url
        assert fragment in outcome["issue"][0]["diagnostics"], (fragment, outcome)
        assert "Traceback" not in r.text
    assert rows(services) == 0 and rows(services, resource_history) == 0


def test_validation_points_at_the_element_in_spanish(client, auth):
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": 7}]}, headers=auth)
    assert r.status_code == 400
    issue = r.json()["issue"][0]
    assert "Patient.name[0].family" in (issue.get("expression") or [""])[0] + issue["diagnostics"]


def test_oversized_body_is_refused(client, services, auth):
    limit = client.app.state.settings.max_body_bytes
    big = b'{"resourceType":"Patient","text":{"status":"generated","div":"' + b"a" * (limit + 10) + b'"}}'
    r = client.post("/fhir/Patient", content=big, headers={**auth, **FHIR_JSON})
    assert r.status_code == 413 and r.json()["issue"][0]["code"] == "too-long"
    assert rows(services) == 0


def test_unknown_route_and_method(client, auth):
    r = client.get("/nada", headers=auth)
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
    r = client.patch("/fhir/Patient/x", headers=auth, content=b"{}")
    assert r.status_code == 405 and r.json()["resourceType"] == "OperationOutcome"


def test_unexpected_errors_do_not_leak(client, services, auth, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("secreto interno: tabla resource")

    monkeypatch.setattr(services.store, "read", boom)
    r = TestClient(client.app, raise_server_exceptions=False).get("/fhir/Patient/abc", headers=auth)
    assert r.status_code == 500
    assert r.json()["resourceType"] == "OperationOutcome"
    assert "secreto" not in r.text and "Traceback" not in r.text


def test_history_paging_with_cursor(client, auth):
    # Five different people (the same CURP five times would be one person: the MPI links them).
    people = [mx_patient(given=f"Nombre{i}", born=date(1990, 5, i + 1)) for i in range(5)]
    ids = {client.post("/fhir/Patient", json=p, headers=auth).json()["id"] for p in people}
    seen, url, pages = [], "/fhir/Patient/_history?_count=2", 0
    while url:
        bundle = client.get(url.replace("http://testserver", ""), headers=auth).json()
        seen += [e["resource"]["id"] for e in bundle["entry"]]
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        url = nxt[0] if nxt else None
        pages += 1
    assert pages == 3 and sorted(seen) == sorted(ids)
    system = client.get("/fhir/_history?_count=50", headers=auth).json()
    assert len(system["entry"]) == 5
    assert client.get("/fhir/_history?_cursor=%%%", headers=auth).status_code == 400


def test_basic_search_by_identifier_and_paging(client, auth):
    created = client.post("/fhir/Patient", json=patient(), headers=auth).json()
    client.post("/fhir/Patient", json=patient(curp="MAHL850101MJCRRS00", family="Núñez", given="Lucía"), headers=auth)
    bundle = client.get(f"/fhir/Patient?identifier={CURP_SYSTEM}|PEGJ900504HDFXRN08", headers=auth).json()
    assert bundle["type"] == "searchset" and [e["resource"]["id"] for e in bundle["entry"]] == [created["id"]]
    everyone = client.get("/fhir/Patient?_count=1", headers=auth).json()
    assert len(everyone["entry"]) == 1 and any(link["relation"] == "next" for link in everyone["link"])


def test_roles_patient_and_researcher(client, make_token, auth):
    own = client.post("/fhir/Patient", json=patient(), headers=auth).json()["id"]
    other = client.post("/fhir/Patient", json=patient(curp="MAHL850101MJCRRS00"), headers=auth).json()["id"]
    as_patient = {"Authorization": f"Bearer {make_token('patient', patient_ref=f'Patient/{own}')}"}
    assert client.get(f"/fhir/Patient/{own}", headers=as_patient).status_code == 200
    r = client.get(f"/fhir/Patient/{other}", headers=as_patient)
    # Another patient's record answers exactly like one that does not exist.
    missing = client.get("/fhir/Patient/no-existe", headers=as_patient)
    assert r.status_code == missing.status_code == 404 and "Peña" not in r.text
    assert r.json()["issue"][0]["diagnostics"].replace(other, "X") == missing.json()["issue"][0]["diagnostics"].replace("no-existe", "X")
    assert client.put(f"/fhir/Patient/{own}", json={**patient(), "id": own}, headers=as_patient).status_code == 403
    researcher = {"Authorization": f"Bearer {make_token('researcher')}"}
    assert client.get(f"/fhir/Patient/{own}", headers=researcher).status_code == 403


def test_every_access_is_audited(client, services, auth):
    pid = client.post("/fhir/Patient", json=patient(), headers=auth).json()["id"]
    client.get(f"/fhir/Patient/{pid}", headers=auth)
    client.get(f"/fhir/Patient/{pid}/_history", headers=auth)
    client.delete(f"/fhir/Patient/{pid}", headers=auth)
    with services.engine.connect() as conn:
        entries = conn.execute(
            sa.select(audit_log.c.action, audit_log.c.outcome, audit_log.c.patient_key).where(audit_log.c.res_id == pid).order_by(audit_log.c.seq)
        ).all()
        logins = conn.execute(sa.select(audit_log.c.outcome).where(audit_log.c.action == "login")).scalars().all()
    assert [(a, o) for a, o, _ in entries] == [("create", "allowed"), ("read", "allowed"), ("history", "allowed"), ("delete", "allowed")]
    assert all(k == pid for _, _, k in entries)
    assert logins == ["allowed"]


def test_denied_write_is_audited_and_not_stored(client, services, make_token, auth):
    researcher = {"Authorization": f"Bearer {make_token('researcher')}"}
    r = client.post("/fhir/Patient", json=patient(), headers=researcher)
    assert r.status_code == 403 and rows(services) == 0
    with services.engine.connect() as conn:
        outcomes = conn.execute(sa.select(audit_log.c.outcome).where(audit_log.c.action == "create")).scalars().all()
    assert outcomes == ["denied"]


def test_token_endpoint(client, services):
    from expediente.security.accounts import add_account

    add_account(services.engine, "his.hospital", "secreto-largo-del-sistema", "system", kind="system")
    r = client.post("/auth/token", data={"grant_type": "client_credentials", "client_id": "his.hospital", "client_secret": "secreto-largo-del-sistema"})
    assert r.status_code == 200 and r.json()["token_type"] == "Bearer" and r.headers["cache-control"] == "no-store"
    r = client.post("/auth/token", auth=("his.hospital", "secreto-largo-del-sistema"), data={"grant_type": "client_credentials"})
    assert r.status_code == 200
    r = client.post("/auth/token", data={"grant_type": "client_credentials", "client_id": "his.hospital", "client_secret": "mal"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    # A system's credentials are not a person's login.
    r = client.post("/auth/token", data={"grant_type": "password", "username": "his.hospital", "password": "secreto-largo-del-sistema"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert client.post("/auth/token", data={"grant_type": "implicit"}).json()["error"] == "unsupported_grant_type"
    with services.engine.connect() as conn:
        outcomes = conn.execute(sa.select(audit_log.c.outcome).where(audit_log.c.action == "login").order_by(audit_log.c.seq)).scalars().all()
    assert outcomes == ["allowed", "allowed", "denied", "denied"]


def test_health_and_metrics(client, auth):
    assert client.get("/health").json() == {"status": "ok", "database": "ok"}
    client.get("/fhir/metadata")
    text = client.get("/metrics").text
    assert "expediente_http_requests_total" in text and 'route="/fhir/metadata"' in text


def test_search_index_follows_updates_and_deletes(client, auth):
    created = client.post("/fhir/Patient", json=patient(), headers=auth).json()
    pid = created["id"]

    def found(curp: str) -> list[str]:
        bundle = client.get(f"/fhir/Patient?identifier={CURP_SYSTEM}|{curp}", headers=auth).json()
        return [e["resource"]["id"] for e in bundle["entry"]]

    client.put(f"/fhir/Patient/{pid}", json={**patient(curp="MAHL850101MJCRRS00"), "id": pid}, headers=auth)
    assert found("PEGJ900504HDFXRN08") == [] and found("MAHL850101MJCRRS00") == [pid]
    client.delete(f"/fhir/Patient/{pid}", headers=auth)
    assert found("MAHL850101MJCRRS00") == []
    client.put(f"/fhir/Patient/{pid}", json={**patient(), "id": pid}, headers=auth)
    assert found("PEGJ900504HDFXRN08") == [pid]


def test_audit_failure_fails_closed(client, services, auth):
    pid = client.post("/fhir/Patient", json=patient(), headers=auth).json()["id"]
    with services.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE audit_log RENAME TO audit_log_away"))
    try:
        r = client.get(f"/fhir/Patient/{pid}", headers=auth)
        assert r.status_code == 503 and r.json()["issue"][0]["code"] == "transient"
        assert "Peña" not in r.text
        r = client.post("/fhir/Patient", json=patient(given="Otro"), headers=auth)
        assert r.status_code == 503 and "Traceback" not in r.text
    finally:
        with services.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE audit_log_away RENAME TO audit_log"))
    assert rows(services) == 1  # the refused write left nothing


def test_hostile_search_input_never_fails_the_server(client, auth):
    client.post("/fhir/Patient", json=patient(), headers=auth)
    hostile = [
        "/fhir/Patient?name=' OR 1=1 --",
        "/fhir/Patient?name=%25",
        "/fhir/Patient?name:contains=_",
        "/fhir/Patient?family=" + "x" * 5000,
        "/fhir/Patient?identifier=" + "|" * 300,
        "/fhir/Patient?birthdate=1990-99-99",
        "/fhir/Patient?name:soundex=jose",
        "/fhir/Patient?_count=abc",
        "/fhir/Patient?subject:Patient.name=jose",
    ]
    for url in hostile:
        r = client.get(url, headers=auth)
        assert r.status_code in (200, 400), (url, r.status_code, r.text[:300])
        body = r.json()
        if r.status_code == 400:
            assert body["resourceType"] == "OperationOutcome"
        else:
            assert body["type"] == "searchset" and body.get("entry", []) == []
    # NUL characters: no database stores them; refused as the client's error, never a 500.
    for url in ("/fhir/Patient?_after=%00", "/fhir/Patient?name=jo%00se", "/fhir/_history?_cursor=%00"):
        r = client.get(url, headers=auth)
        assert r.status_code == 400 and "U+0000" in r.json()["issue"][0]["diagnostics"], url
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Pe\u0000ña"}]}, headers=auth)
    assert r.status_code == 400 and "U+0000" in r.json()["issue"][0]["diagnostics"]
