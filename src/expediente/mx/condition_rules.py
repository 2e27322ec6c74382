"""A diagnosis must fit the patient: CIE-10 codes of a Condition are checked, inside the write's
transaction, against the catalog and the patient's sex and age (an O80 "parto único
espontáneo" for a man, or a prostate diagnosis for a woman, is refused with the reason)."""

from __future__ import annotations

from datetime import date

import orjson
import sqlalchemy as sa

from expediente.db.group_commit import flush_inserts
from expediente.db.schema import resource
from expediente.fhir.errors import FhirError, Issue
from expediente.mx.catalog_store import Catalog
from expediente.mx.diagnosis import diagnosis_problem
from expediente.mx.systems import CIE10_SYSTEM


def _cie10_codes(condition: dict) -> list[tuple[int, str]]:
    codings = ((condition.get("code") or {}).get("coding")) or []
    return [(i, c["code"]) for i, c in enumerate(codings) if isinstance(c, dict) and c.get("system") == CIE10_SYSTEM and isinstance(c.get("code"), str)]


def _age_at(birth: str | None, when: date) -> int | None:
    try:
        born = date.fromisoformat(birth) if birth and len(birth) == 10 else None
    except ValueError:
        return None
    if born is None:
        return None
    return when.year - born.year - ((when.month, when.day) < (born.month, born.day))


def _diagnosed_on(condition: dict) -> date:
    """When the diagnosis applies: its onset, else when it was recorded, else today."""
    for key in ("onsetDateTime", "recordedDate"):
        value = condition.get(key)
        if isinstance(value, str) and len(value) >= 10:
            try:
                return date.fromisoformat(value[:10])
            except ValueError:
                pass
    return date.today()


def check_condition(conn: sa.Connection, catalog: Catalog | None, condition: dict, patient_id: str | None) -> None:
    """Raise 422 naming each CIE-10 coding that does not fit the catalog or the patient."""
    codes = _cie10_codes(condition)
    if not codes:
        return
    sex = birth = None
    if patient_id:
        flush_inserts(conn)  # the Patient may be an earlier entry of the same transaction
        body = conn.execute(
            sa.select(resource.c.body).where(resource.c.res_type == "Patient", resource.c.res_id == patient_id, resource.c.deleted == sa.false())
        ).scalar()
        if body:
            patient = orjson.loads(body)
            sex, birth = patient.get("gender"), patient.get("birthDate")
    age = _age_at(birth, _diagnosed_on(condition))
    issues = [
        Issue(problem, "business-rule", expression=f"Condition.code.coding[{i}].code")
        for i, code in codes
        if (problem := diagnosis_problem(catalog, code, sex, age)) is not None
    ]
    if issues:
        raise FhirError(422, issues)
