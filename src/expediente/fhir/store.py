"""The FHIR resource store: versioned create/read/update/delete/history on SQL.

Knows FHIR resources and SQL, nothing of HTTP. Each write is one transaction holding the
current row, a new history row, the search-index rows and the audit entry; nothing is ever
erased (a delete is a new, empty version). Every access passes through the AccessGate.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import parse_qsl

import orjson
import sqlalchemy as sa

from expediente.db.engine import write_transaction
from expediente.db.group_commit import GroupCommitter, flush_inserts, insert_rows
from expediente.db.schema import INDEX_TABLES, resource, resource_history, search_reindex
from expediente.fhir import errors
from expediente.fhir.errors import FhirError
from expediente.fhir.resource_types import SERVED, SERVER_WRITTEN_ONLY
from expediente.fhir.search import includes
from expediente.fhir.search.clauses import RESULT_PARAMS, SearchError
from expediente.fhir.search.engine import (
    COLUMNS,
    SearchSpec,
    count_statement,
    encode_cursor,
    match_statement,
    page_statement,
    parse_search,
)
from expediente.fhir.search.extract import extract_index, patient_key
from expediente.fhir.signature_lock import is_signature_provenance, refuse_change_if_signed
from expediente.fhir.validation import ResourceInvalid, validate_resource
from expediente.mpi.person import person_records
from expediente.mx.condition_rules import check_condition
from expediente.mx.diagnosis import cie10_catalog
from expediente.mx.profiles import check_mode
from expediente.mx.profiles.enforcement import enforce_profiles, refuse_erasure
from expediente.security import policy
from expediente.security.access import Access, AccessGate
from expediente.security.care import CARE_TYPES
from expediente.security.principal import Principal

log = logging.getLogger(__name__)

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    source: str | None = None  # client address, for the audit trail
    # Break-the-glass: the stated reason for an emergency access outside the care relationship.
    emergency_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Stored:
    res_type: str
    res_id: str
    version_id: int
    last_updated: datetime  # naive UTC
    deleted: bool
    body: bytes  # compact JSON as served; b"" for a deletion
    patient_key: str | None = None
    method: str | None = None  # history rows: POST, PUT or DELETE

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    @property
    def last_modified(self) -> str:
        return format_datetime(self.last_updated.replace(tzinfo=UTC), usegmt=True)

    @property
    def location(self) -> str:
        return f"{self.res_type}/{self.res_id}/_history/{self.version_id}"


@dataclass(frozen=True, slots=True)
class WriteResult:
    stored: Stored
    created: bool  # a new resource (201) rather than a new version or a match (200)
    changed: bool = True  # False: conditional create matched, or an update changed nothing


def new_id() -> str:
    """A time-ordered UUID (version 7 layout): new rows land at the end of B-tree indexes."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def instant(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_COLS = COLUMNS  # the resource row as Stored takes it
_HCOLS = (
    resource_history.c.res_type,
    resource_history.c.res_id,
    resource_history.c.version_id,
    resource_history.c.last_updated,
    resource_history.c.deleted,
    resource_history.c.body,
    resource_history.c.patient_key,
    resource_history.c.method,
)

# Hot-path statements built once (bound parameters), not per request.
_CURRENT = sa.select(*_COLS).where(resource.c.res_type == sa.bindparam("t"), resource.c.res_id == sa.bindparam("i"))
_CURRENT_FOR_UPDATE = _CURRENT.with_for_update()
_VERSION = sa.select(*_HCOLS).where(
    resource_history.c.res_type == sa.bindparam("t"),
    resource_history.c.res_id == sa.bindparam("i"),
    resource_history.c.version_id == sa.bindparam("v"),
)


def check_type(res_type: str) -> None:
    if res_type not in SERVED:
        raise errors.unknown_type(res_type)


def check_id(res_id: str) -> None:
    if not ID_RE.match(res_id):
        raise errors.bad_request(
            f"Identificador lógico inválido: '{res_id[:80]}' (1 a 64 caracteres: letras, dígitos, '-' y '.')",
            expression="id",
        )


def _check_writable(res_type: str) -> None:
    check_type(res_type)
    if res_type in SERVER_WRITTEN_ONLY:
        raise FhirError.of(405, f"{res_type} solo lo escribe el servidor (bitácora de auditoría)", "not-supported")


def _validated(resource_json: dict, res_type: str) -> None:
    if not isinstance(resource_json, dict):
        raise errors.bad_request("El cuerpo debe ser un objeto JSON con un recurso FHIR")
    found = resource_json.get("resourceType")
    if found != res_type:
        raise errors.bad_request(
            f"El resourceType del cuerpo ('{found}') no corresponde al de la URL ('{res_type}')",
            expression="resourceType",
        )
    try:
        validate_resource(resource_json)
    except ResourceInvalid as exc:
        raise FhirError(
            400, [errors.Issue(i.message, i.code, expression=i.path) for i in exc.issues] or [errors.Issue("Recurso inválido")]
        ) from None


