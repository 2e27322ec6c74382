"""Database engines for the embedded default (SQLite, WAL) and production (PostgreSQL)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from expediente.config import Settings

# Execution option that makes a SQLite transaction take the write lock up front (BEGIN
# IMMEDIATE), so it can never fail half-way on a lock upgrade.
WRITE = {"expediente_write": True}


class WriterQueue:
    """Queues SQLite writers of all threads and processes on one file lock.

    SQLite allows one writer; its busy handler makes the others poll and sleep (up to 100 ms a
    try), which wrecks latency under concurrent writes. A blocking flock wakes the next writer
    the moment the lock is released. The thread lock is needed because flock is per open file.
    """

    def __init__(self, path: Path):
        self._path = path
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._pid: int | None = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._thread_lock:
            if self._pid != os.getpid():  # a forked worker needs its own open file
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                self._pid = os.getpid()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)


_QUEUES: weakref.WeakKeyDictionary[sa.Engine, WriterQueue] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One write transaction: queued behind other writers on SQLite, committed on exit."""
    queue = _QUEUES.get(engine)
    with queue.hold() if queue else contextlib.nullcontext():
        with engine.connect() as conn:
            conn.execution_options(**WRITE)
            with conn.begin():
                yield conn


class DriverWrites:
    """SQLite write transactions on the driver's own connections, for a writer whose every call
    is a few prepared statements (the DICOM ingest's index rows): no pool checkout, no
    SQLAlchemy transaction, still queued with the other writers. The connections come from the
    engine (its pragmas applied) and are kept by this object until ``close``."""

    def __init__(self, engine: sa.Engine):
        if not is_sqlite(engine):
            raise ValueError("DriverWrites es solo para SQLite")
        self._engine = engine
        self._queue = _QUEUES[engine]
        self._idle: list = []  # list.pop/append are atomic: no lock needed
        self._pid = os.getpid()

    @contextlib.contextmanager
    def transaction(self) -> Iterator:
        """BEGIN IMMEDIATE ... COMMIT on a driver cursor; ROLLBACK if the block (or the commit)
        raises. A connection whose rollback fails too is dropped, not reused."""
        if self._pid != os.getpid():  # a forked process never shares a parent's SQLite connection
            self._idle, self._pid = [], os.getpid()
        try:
            fairy = self._idle.pop()
        except IndexError:
            fairy = self._engine.raw_connection()
        connection = fairy.driver_connection
        reusable = True
        try:
            with self._queue.hold():
                connection.execute("BEGIN IMMEDIATE")
                try:
                    cursor = connection.cursor()
                    try:
                        yield cursor
                    finally:
                        cursor.close()
                    connection.execute("COMMIT")
                except BaseException:
                    try:
                        if connection.in_transaction:
                            connection.execute("ROLLBACK")
                    except Exception:  # noqa: BLE001 - the connection is unusable
                        reusable = False
                    raise
        finally:
            if reusable and not connection.in_transaction:
                self._idle.append(fairy)
            else:
                fairy.invalidate()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def make_engine(settings: Settings, *, sqlite_synchronous: str | None = None) -> sa.Engine:
    """The engine for ``settings``; ``sqlite_synchronous`` overrides the setting for a writer
    that makes its commits durable another way (the DICOM ingest's file-system flush)."""
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            pool_size=16,
            max_overflow=16,
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        _configure_sqlite(engine, sqlite_synchronous or settings.sqlite_synchronous)
        _QUEUES[engine] = WriterQueue(settings.data_dir / "expediente.db.writer-lock")
        return engine
    # No pre-ping: it costs a round trip per checkout; a dropped connection is invalidated on error.
    return sa.create_engine(url, pool_size=16, max_overflow=8, pool_recycle=1800)


def make_read_engine(settings: Settings, engine: sa.Engine) -> sa.Engine:
    """The engine for single-statement reads.

    PostgreSQL: its own pool of autocommit connections, so a read is one round trip (no BEGIN,
    no ROLLBACK on return). SQLite: the same engine, whose reads already run without BEGIN.
    """
    if engine.dialect.name != "postgresql":
        return engine
    return sa.create_engine(settings.sqlalchemy_url, pool_size=16, max_overflow=8, pool_recycle=1800, isolation_level="AUTOCOMMIT")


def _configure_sqlite(engine: sa.Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's implicit BEGIN is deferred).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Writes lock up front. A read is one statement in its own implicit transaction (WAL:
        # a consistent snapshot, never blocked by writers), so it needs no BEGIN/ROLLBACK.
        if conn.get_execution_options().get("expediente_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_sqlite(engine: sa.Engine) -> bool:
    return engine.dialect.name == "sqlite"
