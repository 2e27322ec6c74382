"""Authentication end to end on SQLite and PostgreSQL: token forgery and tampering, refresh
rotation and replay, lockout, TOTP, scope narrowing, an external OpenID Connect provider
(served from 127.0.0.1 with keys made here) and SMART discovery."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pyotp
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.testclient import TestClient

from expediente.app import Services, create_app
from expediente.db.schema import account, audit_log, refresh_token
from expediente.security.accounts import add_account, enroll_totp
from expediente.security.oidc import JwksKeys
from expediente.security.tokens import InvalidToken

from conftest import PASSWORD
from tests.mx_examples import mx_patient

IDP_ISSUER = "https://idp.salud.example/realms/hospital"
FHIR_AUDIENCE = "http://testserver/fhir"
MAX_FAILURES = 3
LOCKOUT_SECONDS = 1


# --- an OpenID Connect provider's keys, served over HTTP on the loopback interface ----------


class Idp:
    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.keys = [_jwk(self.rsa.public_key(), "rsa-1", "RS256"), _jwk(self.ec.public_key(), "ec-1", "ES256")]
        self.requests = 0
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                idp.requests += 1
                body = json.dumps({"keys": idp.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/realms/hospital/protocol/openid-connect/certs"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, key=None, kid: str = "rsa-1", alg: str = "RS256", **claims) -> str:
        now = int(time.time())
        payload = {
            "iss": IDP_ISSUER,
            "aud": FHIR_AUDIENCE,
            "sub": "6f1c2a5e-0d4b-4c1e-9a51-3b1f6f0e2d11",
            "iat": now,
            "exp": now + 300,
            "preferred_username": "dra.ruiz",
            "realm_access": {"roles": ["default-roles-hospital", "offline_access", "physician"]},
            "clues": "DFSSA001234",
            "fhir_practitioner": "Practitioner/pr-ruiz",
            **claims,
        }
        return jwt.encode(payload, key or self.rsa, algorithm=alg, headers={"kid": kid})

    def public_pem(self) -> bytes:
        return self.rsa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _jwk(public_key, kid: str, alg: str) -> dict:
    algorithm = jwt.algorithms.RSAAlgorithm if alg.startswith("RS") else jwt.algorithms.ECAlgorithm
    return {**algorithm.to_jwk(public_key, as_dict=True), "kid": kid, "alg": alg, "use": "sig"}


@pytest.fixture(scope="module")
def idp():
    provider = Idp()
    yield provider
    provider.server.shutdown()


@pytest.fixture
def settings(settings, idp):
    return replace(
        settings,
        login_max_failures=MAX_FAILURES,
        login_lockout_seconds=LOCKOUT_SECONDS,
        oidc_issuer=IDP_ISSUER,
        oidc_jwks_url=idp.url,
    )


# --- helpers -------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _hs256(header: dict, payload: dict, secret: bytes) -> str:
    """A JWT signed by hand, so any header (even one PyJWT refuses to make) can be tried."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{_b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# The practitioner every test physician is; a_patient's patients are in their care.
CLINICIAN = "Practitioner/dra-pruebas"


def person(services, role: str = "physician", username: str | None = None, **extra) -> str:
    username = username or f"{role}.{time.monotonic_ns() % 10**9}"
    if role == "physician":
        extra.setdefault("practitioner_ref", CLINICIAN)
    add_account(services.engine, username, PASSWORD, role, **extra)
    return username


def password_grant(client, username: str, password: str = PASSWORD, **extra):
    return client.post("/auth/token", data={"grant_type": "password", "username": username, "password": password, **extra})


def refresh_grant(client, token: str, **extra):
    return client.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": token, **extra})


def a_patient(client, auth) -> str:
    """A patient registered by the hospital's system, with a care team that names CLINICIAN."""
    r = client.post("/fhir/Patient", json=mx_patient(first="Hernández", second=None), headers=auth)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    team = {"resourceType": "CareTeam", "subject": {"reference": f"Patient/{pid}"}, "participant": [{"member": {"reference": CLINICIAN}}]}
    assert client.post("/fhir/CareTeam", json=team, headers=auth).status_code == 201
    return pid


