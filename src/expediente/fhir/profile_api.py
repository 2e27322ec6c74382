"""HTTP: the Mexican profiles as StructureDefinitions (read-only) and $validate.

StructureDefinitions are not patient data (any authenticated caller reads them). ``$validate``
on a body stores nothing and reads nothing; on ``{type}/{id}`` without a body it validates the
stored resource, read through the store (access policy and audit apply).
"""

from __future__ import annotations

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from expediente.api_common import caller_of, fhir_response
from expediente.fhir import errors
from expediente.fhir.api import _base, _json_body, _store
from expediente.fhir.store import check_id, check_type
from expediente.mx.profiles import operation
from expediente.mx.profiles.structure_definitions import DEFINITIONS

_FILTERS = {"url": "url", "type": "type", "_id": "id", "name": "name"}


async def list_definitions(request: Request) -> Response:
    wanted = []
    for key, value in request.query_params.multi_items():
        if key not in _FILTERS:
            raise errors.bad_request(
                f"Parámetro de búsqueda no soportado en StructureDefinition: '{key[:60]}' (use url, type, name o _id)",
                "not-supported",
                key[:60],
            )
        wanted.append((_FILTERS[key], set(value.split(","))))
    found = [d for d in DEFINITIONS.values() if all(d[field] in values for field, values in wanted)]
    base = _base(request)
    return fhir_response({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(found),
        "link": [{"relation": "self", "url": str(request.url)}],
        "entry": [{"fullUrl": f"{base}/StructureDefinition/{d['id']}", "resource": d, "search": {"mode": "match"}} for d in found],
    })


async def read_definition(request: Request) -> Response:
    definition = DEFINITIONS.get(request.path_params["id"])
    if definition is None:
        raise errors.not_found("StructureDefinition", request.path_params["id"][:64])
    return fhir_response(definition)


def _mode(request: Request) -> str:
    return _store(request).profiles


async def validate_type(request: Request) -> Response:
    res_type = request.path_params["type"]
    check_type(res_type)
    resource, profile = operation.resource_and_profile(await _json_body(request), res_type, request.query_params.get("profile"))
    return fhir_response(operation.validate(resource, res_type, _mode(request), profile))


async def validate_instance(request: Request) -> Response:
    res_type, res_id = request.path_params["type"], request.path_params["id"]
    check_type(res_type)
    check_id(res_id)
    if await request.body():
        resource, profile = operation.resource_and_profile(await _json_body(request), res_type, request.query_params.get("profile"))
        if resource.get("id") not in (None, res_id):
            raise errors.bad_request(f"El id del recurso ('{resource.get('id')}') no es el de la URL ('{res_id}')", expression=f"{res_type}.id")
    else:
        stored = await run_in_threadpool(_store(request).read, caller_of(request), res_type, res_id)
        resource, profile = operation.resource_and_profile(orjson.loads(stored.body), res_type, request.query_params.get("profile"))
    return fhir_response(operation.validate(resource, res_type, _mode(request), profile))


# Registered before the generic FHIR routes, which would take these paths.
routes = [
    Route("/fhir/StructureDefinition", list_definitions, methods=["GET"]),
    Route("/fhir/StructureDefinition/{id}", read_definition, methods=["GET"]),
    Route("/fhir/{type}/$validate", validate_type, methods=["POST"]),
    Route("/fhir/{type}/{id}/$validate", validate_instance, methods=["POST"]),
]
