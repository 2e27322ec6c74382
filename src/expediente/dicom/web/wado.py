"""WADO-RS (PS3.18 10.4): studies, series and instances (multipart/related application/dicom),
their metadata (DICOM JSON), bulk data and frames.

Instances are streamed from the archive in chunks, exactly as received, whenever the Accept
header allows the stored transfer syntax; otherwise a lossless transcoding is made if the
transcoder can (``dicom/transcode.py``), else 406. A single instance asked for as
``application/dicom`` is one body and honours Range. Every retrieval is in the audit trail with
its study; a study the caller may not see answers exactly like a missing one (404).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from expediente.dicom import retrieval
from expediente.dicom.archive import InstanceRef, Scope
from expediente.dicom.retrieval import FrameError
from expediente.dicom.web.access import imaging_grant, record_access_pending
from expediente.dicom.web.multipart import MultipartWriter, media_params, split_list
from expediente.dicom.web.negotiate import NATIVE, frame_form, instance_form, not_acceptable, parse_accept
from expediente.dicom.web.stow import DICOM_JSON, checked_uid, dicomweb_base
from expediente.fhir.errors import FhirError

T = TypeVar("T")

CHUNK = 1024 * 1024
PIXEL_DATA = 0x7FE00010


# ---------------------------------------------------------------------------------- codecs


def _transcoder():
    try:
        from expediente.dicom import transcode
    except ImportError:  # the transcoder is optional: without it only stored syntaxes are served
        return None
    return transcode


def can_transcode(source: str, target: str) -> bool:
    module = _transcoder()
    return bool(module is not None and module.can_transcode(source, target))


def _transcode_error(module, exc: Exception) -> FhirError | None:
    error = getattr(module, "TranscodeError", None)
    if error is not None and isinstance(exc, error):
        return FhirError.of(406, f"No se pudo convertir la instancia: {exc}", "not-supported")
    return None


def transcoded(archive, ref: InstanceRef, target: str) -> bytes:
    module = _transcoder()
    if module is None:
        raise not_acceptable("la instancia")
    data = archive.read(ref)
    try:
        return module.transcode(data, target)
    except Exception as exc:
        if (error := _transcode_error(module, exc)) is not None:
            raise error from None
        raise


# ---------------------------------------------------------------------------------- access


async def locate(request: Request, study: str, series: str | None = None, sop: str | None = None) -> tuple[list[InstanceRef], Scope]:
    """The instances asked for that the caller may see, the retrieval audited; 404 (audited)
    when there are none."""
    return await run_in_threadpool(_located, request, (study, series, sop), None)


async def locate_and_read(request: Request, study: str, series: str | None, sop: str | None, read: Callable[[list[InstanceRef]], T]) -> T:
    """``read`` of the instances asked for, done while the retrieval's audit entry commits;
    returned only once the entry is stored (fail closed: 503 otherwise, and nothing read is
    answered). One thread hop for the whole request: the path of a viewer's first frame."""
    return await run_in_threadpool(_located, request, (study, series, sop), read)


def _located(request: Request, uids: tuple[str, str | None, str | None], read):
    study, series, sop = uids
    checked_uid(study, "StudyInstanceUID")
    if series is not None:
        checked_uid(series, "SeriesInstanceUID")
    if sop is not None:
        checked_uid(sop, "SOPInstanceUID")
    archive = request.app.state.services.archive
    grant, scope = imaging_grant(request, "read")
    refs, patient = archive.lookup(study_uid=study, series_uid=series, sop_uid=sop, scope=scope)
    audited = record_access_pending(request, grant, "read", study, patient, found=bool(refs))
    if not refs:  # the gate raises for a hidden study; a missing series or instance too
        audited()
        raise FhirError.of(404, "No existe la serie o instancia pedida, o no tiene acceso a ella", "not-found")
    try:
        result = (refs, scope) if read is None else read(refs)
    finally:
        audited()  # also when the read failed: the attempt is on record before any answer
    return result


def _params(request: Request) -> tuple[str, str | None, str | None]:
    p = request.path_params
    return p["study"], p.get("series"), p.get("instance")


# ---------------------------------------------------------------------------------- instances


async def retrieve(request: Request) -> Response:
    study, series, sop = _params(request)
    refs, _ = await locate(request, study, series, sop)
    wanted = parse_accept(request.headers.get("accept"))
    plans = []
    for ref in refs:
        target, single = instance_form(wanted, ref.transfer_syntax, can_transcode, single_allowed=sop is not None)
        plans.append((ref, target))
    archive = request.app.state.services.archive
    if sop is not None and single:
        return await _single(request, archive, refs[0], plans[0][1])
    writer = MultipartWriter("application/dicom")
    syntaxes = {target or ref.transfer_syntax for ref, target in plans}
    content_type = writer.content_type(transfer_syntax=next(iter(syntaxes)) if len(syntaxes) == 1 else "")
    if len(plans) == 1 and plans[0][1] is not None:  # one transcoding: fail before answering
        data = await run_in_threadpool(transcoded, archive, plans[0][0], plans[0][1])
        body = writer.part_header(f"application/dicom; transfer-syntax={plans[0][1]}") + data + writer.end()
        return Response(body, headers={"content-type": content_type})
    return StreamingResponse(_stream(archive, plans, writer), headers={"content-type": content_type})


