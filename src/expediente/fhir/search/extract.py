"""Search-index values of a resource, computed on every write.

``extract_index(resource)`` evaluates every search parameter of the resource's type (from the
registry) and turns the values into rows for the index tables of
``expediente.db.schema.INDEX_TABLES``; ``patient_key(resource)`` gives the Patient compartment
the resource belongs to. Both are pure functions of the JSON (no database access).

Row shapes (the store adds ``res_type``, ``res_id`` and ``patient_key``):

- token: ``param, system, code, text_norm, type_system, type_code`` (the last two: an
  Identifier's type coding, one row per type coding)
- string: ``param, value_norm, value_exact``
- reference: ``param, target_type, target_id, url``
- date: ``param, low, high`` (naive UTC datetimes, inclusive; ``None`` = open)
- number: ``param, value``
- quantity: ``param, value, system, code``
- uri: ``param, uri``
- composite: ``param, system1, code1, system2, code2, value2, low2, high2``: one row per
  combination of component values taken from the same element (see ``_composite_rows``)

``_id`` and ``_lastUpdated`` are not indexed: they are the ``res_id`` and ``last_updated``
columns of the ``resource`` table. Special parameters (``near``) are not indexed.
"""

from __future__ import annotations

import calendar
import functools
import logging
import re
import unicodedata
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from expediente.db.schema import INDEX_TABLES
from expediente.fhir.search.fhirpath import FHIRPathError, compile_expression, parse_reference, split_union
from expediente.fhir.search.registry import choice_elements, compartment_params, params_for
from expediente.mpi.person import person_rows
from expediente.security.care import CARE_TYPES, care_rows

__all__ = [
    "extract_index",
    "patient_key",
    "normalize_text",
    "date_range",
    "reference_parts",
    "unsupported_params",
    "INDEX_COLUMNS",
    "RESOURCE_COLUMN_PARAMS",
    "column_length",
]

log = logging.getLogger(__name__)

# Value columns of each index table, in row-tuple order (after ``param``).
INDEX_COLUMNS: dict[str, tuple[str, ...]] = {
    "token": ("system", "code", "text_norm", "type_system", "type_code"),
    "string": ("value_norm", "value_exact"),
    "reference": ("target_type", "target_id", "url"),
    "date": ("low", "high"),
    "number": ("value",),
    "quantity": ("value", "system", "code"),
    "uri": ("uri",),
    "composite": ("system1", "code1", "system2", "code2", "value2", "low2", "high2"),
    # The master patient index's rows of a Patient (mpi/index.py).
    "mpi_person": (
        "curp", "curp_other", "first_surname", "second_surname", "given", "sex", "birth_date", "birth_state", "identifiers",
    ),
    "mpi_key": ("key",),
}
_ROW_KEYS: dict[str, tuple[str, ...]] = {k: ("param",) + v for k, v in INDEX_COLUMNS.items()}

# Parameters answered from the ``resource`` table itself, never written to an index table.
RESOURCE_COLUMN_PARAMS = frozenset({"_id", "_lastUpdated"})

# Search types with no index table.
_NOT_INDEXED_TYPES = frozenset({"special"})


def column_length(kind: str, column: str) -> int | None:
    """The declared length of a String column of an index table (``None``: unbounded)."""
    return getattr(INDEX_TABLES[kind].c[column].type, "length", None)


def _len(kind: str, column: str) -> int:
    return column_length(kind, column) or 1_000_000


_TOKEN_SYSTEM = _len("token", "system")
_TOKEN_CODE = _len("token", "code")
_TOKEN_TEXT = _len("token", "text_norm")
_STRING_NORM = _len("string", "value_norm")
_STRING_EXACT = _len("string", "value_exact")
_REF_TYPE = _len("reference", "target_type")
_REF_ID = _len("reference", "target_id")
_REF_URL = _len("reference", "url")
_QTY_SYSTEM = _len("quantity", "system")
_QTY_CODE = _len("quantity", "code")
_URI = _len("uri", "uri")
_PARAM = _len("token", "param")

# --------------------------------------------------------------------------------------------
# Value normalization


def _normalize_slow(s: str) -> str:
    for _ in range(3):
        decomposed = unicodedata.normalize("NFKD", s)
        stripped = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
        if stripped == s:
            break
        s = stripped
    return " ".join(s.split())


