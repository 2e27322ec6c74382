"""The authorization matrix: role x action x care relationship x consent -> outcome, through
the HTTP API, for every served resource type (tests/access_world.py builds the hospital).

The expected outcomes below are this suite's own statement of the policy (docs/security.md),
written independently of security/policy.py. Each case is one real request.
"""

from __future__ import annotations

import secrets

import pytest
import sqlalchemy as sa

from expediente.db.schema import audit_log
from expediente.fhir.resource_types import SERVED_TYPES, SERVER_WRITTEN_ONLY
from expediente.security.accounts import add_account
from tests.access_world import (
    CLUES_A,
    CLUES_B,
    NON_PATIENT_TYPES,
    PATIENT_DATA_TYPES,
    World,
    build_world,
    resource_for,
)
from tests.conftest import PASSWORD
from tests.mx_examples import mx_patient

DIRECTORY = {"Practitioner", "PractitionerRole", "Organization", "Location", "Medication"}
IMAGING_WRITES = {"ImagingStudy", "DiagnosticReport", "Observation", "Procedure", "DocumentReference", "Binary", "Composition", "Provenance", "ServiceRequest"}
TECH_READS = DIRECTORY | {"Patient", "Encounter", "ServiceRequest", "ImagingStudy", "Procedure", "Binary"}
TECH_WRITES = {"ImagingStudy", "Procedure", "Binary"}
CLINICIANS = ("physician", "nurse", "radiologist", "imaging_technician", "physician_b")
ROLES = (*CLINICIANS, "patient", "system_a", "administrator", "auditor", "researcher")
ACTIONS = ("read", "search", "create", "update", "delete")

# Outcomes: "ok" (allowed), "hidden" (a row the caller may not see: 404 on reads, absent from
# searches, 403 on writes), "forbidden" (the role or type is refused: 403).


def can_read_type(role: str, res_type: str) -> bool:
    if role in ("auditor", "researcher"):
        return False
    if role == "administrator":
        return res_type in DIRECTORY
    if role == "imaging_technician":
        return res_type in TECH_READS
    return True


def can_write_type(role: str, res_type: str) -> bool:
    if role == "administrator":
        return res_type in DIRECTORY
    if role in ("auditor", "researcher"):
        return False
    if role == "patient":
        return res_type == "Consent"
    if role == "system_a":
        return True
    if res_type in DIRECTORY:
        return False
    if role == "nurse":
        return res_type != "MedicationRequest"
    if role == "radiologist":
        return res_type in IMAGING_WRITES
    if role == "imaging_technician":
        return res_type in TECH_WRITES
    return True  # physician, physician_b


def sees_record(role: str, tag: str | None) -> bool:
    """Whether ``role`` may see the rows of patient ``tag`` (None: not patient data)."""
    if role == "patient":
        return tag == "care"  # the patient account is the "care" patient's own
    if tag is None:
        return True
    if role == "physician_b":
        return tag == "none"
    if role == "system_a":
        return tag != "consent"  # the consent of "consent" denies institution A
    # Clinicians of A: a relationship with care/consent/label; consent denies A "consent".
    return tag in ("care", "label")


def expected(role: str, action: str, res_type: str, tag: str | None) -> str:
    if action == "delete" and res_type == "Patient":
        tag = "new"  # the delete case removes a freshly registered person (see ``observed``)
    if role == "patient" and tag is None:
        visible = res_type in DIRECTORY  # a patient sees the directory, not other non-record data
    else:
        visible = sees_record(role, tag)
    if action in ("read", "search"):
        if not can_read_type(role, res_type):
            return "forbidden"
        return "ok" if visible else "hidden"
    if not can_write_type(role, res_type):
        return "forbidden"
    if action == "create" and res_type == "Patient" and role not in ("patient",):
        return "ok"  # registering a new person: no record yet to protect
    return "ok" if visible else "hidden"


