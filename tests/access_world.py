"""A small hospital world for access-policy tests: two institutions, their clinicians, patients
with and without a care relationship, consents, and a resource of every served type each.

Everything is written through the HTTP API by an integration client (role ``system``, no
institution), as a hospital's systems would load it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from starlette.testclient import TestClient

from tests.mx_examples import mx_minimal, mx_patient, mx_practitioner
from tests.test_served_types import MINIMAL

CLUES = "urn:oid:2.16.840.1.113883.4.631"
CLUES_A = "DFIMS000011"  # Hospital A (IMSS)
CLUES_B = "JCSSA000022"  # Hospital B (ISSSTE)
PSY = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}

# Types with a Patient compartment: each patient gets one of each.
PATIENT_DATA_TYPES = sorted(
    t for t, body in MINIMAL.items() if t != "Patient" and ("Patient/p1" in str(body))
)
# Types outside any patient's record.
NON_PATIENT_TYPES = sorted(t for t in MINIMAL if t not in PATIENT_DATA_TYPES and t != "Patient")


def post(client: TestClient, auth: dict, body: dict) -> str:
    r = client.post(f"/fhir/{body['resourceType']}", json=body, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def resource_for(res_type: str, patient_id: str) -> dict:
    """MINIMAL's example of ``res_type`` (a Mexican one for profiled types), in ``patient_id``'s record."""
    body = {"resourceType": res_type, **(mx_minimal(res_type) or MINIMAL[res_type])}
    text = str(body)
    if "Patient/p1" not in text:
        return body
    import orjson

    return orjson.loads(orjson.dumps(body).replace(b"Patient/p1", f"Patient/{patient_id}".encode()))


@dataclass
class World:
    org: dict[str, str] = field(default_factory=dict)  # "A"/"B" -> Organization id
    prac: dict[str, str] = field(default_factory=dict)  # who -> Practitioner id
    patient: dict[str, str] = field(default_factory=dict)  # "care"/"none"/"consent"/"label" -> Patient id
    res: dict[tuple[str, str], str] = field(default_factory=dict)  # (patient tag, type) -> id
    shared: dict[str, str] = field(default_factory=dict)  # non-patient type -> id
    family: dict[str, str] = field(default_factory=dict)  # patient tag -> family name


def encounter(patient_id: str, org_id: str, prac_id: str | None) -> dict:
    body = resource_for("Encounter", patient_id)
    body["serviceProvider"] = {"reference": f"Organization/{org_id}"}
    if prac_id:
        body["participant"] = [{"individual": {"reference": f"Practitioner/{prac_id}"}}]
    return body


def deny_consent(patient_id: str, *, actor: str | None = None, label: dict | None = None) -> dict:
    provision: dict = {"type": "deny"}
    if actor:
        provision["actor"] = [{"role": {"text": "destinatario"}, "reference": {"reference": actor}}]
    if label:
        provision["securityLabel"] = [label]
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"text": "privacidad"}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "provision": provision,
    }


def build_world(client: TestClient, auth: dict) -> World:
    w = World()
    for tag, clues in (("A", CLUES_A), ("B", CLUES_B)):
        w.org[tag] = post(
            client, auth, {"resourceType": "Organization", "name": f"Hospital {tag}", "identifier": [{"system": CLUES, "value": clues}]}
        )
    for who in ("physician", "nurse", "radiologist", "imaging_technician", "physician_b"):
        w.prac[who] = post(client, auth, mx_practitioner(who.replace("_", " "), cedula=str(1000000 + len(w.prac))))
    for day, tag in enumerate(("care", "none", "consent", "label"), start=1):
        family = f"Apellido{tag.capitalize()}"
        w.family[tag] = family
        # Four different people (their own CURPs): the master patient index must not link them.
        patient = mx_patient(first=family, second=None, born=date(1985, 3, day))
        patient["name"] = [{"use": "official", "family": family, "given": ["María"]}]
        w.patient[tag] = post(client, auth, patient)
    # Care relationships: the physician of A sees "care", "consent" and "label" (and so does
    # institution A); the physician of B sees "none".
    for tag in ("care", "consent", "label"):
        post(client, auth, encounter(w.patient[tag], w.org["A"], w.prac["physician"]))
    post(client, auth, encounter(w.patient["none"], w.org["B"], w.prac["physician_b"]))
    for tag in ("care", "none", "consent", "label"):
        for res_type in PATIENT_DATA_TYPES:
            w.res[(tag, res_type)] = post(client, auth, resource_for(res_type, w.patient[tag]))
    for res_type in NON_PATIENT_TYPES:
        w.shared[res_type] = post(client, auth, resource_for(res_type, "nadie"))
    # "consent" denies institution A everything; "label" denies A its mental-health notes.
    post(client, auth, deny_consent(w.patient["consent"], actor=f"Organization/{w.org['A']}"))
    post(client, auth, deny_consent(w.patient["label"], actor=f"Organization/{w.org['A']}", label=PSY))
    psy = resource_for("Condition", w.patient["label"])
    psy["meta"] = {"security": [PSY]}
    psy["code"] = {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.3", "code": "F32.9"}]}
    w.res[("label", "Condition-PSY")] = post(client, auth, psy)
    return w
