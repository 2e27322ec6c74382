"""The `expediente` command line on the embedded default."""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from expediente.app import Services
from expediente.cli import app
from expediente.config import load_settings
from expediente.security.accounts import authenticate


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPEDIENTE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("EXPEDIENTE_DATABASE_URL", raising=False)
    monkeypatch.setenv("EXPEDIENTE_CONFIG", str(tmp_path / "none.toml"))
    return tmp_path


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_user_add_then_login(cli_env):
    r = run("user", "add", "dra.lopez", "--role", "physician", "--generate-password", "--organization", "DFIMS000123")
    assert r.exit_code == 0, r.output
    password = r.stdout.split("contraseña: ")[1].strip()
    services = Services.build(load_settings())
    try:
        principal = authenticate(services.engine, "dra.lopez", password)
        assert principal is not None and principal.role == "physician" and principal.organization == "DFIMS000123"
        assert authenticate(services.engine, "dra.lopez", "otra-contraseña-cualquiera") is None
    finally:
        services.close()


def test_account_errors_are_clear(cli_env):
    assert run("user", "add", "enf.ruiz", "--role", "nurse", "--password", "contraseña-larga-1").exit_code == 0
    r = run("user", "add", "enf.ruiz", "--role", "nurse", "--password", "contraseña-larga-1")
    assert r.exit_code == 2 and "Ya existe" in r.output
    r = run("user", "add", "x.y", "--role", "cirujano", "--password", "contraseña-larga-1")
    assert r.exit_code == 2 and "Rol desconocido" in r.output
    r = run("user", "add", "corta", "--role", "nurse", "--password", "corta")
    assert r.exit_code == 2 and "12 caracteres" in r.output


def test_generate_to_ndjson_and_db_revision(cli_env):
    out = cli_env / "ndjson"
    r = run("generate", "--patients", "5", "--seed", "3", "--ndjson", str(out))
    assert r.exit_code == 0, r.output
    stats = orjson.loads(r.stdout.strip().splitlines()[-1])
    assert stats["patients"] == 5 and stats["resources"] > 5 * 40
    patients = (out / "Patient.ndjson").read_text().splitlines()
    assert len(patients) == 5 and orjson.loads(patients[0])["resourceType"] == "Patient"
    assert "None" in run("db", "current").stdout  # NDJSON output needs no database
    assert run("init").exit_code == 0
    r = run("db", "current")
    assert r.exit_code == 0
    db_rev, code_rev = r.stdout.split("base de datos: ")[1].split("  código: ")
    assert db_rev.strip() == code_rev.strip()


def test_db_reindex_rebuilds_and_refuses_unknown_types(cli_env):
    assert run("init").exit_code == 0
    r = run("db", "reindex", "--type", "Patient")
    assert r.exit_code == 0, r.output
    assert "Índices reconstruidos" in r.output
    r = run("db", "reindex", "--type", "Paciente")
    assert r.exit_code != 0 and "desconocido" in r.output
