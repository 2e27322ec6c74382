"""One person across institutions: automatic and manual links, the review list, unlink and
merge, and the record that follows the links ($everything and the clinician's view), over
HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

from expediente.db.schema import audit_log
from tests.mx_people import institution, mx_patient, nss_with_check_digit

CLUES_IMSS = "JCIMS000123"
CLUES_ISSSTE = "JCIST000456"
CLUES_OTHER = "DFSSA003863"


def _post(client, auth, body) -> str:
    r = client.post(f"/fhir/{body['resourceType']}", json=body, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _patient(client, auth, pid) -> dict:
    r = client.get(f"/fhir/Patient/{pid}", headers=auth)
    assert r.status_code == 200, r.text
    return r.json()


def _links(client, auth, pid) -> dict[str, str]:
    return {link["other"]["reference"]: link["type"] for link in _patient(client, auth, pid).get("link", [])}


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _params(**values) -> dict:
    out = []
    for name, v in values.items():
        name = name.replace("_", "-")
        out.append({"name": name, "valueReference": {"reference": v}} if v.startswith("Patient/") else {"name": name, "valueCode": v})
    return {"resourceType": "Parameters", "parameter": out}


def _everything(client, headers, pid) -> list[dict]:
    r = client.get(f"/fhir/Patient/{pid}/$everything?_count=100", headers=headers)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json()["entry"] if e["resource"]["resourceType"] != "OperationOutcome"]


def _clinical(patient_id: str, org_id: str, code: str, text: str) -> list[dict]:
    ref = {"reference": f"Patient/{patient_id}"}
    return [
        {"resourceType": "Encounter", "status": "finished", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "consulta externa"},
         "subject": ref, "serviceProvider": {"reference": f"Organization/{org_id}"}, "period": {"start": "2026-05-02T10:00:00-06:00", "end": "2026-05-02T10:30:00-06:00"}},
        {"resourceType": "Condition", "subject": ref, "code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.3", "code": code}], "text": text}},
    ]


def test_imss_with_nss_and_issste_with_curp_only_are_one_person_in_everything(client, auth, make_token):
    """The issue's end-to-end case: IMSS registers her with her NSS (no CURP at hand: a temporary
    identifier of the unit, never an invented CURP), ISSSTE
    with her CURP only; the MPI links the two records, and a physician at ISSSTE sees in
    $everything what IMSS recorded, each resource attributed to the institution's record."""
    imss_org = _post(client, auth, institution("HGZ 14 IMSS Guadalajara", "IMSS", CLUES_IMSS))
    issste_org = _post(client, auth, institution("Hospital Regional ISSSTE Valentín Gómez Farías", "ISSSTE", CLUES_ISSSTE))
    nss = nss_with_check_digit("0498801234")
    imss = _post(client, auth, mx_patient(curp=False, nss=nss, temporary=(CLUES_IMSS, "A-0001")))
    imss_data = [_post(client, auth, r) for r in _clinical(imss, imss_org, "E11.9", "Diabetes mellitus tipo 2")]
    issste = _post(client, auth, mx_patient())  # CURP only
    issste_data = [_post(client, auth, r) for r in _clinical(issste, issste_org, "I10", "Hipertensión esencial")]

    # Linked automatically (grade certain), both ways, as new versions of both records.
    assert _links(client, auth, imss) == {f"Patient/{issste}": "seealso"}
    assert _links(client, auth, issste) == {f"Patient/{imss}": "seealso"}
    assert _patient(client, auth, imss)["meta"]["versionId"] == "2"

    physician = _bearer(make_token("physician", organization=CLUES_ISSSTE))
    everything = _everything(client, physician, issste)
    got = {(r["resourceType"], r["id"]) for r in everything}
    assert {("Patient", imss), ("Patient", issste)} <= got
    assert {("Encounter", imss_data[0]), ("Condition", imss_data[1]), ("Encounter", issste_data[0]), ("Condition", issste_data[1])} <= got
    by_id = {r["id"]: r for r in everything}
    assert by_id[imss_data[1]]["subject"]["reference"] == f"Patient/{imss}"  # attributed to IMSS's record
    assert by_id[imss_data[0]]["serviceProvider"]["reference"] == f"Organization/{imss_org}"
    assert by_id[issste_data[1]]["subject"]["reference"] == f"Patient/{issste}"
    # The clinician's view follows the link for plain reads too; from IMSS's side as well.
    assert client.get(f"/fhir/Condition/{imss_data[1]}", headers=physician).status_code == 200
    assert {r["id"] for r in _everything(client, physician, imss)} == {r["id"] for r in everything}

    # A physician of a third institution, with no care relationship, sees neither record.
    outsider = _bearer(make_token("physician", organization=CLUES_OTHER))
    assert client.get(f"/fhir/Patient/{imss}/$everything", headers=outsider).status_code == 404
    assert client.get(f"/fhir/Condition/{imss_data[1]}", headers=outsider).status_code == 404


