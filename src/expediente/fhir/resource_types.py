"""The FHIR resource types this server serves, and which of them clients may write."""

SERVED_TYPES: tuple[str, ...] = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "Encounter",
    "EpisodeOfCare",
    "Condition",
    "Observation",
    "DiagnosticReport",
    "ServiceRequest",
    "MedicationRequest",
    "MedicationDispense",
    "Medication",
    "Procedure",
    "AllergyIntolerance",
    "Immunization",
    "CarePlan",
    "CareTeam",
    "ImagingStudy",
    "DocumentReference",
    "Composition",
    "Binary",
    "Coverage",
    "Consent",
    "Provenance",
    "AuditEvent",
    "Bundle",
)

# AuditEvent is written by the server itself (the audit trail); clients may only read it.
SERVER_WRITTEN_ONLY: frozenset[str] = frozenset({"AuditEvent"})

SERVED: frozenset[str] = frozenset(SERVED_TYPES)
