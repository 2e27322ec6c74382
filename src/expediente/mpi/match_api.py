"""FHIR ``POST /fhir/Patient/$match``: the stored Patients most likely the same person.

The body is a Parameters resource with ``resource`` (a Patient), optionally
``onlyCertainMatches`` (boolean) and ``count`` (integer, default 10, at most 100); a bare
Patient is accepted too. The answer is a searchset Bundle of Patients, best first, each entry
with ``search.score`` and the match-grade extension (certain / probable / possible).

Scores come from the blocking index (``mpi.index.find_matches``); the Patients themselves are
fetched through the store (``store.search`` on ``_id``), so the access policy decides which of
them the caller may see and the audit trail records what was returned.
"""

from __future__ import annotations

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from expediente.api_common import caller_of, fhir_response
from expediente.fhir import errors
from expediente.mpi.index import find_matches

MATCH_GRADE_URL = "http://hl7.org/fhir/StructureDefinition/match-grade"
DEFAULT_COUNT = 10
MAX_COUNT = 100


def _parameters(body: dict) -> tuple[dict, bool, int]:
    if body.get("resourceType") == "Patient":
        return body, False, DEFAULT_COUNT
    if body.get("resourceType") != "Parameters":
        raise errors.bad_request("$match espera un recurso Parameters con el parámetro 'resource' (un Patient)", expression="Parameters")
    patient, only_certain, count = None, False, DEFAULT_COUNT
    for i, p in enumerate(body.get("parameter") or ()):
        if not isinstance(p, dict):
            continue
        name = p.get("name")
        where = f"Parameters.parameter[{i}]"
        if name == "resource":
            patient = p.get("resource")
            if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
                raise errors.bad_request("El parámetro 'resource' de $match debe ser un Patient", expression=f"{where}.resource")
        elif name == "onlyCertainMatches":
            value = p.get("valueBoolean")
            if not isinstance(value, bool):
                raise errors.bad_request("'onlyCertainMatches' debe ser valueBoolean", expression=f"{where}.valueBoolean")
            only_certain = value
        elif name == "count":
            value = p.get("valueInteger")
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_COUNT:
                raise errors.bad_request(f"'count' debe ser valueInteger entre 1 y {MAX_COUNT}", expression=f"{where}.valueInteger")
            count = value
    if patient is None:
        raise errors.bad_request("Falta el parámetro 'resource' (el Patient a buscar)", code="required", expression="Parameters.parameter")
    return patient, only_certain, count


def match(services, caller, patient: dict, *, only_certain: bool, count: int) -> list[tuple[dict, float, str]]:
    """(Patient, score, grade) best first, only those the caller may see."""
    with services.reader.connect() as conn:
        # More candidates than asked: some may be hidden from this caller by the access policy.
        matches = find_matches(conn, patient, limit=count * 3, min_grade="certain" if only_certain else "possible")
    if not matches:
        return []
    ids = [m.patient_id for m in matches]
    result = services.store.search(caller, "Patient", [("_id", ",".join(ids)), ("_count", str(len(ids)))])
    visible = {s.res_id: s for s in result.matches}
    out = []
    for m in matches:
        stored = visible.get(m.patient_id)
        if stored is not None:
            out.append((orjson.loads(stored.body), m.score, m.grade))
    return out[:count]


async def patient_match(request: Request) -> Response:
    raw = await request.body()
    if not raw:
        raise errors.bad_request("El cuerpo de $match está vacío; se esperaba un recurso Parameters")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.bad_request(f"JSON mal formado: {exc}", code="structure") from None
    if not isinstance(body, dict):
        raise errors.bad_request("El cuerpo debe ser un objeto JSON con un recurso Parameters", code="structure")
    patient, only_certain, count = _parameters(body)
    services = request.app.state.services
    found = await run_in_threadpool(match, services, caller_of(request), patient, only_certain=only_certain, count=count)
    base = request.app.state.settings.public_base + "/fhir"
    entries = [
        {
            "fullUrl": f"{base}/Patient/{resource['id']}",
            "resource": resource,
            "search": {
                "mode": "match",
                "score": round(score, 6),
                "extension": [{"url": MATCH_GRADE_URL, "valueCode": grade}],
            },
        }
        for resource, score, grade in found
    ]
    return fhir_response({"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries})


routes = [Route("/fhir/Patient/$match", patient_match, methods=["POST"])]
