"""The audit trail: every access decision is appended before the access is answered.

Reads are many and small, so their entries go through a group-commit writer: concurrent
requests wait together for one transaction. Writes put their entry in the same transaction as
the change, so a change and its audit entry commit or fail together. Either way, if the entry
cannot be stored the access fails (fail closed).

Entries are hash-chained as they are stored (``audit_chain``): inside a group transaction the
chain is extended by its final flush, right before COMMIT.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import sqlalchemy as sa

from expediente.db.group_commit import GroupCommitter, insert_rows
from expediente.db.schema import audit_log
from expediente.security import audit_chain  # noqa: F401 - registers the chain as audit_log's writer


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
    # "Type/id" of what the access returned (searches, $everything), in answer order.
    entities: tuple[str, ...] = ()
    # Why the access happened when it is not routine care: "BTG" (break-the-glass, emergency).
    purpose: str | None = None

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
            "entities": orjson.dumps(list(self.entities)).decode() if self.entities else None,
            "purpose": self.purpose,
        }


class AuditUnavailable(Exception):
    """The audit trail could not record an access; the access must not proceed."""


class AuditWriter:
    """Appends audit entries. Reads hand theirs to a group committer of their own: concurrent
    requests wait together for one transaction that inserts all their entries at once."""

    def __init__(self, engine: sa.Engine, max_batch: int = 512, timeout_s: float = 30.0):
        self._committer = GroupCommitter(engine, max_batch=max_batch, name="audit-writer")
        self._timeout = timeout_s

    def record(self, entry: AuditEntry) -> None:
        """Append one entry; returns once it is committed, raises AuditUnavailable otherwise."""
        self.wait(self.submit([entry]))

    def record_many(self, entries: list[AuditEntry]) -> None:
        """Append several entries in one commit (a STOW-RS request's instances)."""
        if entries:
            self.wait(self.submit(entries))

    def submit(self, entries: list[AuditEntry]) -> Future:
        """Start appending ``entries`` (one commit); ``wait`` on the result before the access
        they record is answered."""
        rows = [e.row() for e in entries]
        try:
            return self._committer.submit(lambda conn: insert_rows(conn, audit_log, rows))
        except Exception as exc:  # noqa: BLE001 - a closed writer cannot record
            raise AuditUnavailable(str(exc)) from exc

    def wait(self, pending: Future) -> None:
        """Return once the entries are committed; AuditUnavailable when they could not be."""
        try:
            pending.result(self._timeout)
        except Exception as exc:  # noqa: BLE001 - any failure to record refuses the access
            raise AuditUnavailable(str(exc)) from exc

    @staticmethod
    def record_in(conn: sa.Connection, entries: list[AuditEntry]) -> None:
        """Append entries inside the caller's transaction (used by writes)."""
        insert_rows(conn, audit_log, [e.row() for e in entries])

    def close(self) -> None:
        self._committer.close()
