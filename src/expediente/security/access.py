"""The one place where every access to patient data is decided and recorded.

Every read, search, write and operation asks the ``AccessGate`` with who is asking and what
they touch (type, id, the patient compartment). The policy (``security/policy.py``) decides
in two layers: the role and scopes against the type (a denial is ``403``), then the rows the
caller may see (care relationship, consent, the patient's own record). A row the caller may
not see is answered exactly like a missing one (``404``), so guessing ids reveals nothing.
The decision and the audit entry happen together: a denied access is recorded and refused;
an allowed one proceeds only once its entry is stored (fail closed). Searches are recorded
once their page is known, with the ids they return.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import sqlalchemy as sa

from expediente.fhir import errors
from expediente.fhir.errors import FhirError
from expediente.ops.metrics import AUDIT_SECONDS, POLICY_SECONDS
from expediente.security import policy
from expediente.security.care import CARE_TYPES
from expediente.security.audit import AuditEntry, AuditUnavailable, AuditWriter
from expediente.security.policy import READS, WRITES, RowRule  # noqa: F401 - re-exported
from expediente.security.principal import Principal

BREAK_GLASS = "BTG"


@dataclass(frozen=True, slots=True)
class Access:
    action: str  # read | vread | history | search | everything | create | update | delete
    res_type: str | None
    res_id: str | None = None
    patient_key: str | None = None
    # Reads: whether the row meets the caller's row rule (the store evaluates it in SQL).
    visible: bool = True
    # Writes of care-opening types: the (actor type, actor id) the new content links to the patient.
    references: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    hidden: bool = False  # denied because of the row: answer as if it did not exist
    purpose: str | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """An allowed type-level decision for reads, with the rows the caller may see."""

    principal: Principal
    rule: RowRule
    purpose: str | None
    emergency: str | None

    def visible(self, res_type, res_id, patient_key) -> sa.ColumnElement[bool] | None:
        return self.rule.visible(res_type, res_id, patient_key)


def decide(principal: Principal, access: Access, emergency: str | None = None) -> Decision:
    """The decision for one access whose row visibility is already known (``access.visible``)."""
    if access.res_type == "AuditEvent":
        return _decide_audit_trail(principal, access)
    if emergency is not None and not policy.may_break_glass(principal):
        return Decision(False, "solo el personal clínico puede usar el acceso de emergencia")
    by_type = policy.type_decision(principal, access.action, access.res_type)
    if not by_type.allowed:
        return Decision(False, by_type.reason)
    purpose = BREAK_GLASS if emergency is not None else None
    if not access.visible:
        return Decision(False, _hidden_reason(principal), hidden=True)
    if purpose:
        return Decision(True, f"acceso de emergencia: {emergency}", purpose=purpose)
    return Decision(True, by_type.reason)


def _hidden_reason(principal: Principal) -> str:
    if principal.role == "patient":
        return "un paciente solo puede consultar su propio expediente"
    if principal.role in policy.CLINICIANS:
        return "sin relación de atención con el paciente, o el consentimiento del paciente lo impide"
    return "el consentimiento del paciente impide el acceso"


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


def _timed(method):
    """Account the gate's time: the audit append apart (``_audit_seconds``), the rest is the
    policy decision. Exported as metrics, read by the benchmarks."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        start = time.perf_counter()
        before = _AUDIT_CLOCK.seconds
        try:
            return method(self, *args, **kwargs)
        finally:
            audit = _AUDIT_CLOCK.seconds - before
            POLICY_SECONDS.inc(max(time.perf_counter() - start - audit, 0.0))
            AUDIT_SECONDS.inc(audit)

    return wrapper


class _AuditClock:
    """Seconds spent appending audit entries in this thread (threads serve requests)."""

    def __init__(self):
        import threading

        self._local = threading.local()

    @property
    def seconds(self) -> float:
        return getattr(self._local, "seconds", 0.0)

    def add(self, seconds: float) -> None:
        self._local.seconds = self.seconds + seconds


_AUDIT_CLOCK = _AuditClock()


@contextmanager
def _appending(outside_gate: bool = False) -> Iterator[None]:
    """An audit append: its time is the gate's audit share (counted straight into the metric
    when it runs after the gate's call returned), and a trail that cannot write is a 503."""
    start = time.perf_counter()
    try:
        yield
    except AuditUnavailable:
        raise _unrecorded() from None
    finally:
        spent = time.perf_counter() - start
        if outside_gate:
            AUDIT_SECONDS.inc(spent)
        else:
            _AUDIT_CLOCK.add(spent)