def tokens(client, services, w: World) -> dict[str, dict]:
    accounts = {
        "physician": dict(role="physician", organization=CLUES_A, practitioner_ref=f"Practitioner/{w.prac['physician']}"),
        "nurse": dict(role="nurse", organization=CLUES_A, practitioner_ref=f"Practitioner/{w.prac['nurse']}"),
        "radiologist": dict(role="radiologist", organization=CLUES_A, practitioner_ref=f"Practitioner/{w.prac['radiologist']}"),
        "imaging_technician": dict(
            role="imaging_technician", organization=CLUES_A, practitioner_ref=f"Practitioner/{w.prac['imaging_technician']}"
        ),
        "physician_b": dict(role="physician", organization=CLUES_B, practitioner_ref=f"Practitioner/{w.prac['physician_b']}"),
        "patient": dict(role="patient", patient_ref=f"Patient/{w.patient['care']}"),
        "system_a": dict(role="system", kind="system", organization=CLUES_A),
        "administrator": dict(role="administrator", organization=CLUES_A),
        "auditor": dict(role="auditor"),
        "researcher": dict(role="researcher"),
    }
    out = {}
    for name, fields in accounts.items():
        username = f"{name}.{secrets.token_hex(3)}"
        role = fields.pop("role")
        add_account(services.engine, username, PASSWORD, role, **fields)
        if fields.get("kind") == "system":
            data = {"grant_type": "client_credentials", "client_id": username, "client_secret": PASSWORD}
        else:
            data = {"grant_type": "password", "username": username, "password": PASSWORD}
        r = client.post("/auth/token", data=data)
        assert r.status_code == 200, r.text
        out[name] = {"Authorization": f"Bearer {r.json()['access_token']}"}
    return out


def observed(client, auth: dict, builder: dict, action: str, res_type: str, res_id: str, body: dict) -> str:
    if action == "read":
        r = client.get(f"/fhir/{res_type}/{res_id}", headers=auth)
        return {200: "ok", 404: "hidden", 403: "forbidden"}.get(r.status_code, f"HTTP {r.status_code}: {r.text[:200]}")
    if action == "search":
        r = client.get(f"/fhir/{res_type}?_id={res_id}&_total=accurate", headers=auth)
        if r.status_code == 403:
            return "forbidden"
        if r.status_code != 200:
            return f"HTTP {r.status_code}: {r.text[:200]}"
        found = [e["resource"]["id"] for e in r.json()["entry"] if e["search"]["mode"] == "match"]
        total = r.json()["total"]
        if found == [res_id] and total == 1:
            return "ok"
        return "hidden" if not found and total == 0 else f"inconsistent: {found} total {total}"
    if action == "create":
        r = client.post(f"/fhir/{res_type}", json=body, headers=auth)
        return {201: "ok", 403: "hidden_or_forbidden"}.get(r.status_code, f"HTTP {r.status_code}: {r.text[:200]}")
    if action == "update":
        current = client.get(f"/fhir/{res_type}/{res_id}", headers=builder).json()
        changed = {**current, "meta": {"tag": [{"code": f"revisado-{secrets.token_hex(2)}"}]}}
        r = client.put(f"/fhir/{res_type}/{res_id}", json=changed, headers=auth)
        return {200: "ok", 403: "hidden_or_forbidden"}.get(r.status_code, f"HTTP {r.status_code}: {r.text[:200]}")
    # delete: a fresh resource of the same record, so the world stays whole
    fresh = client.post(f"/fhir/{res_type}", json=body, headers=builder).json()["id"]
    r = client.delete(f"/fhir/{res_type}/{fresh}", headers=auth)
    still_there = client.get(f"/fhir/{res_type}/{fresh}", headers=builder).status_code == 200
    if r.status_code == 204 and not still_there:
        return "ok"
    if r.status_code == 403 and still_there:
        return "hidden_or_forbidden"
    return f"HTTP {r.status_code} (still there: {still_there})"


def cases(w: World):
    for res_type in sorted(set(SERVED_TYPES) - SERVER_WRITTEN_ONLY):
        if res_type == "Patient":
            for tag, pid in w.patient.items():
                yield res_type, tag, pid, {**mx_patient(first=w.family[tag], second=None), "active": False}
        elif res_type in PATIENT_DATA_TYPES:
            for tag in w.patient:
                yield res_type, tag, w.res[(tag, res_type)], resource_for(res_type, w.patient[tag])
        else:
            yield res_type, None, w.shared[res_type], resource_for(res_type, "nadie")


def test_the_world_covers_every_served_type():
    assert set(PATIENT_DATA_TYPES) | set(NON_PATIENT_TYPES) | {"Patient"} == set(SERVED_TYPES) - SERVER_WRITTEN_ONLY
    assert {"Observation", "Composition", "Consent", "ImagingStudy"} <= set(PATIENT_DATA_TYPES)


def test_authorization_matrix(client, services, auth):
    w = build_world(client, auth)
    who = tokens(client, services, w)
    mismatches, count = [], 0
    for res_type, tag, res_id, body in cases(w):
        for role in ROLES:
            for action in ACTIONS:
                want = expected(role, action, res_type, tag)
                got = observed(client, who[role], auth, action, res_type, res_id, body)
                if action in ("create", "update", "delete") and got == "hidden_or_forbidden":
                    got = want if want in ("hidden", "forbidden") else "refused"
                count += 1
                if got != want:
                    mismatches.append(f"{role} {action} {res_type} [{tag}]: expected {want}, got {got}")
    assert count > 1500
    assert not mismatches, f"{len(mismatches)} of {count} cases differ:\n" + "\n".join(mismatches[:60])


