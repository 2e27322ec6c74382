"""DICOMweb rendered resources and thumbnails (PS3.18 10.4 and 10.7), for browsers and slow
links: a JPEG or PNG instead of the DICOM file.

    /dicomweb/studies/{s}[/series/{se}[/instances/{i}[/frames/{f}]]]/rendered
    /dicomweb/studies/{s}[/series/{se}[/instances/{i}[/frames/{f}]]]/thumbnail

Query: ``window=center,width[,linear|linear-exact|sigmoid]``, ``viewport=width,height``,
``quality=1..100``; media type by Accept (or ``accept=``): image/jpeg (default) or image/png.
A study or series rendered is multipart/related, one image per instance (its first frame);
a frame list is one image per frame. Thumbnails are the representative image (a series' middle
instance, a study's first series), kept so a prior's preview is served without decoding.

Every request needs the caller's right to read ImagingStudy; what they may not see, and what
does not exist, are the same audited 404.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from expediente.db.schema import dicom_study
from expediente.dicom.archive import InstanceRef
from expediente.dicom.render import MEDIA_TYPES, THUMBNAIL_SIZE, RenderError, render
from expediente.dicom.thumbnails import Thumbnails, frame_source
from expediente.dicom.web.access import imaging_grant, record_access
from expediente.fhir.errors import FhirError

FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}
MAX_VIEWPORT = 4096
MAX_THUMBNAIL = 1024


# ---------------------------------------------------------------------- parameters


def _media_type(request: Request) -> str:
    """The image type the caller accepts (PS3.18 8.3.3.1: the ``accept`` query parameter wins)."""
    raw = request.query_params.get("accept") or request.headers.get("accept") or "image/jpeg"
    ranked = []
    for part in raw.split(","):
        media, *params = [p.strip() for p in part.split(";")]
        media, q = media.lower(), 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
            elif p.lower().startswith("type=") and media == "multipart/related":
                media = p[5:].strip('"').lower()  # multipart/related; type="image/jpeg"
        if media == "multipart/related":
            media = "image/jpeg"
        ranked.append((q, media))
    for q, media in sorted(ranked, key=lambda r: -r[0]):
        if q <= 0:
            continue
        if media in MEDIA_TYPES:
            return media
        if media in ("*/*", "image/*"):
            return "image/jpeg"
    raise FhirError.of(406, f"Solo se entregan imágenes {' o '.join(MEDIA_TYPES)}; se pidió {raw[:80]}", "not-supported")


def _numbers(text: str, name: str, count: int) -> list[float]:
    parts = text.split(",")
    try:
        values = [float(p) for p in parts[:count]]
    except ValueError:
        raise FhirError.of(400, f"El parámetro {name} debe tener {count} números separados por comas", "invalid", name) from None
    if len(values) != count or any(v != v or v in (float("inf"), float("-inf")) for v in values):
        raise FhirError.of(400, f"El parámetro {name} debe tener {count} números separados por comas", "invalid", name)
    return values


def _window(request: Request) -> tuple | None:
    raw = request.query_params.get("window")
    if raw is None:
        return None
    parts = raw.split(",")
    if len(parts) not in (2, 3):
        raise FhirError.of(400, "window debe ser centro,ancho[,linear|linear-exact|sigmoid]", "invalid", "window")
    center, width = _numbers(",".join(parts[:2]), "window", 2)
    function = FUNCTIONS.get(parts[2].strip().lower()) if len(parts) == 3 else "LINEAR"
    if function is None:
        raise FhirError.of(400, f"Función de ventana desconocida: {parts[2][:32]}; use linear, linear-exact o sigmoid", "invalid", "window")
    if width <= 0 or (function == "LINEAR" and width < 1):
        raise FhirError.of(400, "El ancho de la ventana debe ser positivo (al menos 1 con la función lineal)", "invalid", "window")
    return center, width, function


def _viewport(request: Request, limit: int = MAX_VIEWPORT) -> tuple[int, int] | None:
    raw = request.query_params.get("viewport")
    if raw is None:
        return None
    if len(raw.split(",")) != 2:
        raise FhirError.of(400, "viewport debe ser ancho,alto en píxeles (sin recorte)", "invalid", "viewport")
    width, height = _numbers(raw, "viewport", 2)
    if width != int(width) or height != int(height) or not (1 <= width <= limit and 1 <= height <= limit):
        raise FhirError.of(400, f"viewport debe ser ancho,alto enteros entre 1 y {limit}", "invalid", "viewport")
    return int(width), int(height)


def _quality(request: Request) -> int:
    raw = request.query_params.get("quality", "90")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise FhirError.of(400, "quality debe ser un entero entre 1 y 100", "invalid", "quality")
    return int(raw)


def _frames(text: str) -> list[int]:
    try:
        frames = [int(f) for f in text.split(",")]
    except ValueError:
        frames = []
    if not frames or any(f < 1 for f in frames) or len(frames) > 1000:
        raise FhirError.of(400, "La lista de cuadros debe ser números enteros positivos separados por comas", "invalid", "frames")
    return frames


# ---------------------------------------------------------------------- access


def _visible(request: Request) -> list[InstanceRef]:
    """The instances the path names that the caller may see; audited; 404 when none."""
    params = request.path_params
    study_uid = params["study"]
    services = request.app.state.services
    grant, scope = imaging_grant(request, "read")
    refs = services.archive.instances(study_uid=study_uid, series_uid=params.get("series"), sop_uid=params.get("instance"), scope=scope)
    if not refs:
        record_access(request, grant, "read", [(study_uid, None)], found=False)
        raise FhirError.of(404, "No existe el estudio, la serie o la instancia pedida", "not-found")  # the gate raises first
    with services.reader.connect() as conn:
        patient_key = conn.execute(sa.select(dicom_study.c.patient_key).where(dicom_study.c.study_uid == study_uid)).scalar()
    record_access(request, grant, "read", [(study_uid, patient_key)])
    return refs


def _failure(exc: RenderError) -> FhirError:
    code = {404: "not-found", 406: "not-supported"}.get(exc.status, "invalid" if exc.status == 400 else "processing")
    return FhirError.of(exc.status, exc.reason, code)


def _multipart(parts: list[tuple[bytes, str]], media_type: str) -> Response:
    boundary = secrets.token_hex(16)
    body = bytearray()
    for data, location in parts:
        body += f"--{boundary}\r\nContent-Type: {media_type}\r\nContent-Location: {location}\r\n\r\n".encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return Response(bytes(body), headers={"Content-Type": f'multipart/related; type="{media_type}"; boundary={boundary}'})


def _location(request: Request, ref: InstanceRef, frame: int | None = None) -> str:
    path = f"/dicomweb/studies/{ref.study_uid}/series/{ref.series_uid}/instances/{ref.sop_instance_uid}"
    return path + (f"/frames/{frame}" if frame else "") + "/rendered"


# ---------------------------------------------------------------------- routes


async def rendered(request: Request) -> Response:
    media_type = _media_type(request)
    window, viewport, quality = _window(request), _viewport(request), _quality(request)
    frames = _frames(request.path_params["frames"]) if "frames" in request.path_params else None

    def run() -> Response:
        refs = _visible(request)
        archive = request.app.state.services.archive
        try:
            if frames is not None:
                images = [(render(*frame_source(archive, refs[0], f), media_type, window, viewport, quality), _location(request, refs[0], f)) for f in frames]
            elif "instance" in request.path_params:
                return Response(render(*frame_source(archive, refs[0], 1), media_type, window, viewport, quality), media_type=media_type)
            else:
                images = [
                    (render(archive.read(ref), 1, media_type, window, viewport, quality), _location(request, ref))
                    for ref in refs
                    if ref.rows is not None and ref.pixel_offset is not None
                ]
                if not images:
                    raise FhirError.of(400, "El estudio o la serie no contiene imágenes que mostrar", "invalid")
        except RenderError as exc:
            raise _failure(exc) from None
        if len(images) == 1 and frames is not None:
            return Response(images[0][0], media_type=media_type)
        return _multipart(images, media_type)

    return await run_in_threadpool(run)


async def thumbnail(request: Request) -> Response:
    media_type = _media_type(request)
    viewport = _viewport(request, MAX_THUMBNAIL)
    size = min(viewport) if viewport else THUMBNAIL_SIZE
    frames = _frames(request.path_params["frames"]) if "frames" in request.path_params else None

    def run() -> Response:
        refs = _visible(request)
        thumbnails = Thumbnails(request.app.state.services.archive)
        ref = refs[0] if "instance" in request.path_params else thumbnails.representative(refs, request.path_params["study"])
        if ref is None:
            raise FhirError.of(400, "El estudio o la serie no contiene imágenes que mostrar", "invalid")
        try:
            data = thumbnails.get(ref, frame=frames[0] if frames else None, size=size, media_type=media_type)
        except RenderError as exc:
            raise _failure(exc) from None
        return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})

    return await run_in_threadpool(run)


_STUDY = "/dicomweb/studies/{study}"
_SERIES = _STUDY + "/series/{series}"
_INSTANCE = _SERIES + "/instances/{instance}"
_FRAMES = _INSTANCE + "/frames/{frames}"

routes = [
    *(Route(path + "/rendered", rendered, methods=["GET"]) for path in (_STUDY, _SERIES, _INSTANCE, _FRAMES)),
    *(Route(path + "/thumbnail", thumbnail, methods=["GET"]) for path in (_STUDY, _SERIES, _INSTANCE, _FRAMES)),
]
