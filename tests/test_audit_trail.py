"""The audit trail: a hash chain that `expediente audit verify` checks, served as AuditEvent.

Every test runs on SQLite and PostgreSQL. Tampering is done with plain SQL on the stored log,
the way someone with database access would; detection is checked through the real CLI.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from expediente.app import Services, create_app
from expediente.cli import app as cli_app
from expediente.db.migrate import upgrade
from expediente.db.schema import audit_chain_head, audit_log
from expediente.fhir.validation import validate_resource
from expediente.security.audit import AuditEntry
from expediente.security.audit_chain import GENESIS, entry_hash
from starlette.testclient import TestClient

from test_fhir_api import patient

CURP_2 = "LOMA850101MDFPRR05"


@pytest.fixture
def cli(settings, monkeypatch):
    """cli(*args) -> the CliRunner result of `expediente audit ...` on the test database."""
    monkeypatch.setenv("EXPEDIENTE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("EXPEDIENTE_CONFIG", str(settings.data_dir / "none.toml"))
    if settings.database_url:
        monkeypatch.setenv("EXPEDIENTE_DATABASE_URL", settings.database_url)
    else:
        monkeypatch.delenv("EXPEDIENTE_DATABASE_URL", raising=False)

    def _run(*args: str):
        return CliRunner().invoke(cli_app, ["audit", *args])

    return _run


@pytest.fixture
def verify(cli):
    return lambda *options: cli("verify", *options)


def _log(services) -> list[dict]:
    with services.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(audit_log).order_by(audit_log.c.seq)).mappings()]


def _head(services) -> tuple[int, str]:
    with services.engine.connect() as conn:
        return tuple(conn.execute(sa.select(audit_chain_head.c.last_seq, audit_chain_head.c.last_hash)).one())


def _sql(services, statement, params=None) -> None:
    with services.engine.begin() as conn:
        conn.execute(statement if not isinstance(statement, str) else sa.text(statement), params or {})


def _some_activity(client, auth, n: int = 4) -> list[str]:
    ids = []
    for i in range(n):
        r = client.post("/fhir/Patient", json=patient(given=f"Nombre{i}"), headers=auth)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
        assert client.get(f"/fhir/Patient/{ids[-1]}", headers=auth).status_code == 200
    return ids


def _first_break(result) -> str:
    assert result.exit_code == 1, result.output
    return result.stdout.split("Primera ruptura: ", 1)[1].splitlines()[0]


# ------------------------------------------------------------------------------ the chain


def test_concurrent_reads_and_writes_from_two_processes_form_one_intact_chain(client, services, settings, auth, verify):
    pid = client.post("/fhir/Patient", json=patient(), headers=auth).json()["id"]
    # A second set of services is what a second server process has: its own pools, its own
    # group-commit and audit-writer threads, appending to the same chain.
    other = Services.build(settings)
    errors: list[str] = []
    try:
        with TestClient(create_app(settings, other)) as client2:

            def work(c, k: int) -> None:
                for i in range(6):
                    for r in (
                        c.post("/fhir/Observation", json=_observation(pid, k * 100 + i), headers=auth),
                        c.get(f"/fhir/Patient/{pid}", headers=auth),
                        c.get(f"/fhir/Observation?subject=Patient/{pid}", headers=auth),
                    ):
                        if r.status_code not in (200, 201):
                            errors.append(r.text)

            threads = [threading.Thread(target=work, args=(client if k % 2 else client2, k)) for k in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        other.close()
    assert errors == []
    entries = _log(services)
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))  # no gap, no duplicate
    assert len(entries) >= 1 + 1 + 8 * 6 * 3  # login, first create, then every request
    previous = GENESIS
    for e in entries:
        assert e["hash"] == entry_hash(previous, e)
        previous = e["hash"]
    assert _head(services) == (len(entries), previous)
    result = verify("--batch", "7")
    assert result.exit_code == 0, result.output
    assert f"{len(entries)} entradas" in result.stdout and f"Cabeza: {len(entries)}:{previous}" in result.stdout


_APPENDER = """
import sys, threading
from expediente.app import Services
from expediente.config import load_settings
from expediente.security.audit import AuditEntry