# Latin-1 Supplement and Latin Extended-A/B letters, pre-normalized (a fast path for the
# accented letters of Spanish, Portuguese, French... names).
_LATIN_TABLE = {cp: _normalize_slow(chr(cp)) for cp in range(0xC0, 0x250)}


def normalize_text(s: str) -> str:
    """Accent-free, case-folded, whitespace-collapsed text: ``"  José  PEÑA "`` -> ``"jose pena"``.

    NFKD decomposition with combining marks removed (``ñ`` -> ``n``, ``é`` -> ``e``), then
    ``casefold``; runs of whitespace become one space, ends are stripped. Idempotent.
    """
    if not s.isascii():
        t = s.translate(_LATIN_TABLE)
        if not t.isascii():
            return _normalize_slow(s)
        s = t
    return " ".join(s.lower().split())


_DT_RE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_END_OF_DAY = (23, 59, 59, 999999)
_MICRO = timedelta(microseconds=1)


def _shift(dt: datetime, delta: timedelta) -> datetime:
    try:
        return dt + delta
    except OverflowError:
        return datetime.max if delta > timedelta(0) else datetime.min


@functools.lru_cache(maxsize=16384)
def date_range(value: str) -> tuple[datetime, datetime] | None:
    """The inclusive naive-UTC range a FHIR date/dateTime/instant covers, or ``None`` if invalid.

    ``"1990"`` -> 1990-01-01T00:00:00 .. 1990-12-31T23:59:59.999999; ``"1990-05"`` covers the
    month; ``"1990-05-04"`` the day; ``"...T10:30:00-06:00"`` the second, shifted to UTC;
    ``"...T10:30:00.5"`` 500000..599999 µs. A value without time zone is taken as UTC.
    """
    m = _DT_RE.match(value)
    if m is None:
        return None
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    try:
        year = int(y)
        if mo is None:
            return datetime(year, 1, 1), datetime(year, 12, 31, *_END_OF_DAY)
        month = int(mo)
        if d is None:
            last = calendar.monthrange(year, month)[1]
            datetime(year, month, 1)  # validates the month
            return datetime(year, month, 1), datetime(year, month, last, *_END_OF_DAY)
        day = int(d)
        if hh is None:
            return datetime(year, month, day), datetime(year, month, day, *_END_OF_DAY)
        low = datetime(year, month, day, int(hh), int(mi), int(ss or 0))
        if ss is None:
            span = timedelta(minutes=1) - _MICRO
        elif frac is None:
            span = timedelta(seconds=1) - _MICRO
        else:
            digits = frac[:6]
            low = low.replace(microsecond=int(digits.ljust(6, "0")))
            span = timedelta(microseconds=10 ** (6 - len(digits)) - 1)
    except ValueError:
        return None
    if tz and tz != "Z":
        offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
        if offset >= timedelta(hours=24):
            return None
        low = _shift(low, -offset if tz[0] == "+" else offset)
    return low, _shift(low, span)


def _clip(s: str | None, n: int) -> str | None:
    if s is None:
        return None
    return s if len(s) <= n else s[:n]


def _norm_clip(s: Any, n: int) -> str | None:
    if type(s) is not str or not s:
        return None
    r = normalize_text(s)
    return (r if len(r) <= n else r[:n]) or None


def reference_parts(ref: str) -> tuple[str | None, str | None, str | None] | None:
    """How a reference string is indexed: ``(target_type, target_id, url)``.

    ``"Patient/123"`` (also ``.../_history/2``) -> ``("Patient", "123", None)``; an absolute
    URL, ``urn:`` or canonical -> ``(None, None, url)``; ``"#contained"`` or empty -> ``None``.
    """
    if not ref or ref.startswith("#"):
        return None
    parsed = parse_reference(ref)
    if parsed is not None and parsed[0] is None:
        return _clip(parsed[1], _REF_TYPE), _clip(parsed[2], _REF_ID), None
    return None, None, _clip(ref, _REF_URL)


# --------------------------------------------------------------------------------------------
# Converters: one JSON value -> rows appended to ``out`` (an ordered set of tuples)

Rows = dict  # dict[tuple, None], used as an insertion-ordered set
Converter = Callable[[Any, str, Rows], None]

_CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})


