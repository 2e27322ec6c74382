"""The access policy: what each role may do to each resource type, and which rows it may see.

Two layers, decided together by ``security.access.AccessGate``:

- ``type_decision``: the role (and the token's SMART scopes) against the action and the type.
  A denial here says nothing about any resource, so it is answered ``403``.
- ``RowRule``: which rows of patient data the caller may see, as a SQL condition over a row's
  ``(res_type, res_id, patient_key)``. Searches put it inside the query (so paging, totals,
  includes, chains and ``_has`` only ever see allowed rows); reads evaluate it on the one row
  (so a forbidden resource answers exactly like a missing one).

Row rules by role:

- clinicians (physician, nurse, radiologist, imaging technician) see a patient's record when a
  care relationship links them to the patient: an Encounter, EpisodeOfCare, CareTeam or
  ServiceRequest (referral) naming their Practitioner, or naming their institution (the
  Organization whose CLUES identifier is on their account; see ``security/care.py``); and unless the patient's active
  Consent denies them (their institution, themselves, or everyone) all the record or a
  labelled category of it (``meta.security``, e.g. mental health). Resources outside any
  patient compartment (practitioners, organizations, medications) are not patient data.
- break-the-glass: a clinician who states an emergency reason sees the record regardless of
  relationship and consent; the access is allowed, flagged (purpose BTG) and listed for review.
- patient: only their own compartment, plus the directory (practitioners, organizations...).
- one person, several records: a care relationship with any record of a person (the master
  patient index links IMSS's, ISSSTE's and IMSS-Bienestar's records, ``person_link``) opens
  all of them; a patient sees all their records. Each record keeps its own consents.
- system (an institution's OAuth2 client, SMART backend services): every patient, minus the
  consents that deny its institution.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from expediente.db.schema import care_link, consent_directive, idx_token, person_link
from expediente.fhir.resource_types import SERVED
from expediente.mx.systems import CLUES_SYSTEM
from expediente.ops.metrics import POLICY_SECONDS
from expediente.security.principal import Principal
from expediente.security.scopes import ACTION_LETTER, ROLE_DEFAULT_SCOPES, granting_contexts, parse_scopes

READS = frozenset({"read", "vread", "history", "search", "everything"})
WRITES = frozenset({"create", "update", "delete"})
# Physical removal of a patient's record once its retention is over (records/retention.py).
PURGE = "purge"

# Not patient data: who and where care is given, and what is given.
DIRECTORY = frozenset({"Practitioner", "PractitionerRole", "Organization", "Location", "Medication"})
CLINICAL = SERVED - DIRECTORY - {"AuditEvent"}
CLINICIANS = frozenset({"physician", "nurse", "radiologist", "imaging_technician"})

_READ_ALL = SERVED - {"AuditEvent"}
_IMAGING = frozenset({"ImagingStudy", "DiagnosticReport", "Observation", "Procedure", "DocumentReference", "Binary"})

# role -> (types it may read, types it may write). Rows are then narrowed by RowRule.
ROLE_TYPES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "physician": (_READ_ALL, CLINICAL),
    # Nurses record care but do not prescribe (recetas are a physician's act).
    "nurse": (_READ_ALL, CLINICAL - {"MedicationRequest"}),
    "radiologist": (_READ_ALL, _IMAGING | {"Composition", "Provenance", "ServiceRequest"}),
    "imaging_technician": (
        DIRECTORY | {"Patient", "Encounter", "ServiceRequest", "ImagingStudy", "Procedure", "Binary"},
        frozenset({"ImagingStudy", "Procedure", "Binary"}),
    ),
    "system": (_READ_ALL, SERVED - {"AuditEvent"}),
    # A patient reads their record and records their own consent (give or withdraw).
    "patient": (_READ_ALL, frozenset({"Consent"})),
    # Institution IT: the directory, not the clinical record.
    "administrator": (DIRECTORY, DIRECTORY),
    "auditor": (frozenset(), frozenset()),
    "researcher": (frozenset(), frozenset()),
}

_REFUSALS = {
    "researcher": "los investigadores solo acceden a datos desidentificados del banco de investigación",
    "auditor": "los auditores consultan la bitácora, no el expediente",
    "administrator": "los administradores gestionan el directorio institucional, no el expediente clínico",
}


@dataclass(frozen=True, slots=True)
class TypeDecision:
    allowed: bool
    reason: str
    # Scopes grant this only in the patient context: rows must be the token's own patient.
    patient_context_only: bool = False


def type_decision(principal: Principal, action: str, res_type: str | None) -> TypeDecision:
    """May this role, with this token's scopes, do ``action`` on ``res_type`` at all?"""
    role = principal.role
    if action == PURGE and (role != "system" or res_type != "Patient"):
        return TypeDecision(False, "solo la cuenta de sistema de la institución puede depurar un expediente (Patient/$purge)")
    readable, writable = ROLE_TYPES.get(role, (frozenset(), frozenset()))
    if res_type is None:  # system-wide history: every type the role reads
        allowed = bool(readable) and action in READS
    else:
        allowed = res_type in (readable if action in READS else writable)
    if not allowed:
        if role in _REFUSALS:
            return TypeDecision(False, _REFUSALS[role])
        if role not in ROLE_TYPES:
            return TypeDecision(False, f"rol sin permisos: {role or 'ninguno'}")
        verb = "consultar" if action in READS else "modificar"
        return TypeDecision(False, f"el rol {role} no puede {verb} {res_type or 'todo el servidor'}")
    scopes = parse_scopes(principal.scopes if principal.scopes is not None else ROLE_DEFAULT_SCOPES.get(role, ()))
    contexts = granting_contexts(scopes, res_type or "*", ACTION_LETTER.get(action, "r"))
    if not contexts:
        return TypeDecision(False, f"el token no incluye un alcance (scope) que permita {action} sobre {res_type or '*'}")
    return TypeDecision(True, f"rol {role}", patient_context_only=contexts == {"patient"})