def _validated_client(resource_json: dict, res_type: str, profiles: str = "mx") -> None:
    """A resource as a client writes it: valid, conforming to the Mexican profiles (``profiles``
    mode, 422), and not an electronic signature (only the document's $sign operation, which
    verifies it, records those)."""
    _validated(resource_json, res_type)
    enforce_profiles(resource_json, profiles)
    if res_type == "Provenance" and is_signature_provenance(resource_json):
        raise FhirError.of(
            422,
            "Las firmas electrónicas se registran con la operación $sign del documento firmado, no como Provenance directo",
            "business-rule",
        )


def _client_meta(resource_json: dict) -> dict:
    """meta as the client may set it (tags, profiles, security labels), without what the server sets."""
    return {k: v for k, v in (resource_json.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}


def _content(resource_json: dict) -> dict:
    """The resource without server-managed metadata, to tell whether an update changes anything."""
    meta = _client_meta(resource_json)
    out = {k: v for k, v in resource_json.items() if k not in ("meta", "id")}
    if meta:
        out["meta"] = meta
    return out


def _finalize(resource_json: dict, res_type: str, res_id: str, version: int, ts: datetime) -> bytes:
    meta = _client_meta(resource_json)
    body = {"resourceType": res_type, "id": res_id, "meta": {"versionId": str(version), "lastUpdated": instant(ts), **meta}}
    body.update((k, v) for k, v in resource_json.items() if k not in ("resourceType", "id", "meta"))
    return orjson.dumps(body)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What a write needs that does not depend on the stored state, computed before the
    transaction so the time spent holding the write lock is only SQL."""

    body: dict
    content: dict
    patient_key: str | None
    index_rows: dict


def _prepare(body: dict, res_id: str) -> _Prepared:
    with_id = {**body, "id": res_id}
    return _Prepared(body, _content(body), patient_key(with_id), extract_index(with_id))


# (result, denial): a denied write still commits its audit entry, then raises the denial.
_Outcome = tuple[WriteResult | None, FhirError | None]

@dataclass(slots=True)
class SearchResult:
    spec: SearchSpec
    matches: list[Stored]
    next_cursor: str | None
    total: int | None
    included: list[Stored]
    truncated: bool  # more resources to include than the page may carry


def _search_error(exc: SearchError) -> FhirError:
    return FhirError.of(400, exc.message, "not-supported" if exc.code == "not-supported" else "invalid")


def _encode_everything_cursor(last: Stored) -> str:
    return base64.urlsafe_b64encode(f"{last.patient_key}/{last.res_id}".encode()).decode()


def _decode_everything_cursor(cursor: str) -> tuple[str, str]:
    """(patient key, resource id) of the last row of the previous page."""
    try:
        key, _, res_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("/")
    except Exception:  # noqa: BLE001
        key = res_id = ""
    if not (ID_RE.match(key) and ID_RE.match(res_id)):
        raise errors.bad_request("Cursor de página inválido; vuelva a pedir la primera página")
    return key, res_id


def _parse_conditional(res_type: str, query: str) -> list[tuple[str, str]]:
    params = [(k, v) for k, v in parse_qsl(query.lstrip("?"), keep_blank_values=True) if k not in RESULT_PARAMS]
    if not params:
        raise errors.bad_request("La condición está vacía: indique al menos un parámetro de búsqueda que seleccione recursos")
    return params


class ResourceStore:
    def __init__(self, engine: sa.Engine, gate: AccessGate, reader: sa.Engine | None = None, profiles: str = "mx"):
        self.engine = engine
        check_mode(profiles)
        self.profiles = profiles  # Mexican profiles mode: "mx" | "declared"
        self._committer = GroupCommitter(engine, name="fhir-writes")
        self.reader = reader or engine  # single-statement reads (autocommit pool on PostgreSQL)
        self.gate = gate
        self._pg = engine.dialect.name == "postgresql"
        self._reindex_checked = float("-inf")
        self._reindex_cache: dict[str, str] = {}
        # Called after a commit that created or changed Patients, with the caller and them
        # (the master patient index matches and links new registrations).
        self.patient_listeners: list[Callable[[Caller, list[Stored]], None]] = []

    def close(self) -> None:
        self._committer.close()

    # ----------------------------------------------------------------- reads

    def read(self, caller: Caller, res_type: str, res_id: str) -> Stored:
        check_type(res_type)
        check_id(res_id)
        grant = self._grant(caller, "read", res_type)
        with self.reader.connect() as conn:
            stored, visible = _fetch_visible(conn, grant, _CURRENT, resource, {"t": res_type, "i": res_id})
        self.gate.record(
            grant, Access("read", res_type, res_id, stored.patient_key if stored else None, visible), source=caller.source
        )
        if stored is None:
            raise errors.not_found(res_type, res_id)
        if stored.deleted:
            raise errors.gone(res_type, res_id, stored.version_id)
        return stored

    def vread(self, caller: Caller, res_type: str, res_id: str, version: str) -> Stored:
        check_type(res_type)
        check_id(res_id)
        if not (version.isascii() and version.isdigit()) or len(version) > 9:
            raise errors.bad_request(f"Versión inválida: '{version[:40]}' (debe ser un número entero)")
        grant = self._grant(caller, "vread", res_type)
        with self.reader.connect() as conn:
            stored, visible = _fetch_visible(conn, grant, _VERSION, resource_history, {"t": res_type, "i": res_id, "v": int(version)})
        self.gate.record(
            grant, Access("vread", res_type, res_id, stored.patient_key if stored else None, visible), source=caller.source
        )
        if stored is None:
            raise FhirError.of(404, f"No existe la versión {version} de {res_type}/{res_id}", "not-found")
        if stored.deleted:
            raise errors.gone(res_type, res_id, stored.version_id)
        return stored

    def _grant(self, caller: Caller, action: str, res_type: str | None):
        """The caller's type-level grant for a read (403, recorded, when denied)."""
        return self.gate.grant(caller.principal, action, res_type, source=caller.source, emergency=caller.emergency_reason)

    def history(
        self,
        caller: Caller,
        res_type: str | None = None,
        res_id: str | None = None,
        *,
        since: datetime | None = None,
        count: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Stored], str | None]:
        """History entries newest first, and the cursor of the next page (None on the last)."""
        h = resource_history.c
        query = sa.select(*_HCOLS)
        if res_type is not None:
            check_type(res_type)
            query = query.where(h.res_type == res_type)
        grant = self._grant(caller, "history", res_type)
        visible = _visible_of(grant)
        if res_id is not None:
            check_id(res_id)
            query = query.where(h.res_id == res_id)
            with self.reader.connect() as conn:
                current, seen = _fetch_visible(conn, grant, _CURRENT, resource, {"t": res_type, "i": res_id})
            key = current.patient_key if current else None
            self.gate.record(grant, Access("history", res_type, res_id, key, seen), source=caller.source)
        else:
            if visible is not None:
                query = query.where(visible(h.res_type, h.res_id, h.patient_key))
            readable = policy.readable_types(caller.principal, "history")
            if res_type is None and readable != SERVED:
                query = query.where(h.res_type.in_(sorted(readable)))
        if since is not None:
            query = query.where(h.last_updated >= since)
        if cursor:
            ts, rtype, rid, ver = _decode_cursor(cursor)
            query = query.where(sa.tuple_(h.last_updated, h.res_type, h.res_id, h.version_id) < sa.tuple_(ts, rtype, rid, ver))
        query = query.order_by(h.last_updated.desc(), h.res_type.desc(), h.res_id.desc(), h.version_id.desc()).limit(count + 1)
        with self.reader.connect() as conn:
            rows = [Stored(*r) for r in conn.execute(query)]
        if res_id is not None and not rows and cursor is None:
            raise errors.not_found(res_type, res_id)
        next_cursor = None
        if len(rows) > count:
            rows = rows[:count]
            last = rows[-1]
            next_cursor = _encode_cursor(last)
        if res_id is None:
            entities = tuple(dict.fromkeys(f"{s.res_type}/{s.res_id}" for s in rows))
            self.gate.record(grant, Access("history", res_type), source=caller.source, entities=entities)
        return rows, next_cursor

    def search(
        self,
        caller: Caller,
        res_type: str,
        params: list[tuple[str, str]],
        *,
        default_count: int = 50,
        max_count: int = 500,
        include_max: int = 1000,
        lenient: bool = False,
        compartment: tuple[str, str] | None = None,
    ) -> SearchResult:
        """One page of current resources matching ``params`` (every FHIR search feature, see
        ``expediente.fhir.search``), with its includes, the next page's cursor and the total
        when asked for or known."""
        check_type(res_type)
        if compartment is not None:
            check_id(compartment[1])
        grant = self._grant(caller, "search", res_type)
        visible = _visible_of(grant)
        try:
            spec = parse_search(
                res_type,
                params,
                default_count=default_count,
                max_count=max_count,
                lenient=lenient,
                compartment=compartment,
                visible=visible,
            )
            cursor = next((v for k, v in params if k in ("_cursor", "_after")), None)
            page, n_keys = page_statement(spec, cursor)
        except SearchError as exc:
            raise _search_error(exc) from None
        self._check_index_ready(res_type, spec, lenient)
        for inc in spec.include + spec.revinclude:
            for t in sorted({inc.source, inc.target} - {None, res_type}):
                self._grant(caller, "search", t)  # the role must read every included type
        access = Access("search", res_type, None, compartment[1] if compartment else None)
        with self.reader.connect() as conn:
            total = self._total(conn, spec)
            if spec.summary == "count":
                self.gate.record(grant, access, source=caller.source)
                return SearchResult(spec, [], None, total, [], False)
            rows = conn.execute(page).all() if spec.count else []
            more = len(rows) > spec.count
            rows = rows[: spec.count]
            next_cursor = encode_cursor(rows[-1], n_keys) if more and rows else None
            if total is None and not more and "_cursor" not in dict(params) and "_after" not in dict(params):
                total = len(rows)  # the first page is the whole answer: the total is known for free
            found = [Stored(*r[:7]) for r in rows]
            included = (
                includes.resolve(conn, [(s.res_type, s.res_id) for s in found], spec.include, spec.revinclude, include_max, visible)
                if found and (spec.include or spec.revinclude)
                else includes.Included([], False)
            )
        extra = [Stored(*r) for r in included.rows]
        self.gate.record(grant, access, source=caller.source, entities=_entities(found, extra))
        return SearchResult(spec, found, next_cursor, total, extra, included.truncated)

    def _total(self, conn: sa.Connection, spec) -> int | None:
        if spec.total == "accurate" or spec.summary == "count":
            return conn.execute(count_statement(spec)).scalar_one()
        if spec.total == "estimate" and self._pg:
            compiled = count_statement(spec).compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
            plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {compiled}").scalar_one()
            plan = plan if isinstance(plan, list) else orjson.loads(plan)
            return int(plan[0]["Plan"]["Plans"][0]["Plan Rows"]) if plan[0]["Plan"].get("Plans") else None
        return None

    def _check_index_ready(self, res_type: str, spec, lenient: bool) -> None:
        """A type whose index is being rebuilt answers no silently partial results."""
        pending = self._reindex_pending()
        if res_type not in pending or not spec.matches:
            return
        message = (
            f"Los índices de búsqueda de {res_type} se están reconstruyendo ({pending[res_type]}); "
            "los resultados podrían estar incompletos"
        )
        if not lenient:
            raise FhirError.of(503, message + ". Intente más tarde o use Prefer: handling=lenient", "transient")
        spec.warnings.append(message)

    def _reindex_pending(self) -> dict[str, str]:
        now = time.monotonic()
        if now - self._reindex_checked > 2.0:
            with self.reader.connect() as conn:
                self._reindex_cache = dict(conn.execute(sa.select(search_reindex.c.res_type, search_reindex.c.reason)).all())
            self._reindex_checked = now
        return self._reindex_cache

    def everything(
        self,
        caller: Caller,
        patient_id: str,
        *,
        types: list[str] | None = None,
        since: datetime | None = None,
        count: int = 50,
        cursor: str | None = None,
        include_max: int = 1000,
    ) -> tuple[list[Stored], list[Stored], str | None, bool]:
        """Patient/$everything, one page: the compartments of the patient and of the person's
        other records (MPI links: IMSS's, ISSSTE's...), each resource attributed to its own
        record, in (record, id) order; plus the resources outside them that the page refers
        to (practitioners, organizations...)."""
        check_id(patient_id)
        for t in types or ():
            check_type(t)
        grant = self._grant(caller, "everything", "Patient")
        visible = _visible_of(grant)
        with self.reader.connect() as conn:
            patient, seen = _fetch_visible(conn, grant, _CURRENT, resource, {"t": "Patient", "i": patient_id})
            records = [patient_id, *person_records(conn, patient_id)]
        access = Access("everything", "Patient", patient_id, patient_id if patient else None, seen)
        if not seen or patient is None or patient.deleted:
            self.gate.record(grant, access, source=caller.source)
            raise errors.not_found("Patient", patient_id)
        query = sa.select(*_COLS).where(resource.c.patient_key.in_(records), resource.c.deleted == sa.false())
        if visible is not None:  # consent may hide labelled parts of the record
            query = query.where(visible(resource.c.res_type, resource.c.res_id, resource.c.patient_key))
        readable = policy.readable_types(caller.principal, "everything")
        wanted = readable if not types else readable & set(types)
        if wanted != SERVED:
            query = query.where(resource.c.res_type.in_(sorted(wanted)))
        if since is not None:
            query = query.where(resource.c.last_updated >= since)
        if cursor:
            key, after = _decode_everything_cursor(cursor)
            query = query.where(sa.tuple_(resource.c.patient_key, resource.c.res_id) > sa.tuple_(key, after))
        query = query.order_by(resource.c.patient_key, resource.c.res_id).limit(count + 1)
        with self.reader.connect() as conn:
            rows = [Stored(*r) for r in conn.execute(query)]
            more = len(rows) > count
            rows = rows[:count]
            outside, truncated = includes.referenced_outside_compartments(
                conn, [(s.res_type, s.res_id) for s in rows], include_max, visible
            )
        outside = [Stored(*r) for r in outside if r[0] in wanted]
        self.gate.record(grant, access, source=caller.source, entities=_entities(rows, outside))
        next_cursor = _encode_everything_cursor(rows[-1]) if more else None
        return rows, outside, next_cursor, truncated

    def find(self, res_type: str, params: list[tuple[str, str]], conn: sa.Connection, limit: int = 2) -> list[str]:
        """Ids of current resources matching a search (conditional operations), seeing the
        transaction's earlier writes. Statements are kept per condition: conditional references
        repeat from Bundle to Bundle, and building one costs several times running it."""
        key = (res_type, tuple(params), limit)
        statement = _CONDITION_STATEMENTS.get(key)
        if statement is None:
            try:
                spec = parse_search(res_type, params, default_count=limit, max_count=limit)
            except SearchError as exc:
                raise errors.bad_request(exc.message, code="invalid") from None
            statement = match_statement(spec).limit(limit)
            if len(_CONDITION_STATEMENTS) >= _CONDITION_STATEMENTS_MAX:
                _CONDITION_STATEMENTS.clear()
            _CONDITION_STATEMENTS[key] = statement
        flush_inserts(conn)
        return list(conn.execute(statement).scalars())

    # ---------------------------------------------------------------- writes

    def create(self, caller: Caller, res_type: str, body: dict, *, if_none_exist: str | None = None) -> WriteResult:
        _check_writable(res_type)
        _validated_client(body, res_type, self.profiles)
        res_id = new_id()
        prepared = _prepare(body, res_id)
        conditions = _parse_conditional(res_type, if_none_exist) if if_none_exist is not None else None

        return self._commit(lambda conn: self._create_in(conn, caller, res_type, res_id, prepared, if_none_exist, conditions), caller)

    def update(
        self, caller: Caller, res_type: str, res_id: str, body: dict, *, if_match: str | None = None
    ) -> WriteResult:
        _check_writable(res_type)
        check_id(res_id)
        _validated(body, res_type)  # structure first: the id check below reads the body
        if body.get("id") != res_id:
            raise errors.bad_request(
                f"El id del cuerpo ('{body.get('id')}') no coincide con el de la URL ('{res_id}')", expression=f"{res_type}.id"
            )
        _validated_client(body, res_type, self.profiles)
        expected = _etag_version(if_match) if if_match is not None else None
        prepared = _prepare(body, res_id)
        return self._commit(lambda conn: self._update_in(conn, caller, res_type, res_id, prepared, expected), caller)

    def conditional_update(
        self, caller: Caller, res_type: str, query: str, body: dict, *, if_match: str | None = None
    ) -> WriteResult:
        """PUT [type]?[search]: update the one match, create when none, 412 when several."""
        _check_writable(res_type)
        _validated_client(body, res_type, self.profiles)
        conditions = _parse_conditional(res_type, query)
        expected = _etag_version(if_match) if if_match is not None else None

        def job(conn: sa.Connection) -> _Outcome:
            found = self._match_in(conn, res_type, query, conditions)
            target = found or body.get("id")
            if found and body.get("id") not in (None, target):
                raise errors.bad_request(
                    f"El id del cuerpo ('{body.get('id')}') no coincide con el recurso encontrado ('{target}')",
                    expression=f"{res_type}.id",
                )
            if target:
                check_id(target)
                return self._update_in(conn, caller, res_type, target, _prepare(body, target), expected)
            res_id = new_id()
            return self._put_version(conn, caller, res_type, res_id, _prepare(body, res_id), None, "PUT", "create")

        return self._commit(job, caller)

    def delete(self, caller: Caller, res_type: str, res_id: str) -> Stored | None:
        """Logical delete: a new, empty version; history stays readable. None if nothing to delete."""
        _check_writable(res_type)
        check_id(res_id)

        return self._commit(lambda conn: self._delete_in(conn, caller, res_type, res_id))

    def bulk_load(self, caller: Caller, resources: Iterable[dict], *, batch_size: int = 500) -> Iterator[int]:
        """Store resources that carry their own ids (e.g. a synthetic population), batch by batch.

        Yields the number stored after each batch. Every resource is validated and audited.
        """
        batch: list[dict] = []
        for res in resources:
            batch.append(res)
            if len(batch) >= batch_size:
                self._load_batch(caller, batch)
                yield len(batch)
                batch = []
        if batch:
            self._load_batch(caller, batch)
            yield len(batch)

    # --------------------------------------------------------------- internals

    def _commit(self, job, caller: Caller | None = None):
        """Run a write job in a committed (group) transaction; raise its denial after the commit,
        which then holds the denied audit entry and no change. With ``caller``, tell the patient
        listeners about the Patients the job created or changed."""
        try:
            result, denied = self._committer.run(job)
        except sa.exc.DBAPIError:
            log.exception("write failed in the database")
            raise FhirError.of(503, "El almacenamiento no está disponible; no se guardó nada, intente de nuevo", "transient") from None
        if denied is not None:
            raise denied
        if caller is not None and self.patient_listeners:
            self._tell_patient_listeners(caller, result)
        return result

    def _tell_patient_listeners(self, caller: Caller, result) -> None:
        outcomes = result.values() if isinstance(result, dict) else (result,)
        patients = [
            r.stored for r in outcomes if isinstance(r, WriteResult) and r.changed and r.stored.res_type == "Patient"
        ]
        for listener in self.patient_listeners if patients else ():
            try:
                listener(caller, patients)
            except Exception:  # noqa: BLE001 - the write is committed; the listener can be rerun
                log.exception("patient listener failed after commit")

    def _lock_condition(self, conn: sa.Connection, res_type: str, query: str) -> None:
        """Serialize conditional writes with the same condition (SQLite already serializes writers)."""
        if self._pg:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"{res_type}?{query}"))))

    def _current(self, conn: sa.Connection, res_type: str, res_id: str, for_update: bool = False) -> Stored | None:
        flush_inserts(conn)  # earlier jobs of the same group transaction must be visible
        query = _CURRENT_FOR_UPDATE if for_update and self._pg else _CURRENT
        row = conn.execute(query, {"t": res_type, "i": res_id}).first()
        return Stored(*row) if row else None

    def _update_in(
        self, conn: sa.Connection, caller: Caller, res_type: str, res_id: str, prepared: _Prepared, expected: int | None
    ) -> _Outcome:
        current = self._current(conn, res_type, res_id, for_update=True)
        if expected is not None and (current is None or current.version_id != expected):
            raise errors.version_conflict(res_type, res_id, str(expected), current.version_id if current else 0)
        return self._put_version(conn, caller, res_type, res_id, prepared, current, "PUT", "update")

    def _put_version(
        self,
        conn: sa.Connection,
        caller: Caller,
        res_type: str,
        res_id: str,
        prepared: _Prepared,
        current: Stored | None,
        method: str,
        action: str,
    ) -> _Outcome:
        key = prepared.patient_key
        # Moving a resource between compartments touches both patients' records.
        keys = [key] if current is None or current.patient_key == key else [key, current.patient_key]
        refs = _care_references(res_type, prepared.index_rows)
        accesses = [Access(action, res_type, res_id, k, references=refs if k == key else ()) for k in keys]
        denied = self._authorize_in(conn, caller, *accesses)
        if denied is not None:
            return None, denied
        if current is not None and not current.deleted and _content(orjson.loads(current.body)) == prepared.content:
            return WriteResult(current, created=False, changed=False), None
        if current is not None:
            refuse_change_if_signed(conn, current)
        if res_type == "Condition":  # the diagnosis must fit the patient's sex and age (CIE-10)
            check_condition(conn, cie10_catalog(self.engine), prepared.body, key)
        ts = utcnow()
        version = current.version_id + 1 if current else 1
        payload = _finalize(prepared.body, res_type, res_id, version, ts)
        stored = Stored(res_type, res_id, version, ts, False, payload, key, method)
        self._write_rows(conn, stored, current, index_rows=prepared.index_rows)
        return WriteResult(stored, created=current is None or current.deleted), None

    def _write_rows(self, conn: sa.Connection, stored: Stored, current: Stored | None, index_rows: dict | None) -> None:
        row = {
            "res_type": stored.res_type,
            "res_id": stored.res_id,
            "version_id": stored.version_id,
            "patient_key": stored.patient_key,
            "last_updated": stored.last_updated,
            "deleted": stored.deleted,
            "body": stored.body,
        }
        if current is None and stored.method == "POST":
            insert_rows(conn, resource, [row])  # a server-assigned id cannot collide
        elif current is None:
            try:
                conn.execute(resource.insert(), [row])
            except sa.exc.IntegrityError:
                raise errors.concurrent_write(stored.res_type, stored.res_id) from None
        else:
            done = conn.execute(
                resource.update()
                .where(
                    resource.c.res_type == stored.res_type,
                    resource.c.res_id == stored.res_id,
                    resource.c.version_id == current.version_id,
                )
                .values(**row)
            )
            if done.rowcount != 1:
                raise errors.concurrent_write(stored.res_type, stored.res_id)
            # Only the tables the previous version has rows in: one round trip each saved.
            old_kinds = extract_index(orjson.loads(current.body)).keys() if not current.deleted else ()
            for kind in old_kinds:
                table = INDEX_TABLES[kind]
                conn.execute(table.delete().where(table.c.res_type == stored.res_type, table.c.res_id == stored.res_id))
        insert_rows(conn, resource_history, [{**row, "method": stored.method}])
        if index_rows:
            self._insert_index(conn, [(stored.res_type, stored.res_id, stored.patient_key, index_rows)])

    @staticmethod
    def _insert_index(conn: sa.Connection, items: list[tuple[str, str, str | None, dict]]) -> None:
        per_table: dict[str, list[dict]] = {}
        for res_type, res_id, pkey, index_rows in items:
            for kind, rows in index_rows.items():
                bucket = per_table.setdefault(kind, [])
                for r in rows:
                    bucket.append({"res_type": res_type, "res_id": res_id, "patient_key": pkey, **r})
        for kind, rows in per_table.items():
            insert_rows(conn, INDEX_TABLES[kind], rows)

    def _load_batch(self, caller: Caller, batch: list[dict]) -> None:
        ts = utcnow()
        rows, index_items = [], []
        for res in batch:
            res_type, res_id = res.get("resourceType"), res.get("id")
            _check_writable(res_type)
            check_id(res_id or "")
            _validated_client(res, res_type, self.profiles)
            prepared = _prepare(res, res_id)
            key = prepared.patient_key
            payload = _finalize(res, res_type, res_id, 1, ts)
            rows.append(dict(res_type=res_type, res_id=res_id, version_id=1, patient_key=key, last_updated=ts, deleted=False, body=payload))
            index_items.append((res_type, res_id, key, prepared.index_rows))
        accesses = [Access("create", r["res_type"], r["res_id"], r["patient_key"]) for r in rows]
        with write_transaction(self.engine) as conn:
            denied = self._authorize_in(conn, caller, *accesses)
            if denied is None:
                insert_rows(conn, resource, rows)
                insert_rows(conn, resource_history, [{**r, "method": "POST"} for r in rows])
                self._insert_index(conn, index_items)
        if denied is not None:
            raise denied

    # ------------------------------------------------ bundle entries (fhir/bundle.py)
    # Each runs one entry's write or read on the caller's transaction, the way the job of the
    # matching single interaction does, so a transaction Bundle can hold many in one job.

    def with_gate(self, gate: AccessGate) -> ResourceStore:
        """This store (same engines, same group committer) deciding access through ``gate``."""
        view = object.__new__(ResourceStore)
        view.__dict__.update(self.__dict__)
        view.gate = gate
        return view

    def _create_in(
        self,
        conn: sa.Connection,
        caller: Caller,
        res_type: str,
        res_id: str,
        prepared: _Prepared,
        if_none_exist: str | None = None,
        conditions: list[tuple[str, str]] | None = None,
    ) -> _Outcome:
        """Create, or answer the one match of ``if_none_exist`` (conditional create)."""
        if if_none_exist is not None:
            found = self._match_in(conn, res_type, if_none_exist, conditions, "La condición If-None-Exist")
            if found:
                existing = self._current(conn, res_type, found)
                access = Access("read", res_type, found, existing.patient_key)
                denied = self._authorize_in(conn, caller, access)
                return WriteResult(existing, created=False, changed=False), denied
        return self._put_version(conn, caller, res_type, res_id, prepared, None, "POST", "create")

    def _match_in(
        self, conn: sa.Connection, res_type: str, query: str, conditions: list[tuple[str, str]], what: str = "La condición"
    ) -> str | None:
        """The id of the one current match of a conditional write's condition, None if none; 412 if several."""
        self._lock_condition(conn, res_type, query)
        found = self.find(res_type, conditions, conn)
        if len(found) > 1:
            raise FhirError.of(412, f"{what} coincide con varios recursos {res_type}; precise la búsqueda", "multiple-matches")
        return found[0] if found else None

    def _delete_in(
        self, conn: sa.Connection, caller: Caller, res_type: str, res_id: str, expected: int | None = None
    ) -> tuple[Stored | None, FhirError | None]:
        """Logical delete; None when there is nothing to delete. ``expected``: If-Match version."""
        current = self._current(conn, res_type, res_id, for_update=True)
        if expected is not None and (current is None or current.version_id != expected):
            raise errors.version_conflict(res_type, res_id, str(expected), current.version_id if current else 0)
        access = Access("delete", res_type, res_id, current.patient_key if current else None)
        denied = self._authorize_in(conn, caller, access)
        if denied is not None or current is None or current.deleted:
            return None, denied
        refuse_change_if_signed(conn, current)
        refuse_erasure(res_type, current.body, self.profiles)
        stored = Stored(res_type, res_id, current.version_id + 1, utcnow(), True, b"", current.patient_key, "DELETE")
        self._write_rows(conn, stored, current, index_rows=None)
        return stored, None

    def _read_in(
        self, conn: sa.Connection, caller: Caller, res_type: str, res_id: str, version: int | None = None
    ) -> tuple[Stored | None, FhirError | None]:
        """Read (or vread) inside a write transaction, seeing its earlier writes; 404/410 as read."""
        _refuse_audit_trail_in_bundle(res_type)
        if version is None:
            stored = self._current(conn, res_type, res_id)
        else:
            flush_inserts(conn)
            row = conn.execute(_VERSION, {"t": res_type, "i": res_id, "v": version}).first()
            stored = Stored(*row) if row else None
        access = Access("read" if version is None else "vread", res_type, res_id, stored.patient_key if stored else None)
        denied = self._authorize_in(conn, caller, access)
        if denied is not None:
            return None, denied
        if stored is None and version is not None:
            raise FhirError.of(404, f"No existe la versión {version} de {res_type}/{res_id}", "not-found")
        if stored is None:
            raise errors.not_found(res_type, res_id)
        if stored.deleted:
            raise errors.gone(res_type, res_id, stored.version_id)
        return stored, None

    def _search_in(
        self, conn: sa.Connection, caller: Caller, res_type: str, params: list[tuple[str, str]], count: int
    ) -> tuple[list[Stored], FhirError | None]:
        """The first ``count`` matches of a search (in id order), inside a write transaction."""
        _refuse_audit_trail_in_bundle(res_type)
        denied = self._authorize_in(conn, caller, Access("search", res_type))
        if denied is not None:
            return [], denied
        rule = self.gate.row_rule(caller.principal, "search", res_type, emergency=caller.emergency_reason)
        if rule.unrestricted or not count:
            ids = self.find(res_type, params, conn, limit=count) if count else []
        else:
            try:
                spec = parse_search(res_type, params, default_count=count, max_count=count, visible=rule.visible)
            except SearchError as exc:
                raise errors.bad_request(exc.message, code="invalid") from None
            flush_inserts(conn)
            ids = list(conn.execute(match_statement(spec).limit(count)).scalars())
        query = sa.select(*_COLS).where(resource.c.res_type == res_type, resource.c.res_id.in_(ids))
        rows = conn.execute(query).all() if ids else []
        return sorted((Stored(*r) for r in rows), key=lambda s: s.res_id), None

    def _authorize_in(self, conn: sa.Connection, caller: Caller, *accesses: Access) -> FhirError | None:
        return self.gate.authorize_in(conn, caller.principal, *accesses, source=caller.source, emergency=caller.emergency_reason)

    def _record_denied(self, caller: Caller, accesses: Iterable[Access]) -> FhirError | None:
        """Record, in a transaction of its own, the audit entries of accesses that were denied
        inside a transaction since rolled back (a Bundle's); returns the denial."""
        accesses = tuple(accesses)  # the job may run twice
        return self._commit(
            lambda conn: (self._authorize_in(conn, caller, *accesses), None)
        )


