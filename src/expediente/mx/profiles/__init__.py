"""Mexican FHIR profiles: which apply to a resource, and what is wrong with it under them.

``mode`` (setting ``profiles``, env ``EXPEDIENTE_PROFILES``): ``mx`` (default) checks every
Patient, Practitioner, Organization, Coverage and Encounter, and every Composition or
DocumentReference whose type is a NOM-004 document, plus whatever the resource declares in
``meta.profile``; ``declared`` checks only the profiles a resource names in ``meta.profile``.
Profiles of other namespaces named in ``meta.profile`` are not checked (nor refused).
"""

from __future__ import annotations

from expediente.fhir.validation import ValidationIssue
from expediente.mx.nom004 import document_type_of
from expediente.mx.profiles import coverage, encounter, organization, patient, practitioner
from expediente.mx.profiles.base import Profile
from expediente.mx.profiles.common import issue
from expediente.mx.profiles.documents import COMPOSITION_PROFILES, REFERENCE_PROFILE
from expediente.mx.systems import PROFILE_BASE

MODES = ("mx", "declared")

_BY_TYPE: dict[str, Profile] = {
    m.PROFILE.type: m.PROFILE for m in (patient, practitioner, organization, coverage, encounter)
}
PROFILES: dict[str, Profile] = {
    p.id: p for p in (*_BY_TYPE.values(), *COMPOSITION_PROFILES, REFERENCE_PROFILE)
}
BY_URL: dict[str, Profile] = {p.url: p for p in PROFILES.values()}


def check_mode(mode: str) -> None:
    """Refuse an unknown ``profiles`` setting when the store starts, not on the first write."""
    if mode not in MODES:
        raise ValueError(f"EXPEDIENTE_PROFILES must be one of {', '.join(MODES)}, not {mode!r}")


def default_profile(resource: dict) -> Profile | None:
    """The profile ``mx`` mode applies to this resource without it asking."""
    rtype = resource.get("resourceType")
    if rtype in _BY_TYPE:
        return _BY_TYPE[rtype]
    if rtype in ("Composition", "DocumentReference"):
        doc = document_type_of(resource.get("type"))
        if doc is not None:
            return PROFILES[doc.profile_id] if rtype == "Composition" else REFERENCE_PROFILE
    return None


def _declared(resource: dict, out: list[ValidationIssue]) -> list[Profile]:
    meta = resource.get("meta") if isinstance(resource.get("meta"), dict) else {}
    found = []
    for i, url in enumerate(meta.get("profile") or ()):
        if not isinstance(url, str) or not url.startswith(PROFILE_BASE):
            continue
        profile = BY_URL.get(url.split("|", 1)[0])
        if profile is None:
            out.append(issue(f"{resource.get('resourceType')}.meta.profile[{i}]", f"perfil desconocido: '{url}'", "not-supported"))
        elif profile.type != resource.get("resourceType"):
            out.append(issue(f"{resource.get('resourceType')}.meta.profile[{i}]", f"el perfil '{url}' es para {profile.type}", "invalid"))
        else:
            found.append(profile)
    return found


def applicable(resource: dict, mode: str) -> tuple[list[Profile], list[ValidationIssue]]:
    """The profiles to check ``resource`` against in ``mode``, and issues with meta.profile."""
    out: list[ValidationIssue] = []
    found = _declared(resource, out)
    default = default_profile(resource) if mode == "mx" else None
    if default is not None and default not in found:
        found.insert(0, default)
    return found, out


def profile_issues(resource: dict, mode: str, only: Profile | None = None) -> list[ValidationIssue]:
    """Every profile problem of a structurally valid ``resource`` (empty: it conforms).
    ``only``: check against that profile alone ($validate?profile=)."""
    if only is not None:
        return only.check(resource)
    found, out = applicable(resource, mode)
    for profile in found:
        out.extend(profile.check(resource))
    return out
