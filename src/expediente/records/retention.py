"""Retention of the expediente clínico (NOM-004-SSA3-2012, 5.4): at least 5 years after the
patient's last medical act; only then may a record be purged (physically removed).

``last_medical_act`` reads every version of every resource in the patient's compartment
(deleted ones included: a deleted encounter still happened) and takes the latest clinical
date (``CLINICAL_DATES``: encounter periods, document dates, observations, procedures,
prescriptions...). Administrative dates (birth date, coverage periods, consents) are not
medical acts; a record with no medical act counts from its last change. ``purge`` removes the compartment's rows from the resource, history, search
index, care and consent tables in one transaction with its audit entry; the audit trail
itself stays (it records who purged what and when). A refusal (too early, or not the system
role) is recorded too, alone.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime

import orjson
import sqlalchemy as sa

from expediente.db.engine import write_transaction
from expediente.db.schema import INDEX_TABLES, resource, resource_history
from expediente.fhir import errors
from expediente.fhir.errors import FhirError
from expediente.security.access import Access, AccessGate, Decision, decide
from expediente.security.audit import AuditWriter
from expediente.security.policy import PURGE

RETENTION_YEARS = 5

# Per type, the elements holding the date of a medical act (dotted paths; a Period counts by
# its end, else its start).
CLINICAL_DATES: dict[str, tuple[str, ...]] = {
    "Encounter": ("period",),
    "EpisodeOfCare": ("period",),
    "Composition": ("date",),
    "DocumentReference": ("date", "context.period"),
    "Observation": ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"),
    "DiagnosticReport": ("effectiveDateTime", "effectivePeriod", "issued"),
    "Procedure": ("performedDateTime", "performedPeriod"),
    "MedicationRequest": ("authoredOn",),
    "MedicationDispense": ("whenHandedOver", "whenPrepared"),
    "Immunization": ("occurrenceDateTime",),
    "ServiceRequest": ("authoredOn",),
    "Condition": ("recordedDate", "abatementDateTime"),
    "AllergyIntolerance": ("recordedDate",),
    "CarePlan": ("period", "created"),
    "ImagingStudy": ("started",),
}


def _dates(body: dict, path: str) -> list[str]:
    value: object = body
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, dict):  # a Period
        value = value.get("end") or value.get("start")
    return [value] if isinstance(value, str) and len(value) >= 4 else []


def _as_date(text: str) -> date:
    """The last day a FHIR date/dateTime can mean ('2020' -> 2020-12-31, '2020-05' -> 2020-05-31)."""
    if len(text) == 4:
        return date(int(text), 12, 31)
    if len(text) == 7:
        year, month = int(text[:4]), int(text[5:7])
        return date(year, month, calendar.monthrange(year, month)[1])
    return date.fromisoformat(text[:10])


def last_medical_act(conn: sa.Connection, patient_id: str) -> date | None:
    """The date of the latest medical act in the patient's compartment (every version); None if none."""
    rows = conn.execute(
        sa.select(resource_history.c.res_type, resource_history.c.body).where(
            resource_history.c.patient_key == patient_id, resource_history.c.deleted.is_(False)
        )
    )
    latest: date | None = None
    for res_type, body in rows:
        paths = CLINICAL_DATES.get(res_type)
        if not paths or not body:
            continue
        parsed = orjson.loads(body)
        for path in paths:
            for text in _dates(parsed, path):
                try:
                    when = _as_date(text)
                except ValueError:
                    continue
                if latest is None or when > latest:
                    latest = when
    return latest


def last_change(conn: sa.Connection, patient_id: str) -> date | None:
    """The day the compartment last changed: the anchor for a record with no medical act yet
    (a registration alone), so that nothing is purged the day it is written."""
    latest = conn.execute(
        sa.select(sa.func.max(resource_history.c.last_updated)).where(resource_history.c.patient_key == patient_id)
    ).scalar()
    return latest.date() if latest is not None else None


def purge_allowed_from(last_act: date) -> date:
    """The first day the record may be purged: RETENTION_YEARS after the last act (29 Feb -> 1 Mar)."""
    try:
        return last_act.replace(year=last_act.year + RETENTION_YEARS)
    except ValueError:
        return date(last_act.year + RETENTION_YEARS, 3, 1)


@dataclass(frozen=True, slots=True)
class PurgeResult:
    patient_id: str
    last_act: date | None
    removed: dict[str, int]  # table -> rows removed


def _too_early(last_act: date | None, today: date) -> str | None:
    if last_act is None:
        return None
    allowed = purge_allowed_from(last_act)
    if today >= allowed:
        return None
    return (
        f"No se puede depurar el expediente antes de {RETENTION_YEARS} años después del último acto médico "
        f"(NOM-004-SSA3-2012, 5.4): el último fue el {last_act.isoformat()}; podrá depurarse a partir del {allowed.isoformat()}"
    )


def purge(store, caller, patient_id: str, *, today: date | None = None) -> PurgeResult:
    """Physically remove a patient's clinical record once its retention is over (system role only).

    Raises 403 (not the system role), 404 (no such patient), 409 (retention not over, with
    the date it ends). Nothing is removed unless everything is; the audit entry commits with it.
    """
    today = today or datetime.now(UTC).date()
    principal = caller.principal
    access = Access(PURGE, "Patient", patient_id, patient_id)
    with write_transaction(store.engine) as conn:
        exists = conn.execute(
            sa.select(resource.c.res_id).where(resource.c.res_type == "Patient", resource.c.res_id == patient_id)
        ).first()
        decision = decide(principal, access)
        problem, last_act = None, None
        if decision.allowed and exists is None:
            problem = errors.not_found("Patient", patient_id)
        elif decision.allowed:
            last_act = last_medical_act(conn, patient_id) or last_change(conn, patient_id)
            reason = _too_early(last_act, today)
            if reason:
                problem = FhirError.of(409, reason, "business-rule", "Patient")
        if problem is not None:
            decision = Decision(False, str(problem)[:255])
        # A refusal commits its audit entry alone; a purge commits with its entry.
        AuditWriter.record_in(conn, [AccessGate._entry(principal, access, decision, caller.source)])
        removed = _remove(conn, patient_id) if decision.allowed else {}
    if problem is not None:
        raise problem
    if not decision.allowed:
        raise FhirError.of(403, f"Acceso denegado: {decision.reason}", "forbidden")
    return PurgeResult(patient_id, last_act, removed)


def _remove(conn: sa.Connection, patient_id: str) -> dict[str, int]:
    removed = {}
    for table in (*INDEX_TABLES.values(), resource_history, resource):
        done = conn.execute(table.delete().where(table.c.patient_key == patient_id))
        removed[table.name] = done.rowcount
    return removed
