"""A whole search request -> SQL: criteria, sort, keyset paging, totals, includes to fetch.

``parse_search(res_type, params, ...)`` reads the query parameters into a ``SearchSpec``
(raising ``SearchError``); ``page_statement(spec, cursor)`` is the SELECT of one page;
``count_statement(spec)`` counts every match. Nothing here touches the database.

Query shape: the most selective criterion drives (``res_id IN (SELECT ...)`` on an index
lookup); every other criterion is a correlated ``EXISTS`` probed through the
``(res_type, res_id)`` index of its table. Sort keys are per-resource aggregates of index rows
(``MIN`` ascending, ``MAX`` descending: the FHIR rule for repeating values), nulls last, and
``res_id`` breaks ties. Paging is keyset: the cursor carries the last row's sort values, so a
next link stays correct while others write (no row is skipped or repeated for rows whose sort
values do not change).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime

import orjson
import sqlalchemy as sa

from expediente.db.schema import resource
from expediente.fhir.resource_types import SERVED
from expediente.fhir.search.clauses import (
    RESULT_PARAMS,
    Match,
    SearchError,
    as_filter,
    criterion,
    index_alias,
    split_values,
)
from expediente.fhir.search.registry import compartment_params, params_for

__all__ = ["SearchSpec", "Include", "parse_search", "page_statement", "count_statement", "match_statement", "encode_cursor", "COLUMNS"]

COLUMNS = (
    resource.c.res_type,
    resource.c.res_id,
    resource.c.version_id,
    resource.c.last_updated,
    resource.c.deleted,
    resource.c.body,
    resource.c.patient_key,
)

# Sortable types: the index column that orders them, ascending and descending.
_SORT_COLUMNS: dict[str, tuple[str, str]] = {
    "date": ("low", "high"),
    "string": ("value_norm", "value_norm"),
    "token": ("code", "code"),
    "number": ("value", "value"),
    "quantity": ("value", "value"),
    "uri": ("uri", "uri"),
    "reference": ("target_id", "target_id"),
}
MAX_SORT_KEYS = 4
MAX_INCLUDES = 10
_TOTAL_MODES = ("none", "estimate", "accurate")
_UNSUPPORTED_CONTROL = frozenset({"_contained", "_containedType"})


@dataclass(frozen=True, slots=True)
class Include:
    """``_include=Source:param[:Target]`` (or ``_revinclude``); ``param`` ``*`` = every reference."""

    source: str
    param: str
    target: str | None
    iterate: bool = False

    def text(self) -> str:
        return ":".join(x for x in (self.source, self.param, self.target) if x)


@dataclass(slots=True)
class SearchSpec:
    res_type: str
    matches: list[Match] = field(default_factory=list)
    sort: list[tuple[str, str, bool]] = field(default_factory=list)  # (code, search type, descending)
    count: int = 20
    include: list[Include] = field(default_factory=list)
    revinclude: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] | None = None
    total: str = "none"
    warnings: list[str] = field(default_factory=list)  # lenient: what was ignored, in Spanish
    used: list[tuple[str, str]] = field(default_factory=list)  # the parameters applied (self link)
    # The caller's row rule from the access policy, (res_type, res_id, patient_key) -> condition;
    # None: every row. Applied to the matches, to what chains and _has look at, and to totals.
    visible: object = None


def parse_search(
    res_type: str,
    params: list[tuple[str, str]],
    *,
    default_count: int,
    max_count: int,
    lenient: bool = False,
    compartment: tuple[str, str] | None = None,
    visible=None,
) -> SearchSpec:
    """Read every query parameter; ``SearchError`` on the first bad one.

    Strict (default): an unknown or unsupported parameter, modifier or prefix is an error.
    Lenient: those are ignored and listed in ``warnings``; malformed values are still errors.
    """
    if res_type not in SERVED:
        raise SearchError(f"Tipo de recurso no soportado: '{res_type[:40]}'", "not-supported")
    spec = SearchSpec(res_type, count=default_count, visible=visible)
    if compartment is not None:
        spec.matches.append(_compartment_match(res_type, *compartment))
    for name, value in params:
        try:
            _apply(spec, name, value, max_count)
        except SearchError as exc:
            if not (lenient and exc.code == "not-supported"):
                raise
            spec.warnings.append(f"Parámetro ignorado '{name[:80]}': {exc.message}")
            continue
        if name not in ("_cursor", "_after"):
            spec.used.append((name, value))
    return spec


def _apply(spec: SearchSpec, name: str, value: str, max_count: int) -> None:
    base = name.partition(":")[0]
    if base in RESULT_PARAMS:
        _apply_control(spec, name, base, value, max_count)
    else:
        spec.matches.append(criterion(spec.res_type, name, value, visible=spec.visible))


def _apply_control(spec: SearchSpec, name: str, base: str, value: str, max_count: int) -> None:
    if base in _UNSUPPORTED_CONTROL:
        raise SearchError(f"Parámetro de búsqueda no soportado: '{name}'", "not-supported")
    if base == "_count":
        if not (value.isascii() and value.isdigit()) or len(value) > 6:
            raise SearchError(f"_count inválido: '{value[:20]}' (se espera un entero no negativo)")
        spec.count = min(int(value), max_count)
    elif base == "_sort":
        spec.sort = _parse_sort(spec.res_type, value)
    elif base == "_total":
        if value not in _TOTAL_MODES:
            raise SearchError(f"_total inválido: '{value[:20]}' (use none, estimate o accurate)")
        spec.total = value
    elif base == "_summary":
        from expediente.fhir.shaping import parse_summary

        spec.summary = _shaping_value(parse_summary, value)
    elif base == "_elements":
        from expediente.fhir.shaping import parse_elements

        spec.elements = _shaping_value(parse_elements, value)
    elif base in ("_include", "_revinclude"):
        modifier = name.partition(":")[2]
        if modifier not in ("", "iterate", "recurse"):
            raise SearchError(f"Modificador no soportado en {base}: ':{modifier[:20]}'", "not-supported")
        target = spec.include if base == "_include" else spec.revinclude
        target.append(_parse_include(value, base, iterate=bool(modifier)))
        if len(spec.include) + len(spec.revinclude) > MAX_INCLUDES:
            raise SearchError(f"Demasiados _include/_revinclude (máximo {MAX_INCLUDES})")
    # _format, _pretty, _cursor, _after: read elsewhere or irrelevant to a JSON-only server


def _shaping_value(parse, value: str):
    try:
        return parse(value)
    except ValueError as exc:
        raise SearchError(str(exc)) from None


def _parse_sort(res_type: str, value: str) -> list[tuple[str, str, bool]]:
    keys = []
    for raw in split_values(value):
        desc = raw.startswith("-")
        code = raw[1:] if desc else raw
        if code in ("_id", "_lastUpdated"):
            keys.append((code, code, desc))
            continue
        sp = params_for(res_type).get(code)
        if sp is None:
            raise SearchError(f"No se puede ordenar por '{code[:60]}': no es un parámetro de {res_type}", "not-supported")
        if sp.type not in _SORT_COLUMNS:
            raise SearchError(f"No se puede ordenar por '{code}' (parámetro de tipo {sp.type})", "not-supported")
        keys.append((code, sp.type, desc))
    if not keys or len(keys) > MAX_SORT_KEYS:
        raise SearchError(f"_sort admite de 1 a {MAX_SORT_KEYS} claves separadas por comas")
    return keys


def _parse_include(value: str, kind: str, *, iterate: bool) -> Include:
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise SearchError(f"{kind} mal formado: '{value[:80]}' (se espera Tipo:parámetro[:TipoDestino])")
    source, param = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if source not in SERVED:
        raise SearchError(f"Tipo de recurso desconocido en {kind}: '{source[:40]}'", "not-supported")
    if param != "*":
        sp = params_for(source).get(param)
        if sp is None or sp.type != "reference":
            raise SearchError(f"'{param[:60]}' no es un parámetro de referencia de {source}", "not-supported")
        if target is not None and sp.targets and target not in sp.targets:
            raise SearchError(f"{source}.{param} no puede referirse a {target[:40]}")
    if target is not None and target not in SERVED:
        raise SearchError(f"Tipo de recurso desconocido en {kind}: '{target[:40]}'", "not-supported")
    return Include(source, param, target, iterate)


def _compartment_match(res_type: str, comp_type: str, comp_id: str) -> Match:
    """Membership in ``Patient/{id}``'s compartment, from the CompartmentDefinition."""
    if comp_type != "Patient":
        raise SearchError(f"Compartimento no soportado: '{comp_type[:40]}'", "not-supported")
    if res_type == "Patient":
        return Match(res_type, direct=lambda r: r.c.res_id == comp_id, selectivity=0)
    codes = compartment_params(res_type)
    if not codes:
        raise SearchError(f"{res_type} no pertenece al compartimento de un paciente", "not-supported")
    t = index_alias("reference")
    where = [t.c.res_type == res_type, t.c.param.in_(codes), t.c.target_type == "Patient", t.c.target_id == comp_id]
    return Match(res_type, t, where, t.c.res_id, selectivity=0)


