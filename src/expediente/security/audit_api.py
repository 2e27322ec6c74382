"""GET /fhir/AuditEvent[/{id}]: the audit trail, read-only, as FHIR AuditEvent.

Every request passes the access gate like any other read (so reading the trail is itself
audited, and refused with 503 when that entry cannot be stored): auditors and administrators
read it all; a patient reads the entries about their own record, asking with
``patient=Patient/<own id>``. Writes go to the generic routes, which answer 405.
"""

from __future__ import annotations

from urllib.parse import urlencode

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from expediente.api_common import caller_of, fhir_response, search_form
from expediente.db.schema import audit_log
from expediente.fhir import errors
from expediente.fhir.store import Caller
from expediente.security.access import Access
from expediente.security.audit_events import audit_event
from expediente.security.audit_search import AuditQuery, parse, parse_seq, statement

RES_TYPE = "AuditEvent"
_BY_SEQ = sa.select(audit_log).where(audit_log.c.seq == sa.bindparam("seq"))


def _run_search(services, caller: Caller, query: AuditQuery) -> list[sa.RowMapping]:
    access = Access("search", RES_TYPE, None, patient_key=query.patient)
    services.gate.authorize(caller.principal, access, source=caller.source)
    with services.reader.connect() as conn:
        return conn.execute(statement(query)).mappings().all()


def _run_read(services, caller: Caller, res_id: str) -> sa.RowMapping | None:
    row, seq = None, parse_seq(res_id)
    if seq is not None:
        with services.reader.connect() as conn:
            row = conn.execute(_BY_SEQ, {"seq": seq}).mappings().first()
    access = Access("read", RES_TYPE, res_id[:64], patient_key=row["patient_key"] if row else None)
    services.gate.authorize(caller.principal, access, source=caller.source)
    return row


def _params(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if any("\x00" in k or "\x00" in v for k, v in pairs):
        raise errors.bad_request("Los parámetros no pueden contener el carácter nulo (U+0000)")
    return pairs


async def _answer_search(request: Request, params: list[tuple[str, str]]) -> Response:
    settings = request.app.state.settings
    query = parse(params, default_count=settings.page_size_default, max_count=settings.page_size_max)
    rows = await run_in_threadpool(_run_search, request.app.state.services, caller_of(request), query)
    base = settings.public_base
    url = f"{base}/fhir/{RES_TYPE}"
    page, more = rows[: query.count], len(rows) > query.count
    links = [{"relation": "self", "url": f"{url}?{urlencode(query.used)}" if query.used else url}]
    if more and page:
        links.append({"relation": "next", "url": f"{url}?{urlencode([*query.used, ('_cursor', str(page[-1]['seq']))])}"})
    bundle: dict = {"resourceType": "Bundle", "type": "searchset"}
    if query.before_seq is None and not more:
        bundle["total"] = len(page)  # the first page is the whole answer
    bundle["link"] = links
    bundle["entry"] = [
        {"fullUrl": f"{url}/{row['seq']}", "resource": audit_event(row, base), "search": {"mode": "match"}} for row in page
    ]
    return fhir_response(bundle)


async def search(request: Request) -> Response:
    return await _answer_search(request, _params(request.query_params.multi_items()))


async def search_post(request: Request) -> Response:
    form = await search_form(request)
    return await _answer_search(request, _params(request.query_params.multi_items() + form))


async def read(request: Request) -> Response:
    res_id = request.path_params["id"]
    row = await run_in_threadpool(_run_read, request.app.state.services, caller_of(request), res_id)
    if row is None:
        raise errors.not_found(RES_TYPE, res_id[:64])
    return fhir_response(audit_event(row, request.app.state.settings.public_base))


async def unsupported(request: Request) -> Response:
    raise errors.FhirError.of(
        404, "La bitácora de auditoría no tiene versiones, historial ni operaciones; use GET /fhir/AuditEvent", "not-supported"
    )


# Registered before the generic /fhir/{type} routes, which would otherwise take these paths.
routes = [
    Route(f"/fhir/{RES_TYPE}", search, methods=["GET"]),
    Route(f"/fhir/{RES_TYPE}/_search", search_post, methods=["POST"]),
    Route(f"/fhir/{RES_TYPE}/{{id}}", read, methods=["GET"]),
    Route(f"/fhir/{RES_TYPE}/{{id}}/{{rest:path}}", unsupported, methods=["GET"]),
]
