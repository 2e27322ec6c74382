"""Time-based one-time passwords (RFC 6238: 6 digits, 30-second steps, SHA-1), the optional
second factor of a person's account."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

import pyotp

STEP_SECONDS = 30
# Codes one step before or after the current one are accepted (clock drift, typing time).
DRIFT_STEPS = 1


def new_secret() -> str:
    return pyotp.random_base32()


def enrolment_uri(secret: str, username: str, issuer: str) -> str:
    """The otpauth:// URI an authenticator app reads (usually as a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step whose code is ``code`` (within the allowed drift), or None. The caller keeps
    the last accepted step so each code is used once."""
    code = code.strip()
    if not (code.isascii() and code.isdigit() and len(code) == 6):
        return None
    generator = pyotp.TOTP(secret)
    current = int(now.replace(tzinfo=UTC).timestamp()) // STEP_SECONDS
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(generator.at(step * STEP_SECONDS), code):
            return step
    return None
