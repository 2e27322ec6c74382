"""The audit trail: every access decision is appended before the access is answered.

Reads are many and small, so their entries go through a group-commit writer: concurrent
requests wait together for one transaction. Writes put their entry in the same transaction as
the change, so a change and its audit entry commit or fail together. Either way, if the entry
cannot be stored the access fails (fail closed).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from expediente.db.engine import write_transaction
from expediente.db.group_commit import insert_rows
from expediente.db.schema import audit_log


@dataclass(slots=True)
class AuditEntry:
    actor: str
    role: str | None
    action: str
    res_type: str | None
    res_id: str | None
    patient_key: str | None
    outcome: str  # allowed | denied
    reason: str | None = None
    source: str | None = None

    def row(self) -> dict:
        return {
            "recorded": datetime.now(UTC).replace(tzinfo=None),
            "actor": self.actor,
            "role": self.role,
            "action": self.action,
            "res_type": self.res_type,
            "res_id": self.res_id,
            "patient_key": self.patient_key,
            "outcome": self.outcome,
            "reason": self.reason,
            "source": self.source,
        }


class AuditUnavailable(Exception):
    """The audit trail could not record an access; the access must not proceed."""


_STOP = object()


class AuditWriter:
    def __init__(self, engine: sa.Engine, max_batch: int = 512, timeout_s: float = 30.0):
        self._engine = engine
        self._max_batch = max_batch
        self._timeout = timeout_s
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def record(self, entry: AuditEntry) -> None:
        """Append one entry; returns once it is committed, raises AuditUnavailable otherwise."""
        if self._closed:
            raise AuditUnavailable("audit writer closed")
        done: Future = Future()
        self._queue.put((entry.row(), done))
        try:
            done.result(self._timeout)
        except Exception as exc:
            raise AuditUnavailable(str(exc)) from exc

    @staticmethod
    def record_in(conn: sa.Connection, entries: list[AuditEntry]) -> None:
        """Append entries inside the caller's transaction (used by writes)."""
        insert_rows(conn, audit_log, [e.row() for e in entries])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join(timeout=self._timeout)

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
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list) -> None:
        try:
            with write_transaction(self._engine) as conn:
                conn.execute(audit_log.insert(), [row for row, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every waiter must learn of the failure
            for _, done in batch:
                done.set_exception(exc)
            return
        for _, done in batch:
            done.set_result(None)
