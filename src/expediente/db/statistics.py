"""Planner statistics: the query plans of search depend on them.

Without statistics SQLite guesses that an index matching more columns is better, and probes a
candidate's index rows through the (type, parameter, value) index (every "active" prescription
in the database) rather than through (type, id) (that prescription's ten rows). ``refresh``
runs a bounded ``ANALYZE`` (SQLite: ``analysis_limit`` rows per index, milliseconds at any
size); ``StatisticsRefresher`` repeats it in the background on SQLite, where nothing else
does (PostgreSQL's autovacuum keeps its own statistics; bulk loads call ``refresh`` at the end).
"""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa

from expediente.db.engine import write_transaction

log = logging.getLogger(__name__)

ANALYSIS_LIMIT = 1000  # rows sampled per index on SQLite


def refresh(engine: sa.Engine) -> None:
    if engine.dialect.name == "sqlite":
        with write_transaction(engine) as conn:
            conn.exec_driver_sql(f"PRAGMA analysis_limit={ANALYSIS_LIMIT}")
            conn.exec_driver_sql("ANALYZE")
    else:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")


class StatisticsRefresher:
    """Refreshes SQLite statistics at start-up and every ``interval`` seconds."""

    def __init__(self, engine: sa.Engine, interval: float = 600.0):
        self._engine = engine
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-statistics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                refresh(self._engine)
            except Exception:  # noqa: BLE001 - stale statistics only slow searches down
                log.exception("refreshing planner statistics failed")
            if self._stop.wait(self._interval):
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
