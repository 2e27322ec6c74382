"""FHIR R4 REST API under /fhir: thin handlers that parse HTTP, call the store, format the answer."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from expediente.api_common import caller_of, fhir_response, search_form
from expediente.fhir import errors
from expediente.fhir.bundle import BundleOptions, process_bundle
from expediente.fhir.capability import capability_statement
from expediente.fhir.shaping import shape
from expediente.fhir.store import ResourceStore, SearchResult, Stored, WriteResult, instant



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
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:
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


def _lenient(request: Request) -> bool:
    return "handling=lenient" in request.headers.get("prefer", "").replace(" ", "")


def _search_params(request: Request, form: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    params = _query(request) + (form or [])
    if any("\x00" in k or "\x00" in v for k, v in params):
        raise errors.bad_request("Los parámetros no pueden contener el carácter nulo (U+0000)")
    return params


def _entry(base: str, s: Stored, mode: str, spec=None) -> dict:
    body: bytes | orjson.Fragment = s.body
    if spec is not None and (spec.summary or spec.elements):
        body = shape(s.body, summary=spec.summary, elements=spec.elements, res_type=s.res_type)
    return {"fullUrl": f"{base}/{s.res_type}/{s.res_id}", "resource": orjson.Fragment(body), "search": {"mode": mode}}


def _outcome_entry(messages: list[str], severity: str = "warning") -> dict:
    outcome = errors.operation_outcome([errors.Issue(m, "informational", severity) for m in messages])
    return {"resource": outcome, "search": {"mode": "outcome"}}


def _searchset(request: Request, path: str, result: SearchResult) -> dict:
    base = _base(request)
    spec = result.spec
    self_url = f"{base}{path}?{urlencode(spec.used)}" if spec.used else f"{base}{path}"
    links = [{"relation": "self", "url": self_url}]
    if result.next_cursor:
        links.append({"relation": "next", "url": f"{base}{path}?{urlencode(spec.used + [('_cursor', result.next_cursor)])}"})
    entries = [_entry(base, s, "match", spec) for s in result.matches]
    entries += [_entry(base, s, "include", spec) for s in result.included]
    warnings = list(spec.warnings)
    if result.truncated:
        limit = request.app.state.settings.include_max
        warnings.append(
            f"Se incluyeron solo {limit} recursos por _include/_revinclude en esta página; pida páginas más "
            f"pequeñas (_count) o busque los recursos referidos directamente"
        )
    if warnings:
        entries.append(_outcome_entry(warnings))
    bundle: dict = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    bundle["link"] = links
    bundle["entry"] = entries
    return bundle


async def _run_search(request: Request, res_type: str, params, compartment=None, path: str | None = None) -> Response:
    settings = request.app.state.settings
    result = await run_in_threadpool(
        _store(request).search,
        caller_of(request),
        res_type,
        params,
        default_count=settings.page_size_default,
        max_count=settings.page_size_max,
        include_max=settings.include_max,
        lenient=_lenient(request),
        compartment=compartment,
    )
    return fhir_response(_searchset(request, path or f"/{res_type}", result))


async def search(request: Request) -> Response:
    return await _run_search(request, request.path_params["type"], _search_params(request))


async def search_post(request: Request) -> Response:
    """POST [type]/_search: parameters in an application/x-www-form-urlencoded body (and the URL)."""
    form = await search_form(request)
    return await _run_search(request, request.path_params["type"], _search_params(request, form))


async def compartment_search(request: Request) -> Response:
    p = request.path_params
    if p["type"] != "Patient":
        raise errors.FhirError.of(404, f"Compartimento no soportado: {p['type'][:40]}", "not-supported")
    target = p["comp"]
    return await _run_search(
        request, target, _search_params(request), compartment=("Patient", p["id"]), path=f"/Patient/{p['id']}/{target}"
    )


async def everything(request: Request) -> Response:
    """Patient/$everything: the patient's whole record, paged (_count, _since, _type, _cursor)."""
    p = request.path_params
    if p["type"] != "Patient":
        raise errors.FhirError.of(404, f"$everything solo está disponible para Patient, no para {p['type'][:40]}", "not-supported")
    params = _search_params(request)
    known = {"_count", "_since", "_type", "_cursor", "_format", "start", "end"}
    unknown = [k for k, _ in params if k not in known]
    if unknown and not _lenient(request):
        raise errors.bad_request(f"Parámetro no soportado en $everything: '{unknown[0][:60]}'", code="not-supported")
    types = [t for k, v in params if k == "_type" for t in v.split(",") if t] or None
    settings = request.app.state.settings
    rows, outside, cursor, truncated = await run_in_threadpool(
        _store(request).everything,
        caller_of(request),
        p["id"],
        types=types,
        since=_since(request),
        count=_count(request),
        cursor=request.query_params.get("_cursor"),
        include_max=settings.include_max,
    )
    base = _base(request)
    path = f"/Patient/{p['id']}/$everything"
    used = [(k, v) for k, v in params if k in known and k != "_cursor"]
    links = [{"relation": "self", "url": f"{base}{path}" + (f"?{urlencode(used)}" if used else "")}]
    if cursor:
        links.append({"relation": "next", "url": f"{base}{path}?{urlencode(used + [('_cursor', cursor)])}"})
    entries = [_entry(base, s, "match") for s in rows] + [_entry(base, s, "include") for s in outside]
    if truncated:
        entries.append(_outcome_entry([f"Se incluyeron solo {settings.include_max} recursos referidos en esta página"]))
    return fhir_response({"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries})


async def system_interaction(request: Request) -> Response:
    """POST /fhir: a batch or transaction Bundle (see fhir/bundle.py)."""
    body = await _json_body(request)
    settings = request.app.state.settings
    options = BundleOptions(
        base=_base(request),
        max_entries=settings.bundle_max_entries,
        page_size=settings.page_size_default,
        page_size_max=settings.page_size_max,
        prefer=request.headers.get("prefer", ""),
        profiles=_store(request).profiles,
    )
    result = await run_in_threadpool(process_bundle, _store(request), caller_of(request), body, options)
    return fhir_response(result)


routes = [
    Route("/fhir/metadata", metadata, methods=["GET"]),
    Route("/fhir/_history", history, methods=["GET"]),
    Route("/fhir", system_interaction, methods=["POST"]),
    Route("/fhir/", system_interaction, methods=["POST"]),
    Route("/fhir/{type}", search, methods=["GET"]),
    Route("/fhir/{type}/_search", search_post, methods=["POST"]),
    Route("/fhir/{type}", create, methods=["POST"]),
    Route("/fhir/{type}", conditional_update, methods=["PUT"]),
    Route("/fhir/{type}/_history", history, methods=["GET"]),
    Route("/fhir/{type}/{id}", read, methods=["GET"]),
    Route("/fhir/{type}/{id}", update, methods=["PUT"]),
    Route("/fhir/{type}/{id}", delete, methods=["DELETE"]),
    Route("/fhir/{type}/{id}/_history", history, methods=["GET"]),
    Route("/fhir/{type}/{id}/_history/{vid}", vread, methods=["GET"]),
    Route("/fhir/{type}/{id}/$everything", everything, methods=["GET"]),
    Route("/fhir/{type}/{id}/{comp}", compartment_search, methods=["GET"]),
]
