"""Care relationships: which references of an Encounter, EpisodeOfCare, CareTeam or
ServiceRequest link a practitioner or an institution to the patient (``care_link`` rows).

Personal links name the clinician (the encounter's participants, the episode's care manager,
a care-team member, the referral's requester or performer); institutional links name the
organization that provides the care (the encounter's service provider, the episode's managing
organization, a care-team member organization, the organization a referral goes to).
"""

from __future__ import annotations

# (resource type, reference parameter) -> the actor types that count as a care relationship.
CARE_REFERENCES: dict[tuple[str, str], frozenset[str]] = {
    ("Encounter", "participant"): frozenset({"Practitioner"}),
    ("Encounter", "practitioner"): frozenset({"Practitioner"}),
    ("Encounter", "service-provider"): frozenset({"Organization"}),
    ("EpisodeOfCare", "care-manager"): frozenset({"Practitioner"}),
    ("EpisodeOfCare", "organization"): frozenset({"Organization"}),
    ("CareTeam", "participant"): frozenset({"Practitioner", "Organization"}),
    ("ServiceRequest", "performer"): frozenset({"Practitioner", "Organization"}),
    ("ServiceRequest", "requester"): frozenset({"Practitioner"}),
}
CARE_TYPES = frozenset(t for t, _ in CARE_REFERENCES)


def care_rows(res_type: str, reference_rows: list[dict]) -> list[dict]:
    """The ``care_link`` rows (without res_type/res_id/patient_key) of one resource, from its
    reference index rows."""
    links = {
        (r["param"], r["target_type"], r["target_id"])
        for r in reference_rows
        if r.get("target_id") and r.get("target_type") in CARE_REFERENCES.get((res_type, r["param"]), ())
    }
    return [{"param": p, "actor_type": t, "actor_id": i} for p, t, i in sorted(links)]
