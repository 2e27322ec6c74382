"""Refresh tokens (RFC 6749 section 6) with rotation and replay detection.

A token is 256 random bits handed to the client once; the database keeps only its SHA-256.
Each login starts a family; each refresh spends the presented token and issues the next one of
the family. A spent token presented again means two parties hold the family (one of them
stole it), so the whole family is revoked, the newest token included, and the caller is told.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from expediente.db.engine import write_transaction
from expediente.db.schema import refresh_token


class RefreshOutcome(enum.Enum):
    ROTATED = "rotated"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REPLAYED = "replayed"  # a spent token again: the family is now revoked


@dataclass(frozen=True, slots=True)
class RefreshResult:
    outcome: RefreshOutcome
    username: str | None = None
    scope: str | None = None
    token: str | None = None  # the next token of the family (ROTATED only)
    family: str | None = None


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    idle_seconds: int = 4 * 3600
    max_seconds: int = 12 * 3600


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _insert(conn: sa.Connection, family: str, username: str, scope: str, now: datetime, family_expires: datetime, policy: RefreshPolicy) -> str:
    token = secrets.token_urlsafe(32)
    conn.execute(
        refresh_token.insert().values(
            token_hash=_digest(token),
            family=family,
            username=username,
            scope=scope,
            issued=now,
            expires=min(now + timedelta(seconds=policy.idle_seconds), family_expires),
            family_expires=family_expires,
        )
    )
    return token


def start_family(engine: sa.Engine, username: str, scope: str, policy: RefreshPolicy) -> str:
    """The first refresh token of a new login. The account's ended logins are deleted here, so
    the table holds live logins only and needs no separate clean-up job."""
    now = _now()
    with write_transaction(engine) as conn:
        conn.execute(refresh_token.delete().where(refresh_token.c.username == username, refresh_token.c.family_expires < now))
        return _insert(conn, secrets.token_urlsafe(24), username, scope, now, now + timedelta(seconds=policy.max_seconds), policy)


def rotate(engine: sa.Engine, token: str, policy: RefreshPolicy) -> RefreshResult:
    """Spend ``token`` and issue the next of its family, or say why not (revoking on replay)."""
    now = _now()
    with write_transaction(engine) as conn:
        row = conn.execute(sa.select(refresh_token).where(refresh_token.c.token_hash == _digest(token)).with_for_update()).mappings().first()
        if row is None:
            return RefreshResult(RefreshOutcome.UNKNOWN)
        if row["revoked"] is not None:
            return RefreshResult(RefreshOutcome.REVOKED, username=row["username"], family=row["family"])
        if row["used"] is not None:
            _revoke_family(conn, row["family"], now)
            return RefreshResult(RefreshOutcome.REPLAYED, username=row["username"], family=row["family"])
        if row["expires"] <= now:
            return RefreshResult(RefreshOutcome.EXPIRED, username=row["username"], family=row["family"])
        conn.execute(refresh_token.update().where(refresh_token.c.token_hash == row["token_hash"]).values(used=now))
        following = _insert(conn, row["family"], row["username"], row["scope"], now, row["family_expires"], policy)
        return RefreshResult(RefreshOutcome.ROTATED, username=row["username"], scope=row["scope"], token=following, family=row["family"])


def scope_of(engine: sa.Engine, token: str) -> str | None:
    """The scope granted to the login ``token`` belongs to (None: unknown token)."""
    with engine.connect() as conn:
        return conn.execute(sa.select(refresh_token.c.scope).where(refresh_token.c.token_hash == _digest(token))).scalar()


def revoke(engine: sa.Engine, token: str) -> str | None:
    """Revoke the family of ``token`` (a logout); the username, or None for an unknown token."""
    with write_transaction(engine) as conn:
        row = conn.execute(sa.select(refresh_token.c.family, refresh_token.c.username).where(refresh_token.c.token_hash == _digest(token))).first()
        if row is None:
            return None
        _revoke_family(conn, row.family, _now())
        return row.username


def revoke_family(engine: sa.Engine, family: str) -> None:
    with write_transaction(engine) as conn:
        _revoke_family(conn, family, _now())


def _revoke_family(conn: sa.Connection, family: str, now: datetime) -> None:
    conn.execute(refresh_token.update().where(refresh_token.c.family == family, refresh_token.c.revoked.is_(None)).values(revoked=now))
