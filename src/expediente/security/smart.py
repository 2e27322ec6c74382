"""SMART on FHIR: the scopes a token may be granted, and the discovery document.

A token's scopes only ever narrow its role: a request names a subset of the role's default
scopes (``ROLE_DEFAULT_SCOPES``) or gets them all. Anything broader is ``invalid_scope``.
"""

from __future__ import annotations

from expediente.config import Settings
from expediente.security.scopes import ROLE_DEFAULT_SCOPES, Scope, parse_scope

# Scopes a SMART client may ask for that carry no resource permission here; accepted and not
# put in the token (refresh tokens are issued to every person login anyway).
IGNORED_SCOPES = frozenset({"openid", "fhirUser", "profile", "offline_access", "online_access"})


class ScopeError(ValueError):
    """A requested scope the caller cannot have (message in Spanish)."""


def _covers(allowed: Scope, wanted: Scope) -> bool:
    return (
        allowed.context == wanted.context
        and allowed.res_type in ("*", wanted.res_type)
        and set(wanted.letters) <= set(allowed.letters)
    )


def within(scopes: tuple[str, ...], allowed: tuple[str, ...]) -> bool:
    """True when every resource scope in ``scopes`` is covered by one of ``allowed``."""
    granted = [s for s in (parse_scope(a) for a in allowed) if s is not None]
    for text in scopes:
        wanted = parse_scope(text)
        if wanted is None or not any(_covers(a, wanted) for a in granted):
            return False
    return True


def grant_scopes(requested: str | None, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """The scopes to put in a token: the requested resource scopes if ``allowed`` covers them all,
    ``allowed`` itself when the request names none. Raises ScopeError otherwise."""
    wanted: list[str] = []
    for text in (requested or "").split():
        if text in IGNORED_SCOPES or text.startswith("launch"):
            continue
        if "?" in text:
            # The policy does not evaluate query restrictions; granting the bare scope would widen it.
            raise ScopeError(f"No se admiten scopes con parámetros de búsqueda: '{text[:100]}'")
        if parse_scope(text) is None:
            raise ScopeError(f"Scope desconocido o mal formado: '{text[:100]}'")
        if not within((text,), allowed):
            raise ScopeError(f"El scope '{text[:100]}' excede lo que permite su rol")
        if text not in wanted:
            wanted.append(text)
    return tuple(wanted) if wanted else allowed


def role_scopes(role: str) -> tuple[str, ...]:
    return ROLE_DEFAULT_SCOPES.get(role, ())


def _scopes_supported() -> list[str]:
    seen: dict[str, None] = {}
    for scopes in ROLE_DEFAULT_SCOPES.values():
        seen.update(dict.fromkeys(scopes))
    return [*seen, "patient/*.read", "user/*.read", "system/*.read", "offline_access"]


def smart_configuration(settings: Settings) -> dict:
    """/.well-known/smart-configuration (SMART App Launch 2.x). No authorization-code flow, so
    no authorization endpoint and no PKCE methods."""
    base = settings.public_base
    return {
        "issuer": base,
        "token_endpoint": f"{base}/auth/token",
        "revocation_endpoint": f"{base}/auth/revoke",
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "grant_types_supported": ["client_credentials", "password", "refresh_token"],
        "scopes_supported": _scopes_supported(),
        "capabilities": [
            "permission-v2",
            "permission-v1",
            "permission-patient",
            "permission-user",
            "permission-offline",
            "client-confidential-symmetric",
        ],
    }
