"""The CapabilityStatement served at /fhir/metadata (built once per process)."""

from __future__ import annotations

from functools import lru_cache

import orjson

from expediente import __version__
from expediente.config import Settings
from expediente.fhir.resource_types import SERVED_TYPES, SERVER_WRITTEN_ONLY
from expediente.fhir.search.registry import params_for

_READ = ["read", "vread", "history-instance", "history-type", "search-type"]  # search: GET and POST _search
_WRITE = ["create", "update", "delete"]


# The audit trail is searched on its own log (security/audit_search.py), with these parameters.
_AUDIT_EVENT_PARAMS = [
    {"name": "patient", "type": "reference"},
    {"name": "agent", "type": "reference"},
    {"name": "date", "type": "date"},
    {"name": "action", "type": "token"},
    {"name": "subtype", "type": "token"},
    {"name": "outcome", "type": "token"},
    {"name": "entity", "type": "reference"},
    {"name": "purpose", "type": "token", "documentation": "purposeOfEvent, e.g. BTG: the break-the-glass review list"},
]


def _search_capability(res_type: str) -> dict:
    if res_type == "AuditEvent":
        return {"searchParam": _AUDIT_EVENT_PARAMS}
    params = params_for(res_type)
    refs = sorted(code for code, sp in params.items() if sp.type == "reference")
    out: dict = {
        "searchInclude": ["*"] + [f"{res_type}:{code}" for code in refs],
        "searchParam": [{"name": code, "type": sp.type} for code, sp in sorted(params.items()) if sp.type != "special"],
    }
    if res_type == "Patient":
        out["operation"] = [
            {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
            # Master patient index: one person across institutions (docs/mpi.md).
            {"name": "link", "definition": "$link"},
            {"name": "unlink", "definition": "$unlink"},
            {"name": "merge", "definition": "$merge"},
            {"name": "review", "definition": "$review"},
        ]
    if res_type in ("Composition", "DocumentReference"):
        out["operation"] = [{"name": "sign", "definition": "$sign"}, {"name": "verify-signature", "definition": "$verify-signature"}]
    return out


def _security(server: str) -> dict:
    """OAuth2 with SMART on FHIR scopes; the endpoints also in /.well-known/smart-configuration."""
    system = "http://terminology.hl7.org/CodeSystem/restful-security-service"
    return {
        "cors": False,
        "service": [{"coding": [{"system": system, "code": "SMART-on-FHIR"}, {"system": system, "code": "OAuth"}]}],
        "description": "OAuth2 (/auth/token) con scopes de SMART on FHIR; descubrimiento en /fhir/.well-known/smart-configuration",
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": "token", "valueUri": f"{server}/auth/token"},
                    {"url": "revoke", "valueUri": f"{server}/auth/revoke"},
                ],
            }
        ],
    }


# Terminology (fhir/terminology_api.py): the catalogs, read-only, with their operations.
_TERMINOLOGY_SEARCH = [
    {"name": "url", "type": "uri"},
    {"name": "name", "type": "string"},
    {"name": "title", "type": "string"},
    {"name": "version", "type": "token"},
]
_TERMINOLOGY = [
    {
        "type": "CodeSystem",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": _TERMINOLOGY_SEARCH,
        "operation": [
            {"name": "lookup", "definition": "http://hl7.org/fhir/OperationDefinition/CodeSystem-lookup"},
            {"name": "validate-code", "definition": "http://hl7.org/fhir/OperationDefinition/CodeSystem-validate-code"},
        ],
    },
    {
        "type": "ValueSet",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": _TERMINOLOGY_SEARCH,
        "operation": [
            {"name": "expand", "definition": "http://hl7.org/fhir/OperationDefinition/ValueSet-expand"},
            {"name": "validate-code", "definition": "http://hl7.org/fhir/OperationDefinition/ValueSet-validate-code"},
        ],
    },
]


@lru_cache(maxsize=4)
def _build(base: str) -> bytes:
    resources = []
    for res_type in SERVED_TYPES:
        interactions = _READ + ([] if res_type in SERVER_WRITTEN_ONLY else _WRITE)
        resources.append(
            {
                "type": res_type,
                "interaction": [{"code": c} for c in interactions],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": res_type not in SERVER_WRITTEN_ONLY,
                "conditionalUpdate": res_type not in SERVER_WRITTEN_ONLY,
                "conditionalDelete": "not-supported",
                **_search_capability(res_type),
            }
        )
    resources.extend(_TERMINOLOGY)
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "publisher": "Expediente",
        "kind": "instance",
        "software": {"name": "Expediente", "version": __version__},
        "implementation": {"description": "Expediente clínico electrónico (FHIR R4)", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Todas las rutas salvo /metadata requieren un token Bearer (OAuth2, /auth/token).",
                "security": _security(base.rsplit("/fhir", 1)[0]),
                "resource": resources,
                "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
            }
        ],
    }
    return orjson.dumps(statement)


def capability_statement(settings: Settings) -> bytes:
    return _build(settings.public_base + "/fhir")
