"""Accounts of people and systems (OAuth2 clients), kept in the `account` table."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import sqlalchemy as sa

from expediente.db.engine import write_transaction
from expediente.db.schema import account
from expediente.security.passwords import hash_secret, verify_secret
from expediente.security.principal import ROLES, Principal

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


def authenticate(engine: sa.Engine, username: str, secret: str, *, kind: str | None = None) -> Principal | None:
    """The principal for valid credentials of an active account, else None."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(account).where(account.c.username == username)).mappings().first()
    ok = verify_secret(row["secret_hash"] if row else None, secret)
    if not ok or not row["active"] or (kind and row["kind"] != kind):
        return None
    return Principal(
        subject=row["username"],
        kind=row["kind"],
        role=row["role"],
        organization=row["organization"],
        practitioner_ref=row["practitioner_ref"],
        patient_ref=row["patient_ref"],
    )


def count_accounts(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(account)).scalar_one()
