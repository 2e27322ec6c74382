"""Statements compiled once and executed on the driver's cursor, for the few hot writes that run
once per received instance (their SQLAlchemy execution costs several times what the database
does). The SQL, its parameter order and the type conversions (a SQLite DateTime is text) all come
from SQLAlchemy's own compiler, so the statement is the same one ``conn.execute`` would send."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa


class Prepared:
    """``stmt`` compiled for one dialect; ``run(conn, params)`` returns the row count."""

    def __init__(self, stmt: sa.Executable, dialect: sa.Dialect, column_keys: list[str] | None = None):
        compiled = stmt.compile(dialect=dialect, column_keys=column_keys)
        self.sql = compiled.string
        self._names = list(compiled.positiontup or ()) if dialect.positional else None
        # Literal values the compiler made parameters (the 1 of "count + 1"), with their values.
        self._fixed = {k: v for k, v in compiled.params.items() if not compiled.binds[k].required and v is not None}
        self._convert: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                self._convert[name] = process

    def run(self, conn: sa.Connection, params: dict[str, Any]) -> int:
        values = {k: (self._convert[k](v) if k in self._convert else v) for k, v in params.items()}
        if self._fixed:
            values = {**self._fixed, **values}
        args: Any = [values[n] for n in self._names] if self._names is not None else values
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.execute(self.sql, args)
            return cursor.rowcount
        finally:
            cursor.close()


_CACHE: dict[tuple[str, int], Prepared] = {}


def prepared(conn: sa.Connection, key: int, build: Callable[[], tuple[sa.Executable, list[str] | None]]) -> Prepared:
    """The statement ``build`` makes, compiled once per dialect (``key``: the caller's id for it)."""
    cache_key = (conn.dialect.name, key)
    statement = _CACHE.get(cache_key)
    if statement is None:
        stmt, column_keys = build()
        statement = _CACHE[cache_key] = Prepared(stmt, conn.dialect, column_keys)
    return statement
