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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import parse_qsl

import orjson
import sqlalchemy as sa

from expediente.db.engine import write_transaction
from expediente.db.group_commit import GroupCommitter, flush_inserts, insert_rows
from expediente.db.schema import INDEX_TABLES, resource, resource_history
from expediente.fhir import errors
from expediente.fhir.errors import FhirError
from expediente.fhir.resource_types import SERVED, SERVER_WRITTEN_ONLY
from expediente.fhir.search.basic import SearchError, match_query
from expediente.fhir.search.extract import extract_index, patient_key
from expediente.fhir.validation import ResourceInvalid, validate_resource
from expediente.security.access import Access, AccessGate
from expediente.security.principal import Principal

log = logging.getLogger(__name__)

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    source: str | None = None  # client address, for the audit trail


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


_COLS = (
    resource.c.res_type,
    resource.c.res_id,
    resource.c.version_id,
    resource.c.last_updated,
    resource.c.deleted,
    resource.c.body,
    resource.c.patient_key,
)
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

# Parameters that shape a search answer without selecting anything: no condition on their own.
RESULT_PARAMS = frozenset({"_count", "_format", "_pretty", "_after", "_summary", "_elements", "_total", "_sort"})


def _parse_conditional(res_type: str, query: str) -> list[tuple[str, str]]:
    params = [(k, v) for k, v in parse_qsl(query.lstrip("?"), keep_blank_values=True) if k not in RESULT_PARAMS]
    if not params:
        raise errors.bad_request("La condición está vacía: indique al menos un parámetro de búsqueda que seleccione recursos")
    return params


