"""STOW-RS (PS3.18 10.5): ``POST /dicomweb/studies[/{study}]`` with a multipart/related body of
application/dicom parts.

The body is read as it arrives; each part goes straight into the ingest pipeline (a temporary
file in the blob store), so an upload is never held in memory. Every part gets its own outcome:
stored (ReferencedSOPSequence, with its RetrieveURL) or refused (FailedSOPSequence, with the
DIMSE status of the refusal as FailureReason and the Spanish reason in TextValue). 200 when all
were stored, 202 when some were refused, 409 when all were. An instance over
``dicom_max_instance_bytes`` (or a body over ``max_body_bytes``) ends the request with 413;
what is being received is discarded, never kept in part.

The caller needs the right to create ImagingStudy; each stored instance is one audit entry.
"""

from __future__ import annotations

import io
import warnings

import orjson
import pydicom
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from expediente.api_common import caller_of
from expediente.dicom.archive import Archive, Origin, Receipt, Refused, Stored
from expediente.dicom.parse import valid_uid
from expediente.dicom.retrieval import study_patients
from expediente.dicom.status import OUT_OF_RESOURCES, SOP_CLASS_NOT_SUPPORTED
from expediente.dicom.web.access import RES_TYPE, imaging_grant
from expediente.dicom.web.multipart import MalformedMultipart, MultipartReader, PartData, PartEnd, PartStart, media_params
from expediente.fhir.errors import FhirError
from expediente.security.access import Access

DICOM_JSON = "application/dicom+json"
_HEAD = 64 * 1024  # kept of each part to name a refused instance


def dicomweb_base(request: Request) -> str:
    return request.app.state.settings.public_base + "/dicomweb"


def checked_uid(value: str, what: str = "UID") -> str:
    if not valid_uid(value):
        raise FhirError.of(400, f"{what} inválido: {value[:64]!r} (solo dígitos y puntos, hasta 64 caracteres)", "invalid")
    return value


