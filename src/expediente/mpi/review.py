"""The review list: candidate pairs the MPI could not decide alone, and pairs already decided.

A pair is stored once (smaller id first). ``pending`` pairs wait for a person; ``linked`` and
``rejected`` remember the decision (who and when), so a rejected pair is never proposed again
and an automatic link keeps the score and reasons it was made on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import sqlalchemy as sa

from expediente.db.engine import write_transaction
from expediente.db.schema import mpi_review

STATUSES = frozenset({"pending", "linked", "rejected"})


@dataclass(frozen=True, slots=True)
class ReviewItem:
    id: int
    patient_a: str
    patient_b: str
    score: float
    grade: str
    reasons: tuple[str, ...]
    status: str
    created: datetime
    decided: datetime | None
    decided_by: str | None


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # naive UTC, as every table


def _item(row) -> ReviewItem:
    return ReviewItem(
        row.id, row.patient_a, row.patient_b, row.score, row.grade, tuple(orjson.loads(row.reasons)), row.status,
        row.created, row.decided, row.decided_by,
    )


def decided_pairs(conn: sa.Connection, patient_id: str) -> dict[str, str]:
    """{other record: status} of every pair of ``patient_id`` already on the list."""
    query = sa.select(mpi_review.c.patient_a, mpi_review.c.patient_b, mpi_review.c.status).where(
        sa.or_(mpi_review.c.patient_a == patient_id, mpi_review.c.patient_b == patient_id)
    )
    return {(b if a == patient_id else a): status for a, b, status in conn.execute(query)}


def record(engine: sa.Engine, a: str, b: str, score: float, grade: str, reasons, status: str, by: str | None = None) -> None:
    """Put a pair on the list, or update its score and status (a decided pair stays decided
    unless ``status`` is itself a decision)."""
    first, second = _pair(a, b)
    now = _now()
    values = {"score": float(score), "grade": grade, "reasons": orjson.dumps(list(reasons)).decode(), "status": status}
    if status != "pending":
        values |= {"decided": now, "decided_by": by}
    with write_transaction(engine) as conn:
        where = sa.and_(mpi_review.c.patient_a == first, mpi_review.c.patient_b == second)
        current = conn.execute(sa.select(mpi_review.c.status).where(where)).scalar()
        if current is None:
            conn.execute(mpi_review.insert().values(patient_a=first, patient_b=second, created=now, **values))
        elif status != "pending" or current == "pending":
            conn.execute(mpi_review.update().where(where).values(**values))


def decide(engine: sa.Engine, a: str, b: str, status: str, by: str) -> None:
    """Record a person's decision on a pair (whether or not the matcher proposed it)."""
    first, second = _pair(a, b)
    now = _now()
    with write_transaction(engine) as conn:
        where = sa.and_(mpi_review.c.patient_a == first, mpi_review.c.patient_b == second)
        done = conn.execute(mpi_review.update().where(where).values(status=status, decided=now, decided_by=by))
        if done.rowcount == 0:
            conn.execute(
                mpi_review.insert().values(
                    patient_a=first, patient_b=second, score=0.0, grade="manual", reasons="[]", status=status,
                    created=now, decided=now, decided_by=by,
                )
            )


def get(conn: sa.Connection, item_id: int) -> ReviewItem | None:
    row = conn.execute(sa.select(mpi_review).where(mpi_review.c.id == item_id)).first()
    return _item(row) if row else None


def listing(conn: sa.Connection, status: str = "pending", limit: int = 50) -> list[ReviewItem]:
    """Pairs with ``status``, best score first, ``limit`` at most."""
    query = sa.select(mpi_review).where(mpi_review.c.status == status)
    query = query.order_by(mpi_review.c.score.desc(), mpi_review.c.id).limit(limit)
    return [_item(r) for r in conn.execute(query)]
