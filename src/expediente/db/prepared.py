"""Statements compiled once and sent straight to the driver, for the hot writes: the rows of a
group transaction and the index rows of every received DICOM instance (SQLAlchemy's per-call
execution costs several times what the database does for them). The SQL, its parameter order
and the type conversions (a SQLite DateTime is text) all come from SQLAlchemy's own compiler,
so the statement is the one ``conn.execute`` would send."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa


class Prepared:
    """``stmt`` compiled for one dialect (an INSERT for ``column_keys``)."""

    def __init__(self, stmt: sa.Executable, dialect: sa.Dialect, column_keys: tuple[str, ...] | None = None):
        compiled = stmt.compile(dialect=dialect, column_keys=list(column_keys) if column_keys is not None else None)
        self.sql = compiled.string
        self._order = tuple(compiled.positiontup) if compiled.positional else None  # SQLite's qmark
        # Literal values the compiler made parameters (the 1 of "count + 1"), with their values.
        self._fixed = {k: v for k, v in compiled.params.items() if not compiled.binds[k].required and v is not None}
        self._convert: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                self._convert[name] = process

    def args(self, params: dict[str, Any]) -> tuple | dict:
        """``params`` as the driver takes them: converted, in order for a positional style."""
        values = {k: (self._convert[k](v) if k in self._convert else v) for k, v in params.items()}
        if self._fixed:
            values = {**self._fixed, **values}
        return tuple(values[k] for k in self._order) if self._order is not None else values

    def run(self, conn: sa.Connection, params: dict[str, Any]) -> int:
        """Execute on the connection's own cursor (inside its transaction); the row count."""
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.execute(self.sql, self.args(params))
            return cursor.rowcount
        finally:
            cursor.close()

    def run_many(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        """One executemany for rows that all have the same keys."""
        conn.exec_driver_sql(self.sql, [self.args(row) for row in rows])


@functools.lru_cache(maxsize=256)
def prepare(dialect: sa.Dialect, stmt: sa.Executable, column_keys: tuple[str, ...] | None = None) -> Prepared:
    """``stmt`` (a module-level statement: cached by identity) compiled once per dialect."""
    return Prepared(stmt, dialect, column_keys)


@functools.lru_cache(maxsize=256)
def insert_into(dialect: sa.Dialect, table: sa.Table, column_keys: tuple[str, ...]) -> Prepared:
    """A plain INSERT of ``column_keys`` into ``table``, compiled once per dialect."""
    return Prepared(table.insert(), dialect, column_keys)
