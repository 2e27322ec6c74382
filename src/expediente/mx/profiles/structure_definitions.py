"""The profiles as FHIR StructureDefinition resources (constraint profiles on the base types).

The differential lists each constrained element with its cardinality and a Spanish ``short``;
the rules themselves are the Python checks of each profile (``$validate`` runs them), which
the StructureDefinition describes but does not encode as FHIRPath invariants.
"""

from __future__ import annotations

import re

from expediente.mx.profiles import PROFILES
from expediente.mx.profiles.base import Profile

FHIR_BASE = "http://hl7.org/fhir/StructureDefinition/"
VERSION = "1.0.0"


def _name(profile_id: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-_]", profile_id))


def structure_definition(profile: Profile) -> dict:
    elements = []
    for e in profile.elements:
        path, _, slice_name = e.path.partition(":")
        element = {"id": e.path, "path": path, "short": e.short, "min": e.min, "max": e.max}
        if slice_name:
            element["sliceName"] = slice_name
        elements.append(element)
    return {
        "resourceType": "StructureDefinition",
        "id": profile.id,
        "url": profile.url,
        "version": VERSION,
        "name": _name(profile.id),
        "title": profile.title,
        "status": "active",
        "publisher": "Expediente",
        "description": profile.description,
        "jurisdiction": [{"coding": [{"system": "urn:iso:std:iso:3166", "code": "MX"}]}],
        "fhirVersion": "4.0.1",
        "kind": "resource",
        "abstract": False,
        "type": profile.type,
        "baseDefinition": FHIR_BASE + profile.type,
        "derivation": "constraint",
        "differential": {"element": [{"id": profile.type, "path": profile.type, "short": profile.title}, *elements]},
    }


DEFINITIONS: dict[str, dict] = {pid: structure_definition(p) for pid, p in PROFILES.items()}
