"""OAuth2 endpoints: token (client credentials for systems, password login and refresh for
people), revocation (RFC 7009) and SMART on FHIR discovery. Every grant and every refusal is
audited before it is answered."""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import replace
from datetime import UTC, datetime

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from expediente.security import refresh
from expediente.security.accounts import LoginOutcome, LoginPolicy, active_principal, login as check_login
from expediente.security.audit import AuditEntry, AuditUnavailable
from expediente.security.principal import Principal
from expediente.security.smart import ScopeError, grant_scopes, smart_configuration, within

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_LOGIN_REFUSALS = {
    LoginOutcome.BAD_CREDENTIALS: ("credenciales inválidas", "Usuario o contraseña incorrectos"),
    LoginOutcome.LOCKED: (
        "cuenta bloqueada por intentos fallidos",
        "Cuenta bloqueada temporalmente por intentos fallidos; intente de nuevo más tarde",
    ),
    LoginOutcome.TOTP_REQUIRED: (
        "falta el código de verificación (TOTP)",
        "Se requiere el código de verificación de su aplicación de autenticación (parámetro totp)",
    ),
    LoginOutcome.TOTP_INVALID: ("código de verificación (TOTP) inválido o ya usado", "Código de verificación incorrecto o ya usado"),
}
_REFRESH_REFUSALS = {
    refresh.RefreshOutcome.UNKNOWN: "token de renovación desconocido",
    refresh.RefreshOutcome.EXPIRED: "token de renovación vencido",
    refresh.RefreshOutcome.REVOKED: "token de renovación revocado",
    refresh.RefreshOutcome.REPLAYED: "reutilización de un token de renovación ya usado: sesión revocada",
}


