"""HTTP routes of the terminology service: CodeSystem and ValueSet read and search, $lookup,
$validate-code and $expand (GET with query parameters, POST with a Parameters resource).

Catalogs are not patient data: any authenticated caller may read them (the Authenticate
middleware guards /fhir), and these reads are not audited.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from expediente.api_common import fhir_response
from expediente.fhir import terminology as term
from expediente.fhir.api import _json_body
from expediente.fhir.errors import bad_request
from expediente.mx.catalog_store import CatalogCache, catalog_cache

_LOOKUP = frozenset({"system", "code", "version", "coding", "displayLanguage", "property", "date"})
_CS_VALIDATE = frozenset({"url", "system", "code", "version", "display", "coding", "codeableConcept", "displayLanguage"})
_VS_VALIDATE = frozenset({"url", "valueSetVersion", "system", "systemVersion", "code", "version", "display", "coding", "codeableConcept", "displayLanguage"})
_EXPAND = frozenset({"url", "valueSetVersion", "filter", "count", "offset", "displayLanguage"})
_VALUE_KEYS = ("valueUri", "valueCanonical", "valueCode", "valueString", "valueInteger", "valueBoolean", "valueCoding", "valueCodeableConcept")


def _cache(request: Request) -> CatalogCache:
    return catalog_cache(request.app.state.services.reader)


async def _params(request: Request, allowed: frozenset[str]) -> dict:
    """The operation's parameters, from the query string and, on POST, a Parameters body."""
    params: dict = {}
    for name, value in request.query_params.multi_items():
        params[name] = value
    if request.method == "POST":
        body = await _json_body(request)
        if body.get("resourceType") != "Parameters" or not isinstance(body.get("parameter", []), list):
            raise bad_request("Se esperaba un recurso Parameters", expression="Parameters")
        for i, p in enumerate(body.get("parameter", [])):
            name = p.get("name") if isinstance(p, dict) else None
            value = next((p[k] for k in _VALUE_KEYS if k in p), None) if isinstance(p, dict) else None
            if not isinstance(name, str) or value is None:
                raise bad_request("Cada parámetro necesita 'name' y un valor (value[x])", expression=f"Parameters.parameter[{i}]")
            params[name] = value
    for name, value in params.items():
        if name not in allowed:
            raise bad_request(f"Parámetro desconocido para esta operación: '{name[:40]}'", expression=name[:40])
        if name not in ("coding", "codeableConcept") and not isinstance(value, (str, int)):
            raise bad_request(f"El parámetro '{name}' debe ser un texto", expression=name)
    return params


def _query(params: dict, system_param: str = "system", prefer: str | None = None) -> term.CodeQuery:
    """The code asked about; of a CodeableConcept, its coding of system ``prefer`` (the value
    set's), else of the system parameter, else the first."""
    coding = params.get("coding")
    concept = params.get("codeableConcept")
    if isinstance(concept, dict):
        codings = [c for c in concept.get("coding", []) if isinstance(c, dict)]
        wanted = prefer or params.get(system_param)
        coding = next((c for c in codings if c.get("system") == wanted), codings[0] if codings else None)
    if coding is not None:
        if not isinstance(coding, dict):
            raise bad_request("'coding' debe ser un Coding", expression="coding")
        return term.CodeQuery(coding.get("system") or params.get(system_param), coding.get("code"), coding.get("version"), coding.get("display"))
    return term.CodeQuery(params.get(system_param), params.get("code"), params.get("version"), params.get("display"))


def _int(params: dict, name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    text = str(raw)
    if not text.lstrip("-").isdigit() or len(text) > 9:
        raise bad_request(f"El parámetro '{name}' debe ser un número entero", expression=name)
    return int(text)


def _bundle(request: Request, res_type: str, entries: list[dict]) -> dict:
    base = request.app.state.settings.public_base + "/fhir"
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(entries),
        "link": [{"relation": "self", "url": str(request.url)}],
        "entry": [{"fullUrl": f"{base}/{res_type}/{e['id']}", "resource": e, "search": {"mode": "match"}} for e in entries],
    }


