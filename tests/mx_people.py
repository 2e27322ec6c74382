"""Mexican people for tests: Patients as an institution registers them (CURP or an
institution-scoped temporary identifier, two surnames with the HL7 extensions, sex, birth date
and state of birth), and the institutions' Organizations (CLUES)."""

from __future__ import annotations

from datetime import date

from expediente.mx.curp import build_curp
from expediente.mx.systems import (
    BIRTH_STATE_URL,
    CLUES_SYSTEM,
    CURP_SYSTEM,
    FATHERS_FAMILY_URL,
    INSTITUTION_SYSTEM,
    MOTHERS_FAMILY_URL,
    NSS_SYSTEM,
    RENAPO_STATE_SYSTEM,
    TEMPORARY_ID_PREFIX,
)


def curp_of(given: str, first: str, second: str | None, birth: str, sex: str, state: str, homoclave: int = 0) -> str:
    return build_curp(first, second, given, date.fromisoformat(birth), sex, state, homoclave)


def mx_patient(
    given: str = "María Guadalupe",
    first: str = "Hernández",
    second: str | None = "López",
    birth: str = "1980-03-14",
    sex: str = "female",
    state: str = "JC",
    *,
    curp: bool | str = True,
    nss: str | None = None,
    temporary: tuple[str, str] | None = None,  # (CLUES, folio)
) -> dict:
    """A Patient as a Mexican institution registers it."""
    identifiers = []
    if curp:
        value = curp if isinstance(curp, str) else curp_of(given, first, second, birth, sex, state)
        identifiers.append({"use": "official", "system": CURP_SYSTEM, "value": value})
    if nss:
        identifiers.append({"use": "secondary", "system": NSS_SYSTEM, "value": nss})
    if temporary:
        identifiers.append({"use": "temp", "system": TEMPORARY_ID_PREFIX + temporary[0], "value": temporary[1]})
    surnames = [{"url": FATHERS_FAMILY_URL, "valueString": first}]
    if second:
        surnames.append({"url": MOTHERS_FAMILY_URL, "valueString": second})
    return {
        "resourceType": "Patient",
        "identifier": identifiers,
        "extension": [{"url": BIRTH_STATE_URL, "valueCodeableConcept": {"coding": [{"system": RENAPO_STATE_SYSTEM, "code": state}]}}],
        "name": [{"use": "official", "family": " ".join(s for s in (first, second) if s), "_family": {"extension": surnames}, "given": given.split()}],
        "gender": sex,
        "birthDate": birth,
    }


def institution(name: str, key: str, clues: str) -> dict:
    """An establishment of an institution (e.g. an IMSS hospital) with its CLUES."""
    return {
        "resourceType": "Organization",
        "identifier": [{"system": CLUES_SYSTEM, "value": clues}, {"system": INSTITUTION_SYSTEM, "value": key}],
        "name": name,
        "active": True,
    }


def nss_with_check_digit(first10: str) -> str:
    """An IMSS NSS: 10 digits and their Luhn check digit."""
    total = 0
    for i, ch in enumerate(first10):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return first10 + str((10 - total % 10) % 10)
