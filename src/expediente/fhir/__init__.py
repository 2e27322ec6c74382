"""FHIR R4 (4.0.1): resource store, validation, search index and REST API."""
