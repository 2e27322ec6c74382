"""Pure ASGI middleware: request observation (logs, metrics), body-size limit, authentication.

Authentication is a middleware, not a per-handler call, so no /fhir route can forget it.
"""

from __future__ import annotations

import logging
import time

import orjson
from starlette.concurrency import run_in_threadpool

from expediente.fhir.errors import Issue, operation_outcome
from expediente.ops.metrics import LATENCY, REQUESTS
from expediente.security.tokens import InvalidToken, TokenService

log = logging.getLogger("expediente.http")

OPEN_PATHS = frozenset({"/fhir/metadata", "/fhir/.well-known/smart-configuration"})
_NO_STORE = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]


async def send_outcome(send, status: int, diagnostics: str, code: str, headers: list | None = None) -> None:
    body = orjson.dumps(operation_outcome([Issue(diagnostics, code)]))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/fhir+json; charset=utf-8"), (b"content-length", str(len(body)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})


def _route_template(path: str) -> str:
    """The path with resource ids and versions replaced, so logs and metric labels carry no ids."""
    parts = path.split("/")
    if len(parts) > 3 and parts[1] == "fhir" and not parts[3].startswith("_"):
        parts[3] = "{id}"
        if len(parts) > 5 and parts[4] == "_history":
            parts[5] = "{vid}"
    template = "/".join(parts)
    return template if len(template) <= 80 else template[:80]


class Observe:
    """Logs one JSON line and records metrics per request; adds headers that keep records out of caches."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500
        private = scope["path"].startswith(("/fhir", "/auth", "/dicomweb", "/wado", "/imaging"))  # patient data: never cached

        async def send_wrapper(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if private:
                    headers = list(message.get("headers", []))
                    present = {name.lower() for name, _ in headers}
                    message["headers"] = headers + [h for h in _NO_STORE if h[0] not in present]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = _route_template(scope["path"])
            method = scope["method"]
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(elapsed)
            state = scope.get("state") or {}
            principal = state.get("principal")
            log.info(
                "request",
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                    "actor": principal.subject if principal else None,
                },
            )


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuses bodies over the configured size with 413, whether announced or streamed."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    return await self._refuse(send)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send):
        await send_outcome(send, 413, f"El cuerpo de la petición excede el máximo permitido ({self.max_bytes} bytes)", "too-long")


PROTECTED_PREFIXES = ("/fhir", "/dicomweb", "/wado", "/imaging")


def _protected(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PROTECTED_PREFIXES) and path not in OPEN_PATHS


class Authenticate:
    """Requires a valid bearer token (ours or the configured OpenID Connect provider's) on every
    /fhir, /dicomweb, /wado and /imaging route but the CapabilityStatement and the SMART discovery document."""

    def __init__(self, app, tokens: TokenService):
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or not _protected(path):
            return await self.app(scope, receive, send)
        token = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and credentials.strip():
                    token = credentials.strip()
        challenge = [(b"www-authenticate", b'Bearer realm="expediente"')]
        if token is None:
            return await send_outcome(send, 401, "Se requiere autenticación: envíe un token Bearer (obténgalo en /auth/token)", "login", challenge)
        try:
            # Verifying a token not seen before may fetch an identity provider's keys: off the loop.
            principal = self.tokens.cached(token) or await run_in_threadpool(self.tokens.verify, token)
        except InvalidToken:
            return await send_outcome(
                send, 401, "Token inválido o vencido; inicie sesión de nuevo", "login", [(b"www-authenticate", b'Bearer error="invalid_token"')]
            )
        scope.setdefault("state", {})["principal"] = principal
        return await self.app(scope, receive, send)