def _refuse_audit_trail_in_bundle(res_type: str) -> None:
    if res_type == "AuditEvent":  # the trail is its own log, served by its own API
        raise errors.bad_request("La bitácora (AuditEvent) se consulta en /fhir/AuditEvent, no dentro de un Bundle", code="not-supported")


def _visible_of(grant):
    """The grant's row rule as a search-condition builder; None when every row is visible."""
    return None if grant.rule.unrestricted else grant.visible


def _fetch_visible(conn: sa.Connection, grant, statement: sa.Select, table: sa.Table, params: dict) -> tuple[Stored | None, bool]:
    """One row by primary key and whether the caller's row rule lets them see it, in one
    round trip (the rule is evaluated by the database on that row)."""
    rule = grant.rule
    if rule.unrestricted:
        row = conn.execute(statement, params).first()
        return (Stored(*row) if row else None), True
    key = (table.name, len(params), rule.shape)
    with_rule = _VISIBLE_STATEMENTS.get(key)
    if with_rule is None:
        cond = rule.visible(table.c.res_type, table.c.res_id, table.c.patient_key)
        with_rule = _VISIBLE_STATEMENTS[key] = statement.add_columns(sa.case((cond, True), else_=False).label("visible"))
    row = conn.execute(with_rule, {**params, **rule.params()}).first()
    if row is None:
        return None, True
    return Stored(*row[:-1]), bool(row[-1])


