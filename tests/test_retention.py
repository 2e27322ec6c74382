"""Retention (NOM-004-SSA3-2012 5.4): nothing clinical is purged before 5 years after the
patient's last medical act; after that the purge removes the record, and the audit trail stays."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from expediente.cli import app as cli_app
from expediente.db.schema import INDEX_TABLES, audit_log, resource, resource_history
from expediente.fhir.errors import FhirError
from expediente.fhir.store import Caller
from expediente.records.retention import last_medical_act, purge, purge_allowed_from
from expediente.security.principal import Principal
from tests.mx_examples import mx_encounter, mx_patient, mx_practitioner, nom004_document

SYSTEM = Caller(Principal("carga", "system", "system"), "pruebas")
LAST_ACT = date(2020, 3, 10)


def count(services, table, patient_id: str) -> int:
    with services.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table).where(table.c.patient_key == patient_id)).scalar_one()


def record_rows(services, patient_id: str) -> int:
    return sum(count(services, t, patient_id) for t in (resource, resource_history, *INDEX_TABLES.values()))


def a_record(services, last_act: date = LAST_ACT, given: str = "María") -> str:
    """A patient with a note and two encounters, the latest on ``last_act``."""
    store = services.store
    pid = store.create(SYSTEM, "Patient", mx_patient(given=given)).stored.res_id
    mid = store.create(SYSTEM, "Practitioner", mx_practitioner()).stored.res_id
    old = store.create(SYSTEM, "Encounter", mx_encounter(pid, start="2015-06-01T09:00:00-06:00")).stored.res_id
    store.create(SYSTEM, "Encounter", mx_encounter(pid, start=f"{last_act.isoformat()}T09:00:00-06:00"))
    doc = nom004_document("nota-evolucion", pid, mid, old)
    doc["date"] = "2015-06-01T09:30:00-06:00"
    store.create(SYSTEM, "Composition", doc)
    return pid


def test_last_medical_act_is_the_latest_clinical_date(services):
    pid = a_record(services)
    with services.engine.connect() as conn:
        assert last_medical_act(conn, pid) == LAST_ACT
        assert last_medical_act(conn, "nadie") is None
    assert purge_allowed_from(LAST_ACT) == date(2025, 3, 10)
    assert purge_allowed_from(date(2020, 2, 29)) == date(2025, 3, 1)


def test_purge_4_years_11_months_after_the_last_act_is_refused_and_removes_nothing(services):
    pid = a_record(services)
    before = record_rows(services, pid)
    with pytest.raises(FhirError) as err:
        purge(services.store, SYSTEM, pid, today=date(2025, 2, 10))  # 4 years 11 months
    assert err.value.status == 409
    assert str(err.value) == (
        "No se puede depurar el expediente antes de 5 años después del último acto médico (NOM-004-SSA3-2012, 5.4): "
        "el último fue el 2020-03-10; podrá depurarse a partir del 2025-03-10"
    )
    assert record_rows(services, pid) == before > 0
    with services.engine.connect() as conn:
        refused = conn.execute(sa.select(audit_log.c.outcome, audit_log.c.reason).where(audit_log.c.action == "purge")).all()
    assert refused == [("denied", str(err.value)[:255])]


def test_purge_after_5_years_removes_the_record_and_keeps_the_audit_trail(services):
    pid = a_record(services)
    other = a_record(services, given="Lucía")
    others_rows = record_rows(services, other)
    audited = count(services, audit_log, pid)
    result = purge(services.store, SYSTEM, pid, today=date(2025, 3, 10))
    assert result.last_act == LAST_ACT
    assert result.removed["resource"] == 4 and result.removed["resource_history"] == 4
    assert record_rows(services, pid) == 0
    assert record_rows(services, other) == others_rows  # nobody else's record
    assert count(services, audit_log, pid) == audited + 1  # the trail stays and records the purge
    with services.engine.connect() as conn:
        entry = conn.execute(sa.select(audit_log.c.actor, audit_log.c.outcome).where(audit_log.c.action == "purge")).one()
    assert entry == ("carga", "allowed")


def test_only_the_system_role_purges(services):
    pid = a_record(services)
    physician = Caller(Principal("dra", "person", "physician", practitioner_ref="Practitioner/x"), "pruebas")
    with pytest.raises(FhirError) as err:
        purge(services.store, physician, pid, today=date(2030, 1, 1))
    assert err.value.status == 403 and "cuenta de sistema" in str(err.value)
    assert record_rows(services, pid) > 0
    with pytest.raises(FhirError) as missing:
        purge(services.store, SYSTEM, "no-existe", today=date(2030, 1, 1))
    assert missing.value.status == 404


def test_a_record_without_medical_acts_counts_from_its_last_change(services):
    pid = services.store.create(SYSTEM, "Patient", mx_patient()).stored.res_id
    with pytest.raises(FhirError) as err:
        purge(services.store, SYSTEM, pid)
    assert err.value.status == 409 and f"el último fue el {datetime.now(UTC).date().isoformat()}" in str(err.value)


def test_purge_over_http(client, auth, make_token):
    pid = client.post("/fhir/Patient", json=mx_patient(), headers=auth).json()["id"]
    recent = (date.today() - timedelta(days=4 * 365 + 330)).isoformat()  # about 4 years 11 months ago
    client.post("/fhir/Encounter", json=mx_encounter(pid, start=f"{recent}T10:00:00Z"), headers=auth)
    r = client.post(f"/fhir/Patient/{pid}/$purge", headers=auth)
    assert r.status_code == 409 and "podrá depurarse a partir del" in r.json()["issue"][0]["diagnostics"]
    old_pid = client.post("/fhir/Patient", json=mx_patient(given="Lucía"), headers=auth).json()["id"]
    old = (date.today() - timedelta(days=5 * 366)).isoformat()
    client.post("/fhir/Encounter", json=mx_encounter(old_pid, start=f"{old}T10:00:00Z"), headers=auth)
    physician = {"Authorization": f"Bearer {make_token('physician')}"}
    assert client.post(f"/fhir/Patient/{old_pid}/$purge", headers=physician).status_code == 403
    r = client.post(f"/fhir/Patient/{old_pid}/$purge", headers=auth)
    assert r.status_code == 200, r.text
    assert {"name": "lastMedicalAct", "valueDate": old} in r.json()["parameter"]
    assert client.get(f"/fhir/Patient/{old_pid}", headers=auth).status_code == 404
    assert client.get(f"/fhir/Patient/{pid}", headers=auth).status_code == 200


def test_cli_purge(services, settings, monkeypatch):
    monkeypatch.setenv("EXPEDIENTE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("EXPEDIENTE_CONFIG", str(settings.data_dir / "none.toml"))
    if settings.database_url:
        monkeypatch.setenv("EXPEDIENTE_DATABASE_URL", settings.database_url)
    else:
        monkeypatch.delenv("EXPEDIENTE_DATABASE_URL", raising=False)
    recent = a_record(services, last_act=date.today() - timedelta(days=30))
    old = a_record(services, given="Lucía")
    r = CliRunner().invoke(cli_app, ["record", "purge", recent, "--yes"])
    assert r.exit_code == 1 and "podrá depurarse" in r.output
    r = CliRunner().invoke(cli_app, ["record", "purge", old, "--yes"])
    assert r.exit_code == 0, r.output
    assert "resource\t4" in r.output
    assert record_rows(services, old) == 0 and record_rows(services, recent) > 0
