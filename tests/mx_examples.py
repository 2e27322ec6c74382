"""Valid Mexican resources for tests that run under the Mexican profiles (settings.profiles = "mx").

Each builder returns a fresh dict that conforms to its profile (mx/profiles); tests change one
thing to see a rule refuse it.
"""

from __future__ import annotations

from datetime import date
from html import escape

from expediente.mx.curp import build_curp
from expediente.mx.identifiers import issue_temporary_identifier, nss_check_digit
from expediente.mx.nom004 import BY_CODE, section_narrative
from expediente.mx.systems import (
    AFFILIATION_SYSTEM,
    BIRTH_STATE_URL,
    CEDULA_SYSTEM,
    CLUES_SYSTEM,
    CURP_SYSTEM,
    FATHERS_FAMILY_URL,
    INCAPACITY_BRANCH_URL,
    INCAPACITY_DAYS_URL,
    INSTITUTION_SYSTEM,
    MOTHERS_FAMILY_URL,
    NSS_SYSTEM,
    RENAPO_STATE_SYSTEM,
)

V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
XHTML = "http://www.w3.org/1999/xhtml"
NOW = "2026-01-15T10:30:00-06:00"


def mx_curp(first: str = "García", second: str | None = "López", given: str = "María", born: date = date(1985, 3, 15),
            sex: str = "M", state: str = "JC", homoclave: int = 0) -> str:  # fmt: skip
    return build_curp(first, second, given, born, sex, state, homoclave)


def mx_patient(first: str = "García", second: str | None = "López", given: str = "María", born: date = date(1985, 3, 15),
               sex: str = "M", state: str = "JC", homoclave: int = 0) -> dict:  # fmt: skip
    """A Patient with a valid CURP and the name, sex, birth date and entidad it encodes."""
    ext = [{"url": FATHERS_FAMILY_URL, "valueString": first}]
    if second:
        ext.append({"url": MOTHERS_FAMILY_URL, "valueString": second})
    return {
        "resourceType": "Patient",
        "extension": [{"url": BIRTH_STATE_URL, "valueCodeableConcept": {"coding": [{"system": RENAPO_STATE_SYSTEM, "code": state}]}}],
        "identifier": [{"use": "official", "system": CURP_SYSTEM, "value": mx_curp(first, second, given, born, sex, state, homoclave)}],
        "name": [{"use": "official", "family": f"{first} {second}" if second else first, "_family": {"extension": ext}, "given": given.split()}],
        "gender": {"H": "male", "M": "female", "X": "other"}[sex],
        "birthDate": born.isoformat(),
    }


def unknown_patient(clues: str = "DFIMS000011") -> dict:
    """An unconscious emergency patient: no CURP, a temporary identifier of the establishment."""
    return {
        "resourceType": "Patient",
        "identifier": [issue_temporary_identifier(clues, "URG-0001")],
        "name": [{"text": "Desconocido"}],
        "gender": "unknown",
    }


def mx_practitioner(family: str = "Núñez", cedula: str = "12345678") -> dict:
    return {
        "resourceType": "Practitioner",
        "identifier": [{"system": CEDULA_SYSTEM, "value": cedula}],
        "name": [{"family": family, "given": ["Ana"]}],
    }


def mx_establishment(name: str = "Hospital General de Zona 1", clues: str = "DFIMS000011") -> dict:
    return {"resourceType": "Organization", "identifier": [{"system": CLUES_SYSTEM, "value": clues}], "name": name}


def mx_institution(key: str = "IMSS", name: str = "Instituto Mexicano del Seguro Social") -> dict:
    return {"resourceType": "Organization", "identifier": [{"system": INSTITUTION_SYSTEM, "value": key}], "name": name}


def mx_encounter(patient_id: str, code: str = "AMB", start: str = NOW) -> dict:
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": V3_ACT_CODE, "code": code},
        "subject": {"reference": f"Patient/{patient_id}"},
        "period": {"start": start},
    }


def nss(body: str = "0123456789") -> str:
    return body + nss_check_digit(body)


def mx_coverage(patient_id: str, affiliation: str = "IMSS", payor: str = "Organization/imss") -> dict:
    body = {
        "resourceType": "Coverage",
        "status": "active",
        "type": {"coding": [{"system": AFFILIATION_SYSTEM, "code": affiliation}]},
        "beneficiary": {"reference": f"Patient/{patient_id}"},
        "payor": [{"reference": payor}],
    }
    if affiliation == "IMSS":
        body["subscriberId"] = nss()
    return body


def _div(text: str) -> str:
    return f'<div xmlns="{XHTML}"><p>{escape(text)}</p></div>'


def nom004_document(code: str, patient_id: str = "p1", author_id: str = "m1", encounter_id: str = "e1",
                    org_id: str = "o1") -> dict:  # fmt: skip
    """A Composition of NOM-004 document type ``code`` with every section the norm requires."""
    doc = BY_CODE[code]
    body = {
        "resourceType": "Composition",
        "status": "final",
        "type": {"coding": [doc.coding()]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "encounter": {"reference": f"Encounter/{encounter_id}"},
        "date": NOW,
        "author": [{"reference": f"Practitioner/{author_id}"}],
        "title": doc.display,
        "custodian": {"reference": f"Organization/{org_id}"},
        "section": [section_narrative(s, _div(f"{s.display}: sin hallazgos relevantes.")) for s in doc.sections],
    }
    if code == "consentimiento-informado":
        body["attester"] = [
            {"mode": "legal", "party": {"reference": f"Patient/{patient_id}"}},
            {"mode": "personal", "party": {"display": "Juan Pérez Gómez (testigo)"}},
            {"mode": "personal", "party": {"display": "Rosa Díaz Ruiz (testigo)"}},
        ]
    if code == "incapacidad-temporal":
        body["extension"] = [
            {"url": INCAPACITY_DAYS_URL, "valuePositiveInt": 3},
            {"url": INCAPACITY_BRANCH_URL, "valueString": "Enfermedad general"},
        ]
        body["event"] = [{"period": {"start": "2026-01-15", "end": "2026-01-17"}}]
    return body


# MINIMAL (tests/test_served_types.py) with the profiled types made Mexican.
def mx_minimal(res_type: str) -> dict | None:
    """A conforming example of a profiled type in Patient/p1's record, or None if not profiled."""
    builders = {
        "Patient": mx_patient,
        "Practitioner": mx_practitioner,
        "Organization": mx_establishment,
        "Encounter": lambda: mx_encounter("p1"),
        "Coverage": lambda: mx_coverage("p1"),
    }
    build = builders.get(res_type)
    if build is None:
        return None
    body = build()
    body.pop("resourceType")
    return body
