"""An ``audit_log`` row as a FHIR AuditEvent, shaped like IHE BALP (Basic Audit Log Patterns).

Accesses to patient data: type DICOM 110110 "Patient Record", subtype the FHIR restful
interaction. Logins: type DICOM 110114 "User Authentication", subtype 110122 "Login". The
AuditEvent id is the row's seq. The mapping tables here are also what search reads backwards
(``audit_search``), so a code shown in an AuditEvent is a code one can search by.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import orjson

DCM = "http://dicom.nema.org/resources/ontology/DCM"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
NETWORK_IP = "2"  # AuditEvent.agent.network.type: IP address
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"

PATIENT_RECORD = {"system": DCM, "code": "110110", "display": "Patient Record"}
USER_AUTHENTICATION = {"system": DCM, "code": "110114", "display": "User Authentication"}
LOGIN = {"system": DCM, "code": "110122", "display": "Login"}

# Stored action -> AuditEvent.action (BALP: searches and operations are E, "execute").
ACTION_CODE = {
    "create": "C",
    "read": "R",
    "vread": "R",
    "history": "R",
    "search": "E",
    "everything": "E",
    "update": "U",
    "delete": "D",
    "login": "E",
}

# Stored outcome -> AuditEvent.outcome: 0 success, 4 minor failure (refused by policy),
# 8 serious failure (the request failed).
OUTCOME_CODE = {"allowed": "0", "denied": "4", "failed": "8"}

# Why the access happened, from the stored purpose or else the caller's role.
PURPOSE_DISPLAY = {
    "BTG": "break the glass",
    "TREAT": "treatment",
    "PATRQT": "patient requested",
    "HOPERAT": "healthcare operations",
    "HRESCH": "healthcare research",
}
ROLE_PURPOSE = {
    "patient": "PATRQT",
    "auditor": "HOPERAT",
    "administrator": "HOPERAT",
    "researcher": "HRESCH",
}
DEFAULT_PURPOSE = "TREAT"  # the care roles

ROLE_TEXT = {
    "administrator": "administrador",
    "physician": "médico",
    "nurse": "enfermería",
    "radiologist": "radiólogo",
    "imaging_technician": "técnico en imagenología",
    "researcher": "investigador",
    "patient": "paciente",
    "auditor": "auditor",
    "system": "sistema",
}
ROLE_SYSTEM = "urn:expediente:rol"
ACTION_TEXT = {"search": "búsqueda", "history": "historial", "everything": "expediente completo"}
USER_SYSTEM = "urn:expediente:usuario"


def subtype_code(row: Mapping) -> str:
    """The restful-interaction code of a stored access (or DICOM 110122 for a login)."""
    action = row["action"]
    if action == "login":
        return "110122"
    if action == "history":
        return "history-instance" if row["res_id"] else ("history-type" if row["res_type"] else "history-system")
    if action == "search":
        return "search-type" if row["res_type"] else "search-system"
    if action == "everything":
        return "operation"
    return action


def purpose_code(row: Mapping) -> str | None:
    if row["action"] == "login":
        return None
    return row["purpose"] or ROLE_PURPOSE.get(row["role"] or "", DEFAULT_PURPOSE)


def _profile(action: str, has_patient: bool) -> str | None:
    kind = {"C": "Create", "R": "Read", "U": "Update", "D": "Delete"}.get(action)
    if kind is None:
        return f"{BALP}IHE.BasicAudit.PatientQuery" if has_patient else None
    return f"{BALP}IHE.BasicAudit.{'Patient' if has_patient else ''}{kind}"


def _instant(ts: datetime) -> str:
    return ts.isoformat(timespec="microseconds") + "Z"


def audit_event(row: Mapping, server: str) -> dict:
    """The AuditEvent of one ``audit_log`` row; ``server`` is this server's public base URL."""
    login = row["action"] == "login"
    action = ACTION_CODE.get(row["action"], "E")
    patient = row["patient_key"]
    code = subtype_code(row)
    event: dict = {"resourceType": "AuditEvent", "id": str(row["seq"])}
    profile = None if login else _profile(action, patient is not None)
    event["meta"] = {"lastUpdated": _instant(row["recorded"])} | ({"profile": [profile]} if profile else {})
    event["type"] = USER_AUTHENTICATION if login else PATIENT_RECORD
    event["subtype"] = [LOGIN if login else {"system": RESTFUL, "code": code, "display": code}]
    event["action"] = action
    event["recorded"] = _instant(row["recorded"])
    event["outcome"] = OUTCOME_CODE.get(row["outcome"], "8")
    if row["reason"]:
        event["outcomeDesc"] = row["reason"]
    purpose = purpose_code(row)
    if purpose:
        event["purposeOfEvent"] = [
            {"coding": [{"system": ACT_REASON, "code": purpose, "display": PURPOSE_DISPLAY.get(purpose, purpose)}]}
        ]
    event["agent"] = [_user_agent(row), _server_agent(server)]
    event["source"] = {
        "observer": {"display": f"Expediente {server}"},
        "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
    }
    entities = _entities(row)
    if entities:
        event["entity"] = entities
    return event


def _user_agent(row: Mapping) -> dict:
    agent: dict = {
        "type": {"coding": [{"system": PARTICIPATION, "code": "IRCP", "display": "information recipient"}]},
        "who": {"identifier": {"system": USER_SYSTEM, "value": row["actor"]}, "display": row["actor"]},
    }
    if row["role"]:
        agent["role"] = [{"coding": [{"system": ROLE_SYSTEM, "code": row["role"]}], "text": ROLE_TEXT.get(row["role"], row["role"])}]
    agent["requestor"] = True
    if row["source"]:
        agent["network"] = {"address": row["source"], "type": NETWORK_IP}
    return agent


def _server_agent(server: str) -> dict:
    return {
        "type": {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]},
        "who": {"display": "Expediente"},
        "requestor": False,
        "network": {"address": server, "type": "5"},  # 5: URI
    }


def _entity(reference: str, type_code: str, type_display: str, role_code: str, role_display: str) -> dict:
    return {
        "what": {"reference": reference},
        "type": {"system": ENTITY_TYPE, "code": type_code, "display": type_display},
        "role": {"system": OBJECT_ROLE, "code": role_code, "display": role_display},
    }


def _entities(row: Mapping) -> list[dict]:
    """The patient (role 1), the resource the access named, and each resource it returned."""
    out: list[dict] = []
    seen: set[str] = set()
    if row["patient_key"]:
        seen.add(ref := f"Patient/{row['patient_key']}")
        out.append(_entity(ref, "1", "Person", "1", "Patient"))
    if row["res_type"] and row["res_id"] and (ref := f"{row['res_type']}/{row['res_id']}") not in seen:
        seen.add(ref)
        out.append(_entity(ref, "2", "System Object", "4", "Domain Resource"))
    elif row["res_type"] and not row["res_id"]:
        out.append(
            {
                "what": {"type": row["res_type"]},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                "description": f"{ACTION_TEXT.get(row['action'], row['action'])} de {row['res_type']}",
            }
        )
    for ref in orjson.loads(row["entities"]) if row["entities"] else ():
        if ref not in seen:
            seen.add(ref)
            out.append(_entity(ref, "2", "System Object", "4", "Domain Resource"))
    return out

