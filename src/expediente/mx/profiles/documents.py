"""The NOM-004-SSA3-2012 documents: one Composition profile per document type, and one
DocumentReference profile for the same documents received as attachments (a scanned
consent, a certificado de incapacidad).

Every note (NOM-004 5.10): date WITH time, author (a Practitioner), the patient, and the
encounter where the norm ties the note to an attention (evolución, urgencias, egreso); each
section the norm lists, coded in ``SECTION_SYSTEM``, with content (narrative, entries,
sub-sections) or an ``emptyReason``. The consent letter (10.1) names its establishment
(custodian), the patient's or representative's signature (an attester with mode ``legal``)
and two witnesses (two attesters with mode ``personal`` and a party). The certificado de
incapacidad carries its days (extension incapacidad-dias), ramo (incapacidad-ramo) and start
date (Composition.event.period.start / DocumentReference.context.period.start).

The electronic signature is not checked here: a document is written first and then signed
with ``$sign`` (fhir/signing.py), which records it and locks the document; ``$validate``
reminds that a final document must be signed.
"""

from __future__ import annotations

from expediente.fhir.validation import ValidationIssue
from expediente.mx.nom004 import DOCUMENT_TYPES, DocumentType, document_type_of
from expediente.mx.profiles.base import Element, Profile
from expediente.mx.profiles.common import codings, extension, has_time, issue, items, references
from expediente.mx.systems import DOCUMENT_TYPE_SYSTEM, INCAPACITY_BRANCH_URL, INCAPACITY_DAYS_URL, SECTION_SYSTEM

INCAPACITY_BRANCHES = ("Enfermedad general", "Riesgo de trabajo", "Maternidad", "Probable riesgo de trabajo")


def _section_codes(section: dict) -> set[str]:
    return {c.get("code") for c in codings(section.get("code")) if c.get("system") == SECTION_SYSTEM}


def _has_content(section: dict) -> bool:
    text = section.get("text")
    return bool((isinstance(text, dict) and text.get("div")) or section.get("entry") or section.get("section") or section.get("emptyReason"))


def _sections(c: dict, doc: DocumentType, out: list[ValidationIssue]) -> None:
    found: dict[str, int] = {}
    for i, section in items(c, "section"):
        for code in _section_codes(section):
            found.setdefault(code, i)
    for required in doc.sections:
        where = f" (NOM-004-SSA3-2012, {required.article})" if required.article else ""
        if required.code not in found:
            out.append(issue("Composition.section", f"falta la sección «{required.display}»{where} ({SECTION_SYSTEM}|{required.code})"))
        elif not _has_content(c["section"][found[required.code]]):
            i = found[required.code]
            out.append(issue(f"Composition.section[{i}]", f"la sección «{required.display}» está vacía: registre su contenido o emptyReason"))


def _note_basics(r: dict, rtype: str, doc: DocumentType, date_key: str, encounter, out: list[ValidationIssue]) -> None:
    name = doc.display.lower()
    if not r.get(date_key):
        out.append(issue(f"{rtype}.{date_key}", f"falta la fecha y hora de la {name} (NOM-004 5.10)"))
    elif not has_time(r[date_key]):
        out.append(issue(f"{rtype}.{date_key}", f"la {name} registra fecha y hora, no solo la fecha ('{r[date_key]}') (NOM-004 5.10)", "value"))
    if not any(references(a, "Practitioner", "PractitionerRole") for _, a in items(r, "author")):
        out.append(issue(f"{rtype}.author", f"falta el autor de la {name}: el médico que la elabora (Practitioner) (NOM-004 5.10)"))
    if not references(r.get("subject"), "Patient"):
        out.append(issue(f"{rtype}.subject", f"falta el paciente de la {name}"))
    if doc.needs_encounter and not encounter:
        path = "Composition.encounter" if rtype == "Composition" else "DocumentReference.context.encounter"
        out.append(issue(path, f"la {name} se refiere a la atención en que se elabora (Encounter)"))


def _type_is(r: dict, rtype: str, doc: DocumentType, out: list[ValidationIssue]) -> bool:
    if document_type_of(r.get("type")) is doc:
        return True
    out.append(issue(f"{rtype}.type", f"el tipo de documento debe ser '{doc.display}' ({DOCUMENT_TYPE_SYSTEM}|{doc.code})", "value"))
    return False


def _incapacity(r: dict, rtype: str, start: object, out: list[ValidationIssue]) -> None:
    days = extension(r, INCAPACITY_DAYS_URL)
    value = days[1].get("valuePositiveInt", days[1].get("valueInteger")) if days else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        out.append(issue(f"{rtype}.extension", f"falta el número de días de la incapacidad (extensión {INCAPACITY_DAYS_URL}, valuePositiveInt)"))
    branch = extension(r, INCAPACITY_BRANCH_URL)
    text = branch[1].get("valueString") if branch else None
    if text not in INCAPACITY_BRANCHES:
        shown = ", ".join(INCAPACITY_BRANCHES)
        out.append(issue(f"{rtype}.extension", f"falta el ramo de seguro de la incapacidad (extensión {INCAPACITY_BRANCH_URL}: {shown})"))
    if not start:
        path = "Composition.event.period.start" if rtype == "Composition" else "DocumentReference.context.period.start"
        out.append(issue(path, "falta la fecha de inicio de la incapacidad"))


