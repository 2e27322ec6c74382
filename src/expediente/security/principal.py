"""Who is calling: a person or a system, with a role and an institution."""

from __future__ import annotations

from dataclasses import dataclass

# Roles named by NOM-024's role-based access control; the policy decides what each may do.
ROLES: frozenset[str] = frozenset(
    {
        "administrator",
        "physician",
        "nurse",
        "radiologist",
        "imaging_technician",
        "researcher",
        "patient",
        "auditor",
        "system",
    }
)


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str  # username, or OAuth2 client id for a system
    kind: str  # "person" | "system"
    role: str
    organization: str | None = None  # CLUES of the caller's institution
    practitioner_ref: str | None = None  # "Practitioner/<id>" for clinicians
    patient_ref: str | None = None  # "Patient/<id>" for a patient's own account
    # SMART scopes granted to this token (space-separated strings); None: the role's defaults
    # (principals built inside the server: CLI, loaders). Scopes only narrow the role.
    scopes: tuple[str, ...] | None = None

    @property
    def patient_id(self) -> str | None:
        if self.patient_ref and self.patient_ref.startswith("Patient/"):
            return self.patient_ref.split("/", 1)[1]
        return None
