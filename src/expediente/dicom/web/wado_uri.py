"""WADO-URI (PS3.18 9) for older viewers: ``GET /wado?requestType=WADO&studyUID=&seriesUID=
&objectUID=&contentType=``.

``application/dicom`` answers the stored bytes (or a lossless transcoding when
``transferSyntax`` asks for another syntax); an image type (the default, image/jpeg) answers a
rendered frame from ``dicom/render.py``. Same access rules and audit as WADO-RS.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from expediente.dicom.web import wado
from expediente.dicom.web.multipart import media_params, split_list
from expediente.dicom.web.negotiate import not_acceptable
from expediente.fhir.errors import FhirError

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif")


def _renderer():
    try:
        from expediente.dicom.render import render
    except ImportError:  # rendering is optional: without it only application/dicom is served
        return None
    return render


def _required(request: Request, name: str) -> str:
    value = request.query_params.get(name, "")
    if not value:
        raise FhirError.of(400, f"WADO-URI requiere el parámetro {name}", "required")
    return value


def _number(request: Request, name: str) -> float | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    try:
        return float(value)
    except ValueError:
        raise FhirError.of(400, f"El parámetro {name} debe ser numérico: {value[:20]!r}", "invalid") from None


async def wado_uri(request: Request) -> Response:
    if request.query_params.get("requestType") != "WADO":
        raise FhirError.of(400, "WADO-URI requiere requestType=WADO", "required")
    study, series, sop = (_required(request, n) for n in ("studyUID", "seriesUID", "objectUID"))
    asked = [media_params(t)[0] for t in split_list(request.query_params.get("contentType", "image/jpeg"))]
    refs, _ = await wado.locate(request, study, series, sop)
    ref = refs[0]
    archive = request.app.state.services.archive
    for media in asked:
        if media in ("application/dicom", "*/*") or (media == "image/*" and ref.pixel_offset is None):
            syntax = request.query_params.get("transferSyntax") or ref.transfer_syntax
            if syntax == ref.transfer_syntax:
                headers = {"content-length": str(ref.size), "content-type": "application/dicom"}
                return StreamingResponse(wado._chunks(archive, ref, 0, ref.size), headers=headers)
            if wado.can_transcode(ref.transfer_syntax, syntax):
                data = await run_in_threadpool(wado.transcoded, archive, ref, syntax)
                return Response(data, media_type="application/dicom")
            continue
        image = "image/jpeg" if media == "image/*" else media
        if image in IMAGE_TYPES and (render := _renderer()) is not None and ref.pixel_offset is not None:
            return await _rendered(request, archive, ref, render, image)
    raise not_acceptable(f"el objeto como {', '.join(asked)[:80]}")


async def _rendered(request: Request, archive, ref, render, media: str) -> Response:
    frame = int(_number(request, "frameNumber") or 1)
    center, width = _number(request, "windowCenter"), _number(request, "windowWidth")
    rows, columns = _number(request, "rows"), _number(request, "columns")
    window = (center, width) if center is not None and width is not None else None
    # rows/columns bound the answer: the image is fitted into that viewport (width, height).
    size = (int(columns or rows), int(rows or columns)) if rows or columns else None

    def run() -> bytes:
        from expediente.dicom.render import RenderError

        try:
            return render(archive.read(ref), frame=frame, content_type=media, window=window, size=size)
        except RenderError as exc:
            raise FhirError.of(exc.status, exc.reason, "processing") from None

    return Response(await run_in_threadpool(run), media_type=media)


routes = [Route("/wado", wado_uri, methods=["GET"])]