def audit_reasons(services, action: str) -> list[tuple[str, str]]:
    with services.engine.connect() as conn:
        query = sa.select(audit_log.c.outcome, audit_log.c.reason).where(audit_log.c.action == action).order_by(audit_log.c.seq)
        return [tuple(row) for row in conn.execute(query)]


def own_claims(role: str = "system", **changes) -> dict:
    """Claims of a token this server would issue (a system client's by default, which may read
    any record, so a refusal below is the token's, never the access policy's)."""
    now = int(time.time())
    claims = {
        "iss": "http://testserver",
        "aud": FHIR_AUDIENCE,
        "sub": "forjado",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "x",
        "scope": "system/*.cruds" if role == "system" else "user/*.cruds",
        "kind": "system" if role == "system" else "person",
        "role": role,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


# --- our access tokens ----------------------------------------------------------------------


def test_access_token_claims(client, services):
    r = password_grant(client, person(services, organization="DFIMS000123"))
    assert r.status_code == 200, r.text
    body = r.json()
    claims = _claims(body["access_token"])
    assert claims["iss"] == "http://testserver" and claims["aud"] == FHIR_AUDIENCE
    assert claims["exp"] - claims["iat"] == 900 == body["expires_in"] and claims["nbf"] == claims["iat"]
    assert claims["scope"] == "user/*.cruds" == body["scope"]
    assert claims["role"] == "physician" and claims["org"] == "DFIMS000123" and claims["jti"]
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"
    again = password_grant(client, claims["sub"]).json()["access_token"]
    assert _claims(again)["jti"] != claims["jti"]


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_forged_and_tampered_tokens_are_refused(client, services, settings, auth):
    pid = a_patient(client, auth)
    key = settings.secret_key.encode()
    # The forging helper makes tokens the server accepts, so each refusal below is due to the
    # one thing changed.
    assert client.get(f"/fhir/Patient/{pid}", headers=bearer(jwt.encode(own_claims(), key, algorithm="HS256"))).status_code == 200

    header = {"alg": "HS256", "typ": "JWT"}
    payload = own_claims()
    unsigned = f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(payload).encode())}."
    now = int(time.time())
    attacks = {
        "alg none": unsigned,
        "wrong key": jwt.encode(payload, b"otra-clave-que-no-es-la-del-servidor-000", algorithm="HS256"),
        "expired": jwt.encode(own_claims(iat=now - 3600, nbf=now - 3600, exp=now - 120), key, algorithm="HS256"),
        "wrong audience": jwt.encode(own_claims(aud="https://otro.servidor/fhir"), key, algorithm="HS256"),
        "wrong issuer": jwt.encode(own_claims(iss="https://otro.emisor"), key, algorithm="HS256"),
        "no audience": jwt.encode(own_claims(aud=None), key, algorithm="HS256"),
        "no scope": jwt.encode(own_claims(scope=None), key, algorithm="HS256"),
        "not yet valid": jwt.encode(own_claims(nbf=now + 3600), key, algorithm="HS256"),
        "HS512": jwt.encode(payload, key, algorithm="HS512"),
    }
    # A real token narrowed to Patient reads, its payload widened and its signature kept.
    narrowed = password_grant(client, person(services), scope="user/Patient.rs").json()["access_token"]
    head, body, signature = narrowed.split(".")
    widened = {**json.loads(_unb64(body)), "scope": "user/*.cruds"}
    attacks["tampered scope"] = f"{head}.{_b64(json.dumps(widened).encode())}.{signature}"
    promoted = {**json.loads(_unb64(body)), "role": "administrator"}
    attacks["tampered role"] = f"{head}.{_b64(json.dumps(promoted).encode())}.{signature}"
    attacks["hand-signed with the right key"] = _hs256(header, payload, key)  # control for _hs256 below
    for name, token in attacks.items():
        r = client.get(f"/fhir/Patient/{pid}", headers=bearer(token))
        expected = 200 if name == "hand-signed with the right key" else 401
        assert r.status_code == expected, (name, r.text)
        if expected == 401:
            assert r.json()["resourceType"] == "OperationOutcome" and "Hernández" not in r.text
            assert 'error="invalid_token"' in r.headers["www-authenticate"]


