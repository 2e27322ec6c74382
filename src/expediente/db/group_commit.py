"""Group commit: many small write jobs from concurrent requests share one transaction.

Each write is a job (a function of a connection). One thread per process takes every job
waiting at that moment, runs them in one transaction and commits once, so N concurrent writes
pay for one BEGIN, one COMMIT and one fsync instead of N. A request returns only after the
commit that holds its job. If any job fails, the batch is rolled back and each job is run
again in a transaction of its own, so one bad request never takes others down with it and
nothing is half-written.

Inside a batch, inserts go through ``insert_rows``: they are kept and sent at the end as one
executemany per table (one round trip for the rows of many requests), or earlier, the moment
a job reads inside the transaction (``flush_inserts``), so every read sees every write before it.
A table may instead name its own writer (``write_at_commit``): its rows are sent only by the
last flush, right before COMMIT (the audit chain locks its head there and holds it briefly).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import sqlalchemy as sa

from expediente.db.engine import write_transaction
from expediente.db.prepared import insert_into
from expediente.ops.metrics import BATCH_SECONDS, BATCH_SIZE

T = TypeVar("T")
Job = Callable[[sa.Connection], Any]
_STOP = object()
_PENDING = "expediente.pending_inserts"
RowWriter = Callable[[sa.Connection, list[dict]], None]
_AT_COMMIT: dict[sa.Table, RowWriter] = {}


def write_at_commit(table: sa.Table, writer: RowWriter) -> None:
    """Rows of ``table`` are written by ``writer``, and inside a group transaction only by its
    last flush, just before COMMIT. No read in the transaction may need them earlier."""
    _AT_COMMIT[table] = writer


def insert_rows(conn: sa.Connection, table: sa.Table, rows: list[dict]) -> None:
    """Insert now, or at the end of the group transaction when running inside one."""
    if not rows:
        return
    pending = conn.info.get(_PENDING)
    if pending is None:
        writer = _AT_COMMIT.get(table)
        if writer is None:
            executemany(conn, table, rows)
        else:
            writer(conn, rows)
    else:
        pending.setdefault(table, []).extend(rows)


def flush_inserts(conn: sa.Connection, *, final: bool = False) -> None:
    """Send the kept inserts; call before reading inside a group transaction. Rows of tables
    with a writer at commit wait for the final flush (``final=True``, the group's own)."""
    pending = conn.info.get(_PENDING)
    if not pending:
        return
    late = []
    for table, rows in pending.items():
        if table in _AT_COMMIT:
            late.append((table, rows))
        else:
            executemany(conn, table, rows)
    pending.clear()
    for table, rows in late:
        if final:
            _AT_COMMIT[table](conn, rows)
        else:
            pending[table] = rows


def executemany(conn: sa.Connection, table: sa.Table, rows: list[dict]) -> None:
    """A many-row INSERT straight to the driver, with the statement and the columns' bind
    processors prepared once (db/prepared.py): SQLAlchemy's per-row parameter handling
    dominated the time spent holding the write lock. Every row must have the same keys."""
    insert_into(conn.dialect, table, tuple(rows[0])).run_many(conn, rows)


@contextlib.contextmanager
def _grouped(engine: sa.Engine):
    with write_transaction(engine) as conn:
        conn.info[_PENDING] = {}
        try:
            yield conn
            flush_inserts(conn, final=True)
        finally:
            conn.info.pop(_PENDING, None)


class _Retry(Exception):
    """A job of the batch failed: roll the batch back and run its jobs one by one."""


class GroupCommitter:
    def __init__(self, engine: sa.Engine, max_batch: int = 64, name: str = "group-commit"):
        self._engine = engine
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._name = name
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def run(self, job: Callable[[sa.Connection], T], timeout: float | None = None) -> T:
        """Run ``job`` in a committed transaction; its result, or the exception it raised."""
        return self.submit(job).result(timeout)

    def submit(self, job: Callable[[sa.Connection], T]) -> Future:
        """Queue ``job`` without waiting: the future is done once its transaction committed
        (or failed), so a caller can do other work meanwhile."""
        if self._closed:
            raise RuntimeError("group committer closed")
        done: Future = Future()
        self._queue.put((job, done))
        return done

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            start = time.perf_counter()
            self._commit(batch)
            BATCH_SECONDS.labels(self._name).observe(time.perf_counter() - start)
            BATCH_SIZE.labels(self._name).observe(len(batch))
            if stop:
                return

    def _commit(self, batch: list) -> None:
        if len(batch) > 1:
            results: list = []
            try:
                with _grouped(self._engine) as conn:
                    for job, _ in batch:
                        try:
                            results.append(job(conn))
                        except Exception as exc:
                            raise _Retry from exc
                    try:
                        flush_inserts(conn, final=True)
                    except Exception as exc:
                        raise _Retry from exc
            except _Retry:
                pass  # run each job alone below
            except Exception as exc:  # noqa: BLE001 - the commit itself failed: every waiter must know
                for _, done in batch:
                    done.set_exception(exc)
                return
            else:
                for (_, done), result in zip(batch, results, strict=True):
                    done.set_result(result)
                return
        for job, done in batch:
            try:
                with _grouped(self._engine) as conn:
                    result = job(conn)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                done.set_exception(exc)
            else:
                done.set_result(result)
