"""Patient (MX): CURP or a temporary identifier of the establishment; with a CURP, the person
the CURP describes (name, first surname, sex, birth date and entidad of birth consistent with it).

Without a CURP (NOM-024 6.5.1: none is invented; e.g. an unconscious emergency patient
registered as "Desconocido") only the temporary identifier and the sex (``unknown`` allowed)
are required; names and birth date are added when known and the record reconciled later.
Names are not compared with the CURP's letters: RENAPO's rules for compound names, particles
and inconvenient words make a false refusal likelier than a caught typo (the MPI compares names).
"""

from __future__ import annotations

from datetime import date

from expediente.fhir.validation import ValidationIssue
from expediente.mx.curp_reasons import curp_problem
from expediente.mx.identifiers import clues_problem, nss_problem, rfc_problem, temporary_clues
from expediente.mx.profiles.base import Element, Profile
from expediente.mx.profiles.common import codings, extension, identifiers, issue, items
from expediente.mx.systems import BIRTH_STATE_URL, CURP_SYSTEM, FATHERS_FAMILY_URL, NSS_SYSTEM, RFC_SYSTEM, TEMPORARY_ID_PREFIX

_CURP_SEX = {"H": ("male", "H, hombre"), "M": ("female", "M, mujer"), "X": ("other", "X, no binario")}


def _identifier_problems(p: dict, out: list[ValidationIssue]) -> tuple[str | None, bool]:
    """Checks every Mexican identifier; returns (the valid CURP or None, a valid temporary one?)."""
    curp = None
    for i, ident in identifiers(p, CURP_SYSTEM):
        problem = curp_problem(ident.get("value"))
        if problem:
            out.append(issue(f"Patient.identifier[{i}].value", problem, "value"))
        else:
            curp = ident["value"]
    temporary = False
    for i, ident in items(p, "identifier"):
        clues = temporary_clues(ident.get("system"))
        if clues is None:
            continue
        problem = clues_problem(clues)
        if problem:
            out.append(issue(f"Patient.identifier[{i}].system", f"el identificador temporal va ligado a la CLUES del establecimiento: {problem}", "value"))
        elif not str(ident.get("value") or "").strip():
            out.append(issue(f"Patient.identifier[{i}].value", "falta el valor del identificador temporal"))
        else:
            temporary = True
    for system, check in ((NSS_SYSTEM, nss_problem), (RFC_SYSTEM, rfc_problem)):
        for i, ident in identifiers(p, system):
            problem = check(ident.get("value"))
            if problem:
                out.append(issue(f"Patient.identifier[{i}].value", problem, "value"))
    return curp, temporary


def _official_name(p: dict) -> tuple[int, dict] | None:
    names = list(items(p, "name"))
    for i, name in names:
        if name.get("use") == "official":
            return i, name
    return names[0] if names else None


def first_surname(name: dict) -> str | None:
    """The first (father's) surname: the humanname-fathers-family extension, else ``family``."""
    ext = extension(name.get("_family") or {}, FATHERS_FAMILY_URL)
    if ext and isinstance(ext[1].get("valueString"), str) and ext[1]["valueString"].strip():
        return ext[1]["valueString"]
    family = name.get("family")
    return family if isinstance(family, str) and family.strip() else None


def _consistent_with_curp(p: dict, curp: str, out: list[ValidationIssue]) -> None:
    found = _official_name(p)
    if found is None:
        out.append(issue("Patient.name", "falta el nombre del paciente (nombre y primer apellido, como en la CURP)"))
    else:
        i, name = found
        given = [g for g in name.get("given") or () if isinstance(g, str) and g.strip()]
        if not given:
            out.append(issue(f"Patient.name[{i}].given", "falta el nombre (o nombres) del paciente"))
        if first_surname(name) is None:
            out.append(issue(f"Patient.name[{i}].family", "falta el primer apellido (extensión humanname-fathers-family o family)"))
    gender, meaning = _CURP_SEX[curp[10]]
    if not p.get("gender"):
        out.append(issue("Patient.gender", "falta el sexo del paciente"))
    elif p["gender"] != gender:
        out.append(issue("Patient.gender", f"el sexo '{p['gender']}' no coincide con la CURP (posición 11: {meaning}; se esperaba '{gender}')", "invariant"))
    century = 1900 if curp[16].isdigit() else 2000
    born = date(century + int(curp[4:6]), int(curp[6:8]), int(curp[8:10])).isoformat()
    if not p.get("birthDate"):
        out.append(issue("Patient.birthDate", "falta la fecha de nacimiento"))
    elif p["birthDate"] != born:
        out.append(issue("Patient.birthDate", f"la fecha de nacimiento {p['birthDate']} no coincide con la de la CURP ({born}, posiciones 5 a 10)", "invariant"))
    ext = extension(p, BIRTH_STATE_URL)
    if ext is not None:
        codes = {c.get("code") for c in codings(ext[1].get("valueCodeableConcept"))}
        if curp[11:13] not in codes:
            shown = ", ".join(sorted(str(c) for c in codes if c)) or "ninguna"
            out.append(issue(
                f"Patient.extension[{ext[0]}]",
                f"la entidad de nacimiento ({shown}) no coincide con la de la CURP ('{curp[11:13]}', posiciones 12 y 13)",
                "invariant",
            ))


def rules(p: dict) -> list[ValidationIssue]:
    out: list[ValidationIssue] = []
    curp, temporary = _identifier_problems(p, out)
    if curp is not None:
        _consistent_with_curp(p, curp, out)
        return out
    if not temporary and not identifiers(p, CURP_SYSTEM):
        out.append(issue("Patient.identifier", "falta la CURP o un identificador temporal de la institución"))
    if not p.get("gender"):
        out.append(issue("Patient.gender", "falta el sexo del paciente ('unknown' si no se conoce)"))
    return out


PROFILE = Profile(
    id="mx-patient",
    type="Patient",
    title="Paciente (México)",
    description=(
        "Paciente identificado por su CURP (válida) o, sin CURP, por un identificador temporal del "
        f"establecimiento (sistema {TEMPORARY_ID_PREFIX}{{CLUES}}); con CURP, nombre, primer "
        "apellido, sexo, fecha y entidad de nacimiento coinciden con ella. NOM-024-SSA3-2012 6.5.1."
    ),
    rules=rules,
    elements=(
        Element("Patient.identifier", 1, "CURP (urn:oid:2.16.840.1.113883.4.629) o identificador temporal del establecimiento"),
        Element("Patient.name", 0, "Obligatorio con CURP: nombre(s) y primer apellido"),
        Element("Patient.name.given", 0, "Nombre(s); obligatorio con CURP"),
        Element("Patient.name.family", 0, "Apellidos; primer apellido en la extensión humanname-fathers-family"),
        Element("Patient.gender", 1, "Sexo; con CURP coincide con la posición 11 (H male, M female, X other)", "1"),
        Element("Patient.birthDate", 0, "Obligatoria con CURP y coincide con ella (posiciones 5 a 10)", "1"),
        Element("Patient.extension", 0, "entidad-nacimiento: coincide con la CURP (posiciones 12 y 13)"),
    ),
)
