"""AuditEvent search, straight on ``audit_log`` (the trail is not in the FHIR index tables).

Parameters (repeat one to AND, separate values with commas to OR): ``patient`` (Patient/id or
id), ``agent`` (user name), ``date`` (eq/ge/gt/le/lt, partial dates; a date without a zone is
UTC), ``action`` (C/R/U/D/E), ``subtype`` (restful-interaction code, or 110122 for logins),
``outcome`` (0/4/8/12), ``entity`` (Type/id: the patient, the resource named or one returned),
``purpose`` (v3-ActReason, e.g. BTG for the break-the-glass review list), ``_count`` and the
``_cursor`` of next links. Newest first by seq, paged by keyset. Anything else is a 400.
"""

from __future__ import annotations

import re
from calendar import monthrange
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from expediente.db.schema import audit_log
from expediente.fhir.errors import bad_request
from expediente.security.audit_events import ACT_REASON, DCM, DEFAULT_PURPOSE, RESTFUL, ROLE_PURPOSE

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_REF = re.compile(r"([A-Z][A-Za-z]{0,39})/([A-Za-z0-9\-.]{1,64})")
_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only: str.isdigit() also accepts "²"
_MAX_SEQ = 2**63 - 1
_MAX_VALUES = 100
c = audit_log.c

ACTIONS = {
    "C": ("create",),
    "R": ("read", "vread", "history"),
    "U": ("update",),
    "D": ("delete",),
    "E": ("search", "everything", "login"),
}
OUTCOMES = {"0": ("allowed",), "4": ("denied",), "8": ("failed",), "12": ()}
SUBTYPES = {
    "read": c.action == "read",
    "vread": c.action == "vread",
    "create": c.action == "create",
    "update": c.action == "update",
    "delete": c.action == "delete",
    "history-instance": sa.and_(c.action == "history", c.res_id.is_not(None)),
    "history-type": sa.and_(c.action == "history", c.res_id.is_(None), c.res_type.is_not(None)),
    "history-system": sa.and_(c.action == "history", c.res_type.is_(None)),
    "search-type": sa.and_(c.action == "search", c.res_type.is_not(None)),
    "search-system": sa.and_(c.action == "search", c.res_type.is_(None)),
    "operation": c.action == "everything",
}
LOGIN_SUBTYPE = "110122"
PARAMETERS = ("patient", "agent", "date", "action", "subtype", "outcome", "entity", "purpose", "_count", "_cursor")


@dataclass
class AuditQuery:
    conditions: list = field(default_factory=list)
    count: int = 50
    before_seq: int | None = None  # keyset cursor: entries older than this one
    patient: str | None = None  # the one patient the search is restricted to, for the access decision
    used: list[tuple[str, str]] = field(default_factory=list)  # for self and next links


def parse(params: list[tuple[str, str]], *, default_count: int, max_count: int) -> AuditQuery:
    query = AuditQuery(count=default_count)
    patients: list[list[str]] = []
    for name, value in params:
        if name not in PARAMETERS:
            raise bad_request(
                f"Parámetro de búsqueda no soportado en AuditEvent: '{name[:60]}'. Se admiten: {', '.join(PARAMETERS)}",
                code="not-supported",
            )
        if name == "_count":
            if not _DIGITS.fullmatch(value) or len(value) > 6:
                raise bad_request(f"_count inválido: '{value[:20]}' (se espera un entero no negativo)")
            query.count = min(int(value), max_count)
        elif name == "_cursor":
            if not _DIGITS.fullmatch(value) or int(value) > _MAX_SEQ:
                raise bad_request("_cursor inválido; use el enlace 'next' de la página anterior")
            query.before_seq = int(value)
            continue  # not part of the self link
        else:
            values = _values(name, value)
            if name == "patient":
                patients.append([_patient_id(v) for v in values])
                query.conditions.append(c.patient_key.in_(patients[-1]))
            else:
                query.conditions.append(sa.or_(*(_CONDITIONS[name](v) for v in values)))
        query.used.append((name, value))
    if len(patients) == 1 and len(patients[0]) == 1:
        query.patient = patients[0][0]
    return query


def parse_seq(text: str) -> int | None:
    """An AuditEvent id as a seq, or None when it cannot be one."""
    return int(text) if _DIGITS.fullmatch(text) and int(text) <= _MAX_SEQ else None


def statement(query: AuditQuery) -> sa.Select:
    """The page: one more row than asked, to tell whether there is a next page."""
    conditions = list(query.conditions)
    if query.before_seq is not None:
        conditions.append(c.seq < query.before_seq)
    return sa.select(audit_log).where(*conditions).order_by(c.seq.desc()).limit(query.count + 1)


def _values(name: str, value: str) -> list[str]:
    values = [v.strip() for v in value.split(",")]
    if not value or any(not v for v in values):
        raise bad_request(f"Valor vacío en el parámetro '{name}'")
    if len(values) > _MAX_VALUES or len(value) > 4000:
        raise bad_request(f"Demasiados valores en el parámetro '{name}' (máximo {_MAX_VALUES})")
    return values


