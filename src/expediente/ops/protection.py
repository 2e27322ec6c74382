"""Pure ASGI middleware that protects every response: security headers, CORS, rate limits.

Order in the stack (outermost first, see app.create_app): Observe, SecurityHeaders, Cors,
BodyLimit, AddressRateLimit, Authenticate, PrincipalRateLimit. SecurityHeaders is outside
everything that answers early (413, 401, 429, CORS preflight) so those answers carry the
headers too; Cors is outside Authenticate so a browser's preflight is answered without a
token; PrincipalRateLimit is inside Authenticate because it keys on the principal that
Authenticate puts on the scope.

Rate limits are per worker process: N workers admit up to N times the configured rates.
"""

from __future__ import annotations

import math
import time

import orjson
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from expediente.config import Settings
from expediente.fhir.errors import Issue, operation_outcome
from expediente.ops.middleware import send_outcome

# API responses are JSON for programs: nothing may be framed, sniffed, scripted or embedded.
_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
)
_HSTS = (b"strict-transport-security", b"max-age=31536000")


def uses_https(settings: Settings) -> bool:
    return settings.tls_enabled or settings.public_base.startswith("https://")


class SecurityHeaders:
    """Adds the security headers to every HTTP response (those a handler set are kept)."""

    def __init__(self, app, hsts: bool):
        self.app = app
        self.headers = _ALWAYS + ((_HSTS,) if hsts else ())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in self.headers if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


CORS_METHODS = ("GET", "POST", "PUT", "DELETE")
CORS_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "Prefer",
    "If-Match",
    "If-None-Exist",
    "If-None-Match",
    "Expediente-Break-Glass",
)
CORS_EXPOSED_HEADERS = ("ETag", "Location", "Last-Modified", "Content-Location")


def cors_origins(settings: Settings) -> list[str]:
    return [o.strip().rstrip("/") for o in settings.cors_origins.split(",") if o.strip()]


class Cors(CORSMiddleware):
    """Starlette's CORS handling, with refused preflights explained in Spanish as FHIR outcomes.

    Bearer tokens travel in a header, not cookies, so credentials mode is off."""

    def __init__(self, app, origins: list[str]):
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            allow_credentials=False,
            max_age=600,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        body = orjson.dumps(
            operation_outcome([Issue("Solicitud de origen cruzado no permitida (origen, método o encabezados no autorizados)", "forbidden")])
        )
        return Response(body, status_code=403, media_type="application/fhir+json; charset=utf-8", headers={"vary": "Origin"})


class TokenBuckets:
    """One token bucket per client key: `rate` tokens a second, at most `burst` saved up.

    A check is a dict lookup and a few float operations (about a microsecond). Buckets live in
    this process only; idle ones are dropped when the table grows past `max_clients`."""

    def __init__(self, rate: float, burst: int, max_clients: int = 100_000):
        if rate <= 0 or burst < 1:
            raise ValueError("los límites de tasa deben ser positivos (tasa > 0, ráfaga >= 1)")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: dict[object, list[float]] = {}

    def take(self, client, now: float | None = None) -> float:
        """Spend one token; 0.0 if allowed, else the seconds until one will be available."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._forget_idle(now)
            self._buckets[client] = [self.burst - 1.0, now]
            return 0.0
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        # A bucket that has refilled completely holds no information: drop those first.
        full = self.burst / self.rate
        idle = [k for k, (_, last) in self._buckets.items() if now - last >= full]
        for key in idle:
            del self._buckets[key]
        if len(self._buckets) >= self.max_clients:
            self._buckets.clear()  # memory stays bounded even under a flood of distinct clients


class RateLimits:
    """The buckets per kind of client, built from the settings."""

    def __init__(self, settings: Settings):
        self.system = TokenBuckets(settings.rate_system_per_s, settings.rate_system_burst)
        self.person = TokenBuckets(settings.rate_person_per_s, settings.rate_person_burst)
        self.address = TokenBuckets(settings.rate_address_per_s, settings.rate_address_burst)
        self.auth = TokenBuckets(settings.rate_auth_per_min / 60, settings.rate_auth_burst)

    def check_address(self, path: str, address: str | None) -> float:
        """For a request without a principal: 0.0 if it may proceed, else seconds to wait."""
        return (self.auth if path.startswith("/auth") else self.address).take(address)

    def check_principal(self, principal) -> float:
        buckets = self.system if principal.kind == "system" else self.person
        return buckets.take(principal.subject)


async def _refuse(send, wait: float) -> None:
    seconds = max(1, math.ceil(wait))
    await send_outcome(
        send,
        429,
        f"Demasiadas solicitudes; espere {seconds} s antes de intentar de nuevo",
        "throttled",
        [(b"retry-after", str(seconds).encode())],
    )


def _address(scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


_CHECKED = "rate_checked"  # scope state flag: this request was already charged to its address


class AddressRateLimit:
    """Outside Authenticate: requests that carry no credentials, and every /auth request, are
    charged to the client address (/auth with a stricter bucket, to slow password guessing),
    so even the 401s of anonymous callers are limited."""

    def __init__(self, app, limits: RateLimits):
        self.app = app
        self.limits = limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path.startswith("/auth") or not any(name == b"authorization" for name, _ in scope["headers"]):
            wait = self.limits.check_address(path, _address(scope))
            if wait:
                return await _refuse(send, wait)
            scope.setdefault("state", {})[_CHECKED] = True
        return await self.app(scope, receive, send)


class PrincipalRateLimit:
    """Inside Authenticate: an authenticated request is charged to its principal (systems and
    people have their own limits); one with credentials but no principal (an open path) to
    its address. A token that fails verification is a 401 before this point: it costs an
    HMAC check, no more than a 429 would, and cannot be guessed."""

    def __init__(self, app, limits: RateLimits):
        self.app = app
        self.limits = limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.get("state") or {}
        principal = state.get("principal")
        if principal is not None:
            wait = self.limits.check_principal(principal)
        elif not state.get(_CHECKED):
            wait = self.limits.check_address(scope["path"], _address(scope))
        else:
            wait = 0.0
        if wait:
            return await _refuse(send, wait)
        return await self.app(scope, receive, send)
