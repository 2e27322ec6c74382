"""FHIR R4 REST API under /fhir: thin handlers that parse HTTP, call the store, format the answer."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from expediente.api_common import caller_of, fhir_response
from expediente.fhir import errors
from expediente.fhir.capability import capability_statement
from expediente.fhir.store import RESULT_PARAMS, ResourceStore, Stored, WriteResult, instant



def _store(request: Request) -> ResourceStore:
    return request.app.state.services.store


def _base(request: Request) -> str:
    return request.app.state.settings.public_base + "/fhir"


async def _json_body(request: Request) -> dict:
    raw = await request.body()
    if not raw:
        raise errors.bad_request("El cuerpo de la petición está vacío; se esperaba un recurso FHIR en JSON")
    ctype = request.headers.get("content-type", "application/fhir+json").split(";")[0].strip().lower()
    if ctype not in ("application/fhir+json", "application/json", "application/json+fhir"):
        raise errors.FhirError.of(415, f"Tipo de contenido no soportado: '{ctype}'; use application/fhir+json", "not-supported")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.bad_request(f"JSON mal formado: {exc}", code="structure") from None
    if not isinstance(body, dict):
        raise errors.bad_request("El cuerpo debe ser un objeto JSON con un recurso FHIR", code="structure")
    if b"\\u0000" in raw and _has_nul(body):
        raise errors.bad_request("El recurso contiene el carácter nulo (U+0000), que FHIR no admite en textos", code="value")
    return body


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _query(request: Request) -> list[tuple[str, str]]:
    """The query parameters; a NUL character in any of them is refused (no database stores it)."""
    params = request.query_params.multi_items()
    if any("\x00" in k or "\x00" in v for k, v in params):
        raise errors.bad_request("Los parámetros de la URL no pueden contener el carácter nulo (U+0000)")
    return params


def _read_headers(stored: Stored) -> dict[str, str]:
    return {"ETag": stored.etag, "Last-Modified": stored.last_modified}


def _write_response(request: Request, result: WriteResult) -> Response:
    stored = result.stored
    headers = _read_headers(stored) | {"Location": f"{_base(request)}/{stored.location}"}
    status = 201 if result.created else 200
    prefer = request.headers.get("prefer", "")
    if "return=minimal" in prefer:
        return Response(status_code=status, headers=headers)
    if "return=OperationOutcome" in prefer:
        verb = "creado" if result.created else ("actualizado" if result.changed else "sin cambios")
        outcome = errors.operation_outcome([errors.Issue(f"{stored.res_type}/{stored.res_id} {verb}", "informational", "information")])
        return fhir_response(outcome, status, headers)
    return fhir_response(stored.body, status, headers)


async def metadata(request: Request) -> Response:
    return fhir_response(capability_statement(request.app.state.settings))


async def read(request: Request) -> Response:
    p = request.path_params
    stored = await run_in_threadpool(_store(request).read, caller_of(request), p["type"], p["id"])
    return fhir_response(stored.body, headers=_read_headers(stored))


async def vread(request: Request) -> Response:
    p = request.path_params
    stored = await run_in_threadpool(_store(request).vread, caller_of(request), p["type"], p["id"], p["vid"])
    return fhir_response(stored.body, headers=_read_headers(stored))


async def create(request: Request) -> Response:
    body = await _json_body(request)
    result = await run_in_threadpool(
        _store(request).create,
        caller_of(request),
        request.path_params["type"],
        body,
        if_none_exist=request.headers.get("if-none-exist"),
    )
    return _write_response(request, result)


async def update(request: Request) -> Response:
    p = request.path_params
    body = await _json_body(request)
    result = await run_in_threadpool(
        _store(request).update, caller_of(request), p["type"], p["id"], body, if_match=request.headers.get("if-match")
    )
    return _write_response(request, result)


async def conditional_update(request: Request) -> Response:
    body = await _json_body(request)
    query = request.url.query
    _query(request)
    if not query:
        raise errors.bad_request("PUT sobre un tipo requiere una condición de búsqueda (actualización condicional) o un id en la URL")
    result = await run_in_threadpool(
        _store(request).conditional_update,
        caller_of(request),
        request.path_params["type"],
        query,
        body,
        if_match=request.headers.get("if-match"),
    )
    return _write_response(request, result)


async def delete(request: Request) -> Response:
    p = request.path_params
    stored = await run_in_threadpool(_store(request).delete, caller_of(request), p["type"], p["id"])
    return Response(status_code=204, headers={"ETag": stored.etag} if stored else None)


def _count(request: Request) -> int:
    settings = request.app.state.settings
    raw = request.query_params.get("_count")
    if raw is None:
        return settings.page_size_default
    if not raw.isdigit() or len(raw) > 6:
        raise errors.bad_request(f"_count inválido: '{raw[:20]}' (se espera un entero no negativo)")
    return min(int(raw), settings.page_size_max)


def _since(request: Request) -> datetime | None:
    raw = request.query_params.get("_since")
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise errors.bad_request(f"_since inválido: '{raw[:40]}' (se espera un instante FHIR, p. ej. 2026-01-31T10:00:00Z)") from None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _bundle(request: Request, kind: str, entries: list[dict], next_params: dict | None) -> dict:
    self_url = str(request.url)
    links = [{"relation": "self", "url": self_url}]
    if next_params is not None:
        params = [(k, v) for k, v in request.query_params.multi_items() if k not in next_params]
        params += list(next_params.items())
        links.append({"relation": "next", "url": f"{_base(request)}{request.url.path[len('/fhir'):]}?{urlencode(params)}"})
    return {"resourceType": "Bundle", "type": kind, "link": links, "entry": entries}


def _history_entry(base: str, s: Stored) -> dict:
    url = f"{s.res_type}/{s.res_id}"
    entry: dict = {"fullUrl": f"{base}/{url}"}
    if not s.deleted:
        entry["resource"] = orjson.Fragment(s.body)
    entry["request"] = {"method": s.method, "url": url if s.method != "POST" else s.res_type}
    status = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}[s.method or "PUT"]
    entry["response"] = {"status": status, "etag": s.etag, "lastModified": instant(s.last_updated)}
    return entry


async def history(request: Request) -> Response:
    p = request.path_params
    _query(request)
    rows, cursor = await run_in_threadpool(
        _store(request).history,
        caller_of(request),
        p.get("type"),
        p.get("id"),
        since=_since(request),
        count=_count(request),
        cursor=request.query_params.get("_cursor"),
    )
    base = _base(request)
    bundle = _bundle(request, "history", [_history_entry(base, s) for s in rows], {"_cursor": cursor} if cursor else None)
    return fhir_response(bundle)


async def search(request: Request) -> Response:
    res_type = request.path_params["type"]
    params = [(k, v) for k, v in _query(request) if k not in RESULT_PARAMS]
    rows, after = await run_in_threadpool(
        _store(request).search,
        caller_of(request),
        res_type,
        params,
        count=_count(request),
        after=request.query_params.get("_after"),
    )
    base = _base(request)
    entries = [
        {"fullUrl": f"{base}/{s.res_type}/{s.res_id}", "resource": orjson.Fragment(s.body), "search": {"mode": "match"}}
        for s in rows
    ]
    return fhir_response(_bundle(request, "searchset", entries, {"_after": after} if after else None))


async def system_interaction(request: Request) -> Response:
    raise errors.FhirError.of(
        501, "Los Bundle de tipo batch/transaction aún no están disponibles en este servidor", "not-supported"
    )


routes = [
    Route("/fhir/metadata", metadata, methods=["GET"]),
    Route("/fhir/_history", history, methods=["GET"]),
    Route("/fhir", system_interaction, methods=["POST"]),
    Route("/fhir/", system_interaction, methods=["POST"]),
    Route("/fhir/{type}", search, methods=["GET"]),
    Route("/fhir/{type}", create, methods=["POST"]),
    Route("/fhir/{type}", conditional_update, methods=["PUT"]),
    Route("/fhir/{type}/_history", history, methods=["GET"]),
    Route("/fhir/{type}/{id}", read, methods=["GET"]),
    Route("/fhir/{type}/{id}", update, methods=["PUT"]),
    Route("/fhir/{type}/{id}", delete, methods=["DELETE"]),
    Route("/fhir/{type}/{id}/_history", history, methods=["GET"]),
    Route("/fhir/{type}/{id}/_history/{vid}", vread, methods=["GET"]),
]
