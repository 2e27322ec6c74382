"""The ASGI application: wires settings, storage, security and the API routes together."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from expediente.api_common import error_response, outcome_response
from expediente.config import Settings, load_settings
from expediente.db.engine import make_engine, make_read_engine
from expediente.fhir import api as fhir_api
from expediente.fhir import profile_api, signature_api, terminology_api
from expediente.fhir.errors import FhirError
from expediente.db.statistics import StatisticsRefresher
from expediente.blobs import make_blob_store
from expediente.dicom.archive import Archive
from expediente.dicom.follower import StudyFollower
from expediente.dicom.metadata import fill_studies
from expediente.dicom.priors import Priors
from expediente.dicom.study_link import StudyLinker
from expediente.dicom.thumbnails import Thumbnails
from expediente.dicom.web import qido, reconcile_api, rendered, stow, wado, wado_uri
from expediente.fhir.store import ResourceStore
from expediente.mpi import link_api
from expediente.mpi.linking import Linker
from expediente.mpi import match_api
from expediente.ops import metrics
from expediente.records import purge_api
from expediente.ops.middleware import Authenticate, BodyLimit, Observe
from expediente.ops.protection import AddressRateLimit, Cors, PrincipalRateLimit, RateLimits, SecurityHeaders, cors_origins, uses_https
from expediente.security import api as auth_api
from expediente.security import audit_api
from expediente.security.access import AccessGate
from expediente.security.audit import AuditWriter
from expediente.security.tokens import TokenService

log = logging.getLogger("expediente")


@dataclass
class Services:
    """Everything a request needs, built once per process."""

    settings: Settings
    engine: sa.Engine
    reader: sa.Engine
    audit: AuditWriter
    gate: AccessGate
    store: ResourceStore
    tokens: TokenService
    linker: Linker
    archive: Archive
    # What follows a study's arrival (metadata, its ImagingStudy): `follower.catch_up()` runs
    # it once; `expediente serve` runs it in a thread of its main process.
    follower: StudyFollower
    study_linker: StudyLinker
    priors: Priors
    statistics: StatisticsRefresher | None = None

    @classmethod
    def build(cls, settings: Settings) -> Services:
        engine = make_engine(settings)
        reader = make_read_engine(settings, engine)
        audit = AuditWriter(engine)
        gate = AccessGate(audit)
        store = ResourceStore(engine, gate, reader, profiles=settings.profiles)
        # The master patient index links each new registration to the person's other records.
        linker = Linker(store, base=settings.public_base + "/fhir")
        if settings.mpi_autolink:
            store.patient_listeners.append(linker.patients_written)
        archive = Archive(engine, make_blob_store(settings), settings, reader)
        study_linker = StudyLinker(engine, archive.blobs, store, settings.public_base + "/dicomweb")
        priors = Priors(engine, archive.blobs)
        priors.preparers.append(Thumbnails(archive).prepare)  # the priors' previews
        study_linker.attached_listeners.append(priors.study_attached)
        follower = StudyFollower(
            engine,
            [lambda uids: fill_studies(engine, archive.blobs, uids), study_linker],
            every_look=[priors.new_orders],
            settle=settings.dicom_settle_seconds,
        )
        return cls(
            settings=settings,
            engine=engine,
            reader=reader,
            audit=audit,
            gate=gate,
            store=store,
            tokens=TokenService.from_settings(settings),
            linker=linker,
            archive=archive,
            follower=follower,
            study_linker=study_linker,
            priors=priors,
            statistics=StatisticsRefresher(engine) if settings.is_sqlite else None,
        )

    def close(self) -> None:
        self.follower.close()
        if self.statistics is not None:
            self.statistics.close()
        self.store.close()
        self.audit.close()
        self.archive.close()
        self.engine.dispose()
        self.reader.dispose()


async def health(request: Request) -> Response:
    engine = request.app.state.services.reader

    def ping() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    try:
        await run_in_threadpool(ping)
    except sa.exc.SQLAlchemyError:
        return JSONResponse({"status": "unavailable", "database": "error"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


async def metrics_endpoint(request: Request) -> Response:
    payload, ctype = metrics.render()
    return Response(payload, media_type=ctype)


async def _fhir_error(request: Request, exc: FhirError) -> Response:
    return error_response(exc)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    messages = {404: "Ruta no encontrada", 405: "Método no permitido en esta ruta"}
    code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
    return outcome_response(exc.status_code, messages.get(exc.status_code, str(exc.detail)), code, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Logged with its trace for operators; the client gets no internals.
    log.error("unhandled error", exc_info=exc, extra={"route": request.url.path[:80]})
    return outcome_response(500, "Error interno del servidor; el incidente quedó registrado", "exception")


def create_app(settings: Settings | None = None, services: Services | None = None) -> Starlette:
    settings = settings or load_settings()
    services = services or Services.build(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        services.close()
        log.info("shutdown complete: writes committed, audit flushed, connections closed")

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *auth_api.routes,
            *signature_api.routes,
            *audit_api.routes,  # before the generic /fhir/{type} routes
            *link_api.routes,
            *terminology_api.routes,  # CodeSystem, ValueSet and their operations
            *match_api.routes,
            *profile_api.routes,  # StructureDefinition, $validate
            *purge_api.routes,  # Patient/$purge (retention)
            *reconcile_api.routes,  # imaging studies waiting for their patient
            *rendered.routes,  # DICOMweb rendered images and thumbnails
            *qido.routes,  # QIDO-RS: /dicomweb/studies, /series, /instances
            *stow.routes, *wado.routes, *wado_uri.routes,  # DICOMweb store and retrieve, WADO-URI
            *fhir_api.routes,
        ],
        exception_handlers={FhirError: _fhir_error, HTTPException: _http_error, Exception: _unexpected},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.services = services
    # Added innermost first. The principal's rate limit sits inside Authenticate (it keys on
    # the principal), the address's outside it; Cors outside both (preflights carry no token);
    # SecurityHeaders covers every early answer.
    limits = RateLimits(settings)
    app.add_middleware(PrincipalRateLimit, limits=limits)
    app.add_middleware(Authenticate, tokens=services.tokens)
    app.add_middleware(AddressRateLimit, limits=limits)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if origins := cors_origins(settings):
        app.add_middleware(Cors, origins=origins)
    app.add_middleware(SecurityHeaders, hsts=uses_https(settings))
    app.add_middleware(Observe)
    return app


def app_factory() -> Starlette:
    """Entry point for the HTTP server's worker processes (settings from the environment)."""
    from expediente.ops.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(settings)
