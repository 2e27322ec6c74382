"""The documents of the expediente clínico NOM-004-SSA3-2012 requires, and their sections.

Each document type has a code in Expediente's local code system (``DOCUMENT_TYPE_SYSTEM``),
its LOINC equivalent where one exists (a Composition or DocumentReference coded only with
the LOINC code is recognized too), and the sections the norm lists for it, each coded in
``SECTION_SYSTEM`` with the article that asks for it. The profiles (``mx/profiles/documents.py``)
check them; the synthetic population (``synth/generator.py``) writes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from expediente.mx.systems import DOCUMENT_TYPE_SYSTEM, SECTION_SYSTEM

LOINC_SYSTEM = "http://loinc.org"


@dataclass(frozen=True, slots=True)
class Section:
    code: str
    display: str
    article: str  # numeral of NOM-004-SSA3-2012

    def coding(self) -> dict:
        return {"system": SECTION_SYSTEM, "code": self.code, "display": self.display}


@dataclass(frozen=True, slots=True)
class DocumentType:
    code: str  # in DOCUMENT_TYPE_SYSTEM
    display: str
    loinc: str | None
    loinc_display: str | None
    article: str
    sections: tuple[Section, ...]
    needs_encounter: bool  # the note belongs to an attention (urgencias, hospitalización, consulta)
    profile_id: str  # StructureDefinition id

    def coding(self) -> dict:
        return {"system": DOCUMENT_TYPE_SYSTEM, "code": self.code, "display": self.display}


def _s(code: str, display: str, article: str) -> Section:
    return Section(code, display, article)


# Sections shared by several notes.
SIGNOS_VITALES = _s("signos-vitales", "Signos vitales", "6.2.2")
RESULTADOS = _s("resultados-estudios", "Resultados relevantes de estudios de laboratorio, gabinete y otros", "6.2.3")
DIAGNOSTICOS = _s("diagnosticos", "Diagnósticos o problemas clínicos", "6.2.4")
PRONOSTICO = _s("pronostico", "Pronóstico", "6.2.5")
TRATAMIENTO = _s("tratamiento", "Tratamiento e indicaciones médicas", "6.2.6")

DOCUMENT_TYPES: tuple[DocumentType, ...] = (
    DocumentType(
        "historia-clinica", "Historia clínica", "34117-2", "History and physical note", "6.1",
        (
            _s("ficha-identificacion", "Ficha de identificación", "6.1.1"),
            _s("antecedentes-heredofamiliares", "Antecedentes heredo-familiares", "6.1.1"),
            _s("antecedentes-personales-patologicos", "Antecedentes personales patológicos", "6.1.1"),
            _s("antecedentes-personales-no-patologicos", "Antecedentes personales no patológicos", "6.1.1"),
            _s("padecimiento-actual", "Padecimiento actual", "6.1.1"),
            _s("interrogatorio-aparatos-sistemas", "Interrogatorio por aparatos y sistemas", "6.1.1"),
            _s("exploracion-fisica", "Exploración física (habitus exterior, signos vitales, peso, talla, cabeza, cuello, tórax, abdomen, miembros y genitales)", "6.1.2"),
            _s("resultados-estudios", "Resultados previos y actuales de estudios de laboratorio, gabinete y otros", "6.1.3"),
            _s("diagnosticos", "Diagnósticos o problemas clínicos", "6.1.4"),
            _s("pronostico", "Pronóstico", "6.1.5"),
            _s("tratamiento", "Indicación terapéutica", "6.1.6"),
        ),
        False, "mx-historia-clinica",
    ),
    DocumentType(
        "nota-evolucion", "Nota de evolución", "11506-3", "Progress note", "6.2",
        (
            _s("evolucion", "Evolución y actualización del cuadro clínico", "6.2.1"),
            SIGNOS_VITALES, RESULTADOS, DIAGNOSTICOS, PRONOSTICO, TRATAMIENTO,
        ),
        True, "mx-nota-evolucion",
    ),
    DocumentType(
        "nota-interconsulta", "Nota de interconsulta", "11488-4", "Consult note", "6.3",
        (
            _s("criterios-diagnosticos", "Criterios diagnósticos", "6.3.1"),
            _s("plan-estudios", "Plan de estudios", "6.3.2"),
            _s("sugerencias-diagnosticas-tratamiento", "Sugerencias diagnósticas y tratamiento", "6.3.3"),
        ),
        False, "mx-nota-interconsulta",
    ),
    DocumentType(
        "nota-referencia", "Nota de referencia/traslado", "57133-1", "Referral note", "6.4",
        (
            _s("establecimiento-envia", "Establecimiento que envía", "6.4.1"),
            _s("establecimiento-receptor", "Establecimiento receptor", "6.4.2"),
            _s("motivo-envio", "Motivo de envío", "6.4.3.1"),
            _s("impresion-diagnostica", "Impresión diagnóstica", "6.4.3.2"),
            _s("terapeutica-empleada", "Terapéutica empleada, si la hubo", "6.4.3.3"),
        ),
        False, "mx-nota-referencia",
    ),
    DocumentType(
        "nota-urgencias", "Nota inicial de urgencias", "34111-5", "Emergency department note", "7.1",
        (
            _s("signos-vitales", "Signos vitales", "7.1.2"),
            _s("motivo-atencion", "Motivo de la atención", "7.1.3"),
            _s("interrogatorio-exploracion", "Resumen del interrogatorio, exploración física y estado mental", "7.1.4"),
            _s("resultados-estudios", "Resultados relevantes de estudios de laboratorio, gabinete y otros", "7.1.5"),
            _s("diagnosticos", "Diagnósticos o problemas clínicos", "7.1.6"),
            _s("tratamiento", "Tratamiento", "7.1.7"),
            _s("pronostico", "Pronóstico", "7.1.7"),
        ),
        True, "mx-nota-urgencias",
    ),
    DocumentType(
        "nota-egreso", "Nota de egreso", "18842-5", "Discharge summary", "8.9",
        (
            _s("motivo-egreso", "Motivo del egreso", "8.9.2"),
            _s("diagnosticos-finales", "Diagnósticos finales", "8.9.3"),
            _s("resumen-evolucion", "Resumen de la evolución y el estado actual", "8.9.4"),
            _s("manejo-estancia", "Manejo durante la estancia hospitalaria", "8.9.5"),
            _s("problemas-pendientes", "Problemas clínicos pendientes", "8.9.6"),
            _s("plan-manejo", "Plan de manejo y tratamiento", "8.9.7"),
            _s("recomendaciones-vigilancia", "Recomendaciones para la vigilancia ambulatoria", "8.9.8"),
            _s("factores-riesgo", "Atención de factores de riesgo", "8.9.9"),
            _s("pronostico", "Pronóstico", "8.9.10"),
        ),
        True, "mx-nota-egreso",
    ),
    DocumentType(
        "consentimiento-informado", "Carta de consentimiento informado", "59284-0", "Consent Document", "10.1",
        (
            _s("acto-autorizado", "Acto autorizado", "10.1.5"),
            _s("riesgos-beneficios", "Señalamiento de los riesgos y beneficios esperados", "10.1.6"),
            _s("autorizacion-contingencias", "Autorización para atender contingencias y urgencias", "10.1.7"),
        ),
        False, "mx-consentimiento-informado",
    ),
    DocumentType(
        # Not a NOM-004 note: the social-security certificate (IMSS/ISSSTE), kept in the expediente.
        "incapacidad-temporal", "Certificado de incapacidad temporal para el trabajo", None, None, "",
        (_s("diagnosticos", "Diagnóstico que motiva la incapacidad", ""),),
        False, "mx-incapacidad-temporal",
    ),
)  # fmt: skip

BY_CODE: dict[str, DocumentType] = {d.code: d for d in DOCUMENT_TYPES}
BY_LOINC: dict[str, DocumentType] = {d.loinc: d for d in DOCUMENT_TYPES if d.loinc}
BY_PROFILE: dict[str, DocumentType] = {d.profile_id: d for d in DOCUMENT_TYPES}


def document_type_of(concept: object) -> DocumentType | None:
    """The NOM-004 document a CodeableConcept (Composition.type, DocumentReference.type) names:
    the local code first, then the LOINC equivalent; None when it names none."""
    if not isinstance(concept, dict):
        return None
    codings = [c for c in concept.get("coding") or () if isinstance(c, dict)]
    for c in codings:
        if c.get("system") == DOCUMENT_TYPE_SYSTEM and c.get("code") in BY_CODE:
            return BY_CODE[c["code"]]
    for c in codings:
        if c.get("system") == LOINC_SYSTEM and c.get("code") in BY_LOINC:
            return BY_LOINC[c["code"]]
    return None


def section_narrative(section: Section, text_div: str) -> dict:
    """A Composition.section with its code, title and an XHTML narrative ``text_div``."""
    return {"title": section.display, "code": {"coding": [section.coding()]}, "text": {"status": "generated", "div": text_div}}