def _token_coding(c: dict, param: str, out: Rows) -> None:
    system = c.get("system")
    code = c.get("code")
    text = _norm_clip(c.get("display"), _TOKEN_TEXT)
    if system is None and code is None and text is None:
        return
    out[(param, _clip(system, _TOKEN_SYSTEM) if type(system) is str else None,
         _clip(code, _TOKEN_CODE) if type(code) is str else None, text, None, None)] = None


def _token(v: Any, param: str, out: Rows) -> None:
    tv = type(v)
    if tv is str:
        out[(param, None, _clip(v, _TOKEN_CODE), None, None, None)] = None
    elif tv is bool:
        out[(param, None, "true" if v else "false", None, None, None)] = None
    elif tv is dict:
        if "coding" in v or ("text" in v and "value" not in v and "code" not in v):
            # CodeableConcept: one row per coding, one for the text.
            for c in v.get("coding") or ():
                if type(c) is dict:
                    _token_coding(c, param, out)
            text = _norm_clip(v.get("text"), _TOKEN_TEXT)
            if text is not None:
                out[(param, None, None, text, None, None)] = None
        elif "value" in v and "code" not in v:
            value = v.get("value")
            system = v.get("system")
            if type(value) is not str:
                value = None
            if type(system) is not str:
                system = None
            if system in _CONTACT_SYSTEMS or "rank" in v:
                # ContactPoint: the value is the token.
                if value is not None:
                    out[(param, None, _clip(value, _TOKEN_CODE), None, None, None)] = None
            elif value is not None or system is not None:
                _identifier(v, _clip(system, _TOKEN_SYSTEM), _clip(value, _TOKEN_CODE), param, out)
        else:
            _token_coding(v, param, out)  # Coding
    elif tv is int or tv is float or tv is Decimal:
        out[(param, None, _clip(str(v), _TOKEN_CODE), None, None, None)] = None


def _identifier(v: dict, system: str | None, value: str | None, param: str, out: Rows) -> None:
    """Identifier: system|value, type.text as text, one row per type coding (for :of-type)."""
    type_ = v.get("type")
    if type(type_) is not dict:
        out[(param, system, value, None, None, None)] = None
        return
    text = _norm_clip(type_.get("text"), _TOKEN_TEXT)
    codings = [c for c in type_.get("coding") or () if type(c) is dict and type(c.get("code")) is str]
    if not codings:
        out[(param, system, value, text, None, None)] = None
    for c in codings:
        ts = c.get("system")
        out[(param, system, value, text, _clip(ts, _TOKEN_SYSTEM) if type(ts) is str else None,
             _clip(c["code"], _TOKEN_CODE))] = None


def _string_value(s: Any, param: str, out: Rows) -> None:
    if type(s) is not str:
        return
    norm = normalize_text(s)
    if not norm:
        return
    out[(param, norm if len(norm) <= _STRING_NORM else norm[:_STRING_NORM],
         s if len(s) <= _STRING_EXACT else s[:_STRING_EXACT])] = None


_FAMILY_EXT_PREFIX = "http://hl7.org/fhir/StructureDefinition/humanname-"


def _family_parts(name: dict, param: str, out: Rows) -> None:
    """HumanName.family plus the family-name extensions (fathers-family, mothers-family...)."""
    _string_value(name.get("family"), param, out)
    elem = name.get("_family")
    if type(elem) is dict:
        for ext in elem.get("extension") or ():
            if type(ext) is dict and str(ext.get("url", "")).startswith(_FAMILY_EXT_PREFIX):
                _string_value(ext.get("valueString"), param, out)


_NAME_PARTS = ("given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")
_ADDRESS_ONLY = frozenset(_ADDRESS_PARTS) - {"text"}


def _string(v: Any, param: str, out: Rows) -> None:
    if type(v) is str:
        _string_value(v, param, out)
    elif type(v) is dict:
        if any(k in v for k in _ADDRESS_ONLY):
            parts = _ADDRESS_PARTS  # Address
        else:
            parts = _NAME_PARTS  # HumanName (or anything with a text)
            _family_parts(v, param, out)
        for part in parts:
            p = v.get(part)
            if type(p) is list:
                for x in p:
                    _string_value(x, param, out)
            else:
                _string_value(p, param, out)


def _family_converter(v: Any, param: str, out: Rows) -> None:
    if type(v) is dict:
        _family_parts(v, param, out)


