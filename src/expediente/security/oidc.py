"""Access tokens of an external OpenID Connect provider (Keycloak, an institution's directory),
trusted through the provider's published keys (JWKS) and mapped to a Principal.

Only asymmetric signatures are accepted (RS256, ES256), with a key the provider published for
that algorithm: a token for this issuer signed with HS256 (for instance with the public key as
the HMAC secret) or unsigned is refused whatever its header says.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from threading import Lock
from urllib.parse import urlsplit

import jwt

from expediente.security.principal import ROLES, Principal
from expediente.security.smart import role_scopes, within
from expediente.security.scopes import parse_scope
from expediente.security.tokens import InvalidToken, decode_claims

ALGORITHMS = frozenset({"RS256", "ES256"})
REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "exp"]
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_MAX_JWKS_BYTES = 1 << 20


class JwksKeys:
    """The provider's signing keys by kid, fetched on first use, kept for ``max_age`` seconds,
    and fetched again (at most once per ``min_refetch`` seconds) when a token names a kid not
    seen yet: that is how a provider's key rotation reaches us."""

    def __init__(self, url: str = "", file: str = "", max_age: float = 3600.0, min_refetch: float = 30.0):
        if not url and not file:
            raise ValueError("Con oidc_issuer se requiere oidc_jwks_url u oidc_jwks_file")
        if url:
            parts = urlsplit(url)
            if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOOPBACK):
                raise ValueError("oidc_jwks_url debe usar https (http solo en la interfaz local)")
        self._url, self._file = url, file
        self._max_age, self._min_refetch = max_age, min_refetch
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched = float("-inf")
        self._lock = Lock()
        self.fetches = 0

    def _load(self) -> dict:
        if self._file:
            return json.loads(Path(self._file).read_text())
        with urllib.request.urlopen(self._url, timeout=5) as response:  # noqa: S310 - scheme checked above
            body = response.read(_MAX_JWKS_BYTES + 1)
        if len(body) > _MAX_JWKS_BYTES:
            raise ValueError("JWKS demasiado grande")
        return json.loads(body)

    def _refresh(self) -> None:
        self._fetched = time.monotonic()
        self.fetches += 1
        try:
            document = self._load()
            keys: dict[str | None, jwt.PyJWK] = {}
            for jwk in document.get("keys", []):
                if jwk.get("use", "sig") != "sig":
                    continue
                try:
                    key = jwt.PyJWK.from_dict(jwk)
                except jwt.PyJWTError:
                    continue  # a key type or curve we do not use
                if key.algorithm_name in ALGORITHMS:
                    keys[jwk.get("kid")] = key
        except (OSError, ValueError, AttributeError) as exc:
            raise InvalidToken(f"no se pudieron obtener las claves del proveedor: {exc}") from None
        self._keys = keys

    def key_for(self, kid: str | None) -> jwt.PyJWK:
        with self._lock:
            now = time.monotonic()
            if now - self._fetched > self._max_age or (kid not in self._keys and now - self._fetched > self._min_refetch):
                self._refresh()
            keys = self._keys
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        key = keys.get(kid) if kid is not None else None
        if key is None:
            raise InvalidToken("clave de firma desconocida")
        return key


def claim(claims: dict, path: str):
    """The value at a dotted path (``realm_access.roles``), or None."""
    value = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _reference(value, res_type: str) -> str | None:
    """``Type/id`` from ``Type/id`` or a bare id; None for anything else."""
    if not isinstance(value, str):
        return None
    ident = value.split("/", 1)[1] if value.startswith(res_type + "/") else value
    return f"{res_type}/{ident}" if _FHIR_ID.match(ident) else None


def _single_string(value) -> str | None:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value[:64] if isinstance(value, str) and value else None


class OidcVerifier:
    def __init__(
        self,
        issuer: str,
        audience: str,
        keys: JwksKeys,
        *,
        subject_claim: str = "sub",
        role_claim: str = "realm_access.roles",
        role_prefix: str = "",
        organization_claim: str = "clues",
        practitioner_claim: str = "fhir_practitioner",
        patient_claim: str = "fhir_patient",
    ):
        self.issuer = issuer
        self.audience = audience
        self.keys = keys
        self._subject_claim = subject_claim
        self._role_claim = role_claim
        self._role_prefix = role_prefix
        self._organization_claim = organization_claim
        self._practitioner_claim = practitioner_claim
        self._patient_claim = patient_claim

    @classmethod
    def from_settings(cls, settings, default_audience: str) -> OidcVerifier:
        return cls(
            settings.oidc_issuer,
            settings.oidc_audience or default_audience,
            JwksKeys(settings.oidc_jwks_url, settings.oidc_jwks_file),
            subject_claim=settings.oidc_subject_claim,
            role_claim=settings.oidc_role_claim,
            role_prefix=settings.oidc_role_prefix,
            organization_claim=settings.oidc_organization_claim,
            practitioner_claim=settings.oidc_practitioner_claim,
            patient_claim=settings.oidc_patient_claim,
        )

    def verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("token mal formado") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise InvalidToken(f"algoritmo no admitido para este emisor: {algorithm}")
        key = self.keys.key_for(header.get("kid"))
        if key.algorithm_name != algorithm:
            raise InvalidToken("el algoritmo no corresponde a la clave")
        claims = decode_claims(token, key.key, [algorithm], issuer=self.issuer, audience=self.audience, required=REQUIRED_CLAIMS)
        return self.principal(claims), float(claims["exp"])

    def principal(self, claims: dict) -> Principal:
        subject = claim(claims, self._subject_claim)
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("el token no identifica al usuario")
        role = self._role(claim(claims, self._role_claim))
        return Principal(
            subject=subject[:128],
            kind="system" if role == "system" else "person",
            role=role,
            organization=_single_string(claim(claims, self._organization_claim)),
            practitioner_ref=_reference(claim(claims, self._practitioner_claim), "Practitioner"),
            patient_ref=_reference(claim(claims, self._patient_claim), "Patient"),
            scopes=self._scopes(role, claims.get("scope")),
        )

    def _role(self, value) -> str:
        """Our role when the provider names exactly one; "" (no access) when none or several."""
        values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        prefix = self._role_prefix
        ours = {v[len(prefix) :] for v in values if isinstance(v, str) and v.startswith(prefix)} & ROLES
        return next(iter(ours)) if len(ours) == 1 else ""

    @staticmethod
    def _scopes(role: str, scope) -> tuple[str, ...]:
        """The role's scopes, narrowed to the SMART resource scopes the token names, if any."""
        allowed = role_scopes(role)
        named = [s for s in scope.split() if "?" not in s and parse_scope(s)] if isinstance(scope, str) else []
        if not named:
            return allowed
        return tuple(s for s in named if within((s,), allowed))
