"""Simple equality search over the index tables (conditional create and update).

``match_query(res_type, params)`` turns ``[("identifier", "urn:oid:...|CURP"), ...]`` into a
SQLAlchemy ``Select`` of ``resource.c.res_id`` for the live (non-deleted) resources of
``res_type`` that match *all* the parameters; a comma inside one value means OR.

Supported, per search type:

- ``_id`` (the ``res_id`` column) and ``_lastUpdated`` (the ``last_updated`` column);
- token: ``code``, ``system|code``, ``|code`` (no system), ``system|``; ``:text`` (starts
  with, accent-free, on the display/text);
- string: starts-with on the accent-free lowercase value (default), ``:exact``, ``:contains``;
- reference: ``Type/id``, ``id``, an absolute URL or canonical; ``:Type`` with an id;
- uri: equality, ``:below`` (starts with);
- date: the value's range overlaps the given (partial) date; only the ``eq`` prefix;
- number and quantity (``value[|system|code]``): equality within the value's implied
  precision; only the ``eq`` prefix;
- ``:missing=true|false`` on any indexed parameter.

Anything else (unknown parameter, other modifiers and prefixes, chains, composite and special
parameters) raises ``SearchError`` with a Spanish message; the full search is to be built on
the same registry and tables. Per-type clause builders live in ``_BUILDERS`` so that it can
extend or replace them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa

from expediente.db.schema import INDEX_TABLES, resource
from expediente.fhir.resource_types import SERVED
from expediente.fhir.search.extract import (
    column_length,
    date_range,
    normalize_text,
    reference_parts,
)
from expediente.fhir.search.registry import SearchParam, params_for

__all__ = ["SearchError", "match_query", "split_values", "split_token"]


class SearchError(Exception):
    """A search the server cannot run. ``message`` is in Spanish, for an OperationOutcome.

    ``code`` is the OperationOutcome issue type: ``"not-supported"`` for unknown parameters,
    modifiers and prefixes, ``"invalid"`` for malformed values.
    """

    def __init__(self, message: str, code: str = "invalid"):
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


# Result-shaping parameters: they do not change which resources match.
IGNORED_PARAMS = frozenset(
    {
        "_format", "_pretty", "_summary", "_elements", "_count", "_sort", "_total",
        "_include", "_revinclude", "_contained", "_containedType",
    }
)  # fmt: skip

_MODIFIERS: dict[str, frozenset[str]] = {
    "token": frozenset({"text", "missing"}),
    "string": frozenset({"exact", "contains", "missing"}),
    "reference": frozenset({"missing"}),  # plus :Type
    "uri": frozenset({"below", "missing"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
}

_PREFIX_RE = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)(?=[0-9+\-.])")
_TYPE_NAME_RE = re.compile(r"^[A-Z][A-Za-z]+$")


# --------------------------------------------------------------------------------------------
# Value parsing


def split_values(value: str) -> list[str]:
    """Split a parameter value on unescaped commas (``\\,`` is a literal comma).

    Backslash escapes are kept in the pieces (``split_token`` and ``unescape`` resolve them).
    """
    parts: list[str] = []
    buf: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            buf.append(value[i : i + 2])
            i += 2
            continue
        if ch == ",":
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    parts.append("".join(buf))
    return parts


def unescape(value: str) -> str:
    return re.sub(r"\\([\\,|$])", r"\1", value)


def split_token(value: str) -> tuple[str | None, str]:
    """``"system|code"`` -> ``("system", "code")``; ``"code"`` -> ``(None, "code")``;
    ``"|code"`` -> ``("", "code")`` (explicitly no system). Escapes resolved."""
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "|":
            return unescape(value[:i]), unescape(value[i + 1 :])
        i += 1
    return None, unescape(value)


def _clip(s: str, kind: str, column: str) -> str:
    n = column_length(kind, column)
    return s if n is None or len(s) <= n else s[:n]


def _no_prefix(sp: SearchParam, value: str) -> str:
    m = _PREFIX_RE.match(value)
    if m is None:
        return value
    if m.group(1) != "eq":
        raise SearchError(
            f"Prefijo de comparación no soportado en esta operación: '{m.group(1)}' "
            f"(parámetro '{sp.code}')",
            "not-supported",
        )
    return value[2:]


def _date_value(sp: SearchParam, value: str) -> tuple[datetime, datetime]:
    r = date_range(_no_prefix(sp, value))
    if r is None:
        raise SearchError(f"Fecha inválida para el parámetro '{sp.code}': '{value}'")
    return r


def _number_range(sp: SearchParam, text: str) -> tuple[float, float]:
    """``"100"`` -> [99.5, 100.5): the range implied by the value's precision."""
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise SearchError(f"Número inválido para el parámetro '{sp.code}': '{text}'") from None
    if not d.is_finite():
        raise SearchError(f"Número inválido para el parámetro '{sp.code}': '{text}'")
    exponent = d.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1)
    return float(d - half), float(d + half)


# --------------------------------------------------------------------------------------------
# Clause builders: (res_type, param, modifier, values) -> SQL boolean on the resource table