def _reference(v: Any, param: str, out: Rows, targets: frozenset[str] = frozenset()) -> None:
    if type(v) is dict:
        ref = v.get("reference")
        if ref is None:
            rt = v.get("resourceType")
            rid = v.get("id")
            if type(rt) is str and type(rid) is str and (not targets or rt in targets):
                # A resource in place of a reference (Bundle.entry[0].resource): indexed
                # when it is of a target type (composition vs message).
                out[(param, _clip(rt, _REF_TYPE), _clip(rid, _REF_ID), None)] = None
            return
    else:
        ref = v  # canonical / uri
    if type(ref) is not str:
        return
    parts = reference_parts(ref)
    if parts is not None:
        out[(param, *parts)] = None


def _timing_range(v: dict) -> tuple[datetime | None, datetime | None] | None:
    lows: list[datetime | None] = []
    highs: list[datetime | None] = []
    for e in v.get("event") or ():
        if type(e) is str:
            r = date_range(e)
            if r is not None:
                lows.append(r[0])
                highs.append(r[1])
    repeat = v.get("repeat")
    if type(repeat) is dict:
        bounds = repeat.get("boundsPeriod")
        if type(bounds) is dict:
            r = _period_range(bounds)
            if r is not None:
                lows.append(r[0])
                highs.append(r[1])
    if not lows:
        return None
    low = None if any(x is None for x in lows) else min(lows)  # type: ignore[type-var]
    high = None if any(x is None for x in highs) else max(highs)  # type: ignore[type-var]
    return low, high


def _period_range(v: dict) -> tuple[datetime | None, datetime | None] | None:
    start = v.get("start")
    end = v.get("end")
    rs = date_range(start) if type(start) is str else None
    re_ = date_range(end) if type(end) is str else None
    if rs is None and re_ is None:
        return None
    return (rs[0] if rs else None), (re_[1] if re_ else None)


def _date(v: Any, param: str, out: Rows) -> None:
    r: tuple[datetime | None, datetime | None] | None
    if type(v) is str:
        r = date_range(v)
    elif type(v) is dict:
        if "start" in v or "end" in v:
            r = _period_range(v)
        elif "event" in v or "repeat" in v:
            r = _timing_range(v)
        else:
            return
    else:
        return
    if r is not None:
        out[(param, r[0], r[1])] = None


def _number(v: Any, param: str, out: Rows) -> None:
    tv = type(v)
    if tv is int or tv is float or tv is Decimal:
        out[(param, float(v))] = None


_ISO4217 = "urn:iso:std:iso:4217"


def _quantity(v: Any, param: str, out: Rows) -> None:
    if type(v) is not dict:
        return
    value = v.get("value")
    tv = type(value)
    if not (tv is int or tv is float or tv is Decimal):
        return
    value = float(value)
    currency = v.get("currency")
    if type(currency) is str:
        out[(param, value, _ISO4217, _clip(currency, _QTY_CODE))] = None
        return
    system = v.get("system")
    system = _clip(system, _QTY_SYSTEM) if type(system) is str else None
    code = v.get("code")
    unit = v.get("unit")
    code = code if type(code) is str else None
    unit = unit if type(unit) is str else None
    if code is not None:
        out[(param, value, system, _clip(code, _QTY_CODE))] = None
    if unit is not None and unit != code:
        out[(param, value, None, _clip(unit, _QTY_CODE))] = None
    if code is None and unit is None:
        out[(param, value, system, None)] = None


def _uri(v: Any, param: str, out: Rows) -> None:
    if type(v) is str and v:
        out[(param, _clip(v, _URI))] = None


def _slot(kind: str, row: tuple) -> tuple:
    """One component's index row as a composite slot: ``(system, code, value, low, high)``."""
    if kind == "token":
        return row[1], row[2], None, None, None
    if kind == "reference":
        return None, row[3] if row[3] is not None else f"{row[1]}/{row[2]}", None, None, None
    if kind == "string":
        return None, row[1], None, None, None
    if kind == "quantity":
        return row[2], row[3], row[1], None, None
    if kind == "date":
        return None, None, None, row[1], row[2]
    if kind == "number":
        return None, None, row[1], None, None
    return None, row[1], None, None, None  # uri


_Component = tuple[str, Callable[[Any], list], Converter]


