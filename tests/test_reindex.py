"""Rebuilding search indexes: resumable, and no silently partial search while it runs."""

from __future__ import annotations

from datetime import datetime

import orjson
import pytest
import sqlalchemy as sa

from expediente.db.migrate import upgrade
from expediente.db.schema import INDEX_TABLES, resource
from expediente.fhir import reindex

pytestmark = pytest.mark.generic_fhir  # minimal resources: Mexican profiles only where declared

CURP = "urn:oid:2.16.840.1.113883.4.629"


def _patient(client, auth, curp: str, family: str) -> str:
    body = {"resourceType": "Patient", "identifier": [{"system": CURP, "value": curp}], "name": [{"family": family}]}
    r = client.post("/fhir/Patient", json=body, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _found(client, auth, headers=None) -> tuple[int, set[str], dict]:
    r = client.get("/fhir/Patient?family=peña", headers={**auth, **(headers or {})})
    body = r.json()
    return r.status_code, {e["resource"]["id"] for e in body.get("entry", []) if e["search"]["mode"] == "match"}, body


def test_search_during_reindex_is_never_silently_partial(client, auth, services):
    ids = {_patient(client, auth, f"PEPJ90050{i}HDFXXX01", "Peña") for i in range(3)}
    engine = services.engine
    with engine.begin() as conn:  # index rows lost (e.g. a changed parameter definition)
        for table in INDEX_TABLES.values():
            conn.execute(table.delete())
    reindex.request(engine, ["Patient"], "prueba: definición de parámetros cambiada")
    services.store._reindex_checked = float("-inf")  # skip the 2 s cache of the queue

    status, found, body = _found(client, auth)
    assert status == 503
    assert "reconstruyendo" in body["issue"][0]["diagnostics"]
    status, found, body = _found(client, auth, {"Prefer": "handling=lenient"})
    assert status == 200 and found == set()
    warning = [e for e in body["entry"] if e["search"]["mode"] == "outcome"][0]["resource"]
    assert "incompletos" in warning["issue"][0]["diagnostics"]
    # Reads by id do not depend on the index.
    assert client.get(f"/fhir/Patient/{next(iter(ids))}", headers=auth).status_code == 200

    done = reindex.run(engine, batch_size=2)
    assert done == {"Patient": 3}
    assert reindex.pending(engine) == {}
    services.store._reindex_checked = float("-inf")
    status, found, _ = _found(client, auth)
    assert status == 200 and found == ids


def test_reindex_resumes_after_an_interruption(client, auth, services):
    ids = sorted(_patient(client, auth, f"PEPJ90050{i}HDFXXX01", "Peña") for i in range(4))
    engine = services.engine
    reindex.request(engine, ["Patient"], "prueba")
    calls = []

    def stop_after_first_batch(res_type, n):
        calls.append(n)
        raise KeyboardInterrupt

    try:
        reindex.run(engine, batch_size=2, progress=stop_after_first_batch)
    except KeyboardInterrupt:
        pass
    assert calls == [2]
    assert reindex.run(engine, batch_size=2) == {"Patient": 2}  # only what was left


def test_migration_queues_reindex_of_stored_resources(settings):
    """A database at revision 0001 holding data: 0002 adds index columns, so it queues a rebuild."""
    from expediente.db.engine import make_engine

    engine = make_engine(settings)
    try:
        upgrade(engine, "0001")
        body = {"resourceType": "Observation", "id": "o1", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
                "valueQuantity": {"value": 180, "code": "mg/dL"}}
        with engine.begin() as conn:
            conn.execute(resource.insert().values(res_type="Observation", res_id="o1", version_id=1, patient_key=None,
                                                  last_updated=datetime(2024, 1, 1), deleted=False, body=orjson.dumps(body)))
        upgrade(engine)
        assert set(reindex.pending(engine)) == {"Observation"}
        reindex.run(engine)
        with engine.connect() as conn:
            rows = conn.execute(sa.select(INDEX_TABLES["composite"].c.code1).where(
                INDEX_TABLES["composite"].c.param == "code-value-quantity")).scalars().all()
        assert rows == ["2345-7"]
    finally:
        engine.dispose()
