"""Expediente: electronic clinical record (FHIR R4) and medical-imaging archive for Mexico."""

__version__ = "0.1.0"