def _composite(v: Any, param: str, out: Rows, components: tuple[_Component, _Component] = ()) -> None:
    """Rows for one element of a composite's base (an Observation, one of its components...):
    every combination of the first component's values with the second's."""
    slots: list[list[tuple]] = []
    for kind, fn, conv in components:
        rows: Rows = {}
        for x in fn(v):
            conv(x, param, rows)
        slots.append([_slot(kind, r) for r in rows if kind != "token" or r[2] is not None])
        if not slots[-1]:
            return
    for first in slots[0]:
        for second in slots[1]:
            out[(param, first[0], first[1], *second)] = None


_CONVERTERS: dict[str, tuple[str, Converter]] = {
    "token": ("token", _token),
    "string": ("string", _string),
    "reference": ("reference", _reference),
    "date": ("date", _date),
    "number": ("number", _number),
    "quantity": ("quantity", _quantity),
    "uri": ("uri", _uri),
}

# --------------------------------------------------------------------------------------------
# Plans: per resource type, the compiled evaluators of its parameters

_FAMILY_RE = re.compile(r"^\(?\s*(?P<base>[A-Za-z]+(?:\.[A-Za-z]+)*\.name)\.family\s*\)?$")

_unsupported: dict[tuple[str, str], str] = {}


def _compile(res_type: str, code: str, expr: str) -> Callable[[Any], list] | None:
    try:
        return compile_expression(expr)
    except FHIRPathError as exc:
        if (res_type, code) not in _unsupported:
            _unsupported[(res_type, code)] = f"{expr}: {exc}"
            log.warning("search parameter %s.%s not indexed: %s", res_type, code, exc)
        return None


_VALUE_FROM_NOTHING_RE = re.compile(r"\b(exists|empty|not|count|iif|allFalse|anyFalse)\(|\s(and|or|xor|implies)\s")
_ROOT_RE = re.compile(r"^\(*\s*(?P<type>[A-Z][A-Za-z]+)\.(?P<root>[a-z][A-Za-z]*)")


def _roots(res_type: str, expr: str) -> frozenset[str] | None:
    """The top-level JSON keys an expression can read (``value`` -> ``valueQuantity``...), or
    None when that cannot be told from the text: a resource holding none of them has no value
    for the parameter, and most parameters of a type are absent from any one resource."""
    if _VALUE_FROM_NOTHING_RE.search(expr):
        return None  # e.g. "deceased.exists() and deceased != false" is false when absent
    roots: set[str] = set()
    choices = choice_elements()
    for part in split_union(expr):
        m = _ROOT_RE.match(part.strip())
        if m is None or m.group("type") != res_type:
            return None
        root = m.group("root")
        roots.add(root)
        roots.update(root + suffix for suffix in choices.get(root, ()))
    return frozenset(roots)


Plan = tuple[tuple[str, str, Callable[[Any], list], Converter, frozenset[str] | None], ...]


@functools.cache
def _plan(res_type: str) -> Plan:
    plan: list = []
    for code, sp in params_for(res_type).items():
        if code in RESOURCE_COLUMN_PARAMS or sp.type in _NOT_INDEXED_TYPES:
            continue
        kind, conv = _CONVERTERS.get(sp.type, ("composite", _uri))
        param = _clip(code, _PARAM) or code
        if sp.type == "string":
            # X.name.family: index the HumanName so its family-name extensions
            # (paternal/maternal surnames) are searchable as family too.
            plain: list[str] = []
            for part in split_union(sp.expression):
                m = _FAMILY_RE.match(part)
                if m is not None:
                    fn = _compile(res_type, code, m.group("base"))
                    if fn is not None:
                        plan.append((param, kind, fn, _family_converter, _roots(res_type, part)))
                else:
                    plain.append(part)
            if not plain:
                continue
            expr = " | ".join(plain)
        else:
            expr = sp.expression
        if sp.type == "composite":
            conv = _composite_converter(res_type, sp)
            if conv is None:
                continue
        elif sp.type == "reference" and sp.targets:
            conv = functools.partial(_reference, targets=frozenset(sp.targets))
        fn = _compile(res_type, code, expr)
        if fn is not None:
            plan.append((param, kind, fn, conv, _roots(res_type, expr)))
    return tuple(plan)


