"""HTTP operations of the master patient index's links: $link, $unlink, $merge and the review
list ($review). Each is answered through the linker, so the access policy decides and the
audit trail records every record touched."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from expediente.api_common import caller_of, fhir_response
from expediente.fhir import errors
from expediente.fhir.api import _json_body
from expediente.fhir.store import check_id
from expediente.mpi import review
from expediente.security import policy

REVIEW_MAX = 200


def _parameters(body: dict) -> dict[str, dict]:
    if body.get("resourceType") != "Parameters" or not isinstance(body.get("parameter"), list):
        raise errors.bad_request("La operación espera un recurso Parameters", expression="Parameters")
    return {p["name"]: p for p in body["parameter"] if isinstance(p, dict) and isinstance(p.get("name"), str)}


def _patient_id(params: dict[str, dict], name: str) -> str:
    """The Patient id a parameter names (valueReference ``Patient/x``, or valueString ``x``)."""
    p = params.get(name)
    if p is None:
        raise errors.bad_request(f"Falta el parámetro '{name}' (referencia a un Patient)", expression="Parameters.parameter")
    ref = (p.get("valueReference") or {}).get("reference") if "valueReference" in p else p.get("valueString")
    if not isinstance(ref, str) or not ref:
        raise errors.bad_request(f"El parámetro '{name}' debe ser una referencia a un Patient", expression="Parameters.parameter")
    rid = ref.removeprefix("Patient/")
    check_id(rid)
    return rid


def _linker(request: Request):
    return request.app.state.services.linker


async def link(request: Request) -> Response:
    other = _patient_id(_parameters(await _json_body(request)), "other")
    body = await run_in_threadpool(_linker(request).link, caller_of(request), request.path_params["id"], other)
    return fhir_response(body)


async def unlink(request: Request) -> Response:
    other = _patient_id(_parameters(await _json_body(request)), "other")
    body = await run_in_threadpool(_linker(request).unlink, caller_of(request), request.path_params["id"], other)
    return fhir_response(body)


async def merge(request: Request) -> Response:
    params = _parameters(await _json_body(request))
    source, target = _patient_id(params, "source-patient"), _patient_id(params, "target-patient")
    body = await run_in_threadpool(_linker(request).merge, caller_of(request), source, target)
    return fhir_response(body)


def _review_entry(item: review.ReviewItem) -> dict:
    parameter = [
        {"name": "patient", "valueReference": {"reference": f"Patient/{item.patient_a}"}},
        {"name": "patient", "valueReference": {"reference": f"Patient/{item.patient_b}"}},
        {"name": "score", "valueDecimal": round(item.score, 4)},
        {"name": "grade", "valueCode": item.grade},
        {"name": "status", "valueCode": item.status},
        *({"name": "reason", "valueString": r} for r in item.reasons),
    ]
    if item.decided_by:
        parameter.append({"name": "decided-by", "valueString": item.decided_by})
    return {"resource": {"resourceType": "Parameters", "id": str(item.id), "parameter": parameter}}


def _review_listing(services, caller, status: str, count: int) -> list[review.ReviewItem]:
    """The pairs on the list whose two records the caller may see (a search through the store:
    the policy filters, the audit trail records what was shown)."""
    decision = policy.type_decision(caller.principal, "update", "Patient")
    if not decision.allowed:
        raise errors.FhirError.of(403, f"Acceso denegado a la lista de revisión: {decision.reason}", "forbidden")
    with services.reader.connect() as conn:
        items = review.listing(conn, status, count)
    ids = sorted({i for item in items for i in (item.patient_a, item.patient_b)})
    if not ids:
        return []
    found = services.store.search(caller, "Patient", [("_id", ",".join(ids)), ("_count", str(len(ids)))])
    visible = {s.res_id for s in found.matches}
    return [item for item in items if item.patient_a in visible and item.patient_b in visible]


async def review_list(request: Request) -> Response:
    status = request.query_params.get("status", "pending")
    if status not in review.STATUSES:
        raise errors.bad_request(f"Estado desconocido: '{status[:20]}' (pending, linked o rejected)", expression="status")
    raw = request.query_params.get("_count", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= REVIEW_MAX:
        raise errors.bad_request(f"_count debe ser un entero entre 1 y {REVIEW_MAX}", expression="_count")
    items = await run_in_threadpool(_review_listing, request.app.state.services, caller_of(request), status, int(raw))
    return fhir_response({"resourceType": "Bundle", "type": "collection", "total": len(items), "entry": [_review_entry(i) for i in items]})


async def review_decide(request: Request) -> Response:
    """Decide a pair of the list: ``review`` (its id) and ``decision`` (link | reject)."""
    params = _parameters(await _json_body(request))
    raw_id = (params.get("review") or {}).get("valueInteger")
    decision = (params.get("decision") or {}).get("valueCode")
    if not isinstance(raw_id, int) or isinstance(raw_id, bool):
        raise errors.bad_request("Falta el parámetro 'review' (valueInteger: el número del par)", expression="Parameters.parameter")
    if decision not in ("link", "reject"):
        raise errors.bad_request("El parámetro 'decision' debe ser 'link' o 'reject'", expression="Parameters.parameter")
    services, caller = request.app.state.services, caller_of(request)

    def run() -> dict:
        with services.reader.connect() as conn:
            item = review.get(conn, raw_id)
        if item is None:
            raise errors.FhirError.of(404, f"No existe el par {raw_id} en la lista de revisión", "not-found")
        linker = services.linker
        if decision == "link":
            body = linker.link(caller, item.patient_a, item.patient_b)
            review.decide(services.engine, item.patient_a, item.patient_b, "linked", caller.principal.subject)
            return body
        # Rejecting reads both records as the caller (the policy decides), then remembers it.
        for rid in (item.patient_a, item.patient_b):
            services.store.read(caller, "Patient", rid)
        review.decide(services.engine, item.patient_a, item.patient_b, "rejected", caller.principal.subject)
        with services.reader.connect() as conn:
            return _review_entry(review.get(conn, raw_id))["resource"]

    return fhir_response(await run_in_threadpool(run))


routes = [
    Route("/fhir/Patient/$merge", merge, methods=["POST"]),
    Route("/fhir/Patient/$review", review_list, methods=["GET"]),
    Route("/fhir/Patient/$review", review_decide, methods=["POST"]),
    Route("/fhir/Patient/{id}/$link", link, methods=["POST"]),
    Route("/fhir/Patient/{id}/$unlink", unlink, methods=["POST"]),
]
