"""Rebuild search-index rows after the search parameters (or their extraction) change.

``request(engine, types, reason)`` queues resource types in ``search_reindex``; ``run(engine)``
works through the queue in batches of resources (id order), each batch one write transaction
that replaces the batch's index rows and records its progress, so an interrupted run resumes
where it stopped. While a type is queued the store refuses silently partial searches of it
(503, or a warning under ``Prefer: handling=lenient``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import orjson
import sqlalchemy as sa

from expediente.db.engine import write_transaction
from expediente.db.group_commit import flush_inserts, insert_rows
from expediente.db.schema import INDEX_TABLES, resource, search_reindex
from expediente.fhir.search.extract import extract_index

__all__ = ["request", "run", "pending"]


def request(engine: sa.Engine, types: Iterable[str], reason: str) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    with write_transaction(engine) as conn:
        for res_type in types:
            conn.execute(search_reindex.delete().where(search_reindex.c.res_type == res_type))
            conn.execute(search_reindex.insert().values(res_type=res_type, requested=now, reason=reason[:255]))


def pending(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(search_reindex.c.res_type, search_reindex.c.reason)).all())


def _batch(conn: sa.Connection, res_type: str, after: str | None, size: int) -> list:
    query = sa.select(resource.c.res_id, resource.c.patient_key, resource.c.body).where(
        resource.c.res_type == res_type, resource.c.deleted == sa.false()
    )
    if after is not None:
        query = query.where(resource.c.res_id > after)
    query = query.order_by(resource.c.res_id).limit(size)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()  # a concurrent update waits, then writes its own rows
    return conn.execute(query).all()


def _reindex_batch(conn: sa.Connection, res_type: str, rows: list) -> None:
    ids = [r.res_id for r in rows]
    for table in INDEX_TABLES.values():
        conn.execute(table.delete().where(table.c.res_type == res_type, table.c.res_id.in_(ids)))
    per_table: dict[str, list[dict]] = {}
    for r in rows:
        for kind, index_rows in extract_index(orjson.loads(r.body)).items():
            bucket = per_table.setdefault(kind, [])
            bucket.extend({"res_type": res_type, "res_id": r.res_id, "patient_key": r.patient_key, **x} for x in index_rows)
    for kind, index_rows in per_table.items():
        insert_rows(conn, INDEX_TABLES[kind], index_rows)
    flush_inserts(conn)


def run(engine: sa.Engine, *, batch_size: int = 500, progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Work through the queue; returns the number of resources reindexed per type."""
    done: dict[str, int] = {}
    for res_type in sorted(pending(engine)):
        done[res_type] = 0
        while True:
            with write_transaction(engine) as conn:
                after = conn.execute(
                    sa.select(search_reindex.c.after_id).where(search_reindex.c.res_type == res_type)
                ).scalar_one_or_none()
                rows = _batch(conn, res_type, after, batch_size)
                if not rows:
                    conn.execute(search_reindex.delete().where(search_reindex.c.res_type == res_type))
                    break
                _reindex_batch(conn, res_type, rows)
                conn.execute(
                    search_reindex.update().where(search_reindex.c.res_type == res_type).values(after_id=rows[-1].res_id)
                )
            done[res_type] += len(rows)
            if progress is not None:
                progress(res_type, len(rows))
    return done