services = Services.build(load_settings())
def work(k):
    for i in range(40):
        services.audit.record(AuditEntry(f"proc{sys.argv[1]}", "nurse", "read", "Patient", f"p{k}-{i}", f"p{k}", "allowed"))
threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()
services.close()
"""


def test_separate_server_processes_append_to_one_chain(services, cli):
    """Real OS processes, as with `serve --workers N` or several hosts on one PostgreSQL."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", _APPENDER, str(n)], env=env) for n in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    entries = _log(services)
    assert sum(e["actor"].startswith("proc") for e in entries) == 3 * 4 * 40
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    result = cli("verify")
    assert result.exit_code == 0 and f"{len(entries)} entradas" in result.stdout, result.output


def _observation(pid: str, value: int) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "valueQuantity": {"value": value, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"},
    }


def test_verify_detects_an_edited_entry(client, services, auth, verify):
    _some_activity(client, auth)
    target = _log(services)[4]
    _sql(services, audit_log.update().where(audit_log.c.seq == target["seq"]).values(actor="otra.persona"))
    assert _first_break(verify()).startswith(f"seq {target['seq']} (registrada {target['recorded'].isoformat(timespec='seconds')}Z)")


def test_verify_detects_an_edited_entry_whose_hash_was_recomputed(client, services, auth, verify):
    _some_activity(client, auth)
    entries = _log(services)
    edited = {**entries[3], "outcome": "denied"}
    edited["hash"] = entry_hash(entries[2]["hash"], edited)
    _sql(services, audit_log.update().where(audit_log.c.seq == edited["seq"]).values(outcome="denied", hash=edited["hash"]))
    assert _first_break(verify()).startswith(f"seq {edited['seq'] + 1} ")  # the next entry no longer chains


def test_verify_detects_a_deleted_middle_entry(client, services, auth, verify):
    _some_activity(client, auth)
    _sql(services, audit_log.delete().where(audit_log.c.seq == 3))
    line = _first_break(verify("--batch", "2"))  # the gap falls across two reads
    assert line.startswith("seq 4 ") and "falta la entrada seq 3" in line


def test_verify_detects_a_forged_entry_appended_with_a_plausible_hash(client, services, auth, verify):
    _some_activity(client, auth)
    last = _log(services)[-1]
    forged = {**last, "seq": last["seq"] + 1, "actor": "alguien", "reason": "inventada", "recorded": last["recorded"] + timedelta(seconds=1)}
    forged["hash"] = entry_hash(last["hash"], forged)  # chains perfectly to the real last entry
    _sql(services, audit_log.insert().values(**forged))
    line = _first_break(verify())
    assert line.startswith(f"seq {forged['seq']} ") and "después de la cabeza" in line


def test_verify_detects_a_forged_entry_inserted_in_the_middle(client, services, auth, verify):
    _some_activity(client, auth)
    entries = _log(services)
    at = 4
    # Make room at seq 4 (two steps: the primary key must stay unique), then forge it.
    _sql(services, "UPDATE audit_log SET seq = seq + 1000000 WHERE seq >= :at", {"at": at})
    _sql(services, "UPDATE audit_log SET seq = seq - 999999 WHERE seq >= 1000000")
    forged = {**entries[at - 1], "seq": at, "actor": "alguien", "outcome": "allowed"}
    forged["hash"] = entry_hash(entries[at - 2]["hash"], forged)
    _sql(services, audit_log.insert().values(**forged))
    _sql(services, audit_chain_head.update().values(last_seq=len(entries) + 1))
    assert _first_break(verify()).startswith(f"seq {at + 1} ")  # the forged one chains; the moved one does not


def test_verify_detects_reordered_entries(client, services, auth, verify):
    _some_activity(client, auth)
    entries = _log(services)
    a, b = entries[2], entries[5]
    columns = [k for k in a if k != "seq"]
    _sql(services, audit_log.update().where(audit_log.c.seq == a["seq"]).values(**{k: b[k] for k in columns}))
    _sql(services, audit_log.update().where(audit_log.c.seq == b["seq"]).values(**{k: a[k] for k in columns}))
    result = verify()
    assert _first_break(result).startswith(f"seq {a['seq']} ")
    assert f"seq {b['seq']}:" in result.stdout


