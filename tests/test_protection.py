"""Security headers, CORS and rate limits on the real application stack."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from expediente.app import Services, create_app
from expediente.config import Settings
from expediente.db.migrate import upgrade
from expediente.ops.protection import RateLimits, TokenBuckets
from expediente.security.accounts import add_account
from expediente.security.principal import Principal
from tests.mx_examples import mx_patient

PASSWORD = "contraseña-de-prueba-segura"
ORIGIN = "https://portal.hospital.example"


@pytest.fixture
def make_client(tmp_path) -> Iterator:
    """make_client(**settings) -> TestClient over a fresh SQLite store with those settings."""
    opened: list = []

    def _make(**overrides) -> TestClient:
        values = {"data_dir": tmp_path / f"data-{len(opened)}", "secret_key": "clave-de-prueba-" + "x" * 32, "base_url": "http://testserver"}
        settings = Settings(**{**values, **overrides})
        services = Services.build(settings)
        upgrade(services.engine)
        client = TestClient(create_app(settings, services))
        client.__enter__()
        opened.append(client)
        return client

    yield _make
    for client in opened:
        client.__exit__(None, None, None)


def _token(client: TestClient, role: str = "physician", kind: str = "person") -> str:
    username = f"{role}.{secrets.token_hex(3)}"
    add_account(client.app.state.services.engine, username, PASSWORD, role, kind=kind)
    if kind == "system":
        data = {"grant_type": "client_credentials", "client_id": username, "client_secret": PASSWORD}
    else:
        data = {"grant_type": "password", "username": username, "password": PASSWORD}
    r = client.post("/auth/token", data=data)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
}


def test_security_headers_on_every_response(make_client):
    client = make_client()
    token = _token(client)
    responses = [
        client.get("/health"),
        client.get("/fhir/metadata"),
        client.get("/fhir/Patient"),  # 401 from Authenticate
        client.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}),
        client.get("/no-existe"),
        client.post("/fhir/Patient", content=b"x" * 10, headers={"Content-Length": str(10**12)}),  # 413
    ]
    assert [r.status_code for r in responses] == [200, 200, 401, 200, 404, 413]
    for r in responses:
        for name, value in SECURITY_HEADERS.items():
            assert r.headers.get_list(name) == [value], (r.request.url, name)
        assert "strict-transport-security" not in r.headers  # plain HTTP, http base URL
    for r in responses[1:4]:
        assert r.headers.get_list("cache-control") == ["no-store"]  # Observe's, not repeated
    assert "cache-control" not in responses[0].headers


def test_hsts_when_the_public_base_url_is_https(make_client):
    client = make_client(base_url="https://expediente.hospital.example")
    assert client.get("/health").headers["strict-transport-security"] == "max-age=31536000"


def test_no_cors_without_configured_origins(make_client):
    client = make_client()
    preflight = client.options("/fhir/Patient", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    assert preflight.status_code in (401, 405) and "access-control-allow-origin" not in preflight.headers
    r = client.get("/fhir/metadata", headers={"Origin": ORIGIN})
    assert r.status_code == 200 and not any(h.startswith("access-control-") for h in r.headers)


def test_cors_preflight_without_token_and_exposed_headers(make_client):
    client = make_client(cors_origins=f"{ORIGIN}, https://otro.example/")
    preflight = client.options(
        "/fhir/Patient/abc",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization, content-type, if-match, expediente-break-glass",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert set(preflight.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST", "PUT", "DELETE"}
    assert "Expediente-Break-Glass" in preflight.headers["access-control-allow-headers"]
    assert "access-control-allow-credentials" not in preflight.headers
    assert preflight.headers["x-frame-options"] == "DENY"

    token = _token(client)
    created = client.post(
        "/fhir/Patient",
        json=mx_patient(),
        headers={"Origin": ORIGIN, "Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
    )
    assert created.status_code == 201
    assert created.headers["access-control-allow-origin"] == ORIGIN
    exposed = set(created.headers["access-control-expose-headers"].split(", "))
    assert exposed == {"ETag", "Location", "Last-Modified", "Content-Location"}
    # A 401 also carries CORS headers, so the browser app can read why.
    denied = client.get("/fhir/Patient", headers={"Origin": ORIGIN})
    assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == ORIGIN


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://malicioso.example", "Access-Control-Request-Method": "GET"},
        {"Origin": ORIGIN, "Access-Control-Request-Method": "PATCH"},
        {"Origin": ORIGIN, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-otro"},
    ],
)
def test_refused_preflight_is_explained_in_spanish(make_client, headers):
    client = make_client(cors_origins=ORIGIN)
    r = client.options("/fhir/Patient", headers=headers)
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome" and "origen cruzado no permitida" in outcome["issue"][0]["diagnostics"]
    assert r.headers["content-security-policy"] == SECURITY_HEADERS["content-security-policy"]


def _assert_throttled(r) -> None:
    assert r.status_code == 429, r.text
    assert int(r.headers["retry-after"]) >= 1
    body = r.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "throttled"
    assert "Demasiadas solicitudes" in body["issue"][0]["diagnostics"]
    assert r.headers["x-content-type-options"] == "nosniff"


def test_auth_endpoints_are_limited_per_address(make_client):
    client = make_client(rate_auth_per_min=1, rate_auth_burst=3)
    form = {"grant_type": "password", "username": "nadie", "password": "adivinanza-numero-1"}
    assert [client.post("/auth/token", data=form).status_code for _ in range(3)] == [400, 400, 400]  # invalid_grant
    r = client.post("/auth/token", data=form)
    _assert_throttled(r)
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert client.get("/health").status_code == 200  # other paths have their own bucket


def test_people_and_systems_have_their_own_buckets(make_client):
    client = make_client(rate_person_per_s=1, rate_person_burst=2, rate_system_per_s=1, rate_system_burst=5, rate_auth_burst=50)
    person = {"Authorization": f"Bearer {_token(client)}"}
    other_person = {"Authorization": f"Bearer {_token(client, 'nurse')}"}
    system = {"Authorization": f"Bearer {_token(client, 'system', kind='system')}"}
    assert [client.get("/fhir/Patient", headers=person).status_code for _ in range(2)] == [200, 200]
    _assert_throttled(client.get("/fhir/Patient", headers=person))
    assert client.get("/fhir/Patient", headers=other_person).status_code == 200  # per principal
    assert [client.get("/fhir/Patient", headers=system).status_code for _ in range(5)] == [200] * 5
    _assert_throttled(client.get("/fhir/Patient", headers=system))


def test_unauthenticated_requests_are_limited_per_address(make_client):
    client = make_client(rate_address_per_s=1, rate_address_burst=3)
    token = _token(client)
    assert [client.get("/fhir/metadata").status_code, client.get("/fhir/Patient").status_code] == [200, 401]
    # Credentials on an open path do not escape the address's bucket.
    assert client.get("/health", headers={"Authorization": "Bearer cualquier-cosa"}).status_code == 200
    _assert_throttled(client.get("/fhir/Patient"))
    _assert_throttled(client.get("/health", headers={"Authorization": f"Bearer {token}"}))
    # An authenticated request is charged to its principal, not to the exhausted address.
    assert client.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_token_bucket_refills_at_its_rate():
    buckets = TokenBuckets(rate=2, burst=3)
    assert [buckets.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", now=0.0) == pytest.approx(0.5)
    assert buckets.take("a", now=0.5) == 0.0  # one token back after 1/rate seconds
    assert buckets.take("b", now=0.5) == 0.0
    assert buckets.take("a", now=100.0) == 0.0 and buckets._buckets["a"][0] == pytest.approx(2.0)  # capped at burst


def test_bucket_table_stays_bounded():
    buckets = TokenBuckets(rate=1, burst=1, max_clients=100)
    for i in range(1000):
        buckets.take(f"10.0.{i // 256}.{i % 256}", now=float(i) / 1000)
    assert len(buckets._buckets) <= 100


def test_defaults_leave_the_crud_benchmark_unthrottled():
    # bench/fhir_crud.py: ~1,500 requests/s from 16 connections sharing one system client token.
    limits = RateLimits(Settings())
    bench = Principal(subject="bench-client", kind="system", role="system")
    refused, now = 0, 0.0
    for _ in range(30_000):  # 20 s at 1,500/s
        now += 1 / 1500
        refused += limits.system.take(bench.subject, now=now) > 0
    assert refused == 0
    # A person at the same pace is slowed down; their bucket is far smaller.
    person = TokenBuckets(Settings().rate_person_per_s, Settings().rate_person_burst)
    assert sum(person.take("dra.lopez", now=i / 1500) > 0 for i in range(3000)) > 1000


def test_a_check_costs_microseconds():
    limits = RateLimits(Settings())
    principal = Principal(subject="sistema", kind="system", role="system")
    n = 100_000
    start = time.perf_counter()
    for _ in range(n):
        limits.check_principal(principal)
        limits.check_address("/fhir/metadata", "127.0.0.1")
    per_check = (time.perf_counter() - start) / n
    assert per_check < 20e-6, f"{per_check * 1e6:.1f} µs for a principal's and an address's check"


def test_serve_refuses_rates_that_cannot_work(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from expediente.cli import app as cli

    monkeypatch.setenv("EXPEDIENTE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EXPEDIENTE_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("EXPEDIENTE_RATE_PERSON_PER_S", "0")
    r = CliRunner().invoke(cli, ["serve"])
    assert r.exit_code == 2 and "deben ser positivos" in " ".join(r.output.split())