def test_denials_are_audited_with_their_reason(client, services, auth):
    w = build_world(client, auth)
    who = tokens(client, services, w)
    obs = w.res[("none", "Observation")]
    assert client.get(f"/fhir/Observation/{obs}", headers=who["physician"]).status_code == 404
    with services.engine.connect() as conn:
        row = conn.execute(
            sa.select(audit_log.c.outcome, audit_log.c.reason, audit_log.c.patient_key)
            .where(audit_log.c.res_id == obs, audit_log.c.action == "read")
            .order_by(audit_log.c.seq.desc())
        ).first()
    assert row.outcome == "denied" and "relación de atención" in row.reason and row.patient_key == w.patient["none"]


def test_opening_care_at_ones_institution_grants_access(client, services, auth):
    """Admission: a physician of A who records an encounter at A for a new patient of A can
    then read that patient's record; one at another institution cannot open care at A."""
    w = build_world(client, auth)
    who = tokens(client, services, w)
    pid = client.post("/fhir/Patient", json=mx_patient(), headers=who["physician"]).json()["id"]
    assert client.get(f"/fhir/Patient/{pid}", headers=who["physician"]).status_code == 404  # no care yet
    from tests.access_world import encounter

    r = client.post("/fhir/Encounter", json=encounter(pid, w.org["B"], None), headers=who["physician"])
    assert r.status_code == 403  # not their institution, not naming them
    r = client.post("/fhir/Encounter", json=encounter(pid, w.org["A"], None), headers=who["physician"])
    assert r.status_code == 201, r.text
    assert client.get(f"/fhir/Patient/{pid}", headers=who["physician"]).status_code == 200
    assert client.get(f"/fhir/Patient/{pid}", headers=who["nurse"]).status_code == 200  # same institution
    assert client.get(f"/fhir/Patient/{pid}", headers=who["physician_b"]).status_code == 404


def test_withdrawing_consent_restores_access(client, services, auth):
    w = build_world(client, auth)
    who = tokens(client, services, w)
    obs = w.res[("consent", "Observation")]
    assert client.get(f"/fhir/Observation/{obs}", headers=who["physician"]).status_code == 404
    consents = client.get(f"/fhir/Consent?patient=Patient/{w.patient['consent']}&status=active", headers=auth).json()
    deny = next(e["resource"] for e in consents["entry"] if e["resource"].get("provision"))
    r = client.put(f"/fhir/Consent/{deny['id']}", json={**deny, "status": "inactive"}, headers=auth)
    assert r.status_code == 200
    assert client.get(f"/fhir/Observation/{obs}", headers=who["physician"]).status_code == 200


def test_a_patient_records_their_own_consent(client, services, auth):
    """The patient denies institution A; from then on A's physician sees nothing of them."""
    from tests.access_world import deny_consent

    w = build_world(client, auth)
    who = tokens(client, services, w)
    own = w.patient["care"]
    obs = w.res[("care", "Observation")]
    assert client.get(f"/fhir/Observation/{obs}", headers=who["physician"]).status_code == 200
    r = client.post("/fhir/Consent", json=deny_consent(own, actor=f"Organization/{w.org['A']}"), headers=who["patient"])
    assert r.status_code == 201, r.text
    assert client.get(f"/fhir/Observation/{obs}", headers=who["physician"]).status_code == 404
    # ...but not for somebody else.
    r = client.post("/fhir/Consent", json=deny_consent(w.patient["none"]), headers=who["patient"])
    assert r.status_code == 403


