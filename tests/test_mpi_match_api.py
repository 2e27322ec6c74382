"""POST /fhir/Patient/$match over HTTP: grades and scores, onlyCertainMatches, the access
policy (results are fetched through the store) and the audit trail."""

from __future__ import annotations

import sqlalchemy as sa

from expediente.db.schema import audit_log
from expediente.mpi.match_api import MATCH_GRADE_URL
from mpi_people import person
from mx_examples import mx_encounter, mx_practitioner

CLUES_A = "DFIMS000001"
LUPE = dict(first="Hernández", second="Cruz", given=["María", "Guadalupe"], birth="1979-12-03", sex="female", state="DF")


def _post(client, auth, body) -> str:
    r = client.post(f"/fhir/{body['resourceType']}", json=body, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _params(patient: dict, **extra) -> dict:
    parameter = [{"name": "resource", "resource": patient}]
    if "only_certain" in extra:
        parameter.append({"name": "onlyCertainMatches", "valueBoolean": extra["only_certain"]})
    if "count" in extra:
        parameter.append({"name": "count", "valueInteger": extra["count"]})
    return {"resourceType": "Parameters", "parameter": parameter}


def _match(client, headers, patient, **extra):
    return client.post("/fhir/Patient/$match", json=_params(patient, **extra), headers=headers)


def _grades(bundle) -> list[tuple[str, str, float]]:
    out = []
    for e in bundle["entry"]:
        grade = next(x["valueCode"] for x in e["search"]["extension"] if x["url"] == MATCH_GRADE_URL)
        out.append((e["resource"]["id"], grade, e["search"]["score"]))
    return out


def _world(client, auth):
    """The same woman at IMSS (NSS, no CURP) and at ISSSTE (CURP only), a twin sister, a stranger."""
    imss = _post(client, auth, person(**LUPE, curp=False, nss="31047912345"))
    issste = _post(client, auth, person(**LUPE))
    twin = _post(client, auth, person(**{**LUPE, "given": ["Rosa", "María"]}, curp=False))
    _post(client, auth, person("Pech", "May", ["Itzel"], "2001-05-05", "female", "YN"))
    return imss, issste, twin


def test_match_grades_and_orders_candidates(client, auth):
    imss, issste, twin = _world(client, auth)
    query = person(**LUPE)  # the CURP and all the data: certain for ISSSTE, and the IMSS record too
    r = _match(client, auth, query)
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    found = _grades(bundle)
    assert found[0][:2] == (issste, "certain") and found[0][2] == 1.0
    assert (imss, "certain") in [f[:2] for f in found]
    assert [f[2] for f in found] == sorted((f[2] for f in found), reverse=True)
    assert (twin, "possible") in [f[:2] for f in found] or twin not in [f[0] for f in found]
    assert all(f[1] != "certain" for f in found if f[0] == twin)


def test_only_certain_matches_and_count(client, auth):
    imss, issste, _ = _world(client, auth)
    query = person("HERNANDEZ", "CRUZ", ["Ma.", "Guadalupe"], "1979-12-03", "female", None, curp=False)
    found = _grades(_match(client, auth, query, only_certain=True).json())
    assert found and all(g == "certain" for _, g, _ in found)
    assert {i for i, _, _ in found} <= {imss, issste}
    assert len(_match(client, auth, query, count=1).json()["entry"]) == 1


def test_bad_parameters_are_a_spanish_400(client, auth):
    r = client.post("/fhir/Patient/$match", json={"resourceType": "Parameters", "parameter": []}, headers=auth)
    assert r.status_code == 400 and "resource" in r.json()["issue"][0]["diagnostics"]
    r = _match(client, auth, person(**LUPE), count=0)
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["Parameters.parameter[1].valueInteger"]
    r = client.post("/fhir/Patient/$match", json={"resourceType": "Observation"}, headers=auth)
    assert r.status_code == 400


def test_match_needs_authentication(client):
    assert client.post("/fhir/Patient/$match", json=_params(person(**LUPE))).status_code == 401


def test_physician_sees_only_patients_in_care_and_the_search_is_audited(client, auth, services, make_token):
    imss, issste, twin = _world(client, auth)
    prac = _post(client, auth, mx_practitioner("Soto"))
    encounter = mx_encounter(imss)
    encounter["participant"] = [{"individual": {"reference": f"Practitioner/{prac}"}}]
    _post(client, auth, encounter)
    token = make_token("physician", organization=CLUES_A, practitioner_ref=f"Practitioner/{prac}")
    physician = {"Authorization": f"Bearer {token}"}
    r = _match(client, physician, person(**{**LUPE, "given": ["Rosa", "María"]}, curp=False))
    assert r.status_code == 200, r.text
    ids = {e["resource"]["id"] for e in r.json()["entry"]}
    # Her IMSS record is in this physician's care, and her ISSSTE record is the same person
    # (linked by the MPI): both are answered. The twin sister matches too, but she is not in
    # this physician's care.
    assert ids == {imss, issste}
    system_ids = {e["resource"]["id"] for e in _match(client, auth, person(**{**LUPE, "given": ["Rosa", "María"]}, curp=False)).json()["entry"]}
    assert twin in system_ids
    with services.engine.connect() as conn:
        rows = conn.execute(
            sa.select(audit_log.c.actor, audit_log.c.entities)
            .where(audit_log.c.action == "search", audit_log.c.res_type == "Patient")
            .order_by(audit_log.c.seq)
        ).all()
    physician_rows = [r for r in rows if r.actor.startswith("physician")]
    assert physician_rows and f"Patient/{imss}" in physician_rows[-1].entities
    assert f"Patient/{twin}" not in physician_rows[-1].entities
