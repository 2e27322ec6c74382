"""Identifier systems, code systems and extension URLs of the Mexican record, in one place.

OIDs are the registered ones (HL7 OID registry; DGIS for the cédula profesional). Where no
registered system exists (IMSS NSS, temporary identifiers, local catalogs) Expediente uses
URLs under its own namespace, ``http://expediente.mx/fhir/``.
"""

from __future__ import annotations

# Identifiers
CURP_SYSTEM = "urn:oid:2.16.840.1.113883.4.629"
RFC_SYSTEM = "urn:oid:2.16.840.1.113883.4.630"
CLUES_SYSTEM = "urn:oid:2.16.840.1.113883.4.631"
CEDULA_SYSTEM = "urn:oid:2.16.840.1.113883.3.215.12.18"
NSS_SYSTEM = "http://expediente.mx/fhir/sid/imss-nss"
INSTITUTION_SYSTEM = "http://expediente.mx/fhir/sid/institucion"
# A patient without a CURP (NOM-024 6.5.1: never invent one) gets a temporary identifier
# scoped to the registering establishment: system TEMPORARY_ID_PREFIX + CLUES.
TEMPORARY_ID_PREFIX = "http://expediente.mx/fhir/sid/temporal/"

# Code systems
CIE10_SYSTEM = "urn:oid:2.16.840.1.113883.6.3"
CIE9MC_SYSTEM = "urn:oid:2.16.840.1.113883.6.104"
RENAPO_STATE_SYSTEM = "http://expediente.mx/fhir/CodeSystem/entidad-renapo"
AFFILIATION_SYSTEM = "http://expediente.mx/fhir/CodeSystem/derechohabiencia"
DOCUMENT_TYPE_SYSTEM = "http://expediente.mx/fhir/CodeSystem/tipo-documento"

# Extensions
BIRTH_STATE_URL = "http://expediente.mx/fhir/StructureDefinition/entidad-nacimiento"
BIRTH_PLACE_URL = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
FATHERS_FAMILY_URL = "http://hl7.org/fhir/StructureDefinition/humanname-fathers-family"
MOTHERS_FAMILY_URL = "http://hl7.org/fhir/StructureDefinition/humanname-mothers-family"
# Not registered: Expediente's own systems for what NOM-004 and the institutions define.
POLICY_SYSTEM = "http://expediente.mx/fhir/sid/poliza"
INCAPACITY_FOLIO_SYSTEM = "http://expediente.mx/fhir/sid/folio-incapacidad"
# Derechohabiencia (affiliation): IMSS, ISSSTE, IMSS-BIENESTAR, PEMEX, SEDENA, SEMAR, PRIVADO, NINGUNA.
AFFILIATION_SYSTEM = "http://expediente.mx/fhir/CodeSystem/derechohabiencia"
# Sections NOM-004-SSA3-2012 requires in each document (Composition.section.code).
SECTION_SYSTEM = "http://expediente.mx/fhir/CodeSystem/seccion-nom004"
# Certificado de incapacidad temporal para el trabajo: days granted and insurance branch (ramo).
INCAPACITY_DAYS_URL = "http://expediente.mx/fhir/StructureDefinition/incapacidad-dias"
INCAPACITY_BRANCH_URL = "http://expediente.mx/fhir/StructureDefinition/incapacidad-ramo"
# Canonical URLs of Expediente's profiles: PROFILE_BASE + profile id.
PROFILE_BASE = "http://expediente.mx/fhir/StructureDefinition/"
