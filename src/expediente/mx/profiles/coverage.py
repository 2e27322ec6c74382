"""Coverage (MX): the derechohabiencia, by a type coding of ``AFFILIATION_SYSTEM`` or the
payor's institution identifier; an IMSS affiliation carries a valid NSS."""

from __future__ import annotations

from expediente.fhir.validation import ValidationIssue
from expediente.mx.affiliation import AFFILIATIONS, PUBLIC_INSTITUTIONS
from expediente.mx.identifiers import nss_problem
from expediente.mx.profiles.base import Element, Profile
from expediente.mx.profiles.common import codings, identifiers, issue, items
from expediente.mx.systems import AFFILIATION_SYSTEM, INSTITUTION_SYSTEM, NSS_SYSTEM

_NAMES = "IMSS, ISSSTE, IMSS-BIENESTAR, PEMEX, SEDENA, SEMAR, PRIVADO o NINGUNA"


def affiliation(coverage: dict) -> str | None:
    for c in codings(coverage.get("type")):
        if c.get("system") == AFFILIATION_SYSTEM:
            return c.get("code")
    for _, payor in items(coverage, "payor"):
        ident = payor.get("identifier")
        if isinstance(ident, dict) and ident.get("system") == INSTITUTION_SYSTEM and ident.get("value") in PUBLIC_INSTITUTIONS:
            return ident["value"]
    return None


def rules(coverage: dict) -> list[ValidationIssue]:
    out: list[ValidationIssue] = []
    kind = affiliation(coverage)
    if kind is None:
        out.append(issue("Coverage.type", f"falta la derechohabiencia ({_NAMES}; sistema {AFFILIATION_SYSTEM})"))
    elif kind not in AFFILIATIONS:
        out.append(issue("Coverage.type", f"derechohabiencia desconocida: '{kind}' (se espera {_NAMES})", "code-invalid"))
    nss = [(f"Coverage.identifier[{i}].value", ident.get("value")) for i, ident in identifiers(coverage, NSS_SYSTEM)]
    if "subscriberId" in coverage:
        nss.append(("Coverage.subscriberId", coverage["subscriberId"]))
    if kind == "IMSS" and not nss:
        out.append(issue("Coverage.subscriberId", "la derechohabiencia IMSS requiere el Número de Seguridad Social (NSS)"))
    if kind == "IMSS":
        for path, value in nss:
            problem = nss_problem(value)
            if problem:
                out.append(issue(path, problem, "value"))
    return out


PROFILE = Profile(
    id="mx-coverage",
    type="Coverage",
    title="Derechohabiencia (México)",
    description=f"Afiliación a {_NAMES} (Coverage.type del sistema {AFFILIATION_SYSTEM} o payor con la clave de la institución); con IMSS, el NSS válido.",
    rules=rules,
    elements=(
        Element("Coverage.type", 1, "Derechohabiencia (IMSS, ISSSTE, IMSS-Bienestar, PEMEX, SEDENA, SEMAR, privado, ninguna)"),
        Element("Coverage.subscriberId", 0, "NSS del IMSS (11 dígitos, dígito verificador Luhn); obligatorio con IMSS"),
    ),
)