def test_verify_detects_a_cut_tail(client, services, auth, verify):
    _some_activity(client, auth)
    n = len(_log(services))
    _sql(services, audit_log.delete().where(audit_log.c.seq >= n - 1))
    line = _first_break(verify())
    assert line.startswith(f"seq {n - 1} (entrada ausente)") and f"termina en seq {n - 2}" in line and f"registra seq {n}" in line


def test_an_anchored_head_exposes_a_rewritten_chain(client, services, auth, verify):
    _some_activity(client, auth, n=2)
    result = verify()
    anchor = result.stdout.split("Cabeza: ", 1)[1].split()[0]
    assert verify("--expect-head", anchor).exit_code == 0
    assert verify("--expect-head", anchor.split(":")[1]).exit_code == 0  # a bare hash
    # Someone with write access rewrites an entry and recomputes every hash after it, and the head.
    entries = _log(services)
    previous = entries[1]["hash"]
    for e in entries[2:]:
        if e["seq"] == 3:
            e["reason"] = "reescrita"
        e["hash"] = previous = entry_hash(previous, e)
        _sql(services, audit_log.update().where(audit_log.c.seq == e["seq"]).values(reason=e["reason"], hash=e["hash"]))
    _sql(services, audit_chain_head.update().values(last_hash=previous))
    assert verify().exit_code == 0  # consistent inside the database...
    result = verify("--expect-head", anchor)
    assert result.exit_code == 1 and "La cabeza anotada no está en la cadena" in result.stdout  # ...but not with the anchor
    assert verify("--expect-head", "no-es-un-hash").exit_code == 2


def test_entities_and_purpose_are_stored_in_the_chain(client, services, auth, verify):
    services.audit.record(
        AuditEntry("dr.urgencias", "physician", "search", "Observation", None, "p1", "allowed", "urgencia", "10.0.0.9",
                   entities=("Observation/o1", "Observation/o2"), purpose="BTG")
    )
    row = _log(services)[-1]
    assert row["entities"] == '["Observation/o1","Observation/o2"]' and row["purpose"] == "BTG"
    assert verify().exit_code == 0
    _sql(services, audit_log.update().where(audit_log.c.seq == row["seq"]).values(purpose=None))
    assert _first_break(verify()).startswith(f"seq {row['seq']} ")


def test_migration_chains_entries_written_before_it(settings, verify):
    services = Services.build(settings)
    try:
        upgrade(services.engine, "0002")
        old = sa.table("audit_log", *(sa.column(c) for c in ("seq", "recorded", "actor", "action", "outcome")))
        now = datetime.now(UTC).replace(tzinfo=None)
        _sql(services, old.insert(), [{"seq": s, "recorded": now, "actor": "a", "action": "read", "outcome": "allowed"} for s in (1, 2, 5, 9)])
        upgrade(services.engine)
        assert [e["seq"] for e in _log(services)] == [1, 2, 3, 4]  # contiguous: gaps would read as deletions
        assert _head(services)[0] == 4
        assert verify().exit_code == 0
    finally:
        services.close()


def test_audit_rows_wait_for_the_final_flush_of_a_group_transaction(services):
    """The chain head is locked only at the end: a read inside the transaction flushes the other
    tables but not the audit rows, so no other writer waits on the head meanwhile."""
    from expediente.db.group_commit import GroupCommitter, flush_inserts, insert_rows
    from expediente.db.schema import search_reindex

    now = datetime.now(UTC).replace(tzinfo=None)
    entry = AuditEntry("a", "physician", "read", "Patient", "x", "x", "allowed")

    def job(conn):
        insert_rows(conn, audit_log, [entry.row()])
        insert_rows(conn, search_reindex, [{"res_type": "Basic", "requested": now, "reason": "prueba", "after_id": None}])
        flush_inserts(conn)
        count = lambda t: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()  # noqa: E731
        return count(search_reindex), count(audit_log), conn.execute(sa.select(audit_chain_head.c.last_seq)).scalar_one()

    before = len(_log(services))
    committer = GroupCommitter(services.engine, name="prueba")
    try:
        assert committer.run(job) == (1, before, before)
    finally:
        committer.close()
    assert [e["seq"] for e in _log(services)][-1] == before + 1 and _head(services)[0] == before + 1