def _oauth_error(status: int, error: str, description: str, headers: dict | None = None) -> Response:
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="expediente"'
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers={**_NO_STORE, **headers})


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        user, _, secret = base64.b64decode(header[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, secret


async def _parameters(request: Request) -> dict[str, str]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if ctype == "application/json":
        try:
            data = orjson.loads(raw or b"{}")
        except orjson.JSONDecodeError:
            return {}
        return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}
    try:
        form = await request.form()
    except Exception:  # noqa: BLE001 - a malformed body is a request without parameters
        return {}
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def _audit(request: Request, actor: str, role: str | None, action: str, allowed: bool, reason: str) -> bool:
    """Record one authentication event; False when the trail cannot store it (refuse then)."""
    entry = AuditEntry(
        actor=actor[:128] or "desconocido",
        role=role,
        action=action,
        res_type=None,
        res_id=None,
        patient_key=None,
        outcome="allowed" if allowed else "denied",
        reason=reason[:255],
        source=request.client.host if request.client else None,
    )
    try:
        await run_in_threadpool(request.app.state.services.audit.record, entry)
    except AuditUnavailable:
        return False
    return True


def _unrecorded() -> Response:
    return _oauth_error(503, "temporarily_unavailable", "No se pudo registrar el acceso en la bitácora")


async def token(request: Request) -> Response:
    """POST /auth/token (RFC 6749): client_credentials, password or refresh_token."""
    data = await _parameters(request)
    grant = data.get("grant_type", "")
    if grant == "client_credentials":
        creds = _basic_credentials(request) or (data.get("client_id", ""), data.get("client_secret", ""))
        return await _login(request, creds, "system", data)
    if grant == "password":
        return await _login(request, (data.get("username", ""), data.get("password", "")), "person", data)
    if grant == "refresh_token":
        return await _refresh(request, data)
    return _oauth_error(400, "unsupported_grant_type", "grant_type debe ser client_credentials, password o refresh_token")


async def login(request: Request) -> Response:
    """POST /auth/login with {"username", "password", "totp"?, "scope"?}: a person's login,
    same answer as the password grant."""
    data = await _parameters(request)
    return await _login(request, (data.get("username", ""), data.get("password", "")), "person", data)


async def _login(request: Request, creds: tuple[str, str], kind: str, data: dict[str, str]) -> Response:
    services = request.app.state.services
    settings = services.settings
    username, secret = creds[0][:128], creds[1][:1024]
    if not username or not secret:
        return _oauth_error(400, "invalid_request", "Faltan las credenciales")
    policy = LoginPolicy(settings.login_max_failures, settings.login_lockout_seconds)
    result = await run_in_threadpool(check_login, services.engine, username, secret, kind=kind, totp_code=data.get("totp"), policy=policy)
    principal = result.principal
    if principal is None:
        reason, description = _LOGIN_REFUSALS[result.outcome]
        if result.just_locked:
            reason += f"; cuenta bloqueada tras {settings.login_max_failures} intentos fallidos"
        if not await _audit(request, username, None, "login", False, reason):
            return _unrecorded()
        headers = None
        if result.outcome is LoginOutcome.LOCKED and result.locked_until is not None:
            wait = (result.locked_until - datetime.now(UTC).replace(tzinfo=None)).total_seconds()
            headers = {"Retry-After": str(max(1, math.ceil(wait)))}
        if kind == "system":
            return _oauth_error(401, "invalid_client", "Cliente o secreto incorrectos")
        return _oauth_error(400, "invalid_grant", description, headers)
    try:
        scopes = grant_scopes(data.get("scope"), principal.scopes or ())
    except ScopeError as exc:
        if not await _audit(request, username, principal.role, "login", False, f"scope no permitido: {exc}"):
            return _unrecorded()
        return _oauth_error(400, "invalid_scope", str(exc))
    principal = replace(principal, scopes=scopes)
    if not await _audit(request, username, principal.role, "login", True, "credenciales válidas"):
        return _unrecorded()
    refresh_token = None
    if kind == "person":
        policy = refresh.RefreshPolicy(settings.refresh_idle_seconds, settings.refresh_max_seconds)
        refresh_token = await run_in_threadpool(refresh.start_family, services.engine, username, " ".join(scopes), policy)
    return _token_response(services.tokens, principal, refresh_token)


async def _refresh(request: Request, data: dict[str, str]) -> Response:
    services = request.app.state.services
    settings = services.settings
    presented = data.get("refresh_token", "")
    if not presented or len(presented) > 256:
        return _oauth_error(400, "invalid_request", "Falta el parámetro refresh_token")
    policy = refresh.RefreshPolicy(settings.refresh_idle_seconds, settings.refresh_max_seconds)
    requested = data.get("scope")
    if requested:
        # Narrowing is checked before the token is spent, so a bad request does not end the login.
        family_scope = await run_in_threadpool(refresh.scope_of, services.engine, presented)
        if family_scope is not None:
            try:
                grant_scopes(requested, tuple(family_scope.split()))
            except ScopeError as exc:
                return _oauth_error(400, "invalid_scope", str(exc))
    result = await run_in_threadpool(refresh.rotate, services.engine, presented, policy)
    if result.outcome is not refresh.RefreshOutcome.ROTATED:
        if not await _audit(request, result.username or "", None, "refresh", False, _REFRESH_REFUSALS[result.outcome]):
            return _unrecorded()
        return _oauth_error(400, "invalid_grant", "El token de renovación no es válido; inicie sesión de nuevo")
    principal = await run_in_threadpool(active_principal, services.engine, result.username)
    family_scopes = tuple((result.scope or "").split())
    if principal is None or not within(family_scopes, principal.scopes or ()):
        await run_in_threadpool(refresh.revoke_family, services.engine, result.family)
        reason = "cuenta inactiva o bloqueada" if principal is None else "los permisos del rol cambiaron desde el inicio de sesión"
        if not await _audit(request, result.username or "", principal.role if principal else None, "refresh", False, reason):
            return _unrecorded()
        return _oauth_error(400, "invalid_grant", "La sesión ya no es válida; inicie sesión de nuevo")
    principal = replace(principal, scopes=grant_scopes(requested, family_scopes) if requested else family_scopes)
    if not await _audit(request, principal.subject, principal.role, "refresh", True, "token de renovación válido"):
        return _unrecorded()
    return _token_response(services.tokens, principal, result.token)


def _token_response(tokens, principal: Principal, refresh_token: str | None) -> Response:
    body = {
        "access_token": tokens.issue(principal),
        "token_type": "Bearer",
        "expires_in": tokens.ttl,
        "scope": " ".join(principal.scopes or ()),
        "role": principal.role,
    }
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    return JSONResponse(body, headers=_NO_STORE)


async def revoke(request: Request) -> Response:
    """POST /auth/revoke (RFC 7009): ends the login a refresh token belongs to. Holding the
    token is the proof; an unknown token is answered 200 too, so the endpoint tells nothing."""
    services = request.app.state.services
    data = await _parameters(request)
    presented = data.get("token", "")
    if not presented:
        return _oauth_error(400, "invalid_request", "Falta el parámetro token")
    if data.get("token_type_hint") == "access_token" or presented.count(".") == 2:
        return _oauth_error(
            400, "unsupported_token_type", "Los tokens de acceso no se revocan (son de corta duración); revoque el token de renovación"
        )
    username = await run_in_threadpool(refresh.revoke, services.engine, presented[:256])
    if username is not None and not await _audit(request, username, None, "revoke", True, "sesión revocada a petición del cliente"):
        return _unrecorded()
    return Response(status_code=200, headers=_NO_STORE)


async def smart_discovery(request: Request) -> Response:
    """GET /.well-known/smart-configuration (SMART App Launch 2.x), open to everyone."""
    return JSONResponse(smart_configuration(request.app.state.settings), headers={"Cache-Control": "public, max-age=3600"})


routes = [
    Route("/auth/token", token, methods=["POST"]),
    Route("/auth/login", login, methods=["POST"]),
    Route("/auth/revoke", revoke, methods=["POST"]),
    Route("/.well-known/smart-configuration", smart_discovery, methods=["GET"]),
    Route("/fhir/.well-known/smart-configuration", smart_discovery, methods=["GET"]),
]
