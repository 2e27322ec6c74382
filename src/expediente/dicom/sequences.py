"""The sequence attributes the index keeps item by item, so that C-FIND and QIDO-RS can match
on them (sequence matching, PS3.4 C.2.2.2.6).

Chosen for what a Mexican archive is asked: the patient's identifiers at other institutions
(OtherPatientIDsSequence: IMSS, ISSSTE and IMSS-Bienestar numbers of the same person), the
issuer of the accession number, the procedure code, and at series level the order that caused
it (RequestAttributesSequence: requested procedure and scheduled step IDs, as IHE Scheduled
Workflow's Query Images asks an image manager to match). Each kept item attribute is text; the
first ``MAX_ITEMS`` items of a sequence are kept, from the first instance of the study (study
sequences) or of the series (series sequences), as the other study and series attributes are.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.datadict import dictionary_VR, tag_for_keyword

MAX_ITEMS = 32
MAX_VALUE = 324  # as dicom_item.value


@dataclass(frozen=True, slots=True)
class IndexedSequence:
    keyword: str
    level: str  # the query level whose answers carry it: PATIENT (and below), STUDY or SERIES
    items: tuple[str, ...]  # the item attributes kept

    @property
    def owner(self) -> str:
        """Which row the items belong to: a study or a series."""
        return "series" if self.level == "SERIES" else "study"


INDEXED: dict[str, IndexedSequence] = {
    s.keyword: s
    for s in (
        IndexedSequence("OtherPatientIDsSequence", "PATIENT", ("PatientID", "IssuerOfPatientID", "TypeOfPatientID")),
        IndexedSequence("IssuerOfAccessionNumberSequence", "STUDY", ("LocalNamespaceEntityID", "UniversalEntityID", "UniversalEntityIDType")),
        IndexedSequence("ProcedureCodeSequence", "STUDY", ("CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning")),
        IndexedSequence(
            "RequestAttributesSequence",
            "SERIES",
            ("RequestedProcedureID", "ScheduledProcedureStepID", "AccessionNumber", "StudyInstanceUID", "RequestedProcedureDescription", "ScheduledProcedureStepDescription"),
        ),
    )
}

# For the header walk: sequence tag -> (keyword, item attribute tag -> keyword).
TAGS: dict[int, tuple[str, dict[int, str]]] = {
    tag_for_keyword(s.keyword): (s.keyword, {tag_for_keyword(k): k for k in s.items}) for s in INDEXED.values()
}


def is_sequence(keyword: str) -> bool:
    try:
        return dictionary_VR(keyword) == "SQ"
    except KeyError:
        return False


def items_of_dataset(ds) -> dict[str, list[dict[str, str]]]:
    """The kept items of a pydicom Dataset's indexed sequences (the reference for the walk)."""
    out: dict[str, list[dict[str, str]]] = {}
    for keyword, seq in INDEXED.items():
        value = ds.get(keyword)
        if not value:
            continue
        items = [kept for item in list(value)[:MAX_ITEMS] if (kept := _kept({k: _text(item.get(k)) for k in seq.items}))]
        if items:
            out[keyword] = items
    return out


def items_of_json(doc: dict) -> dict[str, list[dict[str, str]]]:
    """The kept items of an instance's DICOM JSON (the index's stored metadata)."""
    out: dict[str, list[dict[str, str]]] = {}
    for keyword, seq in INDEXED.items():
        element = doc.get(f"{tag_for_keyword(keyword):08X}") or {}
        items = []
        for item in (element.get("Value") or [])[:MAX_ITEMS]:
            values = {}
            for k in seq.items:
                inner = (item or {}).get(f"{tag_for_keyword(k):08X}") or {}
                values[k] = "\\".join(v.get("Alphabetic", "") if isinstance(v, dict) else str(v) for v in inner.get("Value") or [])
            if kept := _kept(values):
                items.append(kept)
        if items:
            out[keyword] = items
    return out


def rows(owner_uid: str, items: dict[str, list[dict[str, str]]], owner: str) -> list[dict]:
    """dicom_item rows of the ``owner`` ("study" or "series") sequences among ``items``."""
    out = []
    for keyword, kept in items.items():
        seq = INDEXED.get(keyword)
        if seq is None or seq.owner != owner:
            continue
        for number, item in enumerate(kept):
            out += [{"owner_uid": owner_uid, "sequence": keyword, "item": number, "keyword": k, "value": v[:MAX_VALUE]} for k, v in item.items()]
    return out


def _text(value) -> str:
    """As the header walk keeps text: surrounding spaces (and trailing NULs) dropped."""
    if value is None:
        return ""
    if type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    return str(value).rstrip("\x00 ").lstrip(" ")


def _kept(values: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in values.items() if v}


def backfill(conn) -> int:
    """Fill dicom_item for studies indexed before it existed, from the stored DICOM JSON of one
    instance a series (instances whose JSON was never built are not read). Returns the rows."""
    import orjson
    import sqlalchemy as sa

    instance = sa.table("dicom_instance", sa.column("sop_instance_uid"), sa.column("series_uid"), sa.column("study_uid"), sa.column("metadata"))
    item = sa.table("dicom_item", *(sa.column(c) for c in ("owner_uid", "sequence", "item", "keyword", "value")))
    firsts = conn.execute(
        sa.select(instance.c.series_uid, sa.func.min(instance.c.sop_instance_uid)).where(instance.c.metadata.is_not(None)).group_by(instance.c.series_uid)
    ).all()
    done_studies: set[str] = set()
    written = 0
    for start in range(0, len(firsts), 500):
        uids = [uid for _, uid in firsts[start : start + 500]]
        batch: list[dict] = []
        for series_uid, study_uid, raw in conn.execute(sa.select(instance.c.series_uid, instance.c.study_uid, instance.c.metadata).where(instance.c.sop_instance_uid.in_(uids))):
            items = items_of_json(orjson.loads(raw))
            batch += rows(series_uid, items, "series")
            if study_uid not in done_studies:
                done_studies.add(study_uid)
                batch += rows(study_uid, items, "study")
        if batch:
            conn.execute(item.insert(), batch)
            written += len(batch)
    return written