class _TooLarge(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Outcome:
    __slots__ = ("stored", "refused", "sop_class", "sop_uid")

    def __init__(self, stored: Stored | None, refused: Refused | None, sop_class: str = "", sop_uid: str = ""):
        self.stored, self.refused, self.sop_class, self.sop_uid = stored, refused, sop_class, sop_uid


class StowSession:
    """One upload's parts, handled in order (called from a worker thread, event batch by batch)."""

    def __init__(self, request: Request, grant, study_uid: str | None):
        services = request.app.state.services
        caller = caller_of(request)
        self._archive: Archive = services.archive
        self._gate = services.gate
        self._grant = grant
        self._source = caller.source
        self._origin = Origin("stow", subject=caller.principal.subject, institution=caller.principal.organization)
        self._study = study_uid
        self._receipt: Receipt | None = None
        self._refused: Refused | None = None
        self._head = bytearray()
        self._patients: dict[str, str | None] = {}
        self._unaudited: list[tuple[Access, tuple[str, ...]]] = []
        self.outcomes: list[_Outcome] = []

    def handle(self, events) -> None:
        for event in events:
            if isinstance(event, PartStart):
                self._start(event)
            elif isinstance(event, PartData):
                self._data(event.data)
            elif isinstance(event, PartEnd):
                self._end()

    def _start(self, event: PartStart) -> None:
        self._head.clear()
        self._refused = None
        media = media_params(event.content_type)[0]
        if media not in ("", "application/dicom"):
            self._refused = Refused(SOP_CLASS_NOT_SUPPORTED, f"solo se aceptan partes application/dicom, no {media[:60]}")
            return
        self._receipt = self._archive.begin_file(origin=self._origin, study_uid=self._study)

    def _data(self, data: bytes) -> None:
        if len(self._head) < _HEAD:
            self._head += data[: _HEAD - len(self._head)]
        if self._receipt is None:
            return
        try:
            self._receipt.write(data)
        except Refused as refused:  # the receipt aborted itself
            self._receipt = None
            if refused.status == OUT_OF_RESOURCES:
                raise _TooLarge(refused.reason) from None
            self._refused = refused

    def _end(self) -> None:
        receipt, self._receipt = self._receipt, None
        if receipt is not None:
            try:
                stored = receipt.finish()
            except Refused as refused:
                self._refused = refused
            else:
                self._audit(stored)
                self.outcomes.append(_Outcome(stored, None, stored.sop_class_uid, stored.sop_instance_uid))
                return
        sop_class, sop_uid = _uids_of(bytes(self._head))
        self.outcomes.append(_Outcome(None, self._refused, sop_class, sop_uid))

    def _audit(self, stored: Stored) -> None:
        study = stored.study_uid
        if study not in self._patients:
            self._patients[study] = study_patients(self._archive, [study]).get(study)
        access = Access("create", RES_TYPE, study, self._patients[study])
        self._unaudited.append((access, (f"{RES_TYPE}/{study}",)))

    def record_audit(self) -> None:
        """One entry per stored instance, committed together before the request is answered
        (one commit per request instead of one per instance)."""
        pending, self._unaudited = self._unaudited, []
        self._gate.record_all(self._grant, pending, source=self._source)

    def abort(self) -> None:
        if self._receipt is not None:
            self._receipt.abort()
            self._receipt = None
        self.record_audit()  # what was stored before the failure is in the trail all the same


def _uids_of(head: bytes) -> tuple[str, str]:
    """The SOP Class and Instance UIDs of a refused part, when its header says them validly."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(head), stop_before_pixels=True, force=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
        values = (str(ds.get("SOPClassUID", "") or ""), str(ds.get("SOPInstanceUID", "") or ""))
    except Exception:  # noqa: BLE001 - garbage: the part is refused without its UIDs
        return "", ""
    return tuple(v if valid_uid(v) else "" for v in values)  # type: ignore[return-value]


def _response_body(outcomes: list[_Outcome], base: str, study_uid: str | None) -> dict:
    doc: dict = {}
    if study_uid:
        doc["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{study_uid}"]}
    stored = [o for o in outcomes if o.stored is not None]
    failed = [o for o in outcomes if o.stored is None]
    if stored:
        doc["00081199"] = {"vr": "SQ", "Value": [_referenced(o.stored, base) for o in stored]}
    if failed:
        doc["00081198"] = {"vr": "SQ", "Value": [_failed(o) for o in failed]}
    return doc


def _referenced(stored: Stored, base: str) -> dict:
    url = f"{base}/studies/{stored.study_uid}/series/{stored.series_uid}/instances/{stored.sop_instance_uid}"
    return {
        "00081150": {"vr": "UI", "Value": [stored.sop_class_uid]},
        "00081155": {"vr": "UI", "Value": [stored.sop_instance_uid]},
        "00081190": {"vr": "UR", "Value": [url]},
    }


def _failed(outcome: _Outcome) -> dict:
    refused = outcome.refused or Refused(0xC000, "la parte no contiene una instancia")
    item: dict = {
        "00081150": {"vr": "UI", **({"Value": [outcome.sop_class]} if outcome.sop_class else {})},
        "00081155": {"vr": "UI", **({"Value": [outcome.sop_uid]} if outcome.sop_uid else {})},
        "00081197": {"vr": "US", "Value": [refused.status]},
        "0040A160": {"vr": "UT", "Value": [refused.reason]},
    }
    return item


async def store(request: Request) -> Response:
    study_uid = request.path_params.get("study")
    if study_uid is not None:
        checked_uid(study_uid, "StudyInstanceUID")
    media, params = media_params(request.headers.get("content-type", ""))
    part_type = params.get("type", "").lower()
    if media != "multipart/related" or part_type not in ("", "application/dicom"):
        raise FhirError.of(
            415,
            'STOW-RS espera Content-Type: multipart/related; type="application/dicom"; boundary=... '
            f"(recibido: {(media or 'ninguno')[:60]}{'; type=' + part_type[:60] if part_type else ''})",
            "not-supported",
        )
    try:
        reader = MultipartReader(params.get("boundary", ""))
    except MalformedMultipart as exc:
        raise FhirError.of(400, str(exc), "invalid") from None
    grant, _scope = await run_in_threadpool(imaging_grant, request, "create")
    session = StowSession(request, grant, study_uid)
    try:
        async for chunk in request.stream():
            if events := reader.feed(chunk):
                await run_in_threadpool(session.handle, events)
        reader.close()
        await run_in_threadpool(session.record_audit)
    except MalformedMultipart as exc:
        await run_in_threadpool(session.abort)
        raise FhirError.of(400, f"Cuerpo multipart inválido: {exc}", "invalid") from None
    except _TooLarge as exc:
        await run_in_threadpool(session.abort)
        raise FhirError.of(413, f"Instancia demasiado grande: {exc.reason}", "too-long") from None
    except BaseException:
        await run_in_threadpool(session.abort)
        raise
    outcomes = session.outcomes
    if not outcomes:
        raise FhirError.of(400, "La petición no contiene ninguna instancia DICOM", "required")
    stored = sum(1 for o in outcomes if o.stored is not None)
    status = 200 if stored == len(outcomes) else 202 if stored else 409
    body = orjson.dumps(_response_body(outcomes, dicomweb_base(request), study_uid))
    return Response(body, status_code=status, media_type=DICOM_JSON)


routes = [
    Route("/dicomweb/studies", store, methods=["POST"]),
    Route("/dicomweb/studies/{study}", store, methods=["POST"]),
]