# --------------------------------------------------------------------------------------------
# Statements


def _filters(spec: SearchSpec) -> list[sa.ColumnElement[bool]]:
    """The driving criterion as ``IN``, the others as correlated ``EXISTS``."""
    conds = [resource.c.res_type == spec.res_type, resource.c.deleted == sa.false()]
    if spec.visible is not None:
        conds.append(spec.visible(resource.c.res_type, resource.c.res_id, resource.c.patient_key))
    if not spec.matches:
        return conds
    driver = min(range(len(spec.matches)), key=lambda i: spec.matches[i].selectivity)
    for i, match in enumerate(spec.matches):
        drives = i == driver and not match.negate and match.selectivity < 7
        conds.append(as_filter(match, resource, correlated=not drives))
    return conds


def _sort_expr(spec: SearchSpec, code: str, kind: str, desc: bool) -> sa.ColumnElement:
    if code == "_id":
        return resource.c.res_id
    if code == "_lastUpdated":
        return resource.c.last_updated
    t = index_alias(kind)
    asc_col, desc_col = _SORT_COLUMNS[kind]
    agg = sa.func.max(t.c[desc_col]) if desc else sa.func.min(t.c[asc_col])
    return (
        sa.select(agg)
        .where(t.c.res_type == spec.res_type, t.c.res_id == resource.c.res_id, t.c.param == code)
        .correlate(resource)
        .scalar_subquery()
    )