class ResourceStore:
    def __init__(self, engine: sa.Engine, gate: AccessGate, reader: sa.Engine | None = None):
        self.engine = engine
        self._committer = GroupCommitter(engine, name="fhir-writes")
        self.reader = reader or engine  # single-statement reads (autocommit pool on PostgreSQL)
        self.gate = gate
        self._pg = engine.dialect.name == "postgresql"

    def close(self) -> None:
        self._committer.close()

    # ----------------------------------------------------------------- reads

    def read(self, caller: Caller, res_type: str, res_id: str) -> Stored:
        check_type(res_type)
        check_id(res_id)
        with self.reader.connect() as conn:
            row = conn.execute(_CURRENT, {"t": res_type, "i": res_id}).first()
        stored = Stored(*row) if row else None
        self.gate.authorize(
            caller.principal, Access("read", res_type, res_id, stored.patient_key if stored else None), source=caller.source
        )
        if stored is None:
            raise errors.not_found(res_type, res_id)
        if stored.deleted:
            raise errors.gone(res_type, res_id, stored.version_id)
        return stored

    def vread(self, caller: Caller, res_type: str, res_id: str, version: str) -> Stored:
        check_type(res_type)
        check_id(res_id)
        if not version.isdigit() or len(version) > 9:
            raise errors.bad_request(f"Versión inválida: '{version[:40]}' (debe ser un número entero)")
        with self.reader.connect() as conn:
            row = conn.execute(_VERSION, {"t": res_type, "i": res_id, "v": int(version)}).first()
        stored = Stored(*row) if row else None
        self.gate.authorize(
            caller.principal, Access("vread", res_type, res_id, stored.patient_key if stored else None), source=caller.source
        )
        if stored is None:
            raise FhirError.of(404, f"No existe la versión {version} de {res_type}/{res_id}", "not-found")
        if stored.deleted:
            raise errors.gone(res_type, res_id, stored.version_id)
        return stored

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
        key_patient = None
        if res_type is not None:
            check_type(res_type)
            query = query.where(h.res_type == res_type)
        if res_id is not None:
            check_id(res_id)
            query = query.where(h.res_id == res_id)
            with self.reader.connect() as conn:
                key_patient = conn.execute(
                    sa.select(resource.c.patient_key).where(resource.c.res_type == res_type, resource.c.res_id == res_id)
                ).scalar()
        self.gate.authorize(caller.principal, Access("history", res_type, res_id, key_patient), source=caller.source)
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
        return rows, next_cursor

    def search(
        self, caller: Caller, res_type: str, params: list[tuple[str, str]], *, count: int, after: str | None = None
    ) -> tuple[list[Stored], str | None]:
        """Current resources matching simple equality parameters, in id order (keyset paging)."""
        check_type(res_type)
        self.gate.authorize(caller.principal, Access("search", res_type), source=caller.source)
        try:
            query = match_query(res_type, params)
        except SearchError as exc:
            raise errors.bad_request(exc.message) from None
        if after is not None:
            query = query.where(resource.c.res_id > after)
        with self.reader.connect() as conn:
            ids = list(conn.execute(query.order_by(resource.c.res_id).limit(count + 1)).scalars())
            more = len(ids) > count
            ids = ids[:count]
            rows = conn.execute(
                sa.select(*_COLS).where(resource.c.res_type == res_type, resource.c.res_id.in_(ids))
            ).all() if ids else []
        found = sorted((Stored(*r) for r in rows), key=lambda s: s.res_id)
        return found, (ids[-1] if more else None)

    def find(self, res_type: str, params: list[tuple[str, str]], conn: sa.Connection, limit: int = 2) -> list[str]:
        """Ids of current resources matching a simple search (conditional operations)."""
        try:
            query = match_query(res_type, params)
        except SearchError as exc:
            raise errors.bad_request(exc.message, code="invalid") from None
        flush_inserts(conn)
        return list(conn.execute(query.limit(limit)).scalars())

    # ---------------------------------------------------------------- writes

    def create(self, caller: Caller, res_type: str, body: dict, *, if_none_exist: str | None = None) -> WriteResult:
        _check_writable(res_type)
        _validated(body, res_type)
        res_id = new_id()
        prepared = _prepare(body, res_id)
        conditions = _parse_conditional(res_type, if_none_exist) if if_none_exist is not None else None

        def job(conn: sa.Connection) -> _Outcome:
            if conditions is not None:
                self._lock_condition(conn, res_type, if_none_exist)
                found = self._single_match(conn, res_type, conditions, "La condición If-None-Exist")
                if found:
                    existing = self._current(conn, res_type, found)
                    access = Access("read", res_type, found, existing.patient_key)
                    denied = self.gate.authorize_in(conn, caller.principal, access, source=caller.source)
                    return WriteResult(existing, created=False, changed=False), denied
            return self._put_version(conn, caller, res_type, res_id, prepared, None, "POST", "create")

        return self._commit(job)

    def update(
        self, caller: Caller, res_type: str, res_id: str, body: dict, *, if_match: str | None = None
    ) -> WriteResult:
        _check_writable(res_type)
        check_id(res_id)
        _validated(body, res_type)
        if body.get("id") != res_id:
            raise errors.bad_request(
                f"El id del cuerpo ('{body.get('id')}') no coincide con el de la URL ('{res_id}')", expression=f"{res_type}.id"
            )
        expected = _etag_version(if_match) if if_match is not None else None
        prepared = _prepare(body, res_id)
        return self._commit(lambda conn: self._update_in(conn, caller, res_type, res_id, prepared, expected))

    def conditional_update(
        self, caller: Caller, res_type: str, query: str, body: dict, *, if_match: str | None = None
    ) -> WriteResult:
        """PUT [type]?[search]: update the one match, create when none, 412 when several."""
        _check_writable(res_type)
        _validated(body, res_type)
        conditions = _parse_conditional(res_type, query)
        expected = _etag_version(if_match) if if_match is not None else None

        def job(conn: sa.Connection) -> _Outcome:
            self._lock_condition(conn, res_type, query)
            found = self._single_match(conn, res_type, conditions, "La condición")
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

        return self._commit(job)

    def delete(self, caller: Caller, res_type: str, res_id: str) -> Stored | None:
        """Logical delete: a new, empty version; history stays readable. None if nothing to delete."""
        _check_writable(res_type)
        check_id(res_id)

        def job(conn: sa.Connection) -> tuple[Stored | None, FhirError | None]:
            current = self._current(conn, res_type, res_id, for_update=True)
            access = Access("delete", res_type, res_id, current.patient_key if current else None)
            denied = self.gate.authorize_in(conn, caller.principal, access, source=caller.source)
            if denied is not None or current is None or current.deleted:
                return None, denied
            stored = Stored(res_type, res_id, current.version_id + 1, utcnow(), True, b"", current.patient_key, "DELETE")
            self._write_rows(conn, stored, current, index_rows=None)
            return stored, None

        return self._commit(job)

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

    def _commit(self, job):
        """Run a write job in a committed (group) transaction; raise its denial after the commit,
        which then holds the denied audit entry and no change."""
        try:
            result, denied = self._committer.run(job)
        except sa.exc.DBAPIError:
            log.exception("write failed in the database")
            raise FhirError.of(503, "El almacenamiento no está disponible; no se guardó nada, intente de nuevo", "transient") from None
        if denied is not None:
            raise denied
        return result

    def _single_match(self, conn: sa.Connection, res_type: str, conditions: list, what: str) -> str | None:
        found = self.find(res_type, conditions, conn)
        if len(found) > 1:
            raise FhirError.of(412, f"{what} coincide con varios recursos {res_type}; precise la búsqueda", "multiple-matches")
        return found[0] if found else None

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
        accesses = [Access(action, res_type, res_id, k) for k in keys]
        denied = self.gate.authorize_in(conn, caller.principal, *accesses, source=caller.source)
        if denied is not None:
            return None, denied
        if current is not None and not current.deleted and _content(orjson.loads(current.body)) == prepared.content:
            return WriteResult(current, created=False, changed=False), None
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
            _validated(res, res_type)
            prepared = _prepare(res, res_id)
            key = prepared.patient_key
            payload = _finalize(res, res_type, res_id, 1, ts)
            rows.append(dict(res_type=res_type, res_id=res_id, version_id=1, patient_key=key, last_updated=ts, deleted=False, body=payload))
            index_items.append((res_type, res_id, key, prepared.index_rows))
        accesses = [Access("create", r["res_type"], r["res_id"], r["patient_key"]) for r in rows]
        with write_transaction(self.engine) as conn:
            denied = self.gate.authorize_in(conn, caller.principal, *accesses, source=caller.source)
            if denied is None:
                insert_rows(conn, resource, rows)
                insert_rows(conn, resource_history, [{**r, "method": "POST"} for r in rows])
                self._insert_index(conn, index_items)
        if denied is not None:
            raise denied


def _etag_version(if_match: str) -> int:
    value = if_match.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if not value.isdigit() or len(value) > 9:
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
