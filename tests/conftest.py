"""Shared fixtures: every storage test runs on a real SQLite file and on a real PostgreSQL.

PostgreSQL: EXPEDIENTE_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres)
is an admin connection; each test gets its own database, created and dropped here. Without a
server the PostgreSQL variants skip with the reason, unless EXPEDIENTE_REQUIRE_POSTGRES=1 (CI),
where they fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from expediente.app import Services, create_app
from expediente.config import Settings
from expediente.db.migrate import upgrade
from expediente.security.accounts import add_account

PG_ADMIN_URL = os.environ.get("EXPEDIENTE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_PG = os.environ.get("EXPEDIENTE_REQUIRE_POSTGRES") == "1"
PASSWORD = "contraseña-de-prueba-segura"


def _pg_admin() -> sa.Engine:
    url = PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    return sa.create_engine(url, isolation_level="AUTOCOMMIT")


def _pg_unavailable() -> str | None:
    try:
        engine = _pg_admin()
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means no server to test against
        return f"PostgreSQL no disponible en {PG_ADMIN_URL}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    return None


_PG_REASON = _pg_unavailable()


def require_postgres() -> None:
    if _PG_REASON:
        if REQUIRE_PG:
            pytest.fail(f"{_PG_REASON} (EXPEDIENTE_REQUIRE_POSTGRES=1: las pruebas de PostgreSQL son obligatorias)")
        pytest.skip(_PG_REASON)


def pytest_report_header(config):
    return f"postgresql: {'NO: ' + _PG_REASON if _PG_REASON else PG_ADMIN_URL} (required: {REQUIRE_PG})"


def postgres_database() -> Iterator[str]:
    """Create a fresh PostgreSQL database, yield its URL, drop it afterwards."""
    require_postgres()
    name = f"expediente_test_{secrets.token_hex(6)}"
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def settings(request, tmp_path: Path) -> Iterator[Settings]:
    # Generic FHIR conformance modules (pytestmark = pytest.mark.generic_fhir) write minimal
    # resources: the Mexican profiles apply there only to resources that declare them, and
    # the master patient index does not link their look-alike test patients (its own tests,
    # tests/test_mpi_*.py, run with the product defaults).
    generic = request.node.get_closest_marker("generic_fhir") is not None
    profiles = "declared" if generic else "mx"
    base = Settings(
        data_dir=tmp_path / "data", secret_key="clave-de-prueba-" + "x" * 32, base_url="http://testserver", profiles=profiles,
        mpi_autolink=not generic,
    )
    if request.param == "sqlite":
        yield base
        return
    gen = postgres_database()
    url = next(gen)
    try:
        yield Settings(**{**base.__dict__, "database_url": url})
    finally:
        gen.close()


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    services = Services.build(settings)
    upgrade(services.engine)
    yield services
    services.close()


@pytest.fixture
def client(settings: Settings, services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(settings, services)) as c:
        yield c


@pytest.fixture
def make_token(client: TestClient, services: Services):
    """make_token(role='physician', **account) -> bearer token of a fresh account with that role."""

    def _make(role: str = "physician", **extra) -> str:
        username = f"{role}.{secrets.token_hex(3)}"
        if role == "system":  # an institution's OAuth2 client (client credentials)
            add_account(services.engine, username, PASSWORD, role, kind="system", **extra)
            data = {"grant_type": "client_credentials", "client_id": username, "client_secret": PASSWORD}
        else:
            add_account(services.engine, username, PASSWORD, role, **extra)
            data = {"grant_type": "password", "username": username, "password": PASSWORD}
        r = client.post("/auth/token", data=data)
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    return _make


@pytest.fixture
def auth(make_token) -> dict[str, str]:
    """Authorization header of an institution's system client (SMART backend services): it
    reads and writes every record, within the patients' consents. Tests of what people may
    see use make_token with their role (tests/test_access_policy.py)."""
    return {"Authorization": f"Bearer {make_token('system')}"}
