"""Mexican Patients for the master patient index tests: every one carries a CURP or an
institution-scoped temporary identifier (as the Mexican Patient profile requires)."""

from __future__ import annotations

from datetime import date

from expediente.mx.curp import build_curp
from expediente.mx.systems import (
    BIRTH_STATE_URL,
    CURP_SYSTEM,
    FATHERS_FAMILY_URL,
    MOTHERS_FAMILY_URL,
    NSS_SYSTEM,
    RENAPO_STATE_SYSTEM,
    TEMPORARY_ID_PREFIX,
)

CLUES_URGENCIAS = "DFIMS000123"


def person(
    first: str,
    second: str | None,
    given: list[str],
    birth: str,
    sex: str = "female",
    state: str | None = "JC",
    *,
    curp: bool | str = True,
    nss: str | None = None,
    pid: str | None = None,
    temporary: str | None = None,
    plain_family: bool = False,
) -> dict:
    """A Patient as Expediente stores it. ``curp=True`` builds the CURP from the data;
    ``curp=False`` registers a temporary identifier instead."""
    family_ext = [{"url": FATHERS_FAMILY_URL, "valueString": first}]
    if second:
        family_ext.append({"url": MOTHERS_FAMILY_URL, "valueString": second})
    name = {"use": "official", "family": f"{first} {second}" if second else first, "given": given}
    if not plain_family:
        name["_family"] = {"extension": family_ext}
    identifiers = []
    if curp is True and len(birth) == 10:
        value = build_curp(first, second, " ".join(given), date.fromisoformat(birth), sex, state or "NE", 0)
        identifiers.append({"system": CURP_SYSTEM, "value": value})
    elif isinstance(curp, str):
        identifiers.append({"system": CURP_SYSTEM, "value": curp})
    if not identifiers:
        identifiers.append({"system": TEMPORARY_ID_PREFIX + CLUES_URGENCIAS, "value": temporary or f"T-{abs(hash((first, given[0], birth))) % 10**8:08d}"})
    if nss:
        identifiers.append({"system": NSS_SYSTEM, "value": nss})
    p = {"resourceType": "Patient", "identifier": identifiers, "name": [name], "gender": sex, "birthDate": birth}
    if state:
        p["extension"] = [{"url": BIRTH_STATE_URL, "valueCodeableConcept": {"coding": [{"system": RENAPO_STATE_SYSTEM, "code": state}]}}]
    if pid:
        p["id"] = pid
    return p
