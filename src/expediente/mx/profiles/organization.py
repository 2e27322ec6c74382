"""Organization (MX): an establishment (a CLUES identifier, or type ``prov``: it must then have
its CLUES) or an institution (IMSS, ISSSTE, an insurer: an ``INSTITUTION_SYSTEM`` identifier)."""

from __future__ import annotations

from expediente.fhir.validation import ValidationIssue
from expediente.mx.identifiers import clues_problem, rfc_problem
from expediente.mx.profiles.base import Element, Profile
from expediente.mx.profiles.common import codings, identifiers, issue, items
from expediente.mx.systems import CLUES_SYSTEM, INSTITUTION_SYSTEM, RFC_SYSTEM

ORGANIZATION_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"


def is_establishment(org: dict) -> bool:
    """An establishment (where care is given): it carries a CLUES, or says it is a provider."""
    if identifiers(org, CLUES_SYSTEM):
        return True
    return any(c.get("system") == ORGANIZATION_TYPE and c.get("code") == "prov" for _, t in items(org, "type") for c in codings(t))


def rules(org: dict) -> list[ValidationIssue]:
    out: list[ValidationIssue] = []
    clues = identifiers(org, CLUES_SYSTEM)
    for i, ident in clues:
        problem = clues_problem(ident.get("value"))
        if problem:
            out.append(issue(f"Organization.identifier[{i}].value", problem, "value"))
    for i, ident in identifiers(org, RFC_SYSTEM):
        problem = rfc_problem(ident.get("value"))
        if problem:
            out.append(issue(f"Organization.identifier[{i}].value", problem, "value"))
    institution = [i for i, ident in identifiers(org, INSTITUTION_SYSTEM) if str(ident.get("value") or "").strip()]
    if is_establishment(org) and not clues:
        out.append(issue("Organization.identifier", f"un establecimiento de salud (type prov) requiere su CLUES (sistema {CLUES_SYSTEM})"))
    elif not clues and not institution:
        out.append(issue(
            "Organization.identifier",
            f"falta la CLUES del establecimiento ({CLUES_SYSTEM}) o la clave de la institución ({INSTITUTION_SYSTEM})",
        ))
    if not org.get("name"):
        out.append(issue("Organization.name", "falta el nombre del establecimiento o institución"))
    return out


PROFILE = Profile(
    id="mx-organization",
    type="Organization",
    title="Establecimiento o institución de salud (México)",
    description=(
        "Un establecimiento (con CLUES válida, urn:oid:2.16.840.1.113883.4.631; obligatoria si type es prov) "
        "o una institución (IMSS, ISSSTE, aseguradora: identificador http://expediente.mx/fhir/sid/institucion)."
    ),
    rules=rules,
    elements=(
        Element("Organization.identifier", 1, "CLUES del establecimiento o clave de la institución"),
        Element("Organization.name", 1, "Nombre", "1"),
    ),
)