def test_a_patient_sees_all_their_records(client, auth, make_token):
    imss = _post(client, auth, mx_patient(curp=False, nss=nss_with_check_digit("0498801234"), temporary=(CLUES_IMSS, "A-0001")))
    issste = _post(client, auth, mx_patient())
    cond = _post(client, auth, _clinical(imss, _post(client, auth, institution("UMF 1", "IMSS", CLUES_IMSS)), "E11.9", "Diabetes")[1])
    me = _bearer(make_token("patient", patient_ref=f"Patient/{issste}"))
    assert client.get(f"/fhir/Condition/{cond}", headers=me).status_code == 200
    assert cond in {r["id"] for r in _everything(client, me, issste)}


def test_probable_match_waits_on_the_review_list_and_a_person_decides(client, auth):
    a = _post(client, auth, mx_patient(curp=False, nss=nss_with_check_digit("0498801234"), temporary=(CLUES_IMSS, "A-0001")))
    b = _post(client, auth, mx_patient(given="Maria Guadalupe", second=None, curp=False, nss=nss_with_check_digit("1198801234"), temporary=(CLUES_IMSS, "A-0002")))
    assert _links(client, auth, a) == {} and _links(client, auth, b) == {}  # not linked automatically
    listed = client.get("/fhir/Patient/$review", headers=auth).json()
    pairs = {frozenset(p["valueReference"]["reference"] for p in e["resource"]["parameter"] if p["name"] == "patient"): e["resource"] for e in listed["entry"]}
    item = pairs[frozenset({f"Patient/{a}", f"Patient/{b}"})]
    values = {p["name"]: p for p in item["parameter"]}
    assert values["grade"]["valueCode"] in ("probable", "possible")
    assert any("segundo apellido" in p["valueString"] for p in item["parameter"] if p["name"] == "reason")

    decide = {"resourceType": "Parameters", "parameter": [{"name": "review", "valueInteger": int(item["id"])}, {"name": "decision", "valueCode": "link"}]}
    r = client.post("/fhir/Patient/$review", json=decide, headers=auth)
    assert r.status_code == 200, r.text
    assert _links(client, auth, a) == {f"Patient/{b}": "seealso"} and _links(client, auth, b) == {f"Patient/{a}": "seealso"}
    assert client.get("/fhir/Patient/$review", headers=auth).json()["total"] == 0
    linked = client.get("/fhir/Patient/$review?status=linked", headers=auth).json()
    assert linked["total"] == 1


def test_a_rejected_pair_is_never_proposed_again(client, auth):
    a = _post(client, auth, mx_patient(curp=False, nss=nss_with_check_digit("0498801234"), temporary=(CLUES_IMSS, "A-0001")))
    b = _post(client, auth, mx_patient(given="Maria Guadalupe", second=None, curp=False, nss=nss_with_check_digit("1198801234"), temporary=(CLUES_ISSSTE, "U-77")))
    item = client.get("/fhir/Patient/$review", headers=auth).json()["entry"][0]["resource"]
    reject = {"resourceType": "Parameters", "parameter": [{"name": "review", "valueInteger": int(item["id"])}, {"name": "decision", "valueCode": "reject"}]}
    assert client.post("/fhir/Patient/$review", json=reject, headers=auth).status_code == 200
    # An update of either record runs the matcher again: the pair stays rejected.
    body = _patient(client, auth, b)
    body["telecom"] = [{"system": "phone", "value": "3312345678"}]
    assert client.put(f"/fhir/Patient/{b}", json=body, headers=auth).status_code == 200
    assert client.get("/fhir/Patient/$review", headers=auth).json()["total"] == 0
    assert _links(client, auth, a) == {}


