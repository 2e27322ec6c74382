"""SMART on FHIR scopes (v2 ``patient/Observation.rs``, v1 ``user/*.read``), parsed once.

A scope names a context (``patient``: only the patient the token is about; ``user``: whatever
the user may see; ``system``: a client acting for its institution), a resource type (or ``*``)
and interactions: ``c`` create, ``r`` read (read, vread, instance history), ``u`` update,
``d`` delete, ``s`` search (search, type history, operations over many resources). Scopes only
ever narrow what the role allows; the access policy checks both.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

CONTEXTS = ("patient", "user", "system")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]{1,63})\.(\*|read|write|c?r?u?d?s?)(\?.*)?$")

# What an account's token carries when the request names no scope.
ROLE_DEFAULT_SCOPES: dict[str, tuple[str, ...]] = {
    "administrator": ("user/*.cruds",),
    "physician": ("user/*.cruds",),
    "nurse": ("user/*.cruds",),
    "radiologist": ("user/*.cruds",),
    "imaging_technician": ("user/*.cruds",),
    "system": ("system/*.cruds",),
    # Patients read their record and give or withdraw their consents.
    "patient": ("patient/*.rs", "patient/Consent.cud"),
    "auditor": ("user/AuditEvent.rs",),
    "researcher": (),
}

# The interaction letter each audited action needs.
ACTION_LETTER: dict[str, str] = {
    "create": "c",
    "read": "r",
    "vread": "r",
    "history": "r",
    "update": "u",
    "delete": "d",
    "purge": "d",  # removing a record after its retention: a delete scope
    "search": "s",
    "everything": "s",
}


@dataclass(frozen=True, slots=True)
class Scope:
    context: str
    res_type: str  # "*" for every type
    letters: str

    def grants(self, res_type: str | None, letter: str) -> bool:
        return letter in self.letters and (self.res_type == "*" or self.res_type == res_type)


def parse_scope(text: str) -> Scope | None:
    """One SMART resource scope, or None for anything else (openid, launch, offline_access...)."""
    m = _SCOPE.match(text)
    if m is None:
        return None
    context, res_type, perms, _query = m.groups()
    letters = _V1.get(perms, perms)
    return Scope(context, res_type, letters) if letters else None


def parse_scopes(text: str | tuple[str, ...] | list[str]) -> tuple[Scope, ...]:
    return _parsed(text if isinstance(text, str) else tuple(text))


@functools.lru_cache(maxsize=1024)
def _parsed(text: str | tuple[str, ...]) -> tuple[Scope, ...]:
    """Scopes parsed once per distinct grant: the policy asks several times per request."""
    items = text.split() if isinstance(text, str) else text
    return tuple(s for s in (parse_scope(i) for i in items) if s is not None)


def granting_contexts(scopes: tuple[Scope, ...], res_type: str | None, letter: str) -> frozenset[str]:
    """The contexts (patient, user, system) in which ``scopes`` allow ``letter`` on ``res_type``."""
    return frozenset(s.context for s in scopes if s.grants(res_type, letter))
