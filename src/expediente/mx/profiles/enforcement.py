"""The store's hooks: profiles on every client write (422), no erasure of NOM-004 documents (409)."""

from __future__ import annotations

import orjson

from expediente.fhir.errors import FhirError, Issue
from expediente.mx.nom004 import document_type_of
from expediente.mx.profiles import applicable, profile_issues

# FHIR answers 422 Unprocessable Entity when a resource breaks a profile or a business rule
# (400 stays for what is not valid FHIR at all).
PROFILE_STATUS = 422


def enforce_profiles(resource: dict, mode: str) -> None:
    """Raise FhirError(422) listing every profile problem of a client-written resource."""
    issues = profile_issues(resource, mode)
    if issues:
        raise FhirError(PROFILE_STATUS, [Issue(i.message, i.code, expression=i.path) for i in issues])


def is_clinical_document(resource: dict, mode: str) -> bool:
    """A NOM-004 document (Composition/DocumentReference of a NOM-004 type, in ``mx`` mode; one
    declaring a NOM-004 profile in either mode)."""
    if resource.get("resourceType") not in ("Composition", "DocumentReference"):
        return False
    found, _ = applicable(resource, mode)
    return bool(found) or (mode == "mx" and document_type_of(resource.get("type")) is not None)


def refuse_erasure(res_type: str, body: bytes, mode: str) -> None:
    """NOM-004: the expediente is corrected by new versions, never by erasing a document."""
    if res_type not in ("Composition", "DocumentReference") or not body:
        return
    resource = orjson.loads(body)
    if is_clinical_document(resource, mode):
        raise FhirError.of(
            409,
            f"{res_type}: un documento del expediente clínico no se elimina (NOM-004-SSA3-2012): corríjalo con una nueva "
            "versión (PUT) o márquelo como capturado por error (status 'entered-in-error')",
            "business-rule",
            res_type,
        )
