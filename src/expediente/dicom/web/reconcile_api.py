"""The reconciliation list: studies that could not be attached to a patient with certainty.

``GET /imaging/reconciliation`` lists the pending ones (what the header says, why it waits, the
candidate records); ``POST /imaging/reconciliation/{study}`` with ``{"patient": "Patient/<id>"}``
attaches one. Both need the right to write ImagingStudy; a caller whose access is limited by
the care relationship sees only the studies their own institution (CLUES) sent. Every listing
and every attachment is in the audit trail.
"""

from __future__ import annotations

import orjson
import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from expediente.api_common import caller_of
from expediente.db.schema import dicom_reconcile, dicom_study
from expediente.fhir.errors import FhirError
from expediente.security.access import Access

RES_TYPE = "ImagingStudy"


def _allowed(request: Request):
    caller = caller_of(request)
    services = request.app.state.services
    grant = services.gate.grant(caller.principal, "update", RES_TYPE, source=caller.source)
    institution = None if grant.rule.unrestricted else (caller.principal.organization or "")
    return caller, services, grant, institution


async def pending(request: Request) -> JSONResponse:
    def run():
        caller, services, grant, institution = _allowed(request)
        query = (
            sa.select(dicom_reconcile, dicom_study)
            .select_from(dicom_reconcile.join(dicom_study, dicom_study.c.study_uid == dicom_reconcile.c.study_uid))
            .where(dicom_reconcile.c.status == "pending")
            .order_by(dicom_reconcile.c.created)
            .limit(500)
        )
        if institution is not None:
            query = query.where(dicom_study.c.institution == institution)
        with services.reader.connect() as conn:
            rows = conn.execute(query).all()
        services.gate.record(grant, Access("search", RES_TYPE), source=caller.source, entities=tuple(f"{RES_TYPE}/{r.study_uid}" for r in rows))
        return [_entry(r) for r in rows]

    return JSONResponse({"pending": await run_in_threadpool(run)})


async def attach(request: Request) -> JSONResponse:
    study_uid = request.path_params["study"]
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise FhirError.of(400, "El cuerpo debe ser JSON: {\"patient\": \"Patient/<id>\"}", "invalid") from None
    ref = body.get("patient") if isinstance(body, dict) else None
    if not isinstance(ref, str) or not ref.startswith("Patient/") or len(ref) <= len("Patient/"):
        raise FhirError.of(400, "Indique el expediente con {\"patient\": \"Patient/<id>\"}", "required")

    def run():
        caller, services, _grant, institution = _allowed(request)
        with services.reader.connect() as conn:
            study = conn.execute(sa.select(dicom_study.c.institution, dicom_study.c.patient_key).where(dicom_study.c.study_uid == study_uid)).first()
        if study is None or (institution is not None and study.institution != institution):
            raise FhirError.of(404, f"No existe el estudio {study_uid[:64]} en la lista de conciliación", "not-found")
        if study.patient_key is not None and study.patient_key != ref.split("/", 1)[1]:
            raise FhirError.of(409, f"El estudio ya está vinculado a Patient/{study.patient_key}", "conflict")
        return services.study_linker.attach(caller, study_uid, ref.split("/", 1)[1])

    return JSONResponse(await run_in_threadpool(run))


def _entry(r) -> dict:
    return {
        "study": r.study_uid,
        "reason": r.reason,
        "candidates": [f"Patient/{c}" for c in orjson.loads(r.candidates or "[]")],
        "since": r.created.isoformat() + "Z",
        "header": {
            "PatientID": r.patient_id,
            "IssuerOfPatientID": r.issuer,
            "PatientName": r.patient_name,
            "PatientBirthDate": r.patient_birth_date,
            "PatientSex": r.patient_sex,
            "StudyDate": r.study_date,
            "AccessionNumber": r.accession_number,
            "StudyDescription": r.study_description,
            "Institution": r.institution,
        },
    }


routes = [
    Route("/imaging/reconciliation", pending, methods=["GET"]),
    Route("/imaging/reconciliation/{study}", attach, methods=["POST"]),
]
