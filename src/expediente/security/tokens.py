"""Bearer tokens: the short-lived access tokens this server signs (JWT, HS256), and the
verification of every bearer token, ours or an external OpenID Connect provider's.

Verification never trusts the token's header: our tokens are checked with HS256 and our key
only, the provider's with its published asymmetric keys only (see ``oidc.py``), chosen by the
issuer, so a token cannot pick its own algorithm or key.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from threading import Lock
from typing import TYPE_CHECKING

import jwt

from expediente.security.principal import Principal

if TYPE_CHECKING:
    from expediente.config import Settings
    from expediente.security.oidc import OidcVerifier

OWN_ALGORITHMS = ["HS256"]
REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "exp", "scope"]
LEEWAY_SECONDS = 30  # clock differences between the server processes' hosts


def decode_claims(token: str, key, algorithms: list[str], *, issuer: str, audience: str, required: list[str]) -> dict:
    """The claims of a token signed with ``key`` by one of ``algorithms`` for this issuer and
    audience, every ``required`` claim present; InvalidToken otherwise."""
    try:
        return jwt.decode(
            token,
            key,
            algorithms=algorithms,
            issuer=issuer,
            audience=audience,
            leeway=LEEWAY_SECONDS,
            options={"require": required},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None


class InvalidToken(Exception):
    pass


class TokenService:
    def __init__(
        self,
        key: bytes,
        ttl_seconds: int,
        *,
        issuer: str,
        audience: str,
        external: OidcVerifier | None = None,
        cache_size: int = 4096,
    ):
        self._key = key
        self.ttl = ttl_seconds
        self.issuer = issuer
        self.audience = audience
        self._external = external  # the configured OpenID Connect provider, if any
        # Verified tokens, so the hot path does not re-verify a signature on every request.
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenService:
        from expediente.security.oidc import OidcVerifier

        audience = settings.public_base + "/fhir"
        external = OidcVerifier.from_settings(settings, default_audience=audience) if settings.oidc_issuer else None
        return cls(settings.signing_key(), settings.token_ttl_seconds, issuer=settings.public_base, audience=audience, external=external)

    def issue(self, principal: Principal) -> str:
        if principal.scopes is None:
            raise ValueError("an issued token must name its scopes")
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": principal.subject,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl,
            "jti": secrets.token_urlsafe(16),
            "scope": " ".join(principal.scopes),
            "kind": principal.kind,
            "role": principal.role,
            "org": principal.organization,
            "prac": principal.practitioner_ref,
            "pat": principal.patient_ref,
        }
        return jwt.encode({k: v for k, v in claims.items() if v is not None}, self._key, algorithm="HS256")

    def cached(self, token: str) -> Principal | None:
        """The principal of a token already verified and not yet expired, else None."""
        with self._lock:
            hit = self._cache.get(token)
        if hit is not None and hit[1] > time.time():
            return hit[0]
        return None

    def verify(self, token: str) -> Principal:
        """The principal a valid token stands for; raises InvalidToken otherwise. May fetch the
        provider's keys (blocking): call it off the event loop unless ``cached`` answered."""
        principal = self.cached(token)
        if principal is not None:
            return principal
        issuer = _unverified_issuer(token)
        if issuer == self.issuer:
            principal, expires = self._verify_own(token)
        elif self._external is not None and issuer == self._external.issuer:
            principal, expires = self._external.verify(token)
        else:
            raise InvalidToken("emisor desconocido")
        with self._lock:
            self._cache[token] = (principal, expires)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return principal

    def _verify_own(self, token: str) -> tuple[Principal, float]:
        claims = decode_claims(token, self._key, OWN_ALGORITHMS, issuer=self.issuer, audience=self.audience, required=REQUIRED_CLAIMS)
        scope = claims["scope"]
        if not isinstance(scope, str) or not isinstance(claims["sub"], str):
            raise InvalidToken("claims mal formados")
        principal = Principal(
            subject=claims["sub"],
            kind=claims.get("kind", "person"),
            role=claims.get("role", ""),
            organization=claims.get("org"),
            practitioner_ref=claims.get("prac"),
            patient_ref=claims.get("pat"),
            scopes=tuple(scope.split()),
        )
        return principal, float(claims["exp"])


def _unverified_issuer(token: str) -> str | None:
    """The `iss` a token claims, read only to choose how to verify it."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise InvalidToken("token mal formado") from None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer if isinstance(issuer, str) else None