def match_statement(spec: SearchSpec) -> sa.Select:
    """The ids of every match, unordered (conditional create/update/delete)."""
    return sa.select(resource.c.res_id).where(*_filters(spec))


def count_statement(spec: SearchSpec) -> sa.Select:
    return sa.select(sa.func.count()).select_from(resource).where(*_filters(spec))


def page_statement(spec: SearchSpec, cursor: str | None) -> tuple[sa.Select, int]:
    """The SELECT of one page (``count + 1`` rows, to know whether there is a next one) and
    the number of sort-value columns that follow ``COLUMNS`` in each row."""
    filters = _filters(spec)
    keys = [k for k in spec.sort if k[0] != "_id"] if spec.sort else []
    id_desc = next((d for c, _, d in spec.sort if c == "_id"), False)
    if not keys:
        query = sa.select(*COLUMNS).where(*filters)
        if cursor:
            (last_id,) = _decode_cursor(cursor, [])
            query = query.where(resource.c.res_id < last_id if id_desc else resource.c.res_id > last_id)
        order = resource.c.res_id.desc() if id_desc else resource.c.res_id
        return query.order_by(order).limit(spec.count + 1), 0
    exprs = [_sort_expr(spec, code, kind, desc).label(f"s{i}") for i, (code, kind, desc) in enumerate(keys)]
    sub = sa.select(*COLUMNS, *exprs).where(*filters).subquery("page")
    query = sa.select(*sub.c)
    sort_cols = [sub.c[f"s{i}"] for i in range(len(keys))]
    descs = [desc for _, _, desc in keys]
    if cursor:
        values = _decode_cursor(cursor, [kind for _, kind, _ in keys])
        query = query.where(_after(sort_cols, descs, values[:-1], sub.c.res_id, values[-1], id_desc))
    order = []
    for col, desc in zip(sort_cols, descs):
        order += [col.is_(None), col.desc() if desc else col.asc()]
    order.append(sub.c.res_id.desc() if id_desc else sub.c.res_id)
    return query.order_by(*order).limit(spec.count + 1), len(keys)


def _after(cols, descs, values, id_col, last_id, id_desc) -> sa.ColumnElement[bool]:
    """Rows strictly after the cursor in (nulls-last sort keys..., res_id) order."""
    equal_so_far: list = []
    options = []
    for col, desc, value in zip(cols, descs, values):
        if value is None:
            # Inside the null group of this key: only the rest of the key list can move on.
            equal_so_far.append(col.is_(None))
            continue
        beyond = col < value if desc else col > value
        options.append(sa.and_(*equal_so_far, sa.or_(col.is_(None), beyond)))
        equal_so_far.append(col == value)
    options.append(sa.and_(*equal_so_far, id_col < last_id if id_desc else id_col > last_id))
    return sa.or_(*options)


def encode_cursor(row, n_keys: int) -> str:
    """The cursor after ``row`` (a page row: COLUMNS then the sort values)."""
    values = [_jsonable(v) for v in row[len(COLUMNS) : len(COLUMNS) + n_keys]]
    values.append(row[1])
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def _jsonable(v):
    return {"dt": v.isoformat()} if isinstance(v, datetime) else v


def _decode_cursor(cursor: str, kinds: list[str]) -> list:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or len(values) != len(kinds) + 1 or not isinstance(values[-1], str):
            raise ValueError
        out = []
        for v, kind in zip(values, kinds):
            if isinstance(v, dict):
                v = datetime.fromisoformat(v["dt"])
            elif v is not None and not isinstance(v, (str, int, float)):
                raise ValueError
            if v is not None and kind == "date" and not isinstance(v, datetime):
                raise ValueError
            out.append(v)
        out.append(values[-1])
        return out
    except Exception:  # noqa: BLE001 - any malformed cursor is the client's error
        raise SearchError("Cursor de página inválido; vuelva a pedir la primera página") from None


def match_query(res_type: str, params: list[tuple[str, str]]) -> sa.Select:
    """The ids of the live ``res_type`` resources matching every criterion in ``params``
    (strict: raises ``SearchError``). No criteria: every live resource of the type."""
    return match_statement(parse_search(res_type, params, default_count=0, max_count=0))