def test_break_the_glass(client, services, auth):
    w = build_world(client, auth)
    who = tokens(client, services, w)
    obs = w.res[("none", "Observation")]
    reason = "Paciente inconsciente en urgencias, sin familiares"
    glass = {**who["physician"], "Expediente-Break-Glass": reason.encode().decode("latin-1")}
    assert client.get(f"/fhir/Observation/{obs}", headers=who["physician"]).status_code == 404
    r = client.get(f"/fhir/Observation/{obs}", headers=glass)
    assert r.status_code == 200 and r.json()["id"] == obs
    # It also overrides a consent denial, and opens the whole record.
    assert client.get(f"/fhir/Observation/{w.res[('consent', 'Observation')]}", headers=glass).status_code == 200
    r = client.get(f"/fhir/Patient/{w.patient['none']}/$everything", headers=glass)
    assert r.status_code == 200 and len(r.json()["entry"]) >= len(PATIENT_DATA_TYPES)
    with services.engine.connect() as conn:
        row = conn.execute(
            sa.select(audit_log.c.outcome, audit_log.c.reason, audit_log.c.purpose)
            .where(audit_log.c.res_id == obs, audit_log.c.outcome == "allowed")
            .order_by(audit_log.c.seq.desc())
        ).first()
    assert row.purpose == "BTG" and reason in row.reason
    # The review list: auditors find every emergency access, with the reason given.
    review = client.get("/fhir/AuditEvent?purpose=BTG", headers=who["auditor"])
    assert review.status_code == 200, review.text
    events = [e["resource"] for e in review.json()["entry"]]
    assert events and all(reason in e["outcomeDesc"] for e in events)
    assert any(any(x.get("what", {}).get("reference") == f"Observation/{obs}" for x in e.get("entity", [])) for e in events)
    # Only clinicians may break the glass, and only with a stated reason.
    patient_glass = {**who["patient"], "Expediente-Break-Glass": "urgencia de prueba larga"}
    assert client.get(f"/fhir/Observation/{obs}", headers=patient_glass).status_code == 403
    short = {**who["physician"], "Expediente-Break-Glass": "urgente"}
    r = client.get(f"/fhir/Observation/{obs}", headers=short)
    assert r.status_code == 400 and "motivo" in r.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "scopes, res_type, allowed",
    [
        (("user/Observation.rs",), "Observation", True),
        (("user/Observation.rs",), "Patient", False),
        (("user/*.read",), "Condition", True),
        (("user/Observation.c",), "Observation", False),
        (("openid", "fhirUser"), "Observation", False),
    ],
)
def test_token_scopes_narrow_the_role(services, scopes, res_type, allowed):
    """A token's SMART scopes only narrow what the role allows (physician here)."""
    from expediente.fhir.errors import FhirError
    from expediente.fhir.store import Caller
    from expediente.security.principal import Principal

    system = Caller(Principal("carga", "system", "system"), "pruebas")
    pid = services.store.create(system, "Patient", mx_patient()).stored.res_id
    target = services.store.create(system, res_type, resource_for(res_type, pid)).stored.res_id if res_type != "Patient" else pid
    services.store.create(system, "CareTeam", {"resourceType": "CareTeam", "subject": {"reference": f"Patient/{pid}"}, "participant": [{"member": {"reference": "Practitioner/dra"}}]})
    doctor = Caller(Principal("dra", "person", "physician", practitioner_ref="Practitioner/dra", scopes=scopes), "pruebas")
    if allowed:
        assert services.store.read(doctor, res_type, target).res_id == target
    else:
        with pytest.raises(FhirError) as err:
            services.store.read(doctor, res_type, target)
        assert err.value.status == 403 and "alcance" in str(err.value.outcome())


def test_a_token_narrowed_by_scope_is_enforced(client, services, auth):
    """Over HTTP: a physician's token asked for with scope=user/Observation.rs reads the
    observations of their patients and nothing else; the same account's full token reads both."""
    w = build_world(client, auth)
    username = f"dra.alcance.{secrets.token_hex(3)}"
    add_account(services.engine, username, PASSWORD, "physician", organization=CLUES_A, practitioner_ref=f"Practitioner/{w.prac['physician']}")

    def token(scope: str | None) -> dict:
        data = {"grant_type": "password", "username": username, "password": PASSWORD} | ({"scope": scope} if scope else {})
        r = client.post("/auth/token", data=data)
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    narrow, full = token("user/Observation.rs"), token(None)
    obs, pid = w.res[("care", "Observation")], w.patient["care"]
    assert client.get(f"/fhir/Observation/{obs}", headers=narrow).status_code == 200
    assert client.get(f"/fhir/Observation?patient={pid}", headers=narrow).status_code == 200
    r = client.get(f"/fhir/Patient/{pid}", headers=narrow)
    assert r.status_code == 403 and "alcance" in r.json()["issue"][0]["diagnostics"]
    assert client.post("/fhir/Observation", json=resource_for("Observation", pid), headers=narrow).status_code == 403
    assert client.get(f"/fhir/Patient/{pid}", headers=full).status_code == 200
    # $everything gives only what the token may read: observations, never the rest.
    r = client.get(f"/fhir/Patient/{pid}/$everything", headers=narrow)
    assert r.status_code == 403  # needs Patient search