def test_cli_lists_accesses_and_the_break_glass_review(client, services, auth, cli):
    pid = client.post("/fhir/Patient", json=patient(), headers=auth).json()["id"]
    services.audit.record(AuditEntry("dr.urgencias", "physician", "read", "Patient", pid, pid, "allowed", "urgencia vital", purpose="BTG"))
    btg = _log(services)[-1]["seq"]
    r = cli("break-glass", "--since", "2000")
    assert r.exit_code == 0, r.output
    assert "dr.urgencias" in r.stdout and "1 entradas" in r.stdout, r.stdout
    r = cli("list", "--patient", f"Patient/{pid}")
    # The create, the emergency read and this consultation itself (recorded before it runs).
    assert r.exit_code == 0 and "dr.urgencias" in r.stdout and "3 entradas" in r.stdout
    assert cli("list", "--since", "ayer").exit_code == 2
    local = [e for e in _log(services) if e["seq"] > btg]
    assert [(e["actor"].startswith("cli:"), e["res_type"], e["patient_key"]) for e in local] == [(True, "AuditEvent", None), (True, "AuditEvent", pid)]
    assert cli("verify").exit_code == 0


# ------------------------------------------------------------------------------ AuditEvent


@pytest.fixture
def auditor(make_token) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token('auditor')}"}


def _bundle_ids(r) -> list[int]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
    return [int(e["resource"]["id"]) for e in body["entry"]]


