"""The audit trail as one hash chain: appending entries and verifying the whole log.

Each ``audit_log`` row stores ``hash = SHA-256(previous row's hash || "\\n" || encoding)``,
where the encoding (version 1) is the compact JSON array of every other stored column:

    [1, seq, recorded (ISO 8601, microseconds, UTC), actor, role, action, res_type, res_id,
     patient_key, outcome, reason, source, entities (the stored JSON text), purpose]

The first row chains to 64 zeros. Editing any field, deleting, inserting or reordering rows
breaks the chain from that row on; ``audit_chain_head`` holds the last seq and hash, so cutting
the tail is seen too. Whoever can write the database can recompute a whole chain, so the head
is also printed by ``expediente audit verify`` to be kept outside it (``--expect-head``).

Appending assigns ``seq`` itself: it reads the head with a row lock (``FOR UPDATE`` on
PostgreSQL; on SQLite the writer lock already serializes transactions), numbers and hashes the
new rows after it, inserts them and moves the head. Group transactions call it from their
final flush, right before COMMIT, so the lock is held for the shortest time, and every
process appends to the same chain in seq order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import orjson
import sqlalchemy as sa

from expediente.db.group_commit import executemany, write_at_commit
from expediente.db.schema import audit_chain_head, audit_log

CHAIN_VERSION = 1
GENESIS = "0" * 64
HEAD_ID = 1
_FIELDS = (
    "actor",
    "role",
    "action",
    "res_type",
    "res_id",
    "patient_key",
    "outcome",
    "reason",
    "source",
    "entities",
    "purpose",
)


class ChainUnavailable(Exception):
    """The chain head is missing: the schema was not created by the migrations."""


def entry_hash(previous: str, row: Mapping) -> str:
    """The hash of one row (version 1 encoding, see the module docstring)."""
    recorded: datetime = row["recorded"]
    encoding = orjson.dumps(
        [CHAIN_VERSION, row["seq"], recorded.isoformat(timespec="microseconds"), *(row[f] for f in _FIELDS)]
    )
    return hashlib.sha256(previous.encode("ascii") + b"\n" + encoding).hexdigest()


_HEAD_FOR_UPDATE = (
    sa.select(audit_chain_head.c.last_seq, audit_chain_head.c.last_hash)
    .where(audit_chain_head.c.id == HEAD_ID)
    .with_for_update()  # rendered on PostgreSQL; SQLite's write lock is already held
)
_MOVE_HEAD = (
    audit_chain_head.update()
    .where(audit_chain_head.c.id == HEAD_ID)
    .values(last_seq=sa.bindparam("s"), last_hash=sa.bindparam("h"))
)


def append(conn: sa.Connection, rows: list[dict]) -> None:
    """Number, hash and insert ``rows`` after the current head, then move the head; the caller
    commits. Rows are the unchained columns (every key of ``_FIELDS`` and ``recorded``)."""
    if not rows:
        return
    head = conn.execute(_HEAD_FOR_UPDATE).first()
    if head is None:
        raise ChainUnavailable("audit_chain_head has no row; run the migrations")
    seq, previous = head
    chained = []
    for row in rows:
        seq += 1
        entry = {**row, "seq": seq, "chain_version": CHAIN_VERSION}
        previous = entry["hash"] = entry_hash(previous, entry)
        chained.append(entry)
    executemany(conn, audit_log, chained)
    conn.execute(_MOVE_HEAD, {"s": seq, "h": previous})


write_at_commit(audit_log, append)


# ------------------------------------------------------------------------------ verification


@dataclass(frozen=True, slots=True)
class Break:
    seq: int
    recorded: datetime | None  # None: the entry is missing
    problem: str  # Spanish, for the person reading the report


@dataclass(slots=True)
class Verification:
    entries: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    breaks: list[Break] = field(default_factory=list)  # the first ``MAX_REPORTED``
    break_count: int = 0
    anchor_found: bool | None = None  # None: no anchor was given

    @property
    def intact(self) -> bool:
        return self.break_count == 0 and self.anchor_found is not False

    @property
    def head(self) -> str:
        """The head as an anchor to keep outside the database: ``seq:hash``."""
        return f"{self.head_seq}:{self.head_hash}"


MAX_REPORTED = 100


@dataclass(frozen=True, slots=True)
class Anchor:
    """A head recorded earlier: ``seq:hash``, or a bare hash (then any entry may hold it)."""

    hash: str
    seq: int | None = None

    @classmethod
    def parse(cls, text: str) -> Anchor:
        seq, sep, digest = text.strip().rpartition(":")
        digest = digest.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or (sep and not seq.isdigit()):
            raise ValueError(f"cabeza inválida: '{text[:80]}' (se espera SEQ:HASH o HASH, con HASH de 64 dígitos hexadecimales)")
        return cls(digest, int(seq) if sep else None)

    def matches(self, seq: int, digest: str) -> bool:
        return digest == self.hash and (self.seq is None or self.seq == seq)


_STATE = sa.select(
    audit_chain_head.c.last_seq,
    audit_chain_head.c.last_hash,
    sa.select(sa.func.max(audit_log.c.seq)).scalar_subquery(),
).where(audit_chain_head.c.id == HEAD_ID)
_COLUMNS = [audit_log.c.seq, audit_log.c.recorded, audit_log.c.chain_version, audit_log.c.hash, *(audit_log.c[f] for f in _FIELDS)]


def _rows(engine: sa.Engine, last: int, batch: int) -> Iterator[sa.Row]:
    """Rows with seq <= last, in seq order, ``batch`` at a time (bounded memory)."""
    after = 0
    while True:
        query = sa.select(*_COLUMNS).where(audit_log.c.seq > after, audit_log.c.seq <= last).order_by(audit_log.c.seq).limit(batch)
        with engine.connect() as conn:
            rows = conn.execute(query).all()
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].seq


def verify(engine: sa.Engine, *, batch: int = 5000, anchor: Anchor | None = None) -> Verification:
    """Recompute the chain over the whole log and report every break."""
    with engine.connect() as conn:
        state = conn.execute(_STATE).first()  # one statement: the head and the log agree
    if state is None:
        raise ChainUnavailable("audit_chain_head has no row; run the migrations")
    head_seq, head_hash, max_seq = state
    result = Verification(head_seq=head_seq, head_hash=head_hash, anchor_found=None if anchor is None else False)

    def broken(seq: int, recorded: datetime | None, problem: str) -> None:
        result.break_count += 1
        if len(result.breaks) < MAX_REPORTED:
            result.breaks.append(Break(seq, recorded, problem))

    previous, expected = GENESIS, 1
    for row in _rows(engine, max(head_seq, max_seq or 0), batch):
        result.entries += 1
        problems = []
        if row.seq != expected:
            problems.append(f"faltan las entradas seq {expected}–{row.seq - 1} (borradas)" if row.seq > expected + 1 else f"falta la entrada seq {expected} (borrada)")
        if row.seq > head_seq:
            problems.append(f"está después de la cabeza de la cadena (seq {head_seq}): fue añadida fuera del servidor")
        if row.chain_version != CHAIN_VERSION:
            problems.append(f"versión de codificación desconocida: {row.chain_version}")
        elif entry_hash(previous, row._mapping) != row.hash:
            problems.append("su contenido no corresponde a su hash ni a la entrada anterior (alterada, insertada o reordenada)")
        if problems:
            broken(row.seq, row.recorded, "; ".join(problems))
        if anchor is not None and anchor.matches(row.seq, row.hash):
            result.anchor_found = True
        previous, expected = row.hash, row.seq + 1
    last = expected - 1
    if last < head_seq:
        broken(last + 1, None, f"faltan las últimas entradas: el registro termina en seq {last} y la cabeza de la cadena registra seq {head_seq}")
    elif last == head_seq and previous != head_hash:
        broken(head_seq, None, "el hash de la cabeza de la cadena no corresponde a la última entrada")
    return result
