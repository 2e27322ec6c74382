"""Signed, short-lived bearer tokens (JWT, HS256) and their verification."""

from __future__ import annotations

import time
from collections import OrderedDict
from threading import Lock

import jwt

from expediente.security.principal import Principal

ISSUER = "expediente"


class InvalidToken(Exception):
    pass


class TokenService:
    def __init__(self, key: bytes, ttl_seconds: int, cache_size: int = 4096):
        self._key = key
        self.ttl = ttl_seconds
        # Verified tokens, so the hot path does not re-verify a signature on every request.
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = Lock()

    def issue(self, principal: Principal) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": principal.subject,
            "iat": now,
            "exp": now + self.ttl,
            "kind": principal.kind,
            "role": principal.role,
            "org": principal.organization,
            "prac": principal.practitioner_ref,
            "pat": principal.patient_ref,
        }
        return jwt.encode({k: v for k, v in claims.items() if v is not None}, self._key, algorithm="HS256")

    def verify(self, token: str) -> Principal:
        now = time.time()
        with self._lock:
            hit = self._cache.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        try:
            claims = jwt.decode(token, self._key, algorithms=["HS256"], issuer=ISSUER, options={"require": ["exp", "sub"]})
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        principal = Principal(
            subject=claims["sub"],
            kind=claims.get("kind", "person"),
            role=claims.get("role", ""),
            organization=claims.get("org"),
            practitioner_ref=claims.get("prac"),
            patient_ref=claims.get("pat"),
        )
        with self._lock:
            self._cache[token] = (principal, float(claims["exp"]))
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return principal