async def code_system_search(request: Request) -> Response:
    cache = _cache(request)
    found = await run_in_threadpool(term.search_systems, cache, request.query_params.multi_items())
    return fhir_response(_bundle(request, "CodeSystem", [term.code_system_summary(s) for s in found]))


async def code_system_read(request: Request) -> Response:
    cache = _cache(request)
    catalog = await run_in_threadpool(term.by_id, cache, "CodeSystem", request.path_params["id"])
    return fhir_response(term.code_system_resource(catalog))


async def lookup(request: Request) -> Response:
    params = await _params(request, _LOOKUP)
    query = _query(params)
    catalog = await run_in_threadpool(term.by_url, _cache(request), query.system, query.version)
    return fhir_response(term.lookup(catalog, query))


async def code_system_validate(request: Request) -> Response:
    params = await _params(request, _CS_VALIDATE)
    cache = _cache(request)
    if "id" in request.path_params:
        catalog = await run_in_threadpool(term.by_id, cache, "CodeSystem", request.path_params["id"])
        query = _query(params, "url", prefer=catalog.info.url)
        if query.version and query.version != catalog.info.version:
            catalog = await run_in_threadpool(term.by_url, cache, catalog.info.url, query.version)
    else:
        query = _query(params, "url" if "url" in params else "system")
        catalog = await run_in_threadpool(term.by_url, cache, query.system, query.version, "url")
    return fhir_response(term.validate_code(catalog, query))


async def value_set_search(request: Request) -> Response:
    cache = _cache(request)
    found = await run_in_threadpool(term.search_systems, cache, request.query_params.multi_items())
    return fhir_response(_bundle(request, "ValueSet", [term.value_set_resource(s) for s in found]))


async def value_set_read(request: Request) -> Response:
    catalog = await run_in_threadpool(term.by_id, _cache(request), "ValueSet", request.path_params["id"])
    return fhir_response(term.value_set_resource(catalog.info))


async def _value_set(request: Request, params: dict):
    cache = _cache(request)
    if "id" in request.path_params:
        return await run_in_threadpool(term.by_id, cache, "ValueSet", request.path_params["id"])
    return await run_in_threadpool(term.value_set_by_url, cache, params.get("url"))


async def value_set_validate(request: Request) -> Response:
    params = await _params(request, _VS_VALIDATE)
    catalog = await _value_set(request, params)
    query = _query(params, prefer=catalog.info.url)
    if query.system and query.system != catalog.info.url:
        return fhir_response(term.validation_result(False, f"El sistema '{query.system[:200]}' no pertenece al ValueSet {term.value_set_url(catalog.info)}"))
    if query.version and query.version != catalog.info.version:
        catalog = await run_in_threadpool(term.by_url, _cache(request), catalog.info.url, query.version)
    return fhir_response(term.validate_code(catalog, query))


async def expand(request: Request) -> Response:
    params = await _params(request, _EXPAND)
    catalog = await _value_set(request, params)
    return fhir_response(term.expand(catalog, params.get("filter"), _int(params, "count"), _int(params, "offset") or 0))


_BOTH = ["GET", "POST"]

# Registered before the generic FHIR routes (which would take /fhir/CodeSystem/{id}); the
# operations before the reads, since {id} would match "$lookup".
routes = [
    Route("/fhir/CodeSystem", code_system_search, methods=["GET"]),
    Route("/fhir/CodeSystem/$lookup", lookup, methods=_BOTH),
    Route("/fhir/CodeSystem/$validate-code", code_system_validate, methods=_BOTH),
    Route("/fhir/CodeSystem/{id}/$validate-code", code_system_validate, methods=_BOTH),
    Route("/fhir/CodeSystem/{id}", code_system_read, methods=["GET"]),
    Route("/fhir/ValueSet", value_set_search, methods=["GET"]),
    Route("/fhir/ValueSet/$expand", expand, methods=_BOTH),
    Route("/fhir/ValueSet/$validate-code", value_set_validate, methods=_BOTH),
    Route("/fhir/ValueSet/{id}/$expand", expand, methods=_BOTH),
    Route("/fhir/ValueSet/{id}/$validate-code", value_set_validate, methods=_BOTH),
    Route("/fhir/ValueSet/{id}", value_set_read, methods=["GET"]),
]