def test_audit_event_read_is_balp_shaped(client, services, auth, auditor):
    pid = client.post("/fhir/Patient", json=patient(), headers=auth).json()["id"]
    client.get(f"/fhir/Patient/{pid}", headers=auth)
    read_entry = next(e for e in _log(services) if e["action"] == "read")
    r = client.get(f"/fhir/AuditEvent/{read_entry['seq']}", headers=auditor)
    assert r.status_code == 200, r.text
    event = r.json()
    assert event["resourceType"] == "AuditEvent" and event["id"] == str(read_entry["seq"])
    assert event["type"]["code"] == "110110"
    assert event["subtype"] == [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read", "display": "read"}]
    assert event["action"] == "R" and event["outcome"] == "0" and event["recorded"].endswith("Z")
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
    user = event["agent"][0]
    assert user["requestor"] is True and user["who"]["display"] == read_entry["actor"] and user["role"][0]["coding"][0]["code"] == read_entry["role"] == "system"
    assert user["network"]["address"] == read_entry["source"]
    entities = {e["what"].get("reference"): e["role"]["code"] for e in event["entity"]}
    assert entities == {f"Patient/{pid}": "1"}  # the patient (role 1) is the resource read
    login = client.get("/fhir/AuditEvent?subtype=110122", headers=auditor).json()["entry"][0]["resource"]
    assert login["type"]["code"] == "110114" and login["subtype"][0]["code"] == "110122" and login["action"] == "E"
    for entry in client.get("/fhir/AuditEvent", headers=auditor).json()["entry"]:
        validate_resource(entry["resource"])  # valid FHIR R4, by the server's own validator
    assert client.get("/fhir/AuditEvent/999999", headers=auditor).status_code == 404
    for odd in ("abc", "9999999999999999999", "%C2%B2", "-1"):
        assert client.get(f"/fhir/AuditEvent/{odd}", headers=auditor).status_code == 404
    assert client.get(f"/fhir/AuditEvent/{read_entry['seq']}/_history", headers=auditor).status_code == 404


def test_audit_event_search_parameters(client, services, make_token, auth, auditor):
    pid = client.post("/fhir/Patient", json=patient(), headers=auth).json()["id"]
    other = client.post("/fhir/Patient", json=patient(curp=CURP_2, family="López"), headers=auth).json()["id"]
    client.get(f"/fhir/Patient/{pid}", headers=auth)
    client.delete(f"/fhir/Patient/{other}", headers=auth)
    researcher = {"Authorization": f"Bearer {make_token('researcher')}"}
    client.get(f"/fhir/Patient/{pid}", headers=researcher)  # denied
    services.audit.record(
        AuditEntry("dr.urgencias", "physician", "search", "Observation", None, pid, "allowed", "urgencia", "10.0.0.9",
                   entities=("Observation/o1",), purpose="BTG")
    )
    log = _log(services)

    def seqs(where) -> list[int]:
        return sorted((e["seq"] for e in log if where(e)), reverse=True)

    def search(query: str) -> list[int]:
        # Leaves out the entries of these searches themselves (reading the trail is audited).
        return [s for s in _bundle_ids(client.get(f"/fhir/AuditEvent?{query}", headers=auditor)) if s <= log[-1]["seq"]]

    assert search(f"patient=Patient/{pid}") == seqs(lambda e: e["patient_key"] == pid)
    assert search(f"patient={pid},{other}") == seqs(lambda e: e["patient_key"] in (pid, other))
    physician = log[2]["actor"]  # the first create's
    assert search(f"agent={physician}") == seqs(lambda e: e["actor"] == physician)
    assert search("action=D") == seqs(lambda e: e["action"] == "delete") != []
    assert search("action=C,D") == seqs(lambda e: e["action"] in ("create", "delete"))
    assert search("subtype=http://hl7.org/fhir/restful-interaction|read") == seqs(lambda e: e["action"] == "read")
    assert search("outcome=4") == seqs(lambda e: e["outcome"] == "denied") != []
    assert search(f"entity=Patient/{other}") == seqs(lambda e: e["patient_key"] == other)
    assert search("entity=Observation/o1") == [log[-1]["seq"]]
    assert search("purpose=BTG") == [log[-1]["seq"]]
    assert search("purpose=http://terminology.hl7.org/CodeSystem/v3-ActReason|BTG") == [log[-1]["seq"]]
    assert log[-1]["seq"] not in search("purpose=TREAT") and log[2]["seq"] in search("purpose=TREAT")
    today = log[0]["recorded"].date().isoformat()
    assert search(f"date={today}&patient={pid}") == seqs(lambda e: e["patient_key"] == pid)
    assert search(f"date=ge{today[:4]}&date=lt{int(today[:4]) + 1}&action=D") == seqs(lambda e: e["action"] == "delete")
    assert search(f"date=lt{today[:4]}") == []
    assert search(f"date=gt{today}") == []
    cut = log[3]["recorded"].isoformat(timespec="microseconds") + "Z"
    assert search(f"date=le{cut}") == seqs(lambda e: e["recorded"] <= log[3]["recorded"])
    # Keyset pages, newest first, until there is no next link.
    seen, url = [], "/fhir/AuditEvent?_count=2"
    while url:
        r = client.get(url, headers=auditor)
        seen += _bundle_ids(r)
        nxt = [link["url"] for link in r.json()["link"] if link["relation"] == "next"]
        url = nxt[0].removeprefix("http://testserver") if nxt else None
    assert seen == sorted(set(seen), reverse=True)  # newest first, no entry twice
    assert {e["seq"] for e in log} <= set(seen)


@pytest.mark.parametrize(
    "query",
    ["desconocido=1", "date=ne2026", "date=2026-13", "date=ayer", "action=X", "outcome=3", "entity=nada", "_count=-1",
     "_cursor=abc", "_cursor=9999999999999999999", "_count=%C2%B2", "date=0000", "date=2026-02-30", "patient=", "subtype=otro", "subtype=http://otro|read", "purpose=1", "_sort=date"],
)
def test_audit_event_bad_search_is_a_spanish_400(client, auditor, query):
    r = client.get(f"/fhir/AuditEvent?{query}", headers=auditor)
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert issue["severity"] == "error" and issue["diagnostics"].split()[0].rstrip(":") in {
        "Parámetro", "Prefijo", "Fecha", "action", "outcome", "entity", "_count", "_cursor", "Valor", "subtype", "purpose"
    }


def test_a_patient_sees_who_accessed_their_own_record_and_nothing_else(client, services, make_token, auth):
    pid = client.post("/fhir/Patient", json=patient(), headers=auth).json()["id"]
    other = client.post("/fhir/Patient", json=patient(curp=CURP_2, family="López"), headers=auth).json()["id"]
    client.get(f"/fhir/Patient/{pid}", headers=auth)
    client.get(f"/fhir/Patient/{other}", headers=auth)
    own = {"Authorization": f"Bearer {make_token('patient', patient_ref=f'Patient/{pid}')}"}
    r = client.get(f"/fhir/AuditEvent?patient=Patient/{pid}", headers=own)
    events = [e["resource"] for e in r.json()["entry"]]
    assert r.status_code == 200 and {e["subtype"][0]["code"] for e in events} >= {"create", "read"}
    assert all(f"Patient/{pid}" in {x["what"].get("reference") for x in e["entity"]} for e in events)
    assert all(e["agent"][0]["who"]["display"] != "" for e in events)
    for url in (f"/fhir/AuditEvent?patient=Patient/{other}", "/fhir/AuditEvent", f"/fhir/AuditEvent?patient={pid},{other}",
                "/fhir/AuditEvent?agent=alguien"):
        r = client.get(url, headers=own)
        assert r.status_code == 403 and "Acceso denegado" in r.json()["issue"][0]["diagnostics"], url
    about_other = next(e["seq"] for e in _log(services) if e["patient_key"] == other)
    about_own = next(e["seq"] for e in _log(services) if e["patient_key"] == pid)
    assert client.get(f"/fhir/AuditEvent/{about_other}", headers=own).status_code == 403
    assert client.get(f"/fhir/AuditEvent/{about_own}", headers=own).status_code == 200
    # Reading the trail is itself on the trail, also when refused.
    mine = [e for e in _log(services) if e["res_type"] == "AuditEvent" and e["actor"].startswith("patient.")]
    assert {(e["action"], e["outcome"]) for e in mine} == {("search", "allowed"), ("search", "denied"), ("read", "denied"), ("read", "allowed")}


def test_clinicians_are_refused_and_nobody_writes_the_trail(client, auth, auditor):
    r = client.get("/fhir/AuditEvent", headers=auth)
    assert r.status_code == 403 and r.json()["issue"][0]["code"] == "forbidden"
    assert client.get("/fhir/AuditEvent/1", headers=auth).status_code == 403
    event = {"resourceType": "AuditEvent", "recorded": "2026-01-01T00:00:00Z"}
    for who in (auth, auditor):
        assert client.post("/fhir/AuditEvent", json=event, headers=who).status_code == 405
        assert client.put("/fhir/AuditEvent/1", json={**event, "id": "1"}, headers=who).status_code == 405
        assert client.delete("/fhir/AuditEvent/1", headers=who).status_code == 405
    assert client.get("/fhir/AuditEvent").status_code == 401


def test_post_search_and_total_on_a_single_page(client, auditor):
    r = client.post("/fhir/AuditEvent/_search", data={"subtype": "110122"}, headers=auditor)
    body = r.json()
    assert r.status_code == 200 and body["total"] == len(body["entry"]) >= 1


# ------------------------------------------------------------------------------ fail closed


@pytest.mark.parametrize("table", ["audit_log", "audit_chain_head"])
def test_no_audit_entry_no_access(client, services, auth, auditor, table):
    pid = client.post("/fhir/Patient", json=patient(), headers=auth).json()["id"]
    stored = len(_log(services))
    _sql(services, f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        for url in (f"/fhir/Patient/{pid}", "/fhir/Patient?family=Peña", f"/fhir/Patient/{pid}/$everything"):
            r = client.get(url, headers=auth)
            assert r.status_code == 503 and r.json()["issue"][0]["code"] == "transient", url
            assert "Peña" not in r.text and pid not in r.text
        r = client.get("/fhir/AuditEvent", headers=auditor)
        assert r.status_code == 503 and r.json()["resourceType"] == "OperationOutcome" and "entry" not in r.json()
        r = client.post("/fhir/Patient", json=patient(curp=CURP_2), headers=auth)
        assert r.status_code == 503
    finally:
        _sql(services, f"ALTER TABLE {table}_away RENAME TO {table}")
    r = client.get(f"/fhir/Patient?identifier=urn:oid:2.16.840.1.113883.4.629|{CURP_2}", headers=auth)
    assert r.status_code == 200 and r.json()["entry"] == []  # the refused write stored nothing
    assert len(_log(services)) == stored + 1  # only the search just made
