"""Accounts of people and systems (OAuth2 clients), kept in the `account` table: creation,
login checks with lockout and the TOTP second factor."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from expediente.db.engine import write_transaction
from expediente.db.schema import account
from expediente.security import totp
from expediente.security.passwords import hash_secret, verify_secret
from expediente.security.principal import ROLES, Principal
from expediente.security.scopes import ROLE_DEFAULT_SCOPES

USERNAME = re.compile(r"^[A-Za-z0-9._@-]{3,128}$")


class AccountError(ValueError):
    """A request to create an account that cannot be honoured (message in Spanish)."""


def add_account(
    engine: sa.Engine,
    username: str,
    secret: str,
    role: str,
    *,
    kind: str = "person",
    display_name: str | None = None,
    organization: str | None = None,
    practitioner_ref: str | None = None,
    patient_ref: str | None = None,
) -> None:
    if not USERNAME.match(username):
        raise AccountError(f"Nombre de usuario inválido: '{username}' (3 a 128 caracteres: letras, dígitos, . _ @ -)")
    if role not in ROLES:
        raise AccountError(f"Rol desconocido: '{role}'. Roles válidos: {', '.join(sorted(ROLES))}")
    if kind not in ("person", "system"):
        raise AccountError(f"Tipo de cuenta inválido: '{kind}'")
    if len(secret) < 12:
        raise AccountError("La contraseña o secreto debe tener al menos 12 caracteres")
    row = dict(
        username=username,
        kind=kind,
        secret_hash=hash_secret(secret),
        role=role,
        display_name=display_name,
        organization=organization,
        practitioner_ref=practitioner_ref,
        patient_ref=patient_ref,
        active=True,
        created=datetime.now(UTC).replace(tzinfo=None),
    )
    with write_transaction(engine) as conn:
        if conn.execute(sa.select(account.c.id).where(account.c.username == username)).first():
            raise AccountError(f"Ya existe una cuenta '{username}'")
        conn.execute(account.insert().values(**row))


class LoginOutcome(enum.Enum):
    OK = "ok"
    BAD_CREDENTIALS = "bad_credentials"
    LOCKED = "locked"  # too many failures; refused whatever was presented
    TOTP_REQUIRED = "totp_required"  # right password, the account's second factor missing
    TOTP_INVALID = "totp_invalid"  # right password, wrong or already used code


@dataclass(frozen=True, slots=True)
class LoginResult:
    outcome: LoginOutcome
    principal: Principal | None = None
    locked_until: datetime | None = None
    # True when this attempt reached the failure limit and locked the account.
    just_locked: bool = False


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    max_failures: int = 5
    lockout_seconds: int = 900


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def principal_of(row) -> Principal:
    """The account's principal with its role's default scopes (made explicit)."""
    return Principal(
        subject=row["username"],
        kind=row["kind"],
        role=row["role"],
        organization=row["organization"],
        practitioner_ref=row["practitioner_ref"],
        patient_ref=row["patient_ref"],
        scopes=ROLE_DEFAULT_SCOPES.get(row["role"], ()),
    )


def login(
    engine: sa.Engine,
    username: str,
    secret: str,
    *,
    kind: str,
    totp_code: str | None = None,
    policy: LoginPolicy = LoginPolicy(),
) -> LoginResult:
    """Check a login. People's accounts count consecutive failures (wrong password or code) and
    lock at ``policy.max_failures``; while locked every attempt is refused and none extends the
    lock. Systems (OAuth2 clients, long random secrets) are not locked: that would only let
    anyone who knows a client id stop an integration."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(account).where(account.c.username == username)).mappings().first()
    if row is not None and row["kind"] == "person" and kind == "person" and _locked(row, _now()):
        return LoginResult(LoginOutcome.LOCKED, locked_until=row["locked_until"])
    password_ok = verify_secret(row["secret_hash"] if row else None, secret)
    if row is None or not row["active"] or row["kind"] != kind:
        return LoginResult(LoginOutcome.BAD_CREDENTIALS)
    if kind != "person":
        return LoginResult(LoginOutcome.OK, principal_of(row)) if password_ok else LoginResult(LoginOutcome.BAD_CREDENTIALS)
    # The counter and the TOTP step are decided under the row's lock, so concurrent attempts
    # (any server process) neither lose a failure nor use one code twice.
    with write_transaction(engine) as conn:
        row = conn.execute(sa.select(account).where(account.c.id == row["id"]).with_for_update()).mappings().one()
        now = _now()
        if _locked(row, now):
            return LoginResult(LoginOutcome.LOCKED, locked_until=row["locked_until"])
        if password_ok and row["totp_secret"]:
            if not totp_code:
                return LoginResult(LoginOutcome.TOTP_REQUIRED)
            step = totp.matching_step(row["totp_secret"], totp_code, now)
            if step is None or (row["totp_last_step"] is not None and step <= row["totp_last_step"]):
                return _fail(conn, row, now, policy, LoginOutcome.TOTP_INVALID)
            conn.execute(account.update().where(account.c.id == row["id"]).values(totp_last_step=step))
        if not password_ok:
            return _fail(conn, row, now, policy, LoginOutcome.BAD_CREDENTIALS)
        if row["failed_logins"] or row["locked_until"] is not None:
            conn.execute(account.update().where(account.c.id == row["id"]).values(failed_logins=0, locked_until=None))
        return LoginResult(LoginOutcome.OK, principal_of(row))


