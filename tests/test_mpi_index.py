"""The master patient index tables follow the Patient in its own transaction, and
find_matches reads them (SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlalchemy as sa

from expediente.db.schema import mpi_key, mpi_person
from expediente.fhir import reindex
from expediente.mpi.index import find_matches, index_keys, query_keys
from expediente.mpi.features import features_of
from mpi_people import person

ANA = dict(first="Ramírez", second="Peña", given=["Ana", "Sofía"], birth="1991-02-11", sex="female", state="NL")


def _post(client, auth, body) -> str:
    r = client.post("/fhir/Patient", json=body, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _rows(services, pid):
    with services.engine.connect() as conn:
        person_rows = conn.execute(sa.select(mpi_person).where(mpi_person.c.res_id == pid)).all()
        keys = {r.key for r in conn.execute(sa.select(mpi_key.c.key).where(mpi_key.c.res_id == pid))}
    return person_rows, keys


def test_index_rows_follow_create_update_and_delete(client, auth, services):
    pid = _post(client, auth, person(**ANA))
    rows, keys = _rows(services, pid)
    assert len(rows) == 1 and rows[0].first_surname == "ramirez" and rows[0].given == "ana sofia"
    assert rows[0].curp and f"c:{rows[0].curp}" in keys
    assert "sd:RAMIRES|1991-02-11" in keys and "gd:SOFIA|1991-02-11" in keys

    changed = {**person(**{**ANA, "first": "Ramos"}), "id": pid}
    r = client.put(f"/fhir/Patient/{pid}", json=changed, headers=auth)
    assert r.status_code == 200, r.text
    rows, keys = _rows(services, pid)
    assert len(rows) == 1 and rows[0].first_surname == "ramos"
    assert "sd:RAMOS|1991-02-11" in keys and "sd:RAMIRES|1991-02-11" not in keys

    assert client.delete(f"/fhir/Patient/{pid}", headers=auth).status_code in (200, 204)
    rows, keys = _rows(services, pid)
    assert rows == [] and keys == set()


def test_reindex_rebuilds_the_index(client, auth, services):
    pid = _post(client, auth, person(**ANA))
    with services.engine.begin() as conn:
        conn.execute(mpi_key.delete())
        conn.execute(mpi_person.delete())
    reindex.request(services.engine, ["Patient"], "prueba: índice maestro perdido")
    reindex.run(services.engine)
    rows, keys = _rows(services, pid)
    assert len(rows) == 1 and keys


def test_find_matches_ranks_the_same_person_first(client, auth, services):
    ana = _post(client, auth, person(**ANA))
    twin = _post(client, auth, person(**{**ANA, "given": ["Lucía"]}))
    _post(client, auth, person(**{**ANA, "given": ["Beatriz"], "birth": "1960-07-30", "state": "SR"}))
    # Registered in an emergency room: no CURP, accents lost, day and month transposed.
    query = person("RAMIREZ", "PENA", ["ANA", "SOFIA"], "1991-11-02", "female", None, curp=False)
    with services.reader.connect() as conn:
        matches = find_matches(conn, query)
    assert matches[0].patient_id == ana and matches[0].grade in ("certain", "probable")
    assert "fecha de nacimiento con día y mes invertidos" in matches[0].reasons
    assert all(m.grade == "possible" for m in matches if m.patient_id == twin)
    with services.reader.connect() as conn:
        assert ana not in {m.patient_id for m in find_matches(conn, query, exclude_ids=[ana])}
        certain_only = find_matches(conn, {**query, "identifier": person(**ANA)["identifier"]}, min_grade="certain")
    assert [m.patient_id for m in certain_only] == [ana]


def test_a_patient_is_never_its_own_match(client, auth, services):
    body = person(**ANA)
    pid = _post(client, auth, body)
    with services.reader.connect() as conn:
        assert find_matches(conn, {**body, "id": pid}) == []


def test_query_keys_reach_the_stored_keys_of_common_errors():
    stored = features_of(person(**ANA))
    stored_keys = {f"{k}:{v}" for k, v in index_keys(stored)}
    for variant in (
        person(**{**ANA, "first": "Peña", "second": "Ramírez"}, curp=False),  # swapped
        person(**{**ANA, "second": None}, curp=False),  # missing second surname
        person(**{**ANA, "birth": "1991-11-02"}, curp=False),  # transposed
        person(**{**ANA, "birth": "1991"}, curp=False),  # partial
        person(**{**ANA, "birth": "1993-05-05"}, curp=False),  # wrong date
    ):
        assert query_keys(features_of(variant)) & stored_keys, variant
