"""The account security commands: TOTP enrolment and lifting a lockout."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from expediente.app import Services
from expediente.cli import app
from expediente.config import load_settings
from expediente.db.schema import account
from expediente.security.accounts import LoginOutcome, LoginPolicy, login

PASSWORD = "contraseña-larga-de-prueba"


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPEDIENTE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("EXPEDIENTE_DATABASE_URL", raising=False)
    monkeypatch.setenv("EXPEDIENTE_CONFIG", str(tmp_path / "none.toml"))
    assert run("user", "add", "dra.lopez", "--role", "physician", "--password", PASSWORD).exit_code == 0
    services = Services.build(load_settings())
    yield services
    services.close()


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_user_totp_enrols_once_and_codes_then_required(cli_env):
    r = run("user", "totp", "dra.lopez")
    assert r.exit_code == 0, r.output
    uri = r.stdout.strip()
    assert uri.startswith("otpauth://totp/") and "issuer=Expediente" in uri
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    engine = cli_env.engine
    assert login(engine, "dra.lopez", PASSWORD, kind="person").outcome is LoginOutcome.TOTP_REQUIRED
    assert login(engine, "dra.lopez", PASSWORD, kind="person", totp_code=pyotp.TOTP(secret).now()).outcome is LoginOutcome.OK

    again = run("user", "totp", "dra.lopez")
    assert again.exit_code == 2 and "--reset" in again.output
    reset = run("user", "totp", "dra.lopez", "--reset")
    assert reset.exit_code == 0 and parse_qs(urlsplit(reset.stdout.strip()).query)["secret"][0] != secret

    assert run("user", "totp", "dra.lopez", "--disable").exit_code == 0
    assert login(engine, "dra.lopez", PASSWORD, kind="person").outcome is LoginOutcome.OK
    assert run("user", "totp", "nadie").exit_code == 2


def test_user_unlock_lifts_a_lockout(cli_env):
    engine = cli_env.engine
    policy = LoginPolicy(max_failures=2, lockout_seconds=3600)
    for _ in range(2):
        login(engine, "dra.lopez", "equivocada", kind="person", policy=policy)
    assert login(engine, "dra.lopez", PASSWORD, kind="person", policy=policy).outcome is LoginOutcome.LOCKED
    r = run("user", "unlock", "dra.lopez")
    assert r.exit_code == 0, r.output
    with engine.connect() as conn:
        assert conn.execute(sa.select(account.c.locked_until).where(account.c.username == "dra.lopez")).scalar_one() is None
    assert login(engine, "dra.lopez", PASSWORD, kind="person", policy=policy).outcome is LoginOutcome.OK
    assert run("user", "unlock", "nadie").exit_code == 2
