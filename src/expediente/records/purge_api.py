"""HTTP: POST /fhir/Patient/{id}/$purge, the physical removal of a record after its retention
(records/retention.py; the system role only, decided by the access policy)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from expediente.api_common import caller_of, fhir_response
from expediente.fhir.store import check_id
from expediente.records import retention


def result_parameters(result: retention.PurgeResult) -> dict:
    params = [{"name": "patient", "valueString": f"Patient/{result.patient_id}"}]
    if result.last_act is not None:
        params.append({"name": "lastMedicalAct", "valueDate": result.last_act.isoformat()})
    params += [{"name": "removed", "part": [{"name": t, "valueInteger": n}]} for t, n in sorted(result.removed.items()) if n]
    return {"resourceType": "Parameters", "parameter": params}


async def purge(request: Request) -> Response:
    patient_id = request.path_params["id"]
    check_id(patient_id)
    services = request.app.state.services
    result = await run_in_threadpool(retention.purge, services.store, caller_of(request), patient_id)
    return fhir_response(result_parameters(result))


routes = [Route("/fhir/Patient/{id}/$purge", purge, methods=["POST"])]
