"""Practitioner (MX): a cédula profesional (SEP) that is well formed, and a name."""

from __future__ import annotations

from expediente.fhir.validation import ValidationIssue
from expediente.mx.curp_reasons import curp_problem
from expediente.mx.identifiers import cedula_problem, rfc_problem
from expediente.mx.profiles.base import Element, Profile
from expediente.mx.profiles.common import identifiers, issue, items
from expediente.mx.systems import CEDULA_SYSTEM, CURP_SYSTEM, RFC_SYSTEM


def rules(p: dict) -> list[ValidationIssue]:
    out: list[ValidationIssue] = []
    cedulas = identifiers(p, CEDULA_SYSTEM)
    for i, ident in cedulas:
        problem = cedula_problem(ident.get("value"))
        if problem:
            out.append(issue(f"Practitioner.identifier[{i}].value", problem, "value"))
    for q, qualification in items(p, "qualification"):
        for i, ident in identifiers(qualification, CEDULA_SYSTEM):
            problem = cedula_problem(ident.get("value"))
            if problem:
                out.append(issue(f"Practitioner.qualification[{q}].identifier[{i}].value", problem, "value"))
    if not cedulas:
        out.append(issue("Practitioner.identifier", f"falta la cédula profesional (sistema {CEDULA_SYSTEM})"))
    for system, check in ((CURP_SYSTEM, curp_problem), (RFC_SYSTEM, rfc_problem)):
        for i, ident in identifiers(p, system):
            problem = check(ident.get("value"))
            if problem:
                out.append(issue(f"Practitioner.identifier[{i}].value", problem, "value"))
    if not any(n.get("family") or n.get("text") for _, n in items(p, "name")):
        out.append(issue("Practitioner.name", "falta el nombre completo de quien atiende (NOM-004 5.10)"))
    return out


PROFILE = Profile(
    id="mx-practitioner",
    type="Practitioner",
    title="Personal de salud (México)",
    description="Profesional de la salud con cédula profesional (urn:oid:2.16.840.1.113883.3.215.12.18) bien formada y nombre.",
    rules=rules,
    elements=(
        Element("Practitioner.identifier", 1, "Cédula profesional (SEP): de 1 a 10 dígitos"),
        Element("Practitioner.name", 1, "Nombre completo"),
    ),
)