class AccessGate:
    def __init__(self, audit: AuditWriter):
        self._audit = audit

    # ------------------------------------------------------------------ reads

    @_timed
    def grant(self, principal: Principal, action: str, res_type: str | None, *, source=None, emergency=None) -> Grant:
        """The type-level decision of a read, with the caller's row rule. A denial is recorded
        and raised (403); an allowed read is recorded later with ``record`` (what it returned)."""
        probe = Access(action, res_type)
        decision = decide(principal, probe, emergency)
        if not decision.allowed:
            self._record(self._entry(principal, probe, decision, source))
            raise _error(decision, probe)
        if res_type == "AuditEvent":  # the audit trail's own rules; its rows are not patient data
            return Grant(principal, RowRule("all"), None, None)
        return Grant(principal, self.row_rule(principal, action, res_type, emergency=emergency), decision.purpose, emergency)

    @_timed
    def record(self, grant: Grant, access: Access, *, source=None, entities: tuple[str, ...] = ()) -> None:
        """Record a read decided under ``grant`` (``access.visible`` says whether its row was
        visible); raise 404 for a hidden row, 503 when the entry cannot be stored."""
        decision = decide(grant.principal, access, grant.emergency)
        self._record(self._entry(grant.principal, access, decision, source, entities))
        if not decision.allowed:
            raise _error(decision, access)

    @_timed
    def record_pending(self, grant: Grant, access: Access, *, source=None, entities: tuple[str, ...] = ()) -> Callable[[], None]:
        """``record``, split in two so the read can be done while its entry commits: the entry
        is queued now, and the function returned waits for it (raising 503 when it could not
        be stored, then 404 for a hidden row). Nothing read may be answered before it returns."""
        decision = decide(grant.principal, access, grant.emergency)
        with _appending():
            pending = self._audit.submit([self._entry(grant.principal, access, decision, source, entities)])

        def wait() -> None:
            with _appending(outside_gate=True):
                self._audit.wait(pending)
            if not decision.allowed:
                raise _error(decision, access)

        return wait

    @_timed
    def record_all(self, grant: Grant, accesses: list[tuple[Access, tuple[str, ...]]], *, source=None) -> None:
        """Record several allowed accesses decided under ``grant``, one entry each, in one
        commit; raise 503 when they cannot be stored."""
        if accesses:
            self._record(*(self._entry(grant.principal, a, decide(grant.principal, a, grant.emergency), source, e) for a, e in accesses))

    @_timed
    def authorize(self, principal: Principal, access: Access, *, source: str | None = None, emergency: str | None = None) -> None:
        """Decide and record one access whose row visibility is known; raise when denied."""
        decision = decide(principal, access, emergency)
        self._record(self._entry(principal, access, decision, source))
        if not decision.allowed:
            raise _error(decision, access)

    # ----------------------------------------------------------------- writes

    @_timed
    def authorize_in(
        self,
        conn: sa.Connection,
        principal: Principal,
        *accesses: Access,
        source: str | None = None,
        emergency: str | None = None,
    ) -> FhirError | None:
        """Decide and record inside the caller's write transaction, so a change and its audit
        entries commit together. Row visibility is evaluated here on ``conn`` (seeing the
        transaction's earlier writes). Returns the error to raise once the transaction (holding
        the denied entry and no change) has committed, or None when every access is allowed."""
        decided = []
        for access in accesses:
            access = self._with_visibility(conn, principal, access, emergency)
            decided.append((access, decide(principal, access, emergency)))
        start = time.perf_counter()
        AuditWriter.record_in(conn, [self._entry(principal, a, d, source) for a, d in decided])
        _AUDIT_CLOCK.add(time.perf_counter() - start)
        denied = next(((a, d) for a, d in decided if not d.allowed), None)
        return None if denied is None else _error(denied[1], denied[0], write=denied[0].action in WRITES)

    @staticmethod
    def row_rule(principal: Principal, action: str, res_type: str | None, *, emergency: str | None = None) -> RowRule:
        """The rows of ``res_type`` this caller may see for ``action`` (type-level allowed)."""
        by_type = policy.type_decision(principal, action, res_type)
        return policy.row_rule(principal, emergency=emergency is not None, patient_context_only=by_type.patient_context_only)

    def _with_visibility(self, conn: sa.Connection, principal: Principal, access: Access, emergency: str | None) -> Access:
        if access.res_type == "AuditEvent" or access.patient_key is None or not access.visible:
            return access
        if not policy.type_decision(principal, access.action, access.res_type).allowed:
            return access
        rule = self.row_rule(principal, access.action, access.res_type, emergency=emergency)
        if rule.unrestricted or self._opens_care(conn, rule, access):
            return access
        cond = rule.visible(sa.literal(access.res_type), sa.literal(access.res_id or ""), sa.literal(access.patient_key))
        visible = bool(conn.execute(sa.select(sa.case((cond, 1), else_=0))).scalar())
        return access if visible else replace(access, visible=False)

    @staticmethod
    def _opens_care(conn: sa.Connection, rule: RowRule, access: Access) -> bool:
        """A clinician registering a new patient, or writing the encounter, episode, care team
        or referral that links them (or their institution) to the patient: care starts here."""
        if rule.kind != "care":
            return False
        if access.action == "create" and access.res_type == "Patient":
            return True
        if access.action not in ("create", "update") or access.res_type not in CARE_TYPES:
            return False
        return rule.names_caller(conn, access.references)

    # ----------------------------------------------------------------- common

    def _record(self, entry: AuditEntry, *more: AuditEntry) -> None:
        with _appending():
            if more:
                self._audit.record_many([entry, *more])  # one commit for all
            else:
                self._audit.record(entry)

    @staticmethod
    def _entry(principal: Principal, access: Access, decision: Decision, source, entities: tuple[str, ...] = ()) -> AuditEntry:
        return AuditEntry(
            actor=principal.subject,
            role=principal.role,
            action=access.action,
            res_type=access.res_type,
            res_id=access.res_id,
            patient_key=access.patient_key,
            outcome="allowed" if decision.allowed else "denied",
            reason=decision.reason[:255],
            source=source,
            entities=entities,
            purpose=decision.purpose,
        )


def _error(decision: Decision, access: Access, *, write: bool = False) -> FhirError:
    if decision.hidden and not write and access.res_type and access.res_id:
        return errors.not_found(access.res_type, access.res_id)
    if decision.hidden:
        return FhirError.of(403, "Acceso denegado: no tiene acceso a este recurso o a este expediente", "forbidden")
    return FhirError.of(403, f"Acceso denegado: {decision.reason}", "forbidden")


def _unrecorded() -> FhirError:
    return FhirError.of(503, "No se pudo registrar el acceso en la bitácora; la operación se rechazó", "transient")