Builder = Callable[[str, SearchParam, str, list[str]], sa.ColumnElement[bool]]


def _in_index(kind: str, res_type: str, sp: SearchParam, conds: list) -> sa.ColumnElement[bool]:
    t = INDEX_TABLES[kind]
    sub = sa.select(t.c.res_id).where(t.c.res_type == res_type, t.c.param == sp.code, sa.or_(*conds))
    return resource.c.res_id.in_(sub)


def _missing(kind: str, res_type: str, sp: SearchParam, values: list[str]) -> sa.ColumnElement[bool]:
    if len(values) != 1 or values[0] not in ("true", "false"):
        raise SearchError(f"El modificador ':missing' de '{sp.code}' admite solo 'true' o 'false'")
    t = INDEX_TABLES[kind]
    sub = sa.select(t.c.res_id).where(t.c.res_type == res_type, t.c.param == sp.code)
    present = resource.c.res_id.in_(sub)
    return sa.not_(present) if values[0] == "true" else present


def _token(res_type: str, sp: SearchParam, modifier: str, values: list[str]) -> sa.ColumnElement[bool]:
    t = INDEX_TABLES["token"]
    conds = []
    for raw in values:
        if modifier == "text":
            text = normalize_text(unescape(raw))
            if not text:
                raise SearchError(f"El parámetro de búsqueda '{sp.code}' no tiene valor")
            conds.append(t.c.text_norm.startswith(_clip(text, "token", "text_norm"), autoescape=True))
            continue
        system, code = split_token(raw)
        if system is None:
            conds.append(t.c.code == _clip(code, "token", "code"))
        elif system == "":
            if not code:
                raise SearchError(f"Valor de token inválido para el parámetro '{sp.code}': '{raw}'")
            conds.append(sa.and_(t.c.system.is_(None), t.c.code == _clip(code, "token", "code")))
        elif code == "":
            conds.append(t.c.system == _clip(system, "token", "system"))
        else:
            conds.append(
                sa.and_(t.c.system == _clip(system, "token", "system"), t.c.code == _clip(code, "token", "code"))
            )
    return _in_index("token", res_type, sp, conds)


def _string(res_type: str, sp: SearchParam, modifier: str, values: list[str]) -> sa.ColumnElement[bool]:
    t = INDEX_TABLES["string"]
    conds = []
    for raw in values:
        value = unescape(raw)
        if modifier == "exact":
            conds.append(t.c.value_exact == _clip(value, "string", "value_exact"))
            continue
        norm = normalize_text(value)
        if not norm:
            raise SearchError(f"El parámetro de búsqueda '{sp.code}' no tiene valor")
        norm = _clip(norm, "string", "value_norm")
        if modifier == "contains":
            conds.append(t.c.value_norm.contains(norm, autoescape=True))
        else:
            conds.append(t.c.value_norm.startswith(norm, autoescape=True))
    return _in_index("string", res_type, sp, conds)


def _reference(res_type: str, sp: SearchParam, modifier: str, values: list[str]) -> sa.ColumnElement[bool]:
    t = INDEX_TABLES["reference"]
    conds = []
    for raw in values:
        value = unescape(raw)
        if modifier:  # :Type with a bare id
            if "/" in value:
                raise SearchError(
                    f"Con el modificador ':{modifier}' el parámetro '{sp.code}' espera solo un id: '{value}'"
                )
            conds.append(sa.and_(t.c.target_type == modifier, t.c.target_id == _clip(value, "reference", "target_id")))
            continue
        if "/" not in value and ":" not in value:
            conds.append(t.c.target_id == _clip(value, "reference", "target_id"))
            continue
        parts = reference_parts(value)
        if parts is None:
            raise SearchError(f"Referencia inválida para el parámetro '{sp.code}': '{value}'")
        target_type, target_id, url = parts
        if url is not None:
            conds.append(t.c.url == url)
        else:
            conds.append(sa.and_(t.c.target_type == target_type, t.c.target_id == target_id))
    return _in_index("reference", res_type, sp, conds)


def _uri(res_type: str, sp: SearchParam, modifier: str, values: list[str]) -> sa.ColumnElement[bool]:
    t = INDEX_TABLES["uri"]
    conds = []
    for raw in values:
        value = _clip(unescape(raw), "uri", "uri")
        if modifier == "below":
            conds.append(t.c.uri.startswith(value, autoescape=True))
        else:
            conds.append(t.c.uri == value)
    return _in_index("uri", res_type, sp, conds)


def _date(res_type: str, sp: SearchParam, modifier: str, values: list[str]) -> sa.ColumnElement[bool]:
    t = INDEX_TABLES["date"]
    conds = []
    for raw in values:
        low, high = _date_value(sp, raw)
        conds.append(
            sa.and_(
                sa.or_(t.c.low.is_(None), t.c.low <= high),
                sa.or_(t.c.high.is_(None), t.c.high >= low),
            )
        )
    return _in_index("date", res_type, sp, conds)


