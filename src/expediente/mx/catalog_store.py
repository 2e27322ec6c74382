"""Code systems in the database: replace one whole system in a transaction, list them, and read
them through an in-process cache.

A load replaces every concept of its system in one write transaction (a failure leaves the
previous content), bumps the system's ``revision`` and clears this process's caches. Other
processes (server workers) notice within ``CHECK_EVERY`` seconds: the cache re-reads the small
``code_system`` table at most that often and reloads a system whose revision changed.
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import sqlalchemy as sa

from expediente.db.engine import write_transaction
from expediente.db.schema import code_concept, code_system
from expediente.mx.catalog_types import AgeLimit, Concept

CHECK_EVERY = 5.0  # seconds between checks of the code_system table by a cache
_BATCH = 5000


@dataclass(frozen=True, slots=True)
class SystemDefinition:
    """What names a code system (its FHIR id, canonical URL, computable name, Spanish title)."""

    id: str
    url: str
    name: str
    title: str


@dataclass(frozen=True, slots=True)
class SystemInfo:
    id: str
    url: str
    name: str
    title: str
    version: str | None
    complete: bool
    origin: str  # "shipped" | "loaded"
    digest: str
    concept_count: int
    revision: int
    loaded: datetime


@dataclass(frozen=True, slots=True)
class Catalog:
    """One code system with all its concepts, as read at ``info.revision``."""

    info: SystemInfo
    concepts: dict[str, Concept]

    def get(self, code: str) -> Concept | None:
        return self.concepts.get(code)


def digest(concepts: list[Concept], version: str | None) -> str:
    h = hashlib.sha256((version or "").encode())
    for c in concepts:
        h.update(orjson.dumps(_row(c), option=orjson.OPT_SORT_KEYS))
    return h.hexdigest()


def _row(c: Concept) -> dict:
    return {
        "code": c.code,
        "display": c.display,
        "sex": c.sex,
        "age_low": str(c.age_low) if c.age_low else None,
        "age_high": str(c.age_high) if c.age_high else None,
        "properties": orjson.dumps(c.properties).decode() if c.properties else None,
    }


def _concept(row: sa.RowMapping) -> Concept:
    return Concept(
        row["code"],
        row["display"],
        row["sex"],
        AgeLimit.parse(row["age_low"]) if row["age_low"] else None,
        AgeLimit.parse(row["age_high"]) if row["age_high"] else None,
        orjson.loads(row["properties"]) if row["properties"] else {},
    )


def _info(row: sa.RowMapping) -> SystemInfo:
    return SystemInfo(**{k: row[k] for k in SystemInfo.__slots__})


def replace_system(
    conn: sa.Connection,
    definition: SystemDefinition,
    concepts: list[Concept],
    *,
    version: str | None,
    complete: bool,
    origin: str,
) -> SystemInfo:
    """Make ``concepts`` the whole content of the system, inside the caller's transaction."""
    current = conn.execute(sa.select(code_system.c.revision).where(code_system.c.id == definition.id)).scalar()
    values = {
        "url": definition.url,
        "name": definition.name,
        "title": definition.title,
        "version": version,
        "complete": complete,
        "origin": origin,
        "digest": digest(concepts, version),
        "concept_count": len(concepts),
        "revision": (current or 0) + 1,
        "loaded": datetime.now(UTC).replace(tzinfo=None),
    }
    if current is None:
        conn.execute(code_system.insert().values(id=definition.id, **values))
    else:
        conn.execute(code_system.update().where(code_system.c.id == definition.id).values(**values))
    conn.execute(code_concept.delete().where(code_concept.c.system_id == definition.id))
    rows = [{"system_id": definition.id, **_row(c)} for c in concepts]
    for start in range(0, len(rows), _BATCH):
        conn.execute(code_concept.insert(), rows[start : start + _BATCH])
    return SystemInfo(id=definition.id, **values)


def store_system(engine: sa.Engine, definition: SystemDefinition, concepts: list[Concept], **kwargs) -> SystemInfo:
    """replace_system in a write transaction of its own, then clear this process's caches."""
    with write_transaction(engine) as conn:
        info = replace_system(conn, definition, concepts, **kwargs)
    invalidate_all()
    return info


def list_systems(conn_or_engine: sa.Engine | sa.Connection) -> list[SystemInfo]:
    query = sa.select(code_system).order_by(code_system.c.id)
    if isinstance(conn_or_engine, sa.Connection):
        return [_info(r) for r in conn_or_engine.execute(query).mappings()]
    with conn_or_engine.connect() as conn:
        return [_info(r) for r in conn.execute(query).mappings()]


def read_catalog(engine: sa.Engine, system_id: str) -> Catalog | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(code_system).where(code_system.c.id == system_id)).mappings().first()
        if row is None:
            return None
        concepts = conn.execute(
            sa.select(code_concept).where(code_concept.c.system_id == system_id).order_by(code_concept.c.code)
        ).mappings()
        return Catalog(_info(row), {r["code"]: _concept(r) for r in concepts})


class CatalogCache:
    """Whole catalogs in memory, by id or canonical URL, fresh within ``check_every`` seconds."""

    def __init__(self, engine: sa.Engine, check_every: float = CHECK_EVERY):
        self._engine = engine
        self._check_every = check_every
        self._lock = threading.Lock()
        self._systems: dict[str, SystemInfo] = {}
        self._by_url: dict[str, str] = {}
        self._checked = float("-inf")
        self._catalogs: dict[str, Catalog] = {}

    def invalidate(self) -> None:
        with self._lock:
            self._checked = float("-inf")
            self._catalogs.clear()

    def systems(self) -> list[SystemInfo]:
        with self._lock:
            self._refresh()
            return list(self._systems.values())

    def get(self, system: str) -> Catalog | None:
        """The catalog whose canonical URL or id is ``system``; None if unknown."""
        with self._lock:
            self._refresh()
            system_id = self._by_url.get(system, system)
            info = self._systems.get(system_id)
            if info is None:
                return None
            cached = self._catalogs.get(system_id)
            if cached is None or cached.info.revision != info.revision:
                cached = read_catalog(self._engine, system_id)
                if cached is None:
                    return None
                self._catalogs[system_id] = cached
            return cached

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self._check_every:
            return
        systems = list_systems(self._engine)
        self._systems = {s.id: s for s in systems}
        self._by_url = {s.url: s.id for s in systems}
        self._checked = now


_CACHES: weakref.WeakKeyDictionary[sa.Engine, CatalogCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def catalog_cache(engine: sa.Engine) -> CatalogCache:
    """This process's cache of the catalogs of ``engine`` (one per engine)."""
    with _CACHES_LOCK:
        cache = _CACHES.get(engine)
        if cache is None:
            cache = _CACHES[engine] = CatalogCache(engine)
        return cache


def invalidate_all() -> None:
    """Forget every cached catalog of this process (after a load)."""
    with _CACHES_LOCK:
        caches = list(_CACHES.values())
    for cache in caches:
        cache.invalidate()