# --- scopes -----------------------------------------------------------------------------------


def test_scope_narrows_the_token(client, services):
    username = person(services)
    r = password_grant(client, username, scope="openid fhirUser user/Patient.rs user/Observation.r")
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "user/Patient.rs user/Observation.r"
    principal = services.tokens.verify(r.json()["access_token"])
    assert principal.scopes == ("user/Patient.rs", "user/Observation.r") and principal.role == "physician"
    # No scope named: the role's defaults, written out in the token.
    assert services.tokens.verify(password_grant(client, username).json()["access_token"]).scopes == ("user/*.cruds",)
    # v1 spelling within the role.
    assert password_grant(client, username, scope="user/*.read").json()["scope"] == "user/*.read"


@pytest.mark.parametrize(
    ("role", "scope"),
    [
        ("physician", "system/*.cruds"),
        ("physician", "patient/*.rs"),
        ("physician", "user/Patient.rs?identifier=x"),
        ("physician", "todo"),
        ("patient", "user/*.rs"),
        ("patient", "patient/*.cruds"),
        ("auditor", "user/Patient.rs"),
        ("researcher", "user/*.read"),
    ],
)
def test_scope_beyond_the_role_is_invalid_scope(client, services, role, scope):
    r = password_grant(client, person(services, role), scope=scope)
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope", r.text
    assert "access_token" not in r.json() and r.json()["error_description"]
    assert audit_reasons(services, "login")[-1][0] == "denied"


def test_client_credentials_get_system_scopes_and_no_refresh_token(client, services):
    add_account(services.engine, "his.hospital", "secreto-largo-del-sistema", "system", kind="system")
    r = client.post("/auth/token", data={"grant_type": "client_credentials", "client_id": "his.hospital", "client_secret": "secreto-largo-del-sistema"})
    assert r.status_code == 200 and r.json()["scope"] == "system/*.cruds" and "refresh_token" not in r.json()
    r = client.post(
        "/auth/token", auth=("his.hospital", "secreto-largo-del-sistema"), data={"grant_type": "client_credentials", "scope": "system/Patient.rs"}
    )
    assert services.tokens.verify(r.json()["access_token"]).scopes == ("system/Patient.rs",)


# --- refresh tokens -----------------------------------------------------------------------------


def test_refresh_rotates_and_a_replay_revokes_the_family(client, services, auth):
    pid = a_patient(client, auth)
    login = password_grant(client, person(services)).json()
    first = login["refresh_token"]
    with services.engine.connect() as conn:
        stored = conn.execute(sa.select(refresh_token.c.token_hash)).scalars().all()
    assert hashlib.sha256(first.encode()).hexdigest() in stored and first not in stored

    r = refresh_grant(client, first)
    assert r.status_code == 200, r.text
    second = r.json()["refresh_token"]
    assert second != first and r.json()["scope"] == "user/*.cruds"
    assert client.get(f"/fhir/Patient/{pid}", headers=bearer(r.json()["access_token"])).status_code == 200

    # The spent token again: refused, and the family (the newest token too) is revoked.
    replay = refresh_grant(client, first)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert refresh_grant(client, second).json()["error"] == "invalid_grant"
    reasons = audit_reasons(services, "refresh")
    assert reasons[0][0] == "allowed"
    assert reasons[1][0] == "denied" and "reutilización" in reasons[1][1]
    assert reasons[2] == ("denied", "token de renovación revocado")


def test_refresh_keeps_the_login_scope_and_may_narrow_it(client, services):
    login = password_grant(client, person(services), scope="user/Patient.rs user/Observation.rs").json()
    wider = refresh_grant(client, login["refresh_token"], scope="user/*.cruds")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"
    # A refused narrowing does not spend the token.
    r = refresh_grant(client, login["refresh_token"], scope="user/Patient.r")
    assert r.status_code == 200 and r.json()["scope"] == "user/Patient.r"
    r = refresh_grant(client, r.json()["refresh_token"])
    assert r.json()["scope"] == "user/Patient.rs user/Observation.rs"