def test_link_and_unlink_by_hand_are_reversible_and_audited(client, auth, services):
    a = _post(client, auth, mx_patient(given="Juan", first="Pérez", second="García", sex="male", birth="1975-01-02", state="DF"))
    b = _post(client, auth, mx_patient(given="José", first="Ramírez", second="Soto", sex="male", birth="1990-07-08", state="NL"))
    c = _post(client, auth, mx_patient(given="Ana", first="Ruiz", second="Mora", birth="1961-11-30", state="YN"))
    for other in (b, c):  # a third record joins the person: every record links every other
        r = client.post(f"/fhir/Patient/{a}/$link", json=_params(other=f"Patient/{other}"), headers=auth)
        assert r.status_code == 200, r.text
    assert _links(client, auth, b) == {f"Patient/{a}": "seealso", f"Patient/{c}": "seealso"}
    assert _links(client, auth, c) == {f"Patient/{a}": "seealso", f"Patient/{b}": "seealso"}

    r = client.post(f"/fhir/Patient/{a}/$unlink", json=_params(other=f"Patient/{c}"), headers=auth)
    assert r.status_code == 200, r.text
    assert _links(client, auth, a) == {f"Patient/{b}": "seealso"} and _links(client, auth, c) == {}
    # The history keeps what the links were; the audit trail names every record updated.
    versions = client.get(f"/fhir/Patient/{c}/_history", headers=auth).json()["entry"]
    assert any(e["resource"].get("link") for e in versions)
    with services.engine.connect() as conn:
        updated = conn.execute(sa.select(audit_log.c.patient_key).where(audit_log.c.action == "update")).scalars().all()
    assert {a, b, c} <= set(updated)
    assert client.post(f"/fhir/Patient/{a}/$unlink", json=_params(other=f"Patient/{c}"), headers=auth).status_code == 409


def test_merge_marks_the_duplicate_inactive_and_unlink_restores_it(client, auth):
    keep = _post(client, auth, mx_patient(given="Luis", first="Díaz", second="Vega", sex="male", birth="1988-02-29", state="PL"))
    dup = _post(client, auth, mx_patient(given="Pedro", first="Núñez", second="Cano", sex="male", birth="1970-10-10", state="SR"))
    r = client.post("/fhir/Patient/$merge", json=_params(source_patient=f"Patient/{dup}", target_patient=f"Patient/{keep}"), headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == keep and _links(client, auth, keep) == {f"Patient/{dup}": "replaces"}
    merged = _patient(client, auth, dup)
    assert merged["active"] is False and _links(client, auth, dup) == {f"Patient/{keep}": "replaced-by"}
    assert client.post(f"/fhir/Patient/{keep}/$unlink", json=_params(other=f"Patient/{dup}"), headers=auth).status_code == 200
    restored = _patient(client, auth, dup)
    assert restored["active"] is True and "link" not in restored


def test_link_needs_both_records_visible_and_valid_parameters(client, auth, make_token):
    a = _post(client, auth, mx_patient(given="Rosa", first="Luna", second="Paz", birth="1999-09-09", state="OC"))
    b = _post(client, auth, mx_patient(given="Elena", first="Sol", second="Mar", birth="2001-01-01", state="CS"))
    stranger = _bearer(make_token("physician", organization=CLUES_OTHER))
    assert client.post(f"/fhir/Patient/{a}/$link", json=_params(other=f"Patient/{b}"), headers=stranger).status_code == 404
    researcher = _bearer(make_token("researcher"))
    assert client.post(f"/fhir/Patient/{a}/$link", json=_params(other=f"Patient/{b}"), headers=researcher).status_code == 403
    assert client.get("/fhir/Patient/$review", headers=researcher).status_code == 403
    assert _links(client, auth, a) == {} and _links(client, auth, b) == {}
    bad = [
        {"resourceType": "Patient"},
        {"resourceType": "Parameters", "parameter": []},
        {"resourceType": "Parameters", "parameter": [{"name": "other", "valueString": "../../x"}]},
        _params(other=f"Patient/{a}"),
    ]
    for body in bad:
        r = client.post(f"/fhir/Patient/{a}/$link", json=body, headers=auth)
        assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome", r.text
    assert client.post(f"/fhir/Patient/{a}/$link", json=_params(other="Patient/no-existe"), headers=auth).status_code == 404
    assert client.get("/fhir/Patient/$review?status=otro", headers=auth).status_code == 400
    assert client.post(f"/fhir/Patient/{a}/$link", json=_params(other=f"Patient/{b}")).status_code == 401