def _locked(row, now: datetime) -> bool:
    return row["locked_until"] is not None and row["locked_until"] > now


def _fail(conn: sa.Connection, row, now: datetime, policy: LoginPolicy, outcome: LoginOutcome) -> LoginResult:
    failures = row["failed_logins"] + 1
    if failures >= policy.max_failures:
        until = now + timedelta(seconds=policy.lockout_seconds)
        conn.execute(account.update().where(account.c.id == row["id"]).values(failed_logins=0, locked_until=until))
        return LoginResult(outcome, locked_until=until, just_locked=True)
    conn.execute(account.update().where(account.c.id == row["id"]).values(failed_logins=failures))
    return LoginResult(outcome)


def authenticate(engine: sa.Engine, username: str, secret: str, *, kind: str | None = None) -> Principal | None:
    """The principal for valid credentials of an active account, else None (no lockout, no
    second factor: for tools that check a password, not for logins)."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(account).where(account.c.username == username)).mappings().first()
    ok = verify_secret(row["secret_hash"] if row else None, secret)
    if not ok or not row["active"] or (kind and row["kind"] != kind):
        return None
    return principal_of(row)


def active_principal(engine: sa.Engine, username: str) -> Principal | None:
    """The current principal of an active, unlocked person account (refresh: role changes and
    deactivation take effect at the next refresh)."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(account).where(account.c.username == username)).mappings().first()
    if row is None or not row["active"] or row["kind"] != "person" or _locked(row, _now()):
        return None
    return principal_of(row)


def enroll_totp(engine: sa.Engine, username: str, *, reset: bool = False) -> str:
    """Give a person's account a new TOTP secret and return it (base32)."""
    secret = totp.new_secret()
    with write_transaction(engine) as conn:
        row = conn.execute(sa.select(account).where(account.c.username == username).with_for_update()).mappings().first()
        if row is None or row["kind"] != "person":
            raise AccountError(f"No existe la cuenta de persona '{username}'")
        if row["totp_secret"] and not reset:
            raise AccountError(f"La cuenta '{username}' ya tiene segundo factor; use --reset para reemplazarlo")
        conn.execute(account.update().where(account.c.id == row["id"]).values(totp_secret=secret, totp_last_step=None))
    return secret


def disable_totp(engine: sa.Engine, username: str) -> None:
    _update_person(engine, username, totp_secret=None, totp_last_step=None)


def unlock(engine: sa.Engine, username: str) -> None:
    _update_person(engine, username, failed_logins=0, locked_until=None)


def _update_person(engine: sa.Engine, username: str, **values) -> None:
    with write_transaction(engine) as conn:
        done = conn.execute(account.update().where(account.c.username == username, account.c.kind == "person").values(**values))
        if done.rowcount != 1:
            raise AccountError(f"No existe la cuenta de persona '{username}'")


def count_accounts(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(account)).scalar_one()