def test_refresh_refused_when_unknown_expired_or_account_disabled(client, services):
    assert refresh_grant(client, "no-existe").json()["error"] == "invalid_grant"
    assert refresh_grant(client, "x" * 5000).status_code == 400
    assert client.post("/auth/token", data={"grant_type": "refresh_token"}).json()["error"] == "invalid_request"

    username = person(services)
    expiring = password_grant(client, username).json()["refresh_token"]
    with services.engine.begin() as conn:
        conn.execute(
            refresh_token.update()
            .where(refresh_token.c.token_hash == hashlib.sha256(expiring.encode()).hexdigest())
            .values(expires=datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=1))
        )
    assert refresh_grant(client, expiring).json()["error"] == "invalid_grant"

    live = password_grant(client, username).json()["refresh_token"]
    with services.engine.begin() as conn:
        conn.execute(account.update().where(account.c.username == username).values(active=False))
    assert refresh_grant(client, live).json()["error"] == "invalid_grant"
    assert ("denied", "cuenta inactiva o bloqueada") in audit_reasons(services, "refresh")


def test_revocation_endpoint(client, services):
    login = password_grant(client, person(services)).json()
    assert client.post("/auth/revoke", data={"token": login["refresh_token"], "token_type_hint": "refresh_token"}).status_code == 200
    assert refresh_grant(client, login["refresh_token"]).json()["error"] == "invalid_grant"
    assert ("allowed", "sesión revocada a petición del cliente") in audit_reasons(services, "revoke")
    # Unknown tokens are answered the same (RFC 7009 section 2.2); access tokens are not revocable.
    assert client.post("/auth/revoke", data={"token": "desconocido"}).status_code == 200
    r = client.post("/auth/revoke", data={"token": login["access_token"]})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_token_type"
    assert client.post("/auth/revoke", data={}).json()["error"] == "invalid_request"


# --- lockout --------------------------------------------------------------------------------------


def test_repeated_failures_lock_the_account_in_every_process(client, services, settings):
    username = person(services)
    # A second server process on the same database.
    other_services = Services.build(settings)
    try:
        with TestClient(create_app(settings, other_services)) as other:
            assert password_grant(client, username, "equivocada-1").status_code == 400
            assert password_grant(other, username, "equivocada-2").status_code == 400
            with services.engine.connect() as conn:
                assert conn.execute(sa.select(account.c.failed_logins).where(account.c.username == username)).scalar_one() == 2
            assert password_grant(client, username, "equivocada-3").status_code == 400  # the limit: locked now

            for app_client in (client, other):
                r = password_grant(app_client, username)  # the right password
                assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
                assert "bloqueada" in r.json()["error_description"] and int(r.headers["retry-after"]) >= 1
    finally:
        other_services.close()
    reasons = audit_reasons(services, "login")
    assert any("bloqueada tras 3 intentos" in reason for _, reason in reasons)
    assert reasons[-1] == ("denied", "cuenta bloqueada por intentos fallidos")

    time.sleep(LOCKOUT_SECONDS + 0.2)
    assert password_grant(client, username).status_code == 200


def test_a_successful_login_resets_the_failure_count(client, services):
    username = person(services)
    for _ in range(2):
        for _ in range(MAX_FAILURES - 1):
            assert password_grant(client, username, "equivocada").status_code == 400
        assert password_grant(client, username).status_code == 200


def test_unknown_users_and_bad_requests_are_clear_4xx(client):
    r = password_grant(client, "nadie.existe")
    assert r.status_code == 400 and r.json()["error_description"] == "Usuario o contraseña incorrectos"
    assert client.post("/auth/token", content=b"{no es json", headers={"Content-Type": "application/json"}).status_code == 400
    assert client.post("/auth/login", content=b"\xff\xfe", headers={"Content-Type": "multipart/form-data; boundary=x"}).status_code == 400


# --- TOTP second factor ---------------------------------------------------------------------------