def _consent(c: dict, out: list[ValidationIssue]) -> None:
    if not references(c.get("custodian"), "Organization"):
        out.append(issue("Composition.custodian", "falta el establecimiento que emite la carta de consentimiento (NOM-004 10.1.2)"))
    attesters = [a for _, a in items(c, "attester") if a.get("party")]
    witnesses = sum(1 for a in attesters if a.get("mode") == "personal")
    if not any(a.get("mode") == "legal" for a in attesters):
        out.append(issue("Composition.attester", "falta la firma del paciente o de su representante legal (attester con mode 'legal' y party) (NOM-004 10.1.8)"))
    if witnesses < 2:
        out.append(issue("Composition.attester", f"la carta de consentimiento lleva dos testigos (attester con mode 'personal' y party); tiene {witnesses} (NOM-004 10.1.10)"))


def _composition_rules(doc: DocumentType):
    def rules(c: dict) -> list[ValidationIssue]:
        out: list[ValidationIssue] = []
        if not _type_is(c, "Composition", doc, out):
            return out
        _note_basics(c, "Composition", doc, "date", c.get("encounter"), out)
        _sections(c, doc, out)
        if doc.code == "consentimiento-informado":
            _consent(c, out)
        if doc.code == "incapacidad-temporal":
            event = next((e for _, e in items(c, "event")), {})
            _incapacity(c, "Composition", (event.get("period") or {}).get("start"), out)
        return out

    return rules


def _reference_rules(r: dict) -> list[ValidationIssue]:
    doc = document_type_of(r.get("type"))
    if doc is None:
        return [issue("DocumentReference.type", f"el tipo de documento no es uno de la NOM-004 ({DOCUMENT_TYPE_SYSTEM})", "value")]
    out: list[ValidationIssue] = []
    context = r.get("context") if isinstance(r.get("context"), dict) else {}
    _note_basics(r, "DocumentReference", doc, "date", context.get("encounter"), out)
    if doc.code == "incapacidad-temporal":
        _incapacity(r, "DocumentReference", (context.get("period") or {}).get("start"), out)
    return out


def _composition_profile(doc: DocumentType) -> Profile:
    sections = tuple(
        Element(f"Composition.section:{s.code}", 1, f"{s.display}{f' (NOM-004 {s.article})' if s.article else ''}", "1")
        for s in doc.sections
    )
    article = f"NOM-004-SSA3-2012 {doc.article}" if doc.article else "expediente clínico"
    extra: tuple[Element, ...] = ()
    if doc.code == "consentimiento-informado":
        extra = (
            Element("Composition.custodian", 1, "Establecimiento (NOM-004 10.1.2)", "1"),
            Element("Composition.attester", 3, "Paciente o representante (mode legal) y dos testigos (mode personal)"),
        )
    elif doc.code == "incapacidad-temporal":
        extra = (
            Element("Composition.extension", 2, "Días (incapacidad-dias) y ramo (incapacidad-ramo)"),
            Element("Composition.event.period.start", 1, "Fecha de inicio de la incapacidad", "1"),
        )
    return Profile(
        id=doc.profile_id,
        type="Composition",
        title=doc.display,
        description=f"{doc.display} ({article}): fecha y hora, autor, paciente y las secciones que exige la norma.",
        rules=_composition_rules(doc),
        elements=(
            Element("Composition.type", 1, f"{DOCUMENT_TYPE_SYSTEM}|{doc.code}" + (f" (LOINC {doc.loinc})" if doc.loinc else "")),
            Element("Composition.date", 1, "Fecha y hora (NOM-004 5.10)"),
            Element("Composition.author", 1, "Médico que elabora la nota (Practitioner)"),
            Element("Composition.subject", 1, "Paciente", "1"),
            *((Element("Composition.encounter", 1, "Atención en que se elabora", "1"),) if doc.needs_encounter else ()),
            Element("Composition.section", len(doc.sections), "Secciones de la NOM-004"),
            *sections,
            *extra,
        ),
    )


COMPOSITION_PROFILES: tuple[Profile, ...] = tuple(_composition_profile(d) for d in DOCUMENT_TYPES)

REFERENCE_PROFILE = Profile(
    id="mx-document-reference",
    type="DocumentReference",
    title="Documento del expediente clínico (adjunto)",
    description=(
        "Documento de la NOM-004 recibido como adjunto (PDF, imagen escaneada): tipo del sistema local, fecha y hora, "
        "autor, paciente; el certificado de incapacidad con días, ramo y fecha de inicio."
    ),
    rules=_reference_rules,
    elements=(
        Element("DocumentReference.type", 1, f"Tipo de documento ({DOCUMENT_TYPE_SYSTEM})", "1"),
        Element("DocumentReference.date", 1, "Fecha y hora", "1"),
        Element("DocumentReference.author", 1, "Médico que lo elabora (Practitioner)"),
        Element("DocumentReference.subject", 1, "Paciente", "1"),
    ),
)
