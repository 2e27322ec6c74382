"""Encounter (MX): consulta externa, urgencias or hospitalización, with its start date and time."""

from __future__ import annotations

from expediente.fhir.validation import ValidationIssue
from expediente.mx.profiles.base import Element, Profile
from expediente.mx.profiles.common import has_time, issue

V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# code -> (Spanish display, the code system's own display): either is accepted, in any case.
CLASSES = {
    "AMB": ("Consulta externa", "ambulatory"),
    "EMER": ("Urgencias", "emergency"),
    "IMP": ("Hospitalización", "inpatient encounter"),
}


def rules(e: dict) -> list[ValidationIssue]:
    out: list[ValidationIssue] = []
    cls = e.get("class") if isinstance(e.get("class"), dict) else {}
    if cls.get("system") != V3_ACT_CODE or cls.get("code") not in CLASSES:
        out.append(issue(
            "Encounter.class",
            f"la atención es consulta externa (AMB), urgencias (EMER) u hospitalización (IMP) del sistema {V3_ACT_CODE}",
            "code-invalid",
        ))
    elif cls.get("display") is not None and str(cls["display"]).casefold() not in {d.casefold() for d in CLASSES[cls["code"]]}:
        spanish, english = CLASSES[cls["code"]]
        out.append(issue("Encounter.class.display", f"para {cls['code']} se espera '{spanish}' (o '{english}'), no '{cls['display']}'", "value"))
    period = e.get("period") if isinstance(e.get("period"), dict) else {}
    if not period.get("start"):
        out.append(issue("Encounter.period.start", "falta la fecha y hora de inicio de la atención"))
    elif not has_time(period["start"]):
        out.append(issue("Encounter.period.start", f"el inicio de la atención lleva fecha y hora, no solo la fecha ('{period['start']}')", "value"))
    if not e.get("subject"):
        out.append(issue("Encounter.subject", "falta el paciente atendido"))
    return out


PROFILE = Profile(
    id="mx-encounter",
    type="Encounter",
    title="Atención (México)",
    description="Consulta externa (AMB), urgencias (EMER) u hospitalización (IMP), con paciente y fecha y hora de inicio.",
    rules=rules,
    elements=(
        Element("Encounter.class", 1, "AMB consulta externa | EMER urgencias | IMP hospitalización", "1"),
        Element("Encounter.subject", 1, "Paciente", "1"),
        Element("Encounter.period.start", 1, "Fecha y hora de inicio", "1"),
    ),
)