def test_totp_required_wrong_right_and_not_reusable(client, services):
    username = person(services)
    secret = enroll_totp(services.engine, username)
    totp = pyotp.TOTP(secret)

    r = password_grant(client, username)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant" and "código de verificación" in r.json()["error_description"]
    code = totp.now()
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    r = password_grant(client, username, totp=wrong)
    assert r.status_code == 400 and "incorrecto" in r.json()["error_description"]
    # A right code with a wrong password is still a wrong password.
    assert password_grant(client, username, "equivocada", totp=code).json()["error_description"] == "Usuario o contraseña incorrectos"
    with services.engine.connect() as conn:
        assert conn.execute(sa.select(account.c.failed_logins).where(account.c.username == username)).scalar_one() == 2

    assert password_grant(client, username, totp=code).status_code == 200
    assert password_grant(client, username, totp=code).status_code == 400  # the same code again
    following = totp.at(time.time() + 30)
    r = client.post("/auth/login", json={"username": username, "password": PASSWORD, "totp": following})
    assert r.status_code == 200 and r.json()["refresh_token"]
    assert ("denied", "código de verificación (TOTP) inválido o ya usado") in audit_reasons(services, "login")


def test_wrong_totp_codes_lock_the_account(client, services):
    username = person(services)
    totp = pyotp.TOTP(enroll_totp(services.engine, username))
    for _ in range(MAX_FAILURES):
        password_grant(client, username, totp="000000" if totp.now() != "000000" else "111111")
    r = password_grant(client, username, totp=totp.now())
    assert r.status_code == 400 and "bloqueada" in r.json()["error_description"]


# --- external OpenID Connect provider -----------------------------------------------------------


def test_oidc_token_is_accepted_and_mapped(client, services, auth, idp):
    pid = a_patient(client, auth)
    team = {"resourceType": "CareTeam", "subject": {"reference": f"Patient/{pid}"}, "participant": [{"member": {"reference": "Practitioner/pr-ruiz"}}]}
    assert client.post("/fhir/CareTeam", json=team, headers=auth).status_code == 201  # the IdP's physician cares for them
    token = idp.token()
    r = client.get(f"/fhir/Patient/{pid}", headers=bearer(token))
    assert r.status_code == 200, r.text
    principal = services.tokens.verify(token)
    assert principal.subject == "6f1c2a5e-0d4b-4c1e-9a51-3b1f6f0e2d11" and principal.kind == "person"
    assert principal.role == "physician" and principal.organization == "DFSSA001234"
    assert principal.practitioner_ref == "Practitioner/pr-ruiz" and principal.scopes == ("user/*.cruds",)
    with services.engine.connect() as conn:
        actors = conn.execute(sa.select(audit_log.c.actor).where(audit_log.c.action == "read")).scalars().all()
    assert actors == ["6f1c2a5e-0d4b-4c1e-9a51-3b1f6f0e2d11"]

    es = idp.token(key=idp.ec, kid="ec-1", alg="ES256", realm_access={"roles": ["patient"]}, fhir_patient=pid, scope="openid patient/Patient.r")
    principal = services.tokens.verify(es)
    assert principal.role == "patient" and principal.patient_ref == f"Patient/{pid}" and principal.scopes == ("patient/Patient.r",)
    assert client.get(f"/fhir/Patient/{pid}", headers=bearer(es)).status_code == 200


def test_oidc_unknown_or_ambiguous_role_gets_no_access(client, services, auth, idp):
    pid = a_patient(client, auth)
    for roles in (["cirujano"], ["physician", "administrator"], []):
        token = idp.token(realm_access={"roles": roles})
        assert services.tokens.verify(token).role == ""
        assert client.get(f"/fhir/Patient/{pid}", headers=bearer(token)).status_code == 403


