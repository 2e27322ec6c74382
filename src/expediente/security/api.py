"""OAuth2 token endpoint (client credentials for systems, password login for people)."""

from __future__ import annotations

import base64
import binascii

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from expediente.security.accounts import authenticate
from expediente.security.audit import AuditEntry, AuditUnavailable


def _oauth_error(status: int, error: str, description: str) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="expediente"'} if status == 401 else None
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        user, _, secret = base64.b64decode(header[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, secret


async def _credentials(request: Request) -> dict[str, str]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if ctype == "application/json":
        try:
            data = orjson.loads(raw or b"{}")
        except orjson.JSONDecodeError:
            return {}
        return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def token(request: Request) -> Response:
    """POST /auth/token (RFC 6749): grant_type=client_credentials or grant_type=password."""
    data = await _credentials(request)
    grant = data.get("grant_type", "")
    if grant == "client_credentials":
        creds = _basic_credentials(request) or (data.get("client_id", ""), data.get("client_secret", ""))
        kind = "system"
    elif grant == "password":
        creds = (data.get("username", ""), data.get("password", ""))
        kind = "person"
    else:
        return _oauth_error(400, "unsupported_grant_type", "grant_type debe ser client_credentials o password")
    return await _issue(request, creds, kind)


async def login(request: Request) -> Response:
    """POST /auth/login with {"username", "password"}: a person's login, same answer as /auth/token."""
    data = await _credentials(request)
    return await _issue(request, (data.get("username", ""), data.get("password", "")), "person")


async def _issue(request: Request, creds: tuple[str, str], kind: str) -> Response:
    services = request.app.state.services
    username, secret = creds
    if not username or not secret:
        return _oauth_error(400, "invalid_request", "Faltan las credenciales")
    principal = await run_in_threadpool(authenticate, services.engine, username[:128], secret[:1024], kind=kind)
    entry = AuditEntry(
        actor=username[:128],
        role=principal.role if principal else None,
        action="login",
        res_type=None,
        res_id=None,
        patient_key=None,
        outcome="allowed" if principal else "denied",
        reason="credenciales válidas" if principal else "credenciales inválidas",
        source=request.client.host if request.client else None,
    )
    try:
        await run_in_threadpool(services.audit.record, entry)
    except AuditUnavailable:
        return _oauth_error(503, "temporarily_unavailable", "No se pudo registrar el acceso en la bitácora")
    if principal is None:
        status, error = (401, "invalid_client") if kind == "system" else (400, "invalid_grant")
        return _oauth_error(status, error, "Usuario o contraseña incorrectos")
    tokens = services.tokens
    return JSONResponse(
        {"access_token": tokens.issue(principal), "token_type": "Bearer", "expires_in": tokens.ttl, "role": principal.role},
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


routes = [
    Route("/auth/token", token, methods=["POST"]),
    Route("/auth/login", login, methods=["POST"]),
]
