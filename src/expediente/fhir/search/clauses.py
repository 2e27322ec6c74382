"""One search criterion -> SQL, over the index tables (every parameter type, modifier and prefix).

A criterion is ``name=value`` as in the URL: ``code=http://loinc.org|2345-7``,
``family:exact=Peña``, ``date=ge2024-01``, ``subject:Patient.identifier=...``,
``_has:Condition:patient:code=E11``. ``criterion(res_type, name, value)`` parses it into a
``Match``: which index rows (or resource columns) satisfy it. A ``Match`` becomes SQL in two
shapes with the same meaning:

- ``ids(match)``: an uncorrelated ``SELECT res_id`` (drives a query: ``res_id IN (...)``);
- ``as_filter(match, outer, correlated=True)``: ``EXISTS (... WHERE res_id = outer.res_id)``,
  probed per candidate row through the ``(res_type, res_id)`` index.

The query builder lets the most selective criterion drive and probes the others, so a
patient-scoped search never scans a whole code's rows.

Semantics (FHIR R4 search, "any value matches"):

- string: accent- and case-insensitive starts-with; ``:exact`` (as stored), ``:contains``.
- token: ``code``, ``system|code``, ``|code``, ``system|``; ``:not`` (no value matches, also
  when there is none), ``:text`` (a word of the display/text starts with it), ``:of-type``
  (``type-system|type-code|value`` on identifiers).
- reference: ``Type/id``, ``id``, absolute URL/canonical, ``:Type``; one chained parameter
  (``subject:Patient.name=...``, ``subject.identifier=...``); reverse chain ``_has``.
- date: the value's range [low, high] against the parameter's implied range [plo, phi]:
  eq (contained), ne (not contained), gt (high > phi), lt (low < plo), ge (gt or eq),
  le (lt or eq), sa (low > phi), eb (high < plo), ap (overlaps the range widened by 10% of its
  distance from now, at least one day). Open ends are infinite.
- number and quantity: eq/ne within the value's implied precision ("100" is [99.5, 100.5));
  gt/lt/ge/le/sa/eb against the exact value; ap within 10%. Quantity units as
  ``value|system|code`` (``value||code`` matches a code or a unit).
- uri: equality, ``:below`` (starts with), ``:above`` (is a prefix of the value).
- composite: ``first$second``, each part read by its component's type.
- ``:missing=true|false`` on every indexed parameter.

Bad input raises ``SearchError`` with a Spanish message.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa

from expediente.db.schema import INDEX_TABLES, resource
from expediente.fhir.resource_types import SERVED
from expediente.fhir.search.extract import column_length, date_range, normalize_text, reference_parts
from expediente.fhir.search.registry import SearchParam, params_for

__all__ = [
    "SearchError",
    "Match",
    "criterion",
    "ids",
    "as_filter",
    "split_values",
    "split_token",
    "unescape",
    "parse_prefix",
    "RESULT_PARAMS",
]


class SearchError(Exception):
    """A search the server cannot run. ``message`` is in Spanish, for an OperationOutcome.

    ``code`` is the OperationOutcome issue type: ``"not-supported"`` for unknown parameters,
    modifiers and prefixes (ignored under ``Prefer: handling=lenient``), ``"invalid"`` for
    malformed values (always refused).
    """

    def __init__(self, message: str, code: str = "invalid"):
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


# Parameters that shape the answer (paging, sorting, includes...) without selecting anything.
RESULT_PARAMS = frozenset(
    {
        "_count", "_format", "_pretty", "_summary", "_elements", "_total", "_sort", "_include",
        "_revinclude", "_contained", "_containedType", "_cursor", "_after",
    }
)  # fmt: skip

MAX_VALUES = 100  # OR values in one parameter
MAX_VALUE_LENGTH = 2048

_MODIFIERS: dict[str, frozenset[str]] = {
    "token": frozenset({"text", "not", "of-type", "missing"}),
    "string": frozenset({"exact", "contains", "missing"}),
    "reference": frozenset({"missing"}),  # plus :Type
    "uri": frozenset({"below", "above", "missing"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "composite": frozenset({"missing"}),
}
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_PREFIX_RE = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)(?=[0-9+\-.])")
_TYPE_NAME_RE = re.compile(r"^[A-Z][A-Za-z]{1,39}$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")


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


def _split_unescaped(value: str, sep: str) -> list[str]:
    return [unescape(p) for p in re.split(rf"(?<!\\){re.escape(sep)}", value)]


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


def parse_prefix(value: str) -> tuple[str, str]:
    """``"ge2024"`` -> ``("ge", "2024")``; no prefix -> ``("eq", value)``."""
    m = _PREFIX_RE.match(value)
    return (m.group(1), value[2:]) if m else ("eq", value)


def _clip(s: str, kind: str, column: str) -> str:
    n = column_length(kind, column)
    return s if n is None or len(s) <= n else s[:n]


def _date_bounds(code: str, value: str) -> tuple[datetime, datetime]:
    r = date_range(value)
    if r is None:
        raise SearchError(
            f"Fecha inválida para el parámetro '{code}': '{value[:60]}' (use AAAA, AAAA-MM, AAAA-MM-DD o AAAA-MM-DDThh:mm:ss[zona])"
        )
    return r


def _decimal(code: str, text: str) -> Decimal:
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise SearchError(f"Número inválido para el parámetro '{code}': '{text[:60]}'") from None
    if not d.is_finite() or abs(d.adjusted()) > 300:
        raise SearchError(f"Número inválido para el parámetro '{code}': '{text[:60]}'")
    return d


# --------------------------------------------------------------------------------------------
# Prefix semantics, shared by the index tables and the resource columns


def date_condition(prefix: str, low, high, plo: datetime, phi: datetime) -> sa.ColumnElement[bool]:
    """The FHIR date prefix ``prefix`` of [plo, phi] on a stored range [low, high] (None = open)."""
    contained = sa.and_(low.is_not(None), high.is_not(None), low >= plo, high <= phi)
    if prefix == "eq":
        return contained
    if prefix == "ne":
        return sa.not_(contained)
    above = sa.or_(high.is_(None), high > phi)
    below = sa.or_(low.is_(None), low < plo)
    if prefix == "gt":
        return above
    if prefix == "lt":
        return below
    if prefix == "ge":
        return sa.or_(above, contained)
    if prefix == "le":
        return sa.or_(below, contained)
    if prefix == "sa":
        return sa.and_(low.is_not(None), low > phi)
    if prefix == "eb":
        return sa.and_(high.is_not(None), high < plo)
    # ap: overlaps the parameter range widened by 10% of its distance from now (>= 1 day).
    now = datetime.now(UTC).replace(tzinfo=None)
    margin = max(abs(now - plo) / 10, timedelta(days=1))
    wlo = plo - margin if plo - datetime.min > margin else datetime.min
    whi = phi + margin if datetime.max - phi > margin else datetime.max
    return sa.and_(sa.or_(low.is_(None), low <= whi), sa.or_(high.is_(None), high >= wlo))


def number_condition(prefix: str, column, d: Decimal) -> sa.ColumnElement[bool]:
    """The FHIR number prefix on a stored value: eq/ne use the implied precision."""
    half = Decimal(5).scaleb(int(d.as_tuple().exponent) - 1)
    lo, hi, v = float(d - half), float(d + half), float(d)
    if prefix == "eq":
        return sa.and_(column >= lo, column < hi)
    if prefix == "ne":
        return sa.or_(column < lo, column >= hi)
    if prefix in ("gt", "sa"):
        return column > v
    if prefix in ("lt", "eb"):
        return column < v
    if prefix == "ge":
        return column >= v
    if prefix == "le":
        return column <= v
    margin = abs(v) * 0.1
    return sa.and_(column >= v - margin, column <= v + margin)


# --------------------------------------------------------------------------------------------
# Matches


@dataclass(slots=True)
class Match:
    """Which rows satisfy one criterion.

    ``table`` (an index-table alias) with ``where``; the matching resource id is ``id_col``
    (``table.c.res_id``, or ``target_id`` for a reverse chain). ``direct`` instead, for the
    columns of the resource table itself (``_id``, ``_lastUpdated``): a function of the outer
    table. ``negate``: the resource matches when NO row does (``:not``, ``:missing=true``).
    """

    res_type: str
    table: sa.FromClause | None = None
    where: list = field(default_factory=list)
    id_col: sa.ColumnElement | None = None
    direct: object = None  # Callable[[FromClause], ColumnElement[bool]]
    negate: bool = False
    selectivity: int = 5  # lower drives the query (see the query builder)
    # Chains and _has: (inner match, column of ``table`` that must be one of its ids). Linked
    # late, so the inner criterion is an IN when this match drives and a probe when it filters.
    link: tuple[Match, sa.ColumnElement] | None = None


def _linked(where: list, link, correlated: bool) -> list:
    if link is None:
        return where
    inner, column = link
    if correlated:
        probe = _probe(sa.select(sa.literal(1)).where(*_linked(inner.where, inner.link, True), inner.id_col == column))
        cond = probe if inner.direct is None else column.in_(ids(inner))
    else:
        cond = column.in_(ids(inner))
    return [*where, sa.not_(cond) if inner.negate else cond]


def _probe(select: sa.Select) -> sa.Exists:
    """EXISTS evaluated per candidate row through the (res_type, res_id) index.

    ``OFFSET 0`` keeps PostgreSQL from turning it into a semi-join, whose hash side would read
    every row of a common value ("status=active" across the country) to filter ten candidates.
    """
    return select.offset(0).exists()


def ids(match: Match) -> sa.Select:
    """The ids matching ``match`` positively (``negate`` is the caller's to apply)."""
    if match.direct is not None:
        r = resource.alias()
        return sa.select(r.c.res_id).where(r.c.res_type == match.res_type, r.c.deleted == sa.false(), match.direct(r))
    return sa.select(match.id_col).where(*_linked(match.where, match.link, False))


def as_filter(match: Match, outer: sa.FromClause, *, correlated: bool) -> sa.ColumnElement[bool]:
    """``match`` as a condition on ``outer`` (the resource table or an alias of it)."""
    if match.direct is not None:
        cond = match.direct(outer)
    elif correlated:
        where = _linked(match.where, match.link, True)
        cond = _probe(sa.select(sa.literal(1)).where(*where, match.id_col == outer.c.res_id).correlate(outer))
    else:
        cond = outer.c.res_id.in_(ids(match))
    return sa.not_(cond) if match.negate else cond


@functools.cache
def index_alias(kind: str, depth: int = 0) -> sa.FromClause:
    """One alias per index table and nesting level, built once: sibling subqueries may share
    it, nested ones (chains, _has) get their own level. Building aliases per query was half
    the cost of preparing a search."""
    return INDEX_TABLES[kind].alias(f"{kind}_{depth}")


def _index_match(
    kind: str, res_type: str, code: str, conds: list, *, negate: bool = False, selectivity: int = 5, depth: int = 0
) -> Match:
    t = index_alias(kind, depth)
    where = [t.c.res_type == res_type, t.c.param == code]
    where.append(sa.or_(*(c(t) for c in conds)) if len(conds) > 1 else conds[0](t))
    return Match(res_type, t, where, t.c.res_id, negate=negate, selectivity=selectivity)


# --------------------------------------------------------------------------------------------
# Per-type conditions: (code, modifier, values) -> list of functions of the index alias


def _token_conds(sp: SearchParam, modifier: str, values: list[str]) -> list:
    conds = []
    for raw in values:
        if modifier == "text":
            text = _clip(normalize_text(unescape(raw)), "token", "text_norm")
            if not text:
                raise SearchError(f"El parámetro de búsqueda '{sp.code}' no tiene valor")
            conds.append(
                lambda t, x=text: sa.or_(
                    t.c.text_norm.startswith(x, autoescape=True), t.c.text_norm.contains(" " + x, autoescape=True)
                )
            )
            continue
        if modifier == "of-type":
            parts = _split_unescaped(raw, "|")
            if len(parts) != 3 or not all(parts):
                raise SearchError(
                    f"Valor inválido para '{sp.code}:of-type': '{raw[:60]}' (se espera sistema-del-tipo|código-del-tipo|valor)"
                )
            tsys, tcode, value = (_clip(p, "token", "code") for p in parts)
            conds.append(
                lambda t, a=tsys, b=tcode, v=value: sa.and_(t.c.type_system == a, t.c.type_code == b, t.c.code == v)
            )
            continue
        system, code = split_token(raw)
        code = _clip(code, "token", "code")
        if system is None:
            conds.append(lambda t, c=code: t.c.code == c)
        elif system == "":
            if not code:
                raise SearchError(f"Valor de token inválido para el parámetro '{sp.code}': '{raw[:60]}'")
            conds.append(lambda t, c=code: sa.and_(t.c.system.is_(None), t.c.code == c))
        else:
            system = _clip(system, "token", "system")
            if code == "":
                conds.append(lambda t, s=system: t.c.system == s)
            else:
                conds.append(lambda t, s=system, c=code: sa.and_(t.c.system == s, t.c.code == c))
    return conds


def _string_conds(sp: SearchParam, modifier: str, values: list[str]) -> list:
    conds = []
    for raw in values:
        value = unescape(raw)
        if modifier == "exact":
            conds.append(lambda t, v=_clip(value, "string", "value_exact"): t.c.value_exact == v)
            continue
        norm = _clip(normalize_text(value), "string", "value_norm")
        if not norm:
            raise SearchError(f"El parámetro de búsqueda '{sp.code}' no tiene valor")
        if modifier == "contains":
            conds.append(lambda t, v=norm: t.c.value_norm.contains(v, autoescape=True))
        else:
            conds.append(lambda t, v=norm: t.c.value_norm.startswith(v, autoescape=True))
    return conds


def _reference_conds(sp: SearchParam, modifier: str, values: list[str]) -> list:
    conds = []
    for raw in values:
        value = unescape(raw)
        if modifier:  # :Type with a bare id
            if "/" in value:
                raise SearchError(f"Con el modificador ':{modifier}' el parámetro '{sp.code}' espera solo un id: '{value[:60]}'")
            conds.append(
                lambda t, m=modifier, v=_clip(value, "reference", "target_id"): sa.and_(t.c.target_type == m, t.c.target_id == v)
            )
            continue
        if "/" not in value and ":" not in value:
            conds.append(lambda t, v=_clip(value, "reference", "target_id"): t.c.target_id == v)
            continue
        parts = reference_parts(value)
        if parts is None:
            raise SearchError(f"Referencia inválida para el parámetro '{sp.code}': '{value[:60]}'")
        target_type, target_id, url = parts
        if url is not None:
            conds.append(lambda t, u=url: t.c.url == u)
        else:
            if sp.targets and target_type not in sp.targets:
                raise SearchError(
                    f"El parámetro '{sp.code}' no puede referirse a {target_type} (admite: {', '.join(sp.targets)})"
                )
            conds.append(lambda t, a=target_type, b=target_id: sa.and_(t.c.target_type == a, t.c.target_id == b))
    return conds


def _uri_conds(sp: SearchParam, modifier: str, values: list[str]) -> list:
    conds = []
    for raw in values:
        value = _clip(unescape(raw), "uri", "uri")
        if modifier == "below":
            conds.append(lambda t, v=value: t.c.uri.startswith(v, autoescape=True))
        elif modifier == "above":
            # Stored uris that are a prefix of the value, cut at path separators.
            prefixes = {value[: i + 1] for i, ch in enumerate(value) if ch == "/"} | {value, value.rstrip("/")}
            conds.append(lambda t, p=sorted(prefixes): t.c.uri.in_(p))
        else:
            conds.append(lambda t, v=value: t.c.uri == v)
    return conds


def _date_conds(sp: SearchParam, modifier: str, values: list[str], low="low", high="high") -> list:
    conds = []
    for raw in values:
        prefix, text = parse_prefix(raw)
        plo, phi = _date_bounds(sp.code, text)
        conds.append(lambda t, p=prefix, a=plo, b=phi: date_condition(p, t.c[low], t.c[high], a, b))
    return conds


def _number_conds(sp: SearchParam, modifier: str, values: list[str]) -> list:
    conds = []
    for raw in values:
        prefix, text = parse_prefix(raw)
        d = _decimal(sp.code, text)
        conds.append(lambda t, p=prefix, d=d: number_condition(p, t.c.value, d))
    return conds


def _quantity_cond(code: str, raw: str, value="value", system="system", unit="code"):
    pieces = _split_unescaped(raw, "|")
    if len(pieces) not in (1, 3):
        raise SearchError(f"Cantidad inválida para el parámetro '{code}': '{raw[:60]}' (use valor|sistema|código)")
    prefix, text = parse_prefix(pieces[0])
    d = _decimal(code, text)
    sys_, unit_ = (pieces[1], pieces[2]) if len(pieces) == 3 else ("", "")

    def cond(t):
        parts = [number_condition(prefix, t.c[value], d)]
        if sys_:
            parts.append(t.c[system] == _clip(sys_, "quantity", "system"))
        if unit_:
            parts.append(t.c[unit] == _clip(unit_, "quantity", "code"))
        return sa.and_(*parts)

    return cond


def _quantity_conds(sp: SearchParam, modifier: str, values: list[str]) -> list:
    return [_quantity_cond(sp.code, raw) for raw in values]


def _composite_conds(res_type: str, sp: SearchParam, values: list[str]) -> list:
    params = params_for(res_type)
    kinds = [params[c].type if c in params else None for c, _ in sp.components]
    conds = []
    for raw in values:
        parts = re.split(r"(?<!\\)\$", raw)
        if len(parts) != 2 or not all(parts) or len(kinds) != 2:
            raise SearchError(f"Valor compuesto inválido para '{sp.code}': '{raw[:60]}' (se espera primero$segundo)")
        first, second = parts
        conds.append(_composite_cond(sp.code, kinds, first, second))
    return conds


def _composite_cond(code: str, kinds: list, first: str, second: str):
    system, c1 = split_token(first)

    def first_cond(t):
        out = [t.c.code1 == _clip(c1, "composite", "code1")]
        if system:
            out.append(t.c.system1 == _clip(system, "composite", "system1"))
        elif system == "":
            out.append(t.c.system1.is_(None))
        return out

    kind = kinds[1]
    if kind == "quantity":
        second_cond = _quantity_cond(code, second, "value2", "system2", "code2")
    elif kind == "date":
        prefix, text = parse_prefix(second)
        plo, phi = _date_bounds(code, text)
        second_cond = lambda t: date_condition(prefix, t.c.low2, t.c.high2, plo, phi)  # noqa: E731
    elif kind == "number":
        prefix, text = parse_prefix(second)
        d = _decimal(code, text)
        second_cond = lambda t: number_condition(prefix, t.c.value2, d)  # noqa: E731
    elif kind == "string":
        norm = normalize_text(unescape(second))
        second_cond = lambda t: t.c.code2.startswith(norm, autoescape=True)  # noqa: E731
    else:  # token, reference, uri
        s2, c2 = split_token(second) if kind == "token" else (None, unescape(second))

        def second_cond(t):
            out = t.c.code2 == _clip(c2, "composite", "code2")
            return sa.and_(out, t.c.system2 == s2) if s2 else out

    return lambda t: sa.and_(*first_cond(t), second_cond(t))


_CONDS = {
    "token": _token_conds,
    "string": _string_conds,
    "reference": _reference_conds,
    "uri": _uri_conds,
    "date": _date_conds,
    "number": _number_conds,
    "quantity": _quantity_conds,
}


# --------------------------------------------------------------------------------------------
# Criteria


def _param(res_type: str, code: str) -> SearchParam:
    sp = params_for(res_type).get(code)
    if sp is None:
        raise SearchError(f"Parámetro de búsqueda desconocido para {res_type}: '{code}'", "not-supported")
    return sp


def _values(name: str, value: str) -> list[str]:
    if len(value) > MAX_VALUE_LENGTH:
        raise SearchError(f"El valor del parámetro '{name[:60]}' es demasiado largo (máximo {MAX_VALUE_LENGTH} caracteres)")
    values = split_values(value)
    if any(v == "" for v in values):
        raise SearchError(f"El parámetro de búsqueda '{name[:60]}' no tiene valor")
    if len(values) > MAX_VALUES:
        raise SearchError(f"Demasiados valores alternativos en '{name[:60]}' (máximo {MAX_VALUES})")
    return values


def criterion(res_type: str, name: str, value: str, *, depth: int = 0, visible=None) -> Match:
    """Parse ``name=value`` for ``res_type`` into a ``Match`` (raises ``SearchError``).

    ``visible(res_type, res_id, patient_key)``: the caller's row rule (access policy), applied
    to the other resources a chain or ``_has`` looks at, so they reveal nothing hidden."""
    if res_type not in SERVED:
        raise SearchError(f"Tipo de recurso no soportado: '{res_type}'", "not-supported")
    if name.startswith("_has:"):
        return _reverse_chain(res_type, name, value, depth, visible)
    head, dot, chained = name.partition(".")
    code, _, modifier = head.partition(":")
    if not _NAME_RE.match(code):
        raise SearchError(f"Nombre de parámetro inválido: '{name[:60]}'", "not-supported")
    sp = _param(res_type, code)
    if dot:
        return _chain(res_type, sp, modifier, chained, value, depth, visible)
    values = _values(name, value)
    if code == "_id":
        if modifier:
            raise _bad_modifier(code, modifier)
        idv = [unescape(v) for v in values]
        return Match(res_type, direct=lambda r, v=idv: r.c.res_id.in_(v), selectivity=0)
    if code == "_lastUpdated":
        if modifier:
            raise _bad_modifier(code, modifier)
        conds = _date_conds(sp, "", values)
        return Match(res_type, direct=lambda r: sa.or_(*(c(_Cols(r.c.last_updated)) for c in conds)), selectivity=6)
    if modifier == "missing":
        return _missing(res_type, sp, values, depth)
    _check_modifier(sp, modifier)
    if sp.type == "composite":
        return _index_match("composite", res_type, code, _composite_conds(res_type, sp, values), selectivity=3, depth=depth)
    build = _CONDS.get(sp.type)
    if build is None:
        raise SearchError(f"Tipo de parámetro de búsqueda no soportado: '{code}' ({sp.type})", "not-supported")
    conds = build(sp, modifier if sp.type != "reference" or modifier in sp.targets else "", values)
    negate = modifier == "not"
    return _index_match(
        sp.type, res_type, code, conds, negate=negate, selectivity=_selectivity(sp, modifier, negate), depth=depth
    )


class _Cols:
    """A stand-in index alias whose low/high are one resource column (``_lastUpdated``)."""

    def __init__(self, column):
        self.c = {"low": column, "high": column}


def _selectivity(sp: SearchParam, modifier: str, negate: bool) -> int:
    if negate:
        return 9
    if sp.type == "reference":
        return 1
    if sp.type == "token" and "identifier" in sp.code:
        return 1
    if sp.type == "token" or (sp.type == "string" and modifier == "exact"):
        return 3
    return 5


def _bad_modifier(code: str, modifier: str) -> SearchError:
    return SearchError(f"Modificador de búsqueda no soportado para el parámetro '{code}': ':{modifier[:40]}'", "not-supported")


def _check_modifier(sp: SearchParam, modifier: str) -> None:
    if not modifier:
        return
    if sp.type == "reference" and _TYPE_NAME_RE.match(modifier):
        if modifier not in sp.targets:
            raise SearchError(
                f"El parámetro '{sp.code}' no puede referirse a {modifier[:40]} (admite: {', '.join(sp.targets)})"
            )
        return
    if modifier not in _MODIFIERS.get(sp.type, ()):
        raise _bad_modifier(sp.code, modifier)


def _missing(res_type: str, sp: SearchParam, values: list[str], depth: int) -> Match:
    if len(values) != 1 or values[0] not in ("true", "false"):
        raise SearchError(f"El modificador ':missing' de '{sp.code}' admite solo 'true' o 'false'")
    if sp.type not in INDEX_TABLES:
        raise _bad_modifier(sp.code, "missing")
    match = _index_match(sp.type, res_type, sp.code, [lambda t: sa.true()], depth=depth)
    match.negate = values[0] == "true"
    match.selectivity = 9 if match.negate else 7
    return match


def _chain(res_type: str, sp: SearchParam, modifier: str, chained: str, value: str, depth: int, visible=None) -> Match:
    """``subject:Patient.identifier=...``: the reference points at a resource matching the chain."""
    if sp.type != "reference":
        raise SearchError(f"Solo los parámetros de referencia admiten encadenamiento: '{sp.code}'")
    if depth > 0 or "." in chained:
        raise SearchError("Solo se admite un nivel de encadenamiento (p. ej. subject:Patient.identifier)", "not-supported")
    if modifier and modifier not in sp.targets:
        raise SearchError(f"El parámetro '{sp.code}' no puede referirse a '{modifier[:40]}' (admite: {', '.join(sp.targets)})")
    chained_code = chained.partition(":")[0]
    targets = [modifier] if modifier else [t for t in sp.targets if t in SERVED and chained_code in params_for(t)]
    if not targets:
        raise SearchError(f"Ningún destino de '{sp.code}' tiene el parámetro '{chained_code[:60]}'")
    t = index_alias("reference", depth)
    per_target = []
    for target in targets:
        inner = criterion(target, chained, value, depth=depth + 1, visible=visible)
        inner_ids = ids(inner)
        if inner.negate or visible is not None:
            # "points at a live <target> that does (not) match": never a missing or deleted one,
            # nor one the caller may not see.
            r = resource.alias(f"chained_{depth}")
            wanted = r.c.res_id.notin_(inner_ids) if inner.negate else r.c.res_id.in_(inner_ids)
            conds = [r.c.res_type == target, r.c.deleted == sa.false(), wanted]
            if visible is not None:
                conds.append(visible(r.c.res_type, r.c.res_id, r.c.patient_key))
            inner_ids = sa.select(r.c.res_id).where(*conds)
        per_target.append(sa.and_(t.c.target_type == target, t.c.target_id.in_(inner_ids)))
    where = [t.c.res_type == res_type, t.c.param == sp.code, sa.or_(*per_target)]
    # Drives from the target side: "patients with this CURP" is small, their results follow.
    return Match(res_type, t, where, t.c.res_id, selectivity=2)


def _reverse_chain(res_type: str, name: str, value: str, depth: int, visible=None) -> Match:
    """``_has:Observation:patient:code=1234``: some Observation whose ``patient`` points here
    matches ``code=1234``."""
    parts = name.split(":", 3)
    if len(parts) != 4 or not all(parts):
        raise SearchError(f"Parámetro _has mal formado: '{name[:80]}' (se espera _has:Tipo:referencia:parámetro)")
    _, source, ref_code, rest = parts
    if depth > 1:
        raise SearchError("Se admiten como máximo dos niveles de _has", "not-supported")
    if source not in SERVED:
        raise SearchError(f"Tipo de recurso desconocido en _has: '{source[:40]}'", "not-supported")
    ref = _param(source, ref_code)
    if ref.type != "reference":
        raise SearchError(f"'{ref_code}' no es un parámetro de referencia de {source}")
    if ref.targets and res_type not in ref.targets:
        raise SearchError(f"{source}.{ref_code} no puede referirse a {res_type}")
    inner = criterion(source, rest, value, depth=depth + 1, visible=visible)
    t = index_alias("reference", depth)
    where = [t.c.res_type == source, t.c.param == ref_code, t.c.target_type == res_type]
    if visible is not None:  # only referrers the caller may see count
        where.append(visible(t.c.res_type, t.c.res_id, t.c.patient_key))
    return Match(res_type, t, where, t.c.target_id, selectivity=4, link=(inner, t.c.res_id))
