"""Password and client-secret hashing with argon2id (never stored in clear)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Verified against when the account does not exist, so timing does not reveal which usernames exist.
_DUMMY = _hasher.hash("expediente-no-such-account")


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def verify_secret(stored_hash: str | None, secret: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _DUMMY, secret) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False