def readable_types(principal: Principal, action: str = "search") -> frozenset[str]:
    """Every type this caller may read (``$everything`` and system history are limited to them)."""
    return frozenset(t for t in SERVED if type_decision(principal, action, t).allowed)


# --------------------------------------------------------------------------------------------
# Row rules

_care = care_link.alias("policy_care")
_person = person_link.alias("policy_person")
_org = idx_token.alias("policy_org")
_label = idx_token.alias("policy_label")
_deny = consent_directive.alias("policy_deny")
_deny_label = consent_directive.alias("policy_deny_label")


@dataclass(frozen=True, slots=True)
class RowRule:
    """Which rows of patient data a caller may see. ``kind``: ``all`` (no restriction), ``care``
    (relationship and consent), ``institution`` (consent only), ``own`` (one patient)."""

    kind: str
    practitioner_id: str | None = None
    clues: str | None = None
    patient_id: str | None = None

    @property
    def unrestricted(self) -> bool:
        return self.kind == "all"

    @property
    def shape(self) -> tuple:
        """What the condition's SQL depends on; its values are bound parameters (``params``),
        so a statement built for one caller serves every caller of the same shape."""
        return self.kind, bool(self.practitioner_id), bool(self.clues)

    def params(self) -> dict:
        """The bound values of the condition (the clock included: consents have periods)."""
        return {
            "policy_practitioner": self.practitioner_id,
            "policy_clues": self.clues,
            "policy_patient": self.patient_id,
            "policy_now": datetime.now(UTC).replace(tzinfo=None),
        }

    def _bound(self, name: str, value):
        return sa.bindparam(f"policy_{name}", value, type_=sa.DateTime() if name == "now" else sa.String())

    def visible(self, res_type: sa.ColumnElement, res_id: sa.ColumnElement, patient_key: sa.ColumnElement) -> sa.ColumnElement[bool] | None:
        """The SQL condition a row must meet, or None when every row is visible."""
        start = time.perf_counter()
        try:
            return self._condition(res_type, res_id, patient_key)
        finally:
            POLICY_SECONDS.inc(time.perf_counter() - start)  # building it is the policy's time

    def _condition(self, res_type, res_id, patient_key) -> sa.ColumnElement[bool] | None:
        if self.kind == "all":
            return None
        if self.kind == "own":
            own = self._bound("patient", self.patient_id)
            # The patient's other records (other institutions'), through the MPI's links.
            mine = sa.or_(patient_key == own, patient_key.in_(sa.select(_person.c.linked_key).where(_person.c.patient_key == own)))
            return sa.or_(mine, sa.and_(patient_key.is_(None), res_type.in_(sorted(DIRECTORY))))
        consented = self._consented(res_type, res_id, patient_key)
        if self.kind == "institution":
            return consented
        return sa.and_(sa.or_(patient_key.is_(None), self._in_care(patient_key)), consented)

    def _org_ids(self) -> sa.Select:
        """The ids of the Organizations that carry the caller's CLUES."""
        return sa.select(_org.c.res_id).where(
            _org.c.res_type == "Organization", _org.c.param == "identifier", _org.c.code == self._bound("clues", self.clues), _org.c.system == CLUES_SYSTEM
        )

    def names_caller(self, conn: sa.Connection, references: tuple[tuple[str, str], ...]) -> bool:
        """Whether (actor type, actor id) ``references`` name this clinician or their institution
        (a care relationship they are opening)."""
        if self.practitioner_id and ("Practitioner", self.practitioner_id) in references:
            return True
        orgs = sorted({rid for rtype, rid in references if rtype == "Organization"})
        if not (orgs and self.clues):
            return False
        query = self._org_ids().where(_org.c.res_id.in_(orgs)).limit(1)
        return conn.execute(query).first() is not None

    def _in_care(self, patient_key: sa.ColumnElement) -> sa.ColumnElement[bool]:
        """A care relationship links this clinician, or their institution, to the patient or to
        another record of the same person (MPI links): a physician caring for the ISSSTE record
        sees what IMSS recorded. One index seek per actor kind, plus one per linked record."""
        actors = []
        if self.practitioner_id:
            actors.append(
                lambda care: sa.and_(care.c.actor_id == self._bound("practitioner", self.practitioner_id), care.c.actor_type == "Practitioner")
            )
        if self.clues:
            actors.append(lambda care: sa.and_(care.c.actor_id.in_(self._org_ids()), care.c.actor_type == "Organization"))
        if not actors:
            return sa.false()
        direct = [sa.select(sa.literal(1)).where(actor(_care), _care.c.patient_key == patient_key).exists() for actor in actors]
        through_links = (
            sa.select(sa.literal(1))
            .select_from(_person.join(_care, _care.c.patient_key == _person.c.linked_key))
            .where(_person.c.patient_key == patient_key, sa.or_(*(actor(_care) for actor in actors)))
            .exists()
        )
        return sa.or_(*direct, through_links)

    def _actor(self, d) -> sa.ColumnElement[bool]:
        """A consent directive that names this caller (or everyone)."""
        options = [d.c.actor_id.is_(None)]
        if self.practitioner_id:
            options.append(sa.and_(d.c.actor_type == "Practitioner", d.c.actor_id == self._bound("practitioner", self.practitioner_id)))
        if self.clues:
            options.append(sa.and_(d.c.actor_type == "Organization", d.c.actor_id.in_(self._org_ids())))
        now = self._bound("now", datetime.now(UTC).replace(tzinfo=None))
        in_force = sa.and_(sa.or_(d.c.period_low.is_(None), d.c.period_low <= now), sa.or_(d.c.period_high.is_(None), d.c.period_high >= now))
        return sa.and_(sa.or_(*options), in_force)

    def _consented(self, res_type, res_id, patient_key) -> sa.ColumnElement[bool]:
        denied_all = sa.select(_deny.c.patient_key).where(_deny.c.label_code.is_(None), _deny.c.patient_key.is_not(None), self._actor(_deny))
        # Driven from the patient's label rules (almost always none: one index seek), then
        # the resource's own security labels.
        denied_label = (
            sa.select(sa.literal(1))
            .select_from(_deny_label)
            .join(
                _label,
                sa.and_(
                    _label.c.res_type == res_type,
                    _label.c.res_id == res_id,
                    _label.c.param == "_security",
                    _label.c.code == _deny_label.c.label_code,
                ),
            )
            .where(
                _deny_label.c.patient_key == patient_key,
                _deny_label.c.label_code.is_not(None),
                sa.or_(_deny_label.c.label_system.is_(None), _deny_label.c.label_system == _label.c.system),
                self._actor(_deny_label),
            )
            .exists()
        )
        return sa.or_(patient_key.is_(None), sa.and_(patient_key.notin_(denied_all), sa.not_(denied_label)))


def row_rule(principal: Principal, *, emergency: bool = False, patient_context_only: bool = False) -> RowRule:
    """The rows this caller may see (``emergency``: break-the-glass, already checked allowed)."""
    role = principal.role
    if role == "patient" or patient_context_only:
        return RowRule("own", patient_id=principal.patient_id or "")
    if role in CLINICIANS:
        if emergency:
            return RowRule("all")
        return RowRule("care", practitioner_id=_ref_id(principal.practitioner_ref, "Practitioner"), clues=principal.organization)
    if role == "system":
        return RowRule("institution", clues=principal.organization) if principal.organization else RowRule("all")
    # Roles that read no patient data see only the directory (their type rules stop the rest).
    return RowRule("own", patient_id="")


def _ref_id(ref: str | None, res_type: str) -> str | None:
    if ref and ref.startswith(res_type + "/"):
        return ref.split("/", 1)[1] or None
    return None


def may_break_glass(principal: Principal) -> bool:
    return principal.role in CLINICIANS and principal.kind == "person"