def _composite_converter(res_type: str, sp) -> Converter | None:
    """The converter of a two-component composite, or None when it cannot be indexed."""
    if len(sp.components) != 2:
        return None
    params = params_for(res_type)
    comps = []
    for comp_code, expr in sp.components:
        comp = params.get(comp_code)
        fn = _compile(res_type, sp.code, expr)
        if comp is None or fn is None or comp.type not in _CONVERTERS:
            return None
        comps.append((comp.type, fn, _CONVERTERS[comp.type][1]))
    if comps[0][0] not in ("token", "reference", "string", "uri"):
        return None
    return functools.partial(_composite, components=tuple(comps))


def unsupported_params() -> dict[tuple[str, str], str]:
    """(type, code) -> reason, for every parameter whose expression could not be compiled.

    Plans are built lazily; this forces them for every served type first.
    """
    from expediente.fhir.search.registry import served_types

    for t in served_types():
        _plan(t)
        _compartment_plan(t)
    return dict(_unsupported)


def extract_index(resource: dict) -> dict[str, list[dict]]:
    """The index rows of ``resource``, by table kind (``"token"``, ``"string"``...).

    Each row is a dict with ``param`` and the value columns of that table (see the module
    docstring); identical rows are removed; kinds without rows are left out. Never raises on
    odd content: a parameter whose evaluation fails is skipped (and logged).
    """
    res_type = resource.get("resourceType") if type(resource) is dict else None
    if type(res_type) is not str:
        return {}
    buckets: dict[str, Rows] = {}
    for param, kind, fn, conv, roots in _plan(res_type):
        if roots is not None and roots.isdisjoint(resource):
            continue
        try:
            values = fn(resource)
            if not values:
                continue
            out = buckets.get(kind)
            if out is None:
                out = buckets[kind] = {}
            for v in values:
                conv(v, param, out)
        except Exception:  # noqa: BLE001 - indexing must never break a write
            log.exception("search parameter %s.%s: extraction failed", res_type, param)
    result: dict[str, list[dict]] = {}
    for kind, rows in buckets.items():
        if rows:
            keys = _ROW_KEYS[kind]
            result[kind] = [dict(zip(keys, row)) for row in rows]
    # The access policy's own rows, kept like an index: consent rules, care relationships and
    # the records of one person (MPI links).
    if res_type == "Consent":
        from expediente.security.consent import consent_rows

        directives = consent_rows(resource)
        if directives:
            result["consent"] = directives
    elif res_type == "Patient":
        # The master patient index: features and blocking keys, and links to the same person.
        from expediente.mpi.index import mpi_rows  # it normalizes text with this module

        try:
            result.update(mpi_rows(resource))
        except Exception:  # noqa: BLE001 - indexing must never break a write
            log.exception("master patient index rows of Patient: extraction failed")
        linked = person_rows(resource)
        if linked:
            result["person"] = linked
    elif res_type in CARE_TYPES and "reference" in result:
        links = care_rows(res_type, result["reference"])
        if links:
            result["care"] = links
    return result



# --------------------------------------------------------------------------------------------
# Patient compartment

_PATIENT_REF_RE = re.compile(r"^Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$")


@functools.cache
def _compartment_plan(res_type: str) -> tuple[Callable[[Any], list], ...]:
    params = params_for(res_type)
    fns = []
    for code in compartment_params(res_type):
        sp = params.get(code)
        if sp is None:
            continue
        fn = _compile(res_type, code, sp.expression)
        if fn is not None:
            fns.append(fn)
    return tuple(fns)


def patient_key(resource: dict) -> str | None:
    """The id of the Patient whose compartment holds ``resource``.

    A Patient: its own id. Another type: the first Patient referenced (relative
    ``Patient/x`` references only) through the type's Patient-compartment parameters, in the
    CompartmentDefinition's order (Observation: subject, then performer). ``None`` when the
    type has no Patient compartment or no such reference is present.
    """
    if type(resource) is not dict:
        return None
    res_type = resource.get("resourceType")
    if res_type == "Patient":
        rid = resource.get("id")
        return rid if type(rid) is str and rid else None
    if type(res_type) is not str:
        return None
    for fn in _compartment_plan(res_type):
        try:
            values = fn(resource)
        except Exception:  # noqa: BLE001
            log.exception("patient compartment of %s: evaluation failed", res_type)
            continue
        for v in values:
            ref = v.get("reference") if type(v) is dict else None
            if type(ref) is str:
                m = _PATIENT_REF_RE.match(ref)
                if m is not None:
                    return m.group(1)
    return None