async def _stream(archive, plans, writer: MultipartWriter):
    for ref, target in plans:
        yield writer.part_header(f"application/dicom; transfer-syntax={target or ref.transfer_syntax}")
        if target is None:
            async for chunk in _chunks(archive, ref, 0, ref.size):
                yield chunk
        else:
            yield await run_in_threadpool(transcoded, archive, ref, target)
    yield writer.end()


async def _chunks(archive, ref: InstanceRef, start: int, end: int):
    at = start
    while at < end:
        stop = min(at + CHUNK, end)
        yield await run_in_threadpool(archive.read, ref, at, stop)
        at = stop


async def _single(request: Request, archive, ref: InstanceRef, target: str | None) -> Response:
    if target is not None:
        data = await run_in_threadpool(transcoded, archive, ref, target)
        return Response(data, media_type=f"application/dicom; transfer-syntax={target}")
    media = f"application/dicom; transfer-syntax={ref.transfer_syntax}"
    span = _range(request.headers.get("range"), ref.size)
    if span is None:
        headers = {"accept-ranges": "bytes", "content-length": str(ref.size), "content-type": media}
        return StreamingResponse(_chunks(archive, ref, 0, ref.size), headers=headers)
    start, end = span
    headers = {
        "accept-ranges": "bytes",
        "content-range": f"bytes {start}-{end - 1}/{ref.size}",
        "content-length": str(end - start),
        "content-type": media,
    }
    return StreamingResponse(_chunks(archive, ref, start, end), status_code=206, headers=headers)


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """One byte range [start, end) of ``Range: bytes=a-b | a- | -n``; None: the whole body."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # several ranges or other units: the whole instance (RFC 9110 allows it)
    first, sep, last = spec.strip().partition("-")
    try:
        if not sep:
            raise ValueError
        if first == "":
            start, end = max(0, size - int(last)), size
        else:
            start = int(first)
            end = min(int(last) + 1, size) if last else size
    except ValueError:
        return None
    if start >= size or start >= end or start < 0:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> FhirError:
    error = FhirError.of(416, f"El rango pedido está fuera de la instancia ({size} bytes)", "invalid")
    error.headers["Content-Range"] = f"bytes */{size}"
    return error


# ---------------------------------------------------------------------------------- metadata


async def retrieve_metadata(request: Request) -> Response:
    accept = request.headers.get("accept")
    if accept and not any(media_params(item)[0] in ("application/dicom+json", "application/json", "*/*", "application/*") for item in split_list(accept)):
        raise not_acceptable("los metadatos (solo application/dicom+json)")
    study, series, sop = _params(request)
    _, scope = await locate(request, study, series, sop)
    archive = request.app.state.services.archive
    body = await run_in_threadpool(
        lambda: retrieval.metadata(archive, dicomweb_base(request), study_uid=study, series_uid=series, sop_uid=sop, scope=scope)
    )
    return Response(body, media_type=DICOM_JSON)


# ---------------------------------------------------------------------------------- bulk data


async def retrieve_bulkdata(request: Request) -> Response:
    study, series, sop = _params(request)
    raw_tag = request.path_params["tag"]
    try:
        if len(raw_tag) != 8:
            raise ValueError
        tag = int(raw_tag, 16)
    except ValueError:
        raise FhirError.of(400, f"Etiqueta de datos masivos inválida: {raw_tag[:16]!r} (8 dígitos hexadecimales)", "invalid") from None
    refs, _ = await locate(request, study, series, sop)
    ref = refs[0]
    archive = request.app.state.services.archive
    single = _wants_single_octets(request.headers.get("accept"))
    if tag == PIXEL_DATA:
        if ref.pixel_offset is None:
            raise FhirError.of(404, "La instancia no tiene datos de píxeles (Pixel Data)", "not-found")
        if ref.pixel_length == -1:
            return await _frames_response(archive, ref, None, None, None)
        start, end = ref.pixel_offset, ref.pixel_offset + ref.pixel_length
        if single:
            return StreamingResponse(_chunks(archive, ref, start, end), media_type="application/octet-stream")
        writer = MultipartWriter("application/octet-stream")

        async def body():
            yield writer.part_header(f"application/octet-stream; transfer-syntax={ref.transfer_syntax}")
            async for chunk in _chunks(archive, ref, start, end):
                yield chunk
            yield writer.end()

        return StreamingResponse(body(), headers={"content-type": writer.content_type()})
    try:
        value = await run_in_threadpool(retrieval.bulk_value, archive, ref, tag)
    except FrameError as exc:
        raise FhirError.of(400, f"No se pueden entregar los datos masivos: {exc}", "processing") from None
    if value is None:
        raise FhirError.of(404, f"La instancia no tiene el elemento ({raw_tag[:4]},{raw_tag[4:]}) como datos masivos", "not-found")
    if single:
        return Response(value, media_type="application/octet-stream")
    writer = MultipartWriter("application/octet-stream")
    return Response(writer.part_header() + value + writer.end(), headers={"content-type": writer.content_type()})


def _wants_single_octets(accept: str | None) -> bool:
    items = [media_params(i)[0] for i in split_list(accept or "")]
    return bool(items) and items[0] == "application/octet-stream"


# ---------------------------------------------------------------------------------- frames


async def retrieve_frames(request: Request) -> Response:
    study, series, sop = _params(request)
    numbers = _frame_numbers(request.path_params["frames"])
    archive = request.app.state.services.archive
    accept = parse_accept(request.headers.get("accept"))

    def read(refs: list[InstanceRef]):
        ref = refs[0]
        target, media = frame_form(accept, ref.transfer_syntax, can_transcode)
        return ref, target, media, _frame_parts(archive, ref, numbers, target)

    ref, target, media, parts = await locate_and_read(request, study, series, sop, read)
    return _frames_answer(ref, parts, target, media)


def _frame_numbers(text: str) -> list[int]:
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        numbers = []
    if not numbers or any(n < 1 for n in numbers) or len(numbers) > 10_000:
        raise FhirError.of(400, f"Lista de cuadros inválida: {text[:40]!r} (números desde 1, separados por comas)", "invalid")
    return numbers


async def _frames_response(archive, ref: InstanceRef, numbers: list[int] | None, target: str | None, media: str | None) -> Response:
    """The frames (all when ``numbers`` is None) as stored, or transcoded to ``target``."""
    parts = await run_in_threadpool(_frame_parts, archive, ref, numbers, target)
    return _frames_answer(ref, parts, target, media)


def _frame_parts(archive, ref: InstanceRef, numbers: list[int] | None, target: str | None) -> list[bytes]:
    if target is None:
        try:
            spans = retrieval.frames(archive, ref)
        except FrameError as exc:
            raise FhirError.of(400 if ref.pixel_offset is not None else 404, f"No se pueden entregar los cuadros: {exc}", "processing") from None
        wanted = numbers or list(range(1, len(spans) + 1))
        if bad := [n for n in wanted if n > len(spans)]:
            raise FhirError.of(400, f"La instancia tiene {len(spans)} cuadro(s); no existe el cuadro {bad[0]}", "invalid")
        return [retrieval.read_frame(archive, ref, spans[n - 1]) for n in wanted]
    module = _transcoder()
    if module is None or not hasattr(module, "transcode_frames"):
        raise not_acceptable("los cuadros")
    try:
        return module.transcode_frames(archive.read(ref), target, numbers)
    except Exception as exc:
        if (error := _transcode_error(module, exc)) is not None:
            raise error from None
        raise


def _frames_answer(ref: InstanceRef, parts: list[bytes], target: str | None, media: str | None) -> Response:
    if media is None:
        media = "application/octet-stream" if ref.transfer_syntax in NATIVE else frame_form(parse_accept(None), ref.transfer_syntax, can_transcode)[1]
    syntax = target or ref.transfer_syntax
    if syntax in NATIVE and target is None and ref.transfer_syntax == "1.2.840.10008.1.2":
        syntax = "1.2.840.10008.1.2.1"  # implicit VR: the same pixel bytes as explicit VR little endian
    writer = MultipartWriter(media)
    part_type = f"{media}; transfer-syntax={syntax}"
    pieces = []
    for part in parts:  # joined once: a frame is copied into the body a single time
        pieces += (writer.part_header(part_type), part)
    body = b"".join((*pieces, writer.end()))
    return Response(body, headers={"content-type": writer.content_type(transfer_syntax=syntax)})


_BASE = "/dicomweb/studies/{study}"
_SERIES = _BASE + "/series/{series}"
_INSTANCE = _SERIES + "/instances/{instance}"

routes = [
    Route(_BASE, retrieve, methods=["GET"]),
    Route(_BASE + "/metadata", retrieve_metadata, methods=["GET"]),
    Route(_SERIES, retrieve, methods=["GET"]),
    Route(_SERIES + "/metadata", retrieve_metadata, methods=["GET"]),
    Route(_INSTANCE, retrieve, methods=["GET"]),
    Route(_INSTANCE + "/metadata", retrieve_metadata, methods=["GET"]),
    Route(_INSTANCE + "/bulkdata/{tag}", retrieve_bulkdata, methods=["GET"]),
    Route(_INSTANCE + "/frames/{frames}", retrieve_frames, methods=["GET"]),
]
