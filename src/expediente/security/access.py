"""The one place where every access to patient data is decided and recorded.

Every read, search, write and operation calls ``AccessGate.authorize`` with who is asking and
what they touch (type, id and the patient compartment). The decision and the audit entry
happen together: a denied access is recorded and refused; an allowed one proceeds only once
its entry is stored. The rules here are the baseline; the full policy (care relationship,
consent, institution, break-the-glass) replaces ``decide`` without changing any caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from expediente.fhir.errors import FhirError
from expediente.security.audit import AuditEntry, AuditUnavailable, AuditWriter
from expediente.security.principal import Principal

READS = frozenset({"read", "vread", "history", "search", "everything"})
WRITES = frozenset({"create", "update", "delete"})
CARE_ROLES = frozenset({"administrator", "physician", "nurse", "radiologist", "imaging_technician", "system"})


@dataclass(frozen=True, slots=True)
class Access:
    action: str  # read | vread | history | search | everything | create | update | delete
    res_type: str | None
    res_id: str | None = None
    patient_key: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str


def decide(principal: Principal, access: Access) -> Decision:
    role = principal.role
    if access.res_type == "AuditEvent":
        return _decide_audit_trail(principal, access)
    if role in CARE_ROLES:
        return Decision(True, f"rol {role}")
    if role == "patient":
        own = principal.patient_id
        if access.action in READS and own is not None and access.patient_key == own:
            return Decision(True, "acceso del paciente a su propio expediente")
        return Decision(False, "un paciente solo puede consultar su propio expediente")
    if role == "researcher":
        return Decision(False, "los investigadores solo acceden a datos desidentificados del banco de investigación")
    if role == "auditor":
        return Decision(False, "los auditores consultan la bitácora, no el expediente")
    return Decision(False, f"rol sin permisos: {role or 'ninguno'}")


def _decide_audit_trail(principal: Principal, access: Access) -> Decision:
    """The audit trail: auditors and administrators read it all; a patient reads who accessed
    their own record; nobody writes it through the API."""
    if access.action not in READS:
        return Decision(False, "la bitácora de auditoría solo la escribe el servidor")
    if principal.role in ("auditor", "administrator"):
        return Decision(True, f"rol {principal.role}: consulta de la bitácora")
    if principal.role == "patient" and principal.patient_id is not None and access.patient_key == principal.patient_id:
        return Decision(True, "el paciente consulta quién accedió a su expediente")
    return Decision(False, "solo auditores, administradores y el propio paciente consultan la bitácora")


class AccessGate:
    def __init__(self, audit: AuditWriter):
        self._audit = audit

    def authorize(self, principal: Principal, access: Access, *, source: str | None = None) -> None:
        """Decide and record; raise FhirError(403) when denied (503 if it cannot be recorded)."""
        decision, entry = self._decide(principal, access, source)
        try:
            self._audit.record(entry)
        except AuditUnavailable:
            raise _unrecorded() from None
        if not decision.allowed:
            raise _forbidden(decision)

    def authorize_in(
        self, conn: sa.Connection, principal: Principal, *accesses: Access, source: str | None = None
    ) -> FhirError | None:
        """Decide and record inside the caller's write transaction, so a change and its audit
        entries commit together. Returns the error to raise once the transaction (holding the
        denied entry and no change) has committed, or None when every access is allowed."""
        decided = [self._decide(principal, access, source) for access in accesses]
        AuditWriter.record_in(conn, [entry for _, entry in decided])
        denied = next((decision for decision, _ in decided if not decision.allowed), None)
        return None if denied is None else _forbidden(denied)

    @staticmethod
    def _decide(principal: Principal, access: Access, source: str | None) -> tuple[Decision, AuditEntry]:
        decision = decide(principal, access)
        return decision, AuditEntry(
            actor=principal.subject,
            role=principal.role,
            action=access.action,
            res_type=access.res_type,
            res_id=access.res_id,
            patient_key=access.patient_key,
            outcome="allowed" if decision.allowed else "denied",
            reason=decision.reason[:255],
            source=source,
        )


def _forbidden(decision: Decision) -> FhirError:
    return FhirError.of(403, f"Acceso denegado: {decision.reason}", "forbidden")


def _unrecorded() -> FhirError:
    return FhirError.of(503, "No se pudo registrar el acceso en la bitácora; la operación se rechazó", "transient")