def test_oidc_attacks_are_refused(client, services, settings, auth, idp):
    pid = a_patient(client, auth)
    now = int(time.time())
    claims = _claims(idp.token())
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attacks = {
        # Algorithm confusion: the provider's public key (which anyone can fetch) as an HMAC secret.
        "HS256 with the public key": _hs256({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims, idp.public_pem()),
        "HS256 with our key": jwt.encode(claims, settings.secret_key.encode(), algorithm="HS256"),
        "alg none": f"{_b64(json.dumps({'alg': 'none', 'kid': 'rsa-1'}).encode())}.{_b64(json.dumps(claims).encode())}.",
        "unknown kid": idp.token(key=stranger, kid="otra-clave"),
        "known kid, other key": idp.token(key=stranger, kid="rsa-1"),
        "RSA key named as the EC key": idp.token(kid="ec-1"),
        "wrong audience": idp.token(aud="account"),
        "wrong issuer": idp.token(iss="https://otro.idp/realms/hospital"),
        "expired": idp.token(iat=now - 3600, exp=now - 120),
    }
    for name, token in attacks.items():
        r = client.get(f"/fhir/Patient/{pid}", headers=bearer(token))
        assert r.status_code == 401, (name, r.text)


def test_jwks_refetched_once_for_an_unknown_kid(idp, tmp_path):
    keys = JwksKeys(url=idp.url, min_refetch=0)
    before = idp.requests
    assert keys.key_for("rsa-1").algorithm_name == "RS256"
    assert keys.key_for("ec-1").algorithm_name == "ES256"
    assert idp.requests == before + 1  # cached
    rotated = ec.generate_private_key(ec.SECP256R1())
    idp.keys = [*idp.keys, _jwk(rotated.public_key(), "ec-2", "ES256")]
    try:
        assert keys.key_for("ec-2").algorithm_name == "ES256"
        assert idp.requests == before + 2
    finally:
        idp.keys = idp.keys[:2]
    # Unknown kids do not make every request a fetch.
    throttled = JwksKeys(url=idp.url)
    with pytest.raises(InvalidToken):
        throttled.key_for("nadie")
    with pytest.raises(InvalidToken):
        throttled.key_for("nadie-tampoco")
    assert throttled.fetches == 1
    # A local file works the same (offline deployments).
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": idp.keys}))
    assert JwksKeys(file=str(path)).key_for("rsa-1").algorithm_name == "RS256"
    with pytest.raises(ValueError):
        JwksKeys(url="http://idp.salud.example/certs")  # keys over plain http from afar


# --- SMART discovery ---------------------------------------------------------------------------------


def test_smart_configuration_is_open_and_complete(client):
    for path in ("/fhir/.well-known/smart-configuration", "/.well-known/smart-configuration"):
        r = client.get(path)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["issuer"] == "http://testserver"
        assert doc["token_endpoint"] == "http://testserver/auth/token"
        assert doc["revocation_endpoint"] == "http://testserver/auth/revoke"
        assert set(doc["grant_types_supported"]) == {"client_credentials", "password", "refresh_token"}
        assert {"client_secret_basic", "client_secret_post"} == set(doc["token_endpoint_auth_methods_supported"])
        assert {"permission-v2", "permission-v1", "client-confidential-symmetric"} <= set(doc["capabilities"])
        assert {"user/*.cruds", "patient/*.rs", "system/*.cruds"} <= set(doc["scopes_supported"])
        assert "code_challenge_methods_supported" not in doc and "authorization_endpoint" not in doc


def test_capability_statement_declares_smart_security(client):
    security = client.get("/fhir/metadata").json()["rest"][0]["security"]
    codes = {c["code"] for s in security["service"] for c in s["coding"]}
    assert "SMART-on-FHIR" in codes
    uris = next(e for e in security["extension"] if e["url"].endswith("/oauth-uris"))
    assert {e["url"]: e["valueUri"] for e in uris["extension"]} == {
        "token": "http://testserver/auth/token",
        "revoke": "http://testserver/auth/revoke",
    }


def test_ended_logins_are_deleted_at_the_next_login(client, services):
    username = person(services)
    old = password_grant(client, username).json()["refresh_token"]
    with services.engine.begin() as conn:
        conn.execute(refresh_token.update().values(family_expires=datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)))
    password_grant(client, username)
    with services.engine.connect() as conn:
        hashes = conn.execute(sa.select(refresh_token.c.token_hash).where(refresh_token.c.username == username)).scalars().all()
    assert len(hashes) == 1 and hashlib.sha256(old.encode()).hexdigest() not in hashes