def _patient_id(value: str) -> str:
    res_id = value.removeprefix("Patient/")
    if not _ID.fullmatch(res_id):
        raise bad_request(f"patient inválido: '{value[:80]}' (se espera Patient/<id> o el id del paciente)")
    return res_id


def _agent(value: str):
    if len(value) > 128:
        raise bad_request("agent inválido: el nombre de usuario tiene más de 128 caracteres")
    return c.actor == value


def _action(value: str):
    if value not in ACTIONS:
        raise bad_request(f"action inválido: '{value[:20]}' (se espera C, R, U, D o E)")
    return c.action.in_(ACTIONS[value])


def _outcome(value: str):
    if value not in OUTCOMES:
        raise bad_request(f"outcome inválido: '{value[:20]}' (se espera 0, 4, 8 o 12)")
    return c.outcome.in_(OUTCOMES[value]) if OUTCOMES[value] else sa.false()


def _coded(name: str, value: str, system: str) -> str:
    """The code of ``code`` or ``system|code``; another system is an error."""
    if "|" not in value:
        return value
    given, code = value.split("|", 1)
    if given and given != system:
        raise bad_request(f"{name}: sistema de códigos no soportado '{given[:120]}' (se espera {system})")
    return code


def _subtype(value: str):
    if value.split("|")[-1] == LOGIN_SUBTYPE:
        _coded("subtype", value, DCM)
        return c.action == "login"
    code = _coded("subtype", value, RESTFUL)
    if code not in SUBTYPES:
        raise bad_request(f"subtype inválido: '{value[:60]}' (se espera un código de {RESTFUL}: {', '.join(SUBTYPES)}; o {LOGIN_SUBTYPE})")
    return SUBTYPES[code]


def _entity(value: str):
    match = _REF.fullmatch(value)
    if not match:
        raise bad_request(f"entity inválido: '{value[:80]}' (se espera Tipo/id, p. ej. Observation/123)")
    res_type, res_id = match.groups()
    # Ids and types hold no LIKE wildcards or quotes (checked above): the pattern is exact.
    named = sa.and_(c.res_type == res_type, c.res_id == res_id)
    options = [named, c.entities.like(f'%"{value}"%')]
    if res_type == "Patient":
        options.append(c.patient_key == res_id)
    return sa.or_(*options)


def _purpose(value: str):
    code = _coded("purpose", value, ACT_REASON).upper()
    if not re.fullmatch(r"[A-Z]{2,16}", code):
        raise bad_request(f"purpose inválido: '{value[:40]}' (se espera un código de {ACT_REASON}, p. ej. BTG)")
    # Entries without a stored purpose show one derived from the role (audit_events.purpose_code).
    roles = [role for role, purpose in ROLE_PURPOSE.items() if purpose == code]
    derived = c.role.in_(roles) if roles else None
    if code == DEFAULT_PURPOSE:
        derived = sa.or_(c.role.is_(None), c.role.not_in(list(ROLE_PURPOSE)))
    stored = c.purpose == code
    if derived is None:
        return stored
    return sa.or_(stored, sa.and_(c.purpose.is_(None), c.action != "login", derived))


def _date(value: str):
    prefix, text = (value[:2], value[2:]) if value[:2].isalpha() else ("eq", value)
    low, high = date_range(text)
    match prefix:
        case "eq":
            return sa.and_(c.recorded >= low, c.recorded <= high)
        case "ge":
            return c.recorded >= low
        case "gt":
            return c.recorded > high
        case "le":
            return c.recorded <= high
        case "lt":
            return c.recorded < low
    raise bad_request(f"Prefijo de fecha no soportado en AuditEvent: '{prefix}' (se admiten eq, ge, gt, le, lt)", code="not-supported")


def date_range(text: str) -> tuple[datetime, datetime]:
    """The inclusive range of naive-UTC instants a (partial) FHIR date or dateTime covers."""
    match = _DATE.fullmatch(text)
    if not match:
        raise bad_request(f"Fecha inválida: '{text[:40]}' (se espera AAAA, AAAA-MM, AAAA-MM-DD o AAAA-MM-DDThh:mm:ssZ)")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        if month is None:
            low = datetime(int(year), 1, 1)
            high = datetime(int(year) + 1, 1, 1) if int(year) < 9999 else datetime.max
        elif day is None:
            low = datetime(int(year), int(month), 1)
            high = low + timedelta(days=monthrange(low.year, low.month)[1])
        elif hour is None:
            low = datetime(int(year), int(month), int(day))
            high = low + timedelta(days=1)
        else:
            micro = int((fraction or ".0")[1:].ljust(6, "0"))
            low = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micro)
            if zone and zone != "Z":
                sign = 1 if zone[0] == "+" else -1
                low -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
            step = timedelta(microseconds=1) if fraction else (timedelta(seconds=1) if second else timedelta(minutes=1))
            high = low + step
    except (ValueError, OverflowError):
        raise bad_request(f"Fecha inválida: '{text[:40]}' (fuera del calendario)") from None
    return low, (high if high == datetime.max else high - timedelta(microseconds=1))


_CONDITIONS = {
    "agent": _agent,
    "date": _date,
    "action": _action,
    "subtype": _subtype,
    "outcome": _outcome,
    "entity": _entity,
    "purpose": _purpose,
}