def _entities(*groups: list[Stored]) -> tuple[str, ...]:
    """What an answer returned, as "Type/id", for the audit trail."""
    return tuple(f"{s.res_type}/{s.res_id}" for group in groups for s in group)


def _care_references(res_type: str, index_rows: dict) -> tuple[tuple[str, str], ...]:
    """Whom a care-opening resource (Encounter, EpisodeOfCare...) links to the patient."""
    if res_type not in CARE_TYPES:
        return ()
    return tuple(sorted({(r["actor_type"], r["actor_id"]) for r in index_rows.get("care", ())}))


def _etag_version(if_match: str) -> int:
    value = if_match.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise errors.bad_request(f"Encabezado If-Match inválido: '{if_match[:40]}' (se espera W/\"<versión>\")")
    return int(value)


def _encode_cursor(s: Stored) -> str:
    raw = orjson.dumps([s.last_updated.isoformat(), s.res_type, s.res_id, s.version_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str, str, int]:
    try:
        ts, rtype, rid, ver = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(ts), str(rtype), str(rid), int(ver)
    except Exception:  # noqa: BLE001 - any malformed cursor is the client's error
        raise errors.bad_request("Cursor de página inválido; vuelva a pedir la primera página") from None


# Primary-key reads with the row rule's condition, by (table, key size, rule shape): built once.
_VISIBLE_STATEMENTS: dict[tuple, sa.Select] = {}

# Statements of conditions (conditional references of Bundles), by (type, parameters, limit).
_CONDITION_STATEMENTS: dict[tuple, sa.Select] = {}
_CONDITION_STATEMENTS_MAX = 2048