def _number(res_type: str, sp: SearchParam, modifier: str, values: list[str]) -> sa.ColumnElement[bool]:
    t = INDEX_TABLES["number"]
    conds = []
    for raw in values:
        lo, hi = _number_range(sp, _no_prefix(sp, raw))
        conds.append(sa.and_(t.c.value >= lo, t.c.value < hi))
    return _in_index("number", res_type, sp, conds)


def _quantity(res_type: str, sp: SearchParam, modifier: str, values: list[str]) -> sa.ColumnElement[bool]:
    t = INDEX_TABLES["quantity"]
    conds = []
    for raw in values:
        pieces = [unescape(p) for p in re.split(r"(?<!\\)\|", raw)]
        if len(pieces) not in (1, 3):
            raise SearchError(f"Cantidad inválida para el parámetro '{sp.code}': '{raw}'")
        lo, hi = _number_range(sp, _no_prefix(sp, pieces[0]))
        cond = [t.c.value >= lo, t.c.value < hi]
        if len(pieces) == 3:
            system, code = pieces[1], pieces[2]
            if system:
                cond.append(t.c.system == _clip(system, "quantity", "system"))
            if code:
                cond.append(t.c.code == _clip(code, "quantity", "code"))
        conds.append(sa.and_(*cond))
    return _in_index("quantity", res_type, sp, conds)


_BUILDERS: dict[str, Builder] = {
    "token": _token,
    "string": _string,
    "reference": _reference,
    "uri": _uri,
    "date": _date,
    "number": _number,
    "quantity": _quantity,
}


def _id_clause(modifier: str, values: list[str]) -> sa.ColumnElement[bool]:
    if modifier:
        raise SearchError(f"Modificador de búsqueda no soportado para el parámetro '_id': ':{modifier}'", "not-supported")
    ids = [unescape(v) for v in values]
    return resource.c.res_id == ids[0] if len(ids) == 1 else resource.c.res_id.in_(ids)


def _last_updated_clause(sp: SearchParam, modifier: str, values: list[str]) -> sa.ColumnElement[bool]:
    if modifier:
        raise SearchError(
            f"Modificador de búsqueda no soportado para el parámetro '_lastUpdated': ':{modifier}'", "not-supported"
        )
    conds = []
    for raw in values:
        low, high = _date_value(sp, raw)
        conds.append(resource.c.last_updated.between(low, high))
    return sa.or_(*conds)


# --------------------------------------------------------------------------------------------


def param_clause(res_type: str, name: str, value: str) -> sa.ColumnElement[bool] | None:
    """The SQL condition (on the ``resource`` table) for one ``name=value`` pair.

    ``None`` for result-shaping parameters (``_count``, ``_sort``...), which match everything.
    """
    code, _, modifier = name.partition(":")
    if code in IGNORED_PARAMS:
        return None
    if "." in code:
        raise SearchError(f"Búsqueda encadenada no soportada en esta operación: '{name}'", "not-supported")
    sp = params_for(res_type).get(code)
    if sp is None:
        raise SearchError(f"Parámetro de búsqueda desconocido para {res_type}: '{code}'", "not-supported")
    values = split_values(value)
    if any(v == "" for v in values):
        raise SearchError(f"El parámetro de búsqueda '{name}' no tiene valor")
    if code == "_id":
        return _id_clause(modifier, values)
    if code == "_lastUpdated":
        return _last_updated_clause(sp, modifier, values)
    builder = _BUILDERS.get(sp.type)
    if builder is None:
        raise SearchError(
            f"Tipo de parámetro de búsqueda no soportado en esta operación: '{code}' ({sp.type})", "not-supported"
        )
    if modifier:
        if modifier == "missing":
            return _missing(sp.type, res_type, sp, values)
        allowed = modifier in _MODIFIERS.get(sp.type, ()) or (
            sp.type == "reference" and _TYPE_NAME_RE.match(modifier) is not None and modifier in sp.targets
        )
        if not allowed:
            raise SearchError(
                f"Modificador de búsqueda no soportado para el parámetro '{code}': ':{modifier}'", "not-supported"
            )
    return builder(res_type, sp, modifier, values)


def match_query(res_type: str, params: list[tuple[str, str]]) -> sa.Select:
    """Select ``resource.c.res_id`` of the live ``res_type`` resources matching all ``params``.

    Raises ``SearchError`` (Spanish ``message``) for an unknown type, parameter or modifier, an
    unsupported prefix or chain, or a malformed or empty value. With no criteria (``[]`` or only
    result-shaping parameters such as ``_count``) every live resource of the type matches:
    conditional operations must check for an empty condition themselves.
    """
    if res_type not in SERVED:
        raise SearchError(f"Tipo de recurso no soportado: '{res_type}'", "not-supported")
    conds: list[sa.ColumnElement[bool]] = []
    for name, value in params:
        clause = param_clause(res_type, name, value)
        if clause is not None:
            conds.append(clause)
    return sa.select(resource.c.res_id).where(
        resource.c.res_type == res_type,
        resource.c.deleted == sa.false(),
        *conds,
    )
