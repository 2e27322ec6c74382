"""Shared HTTP helpers for the API layer: FHIR JSON responses and OperationOutcome errors."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from expediente.fhir.errors import FhirError, Issue, operation_outcome
from expediente.fhir.store import Caller

FHIR_JSON = "application/fhir+json; charset=utf-8"


def fhir_response(body: bytes | dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(payload, status_code=status, headers=headers, media_type=FHIR_JSON)


def outcome_response(status: int, diagnostics: str, code: str = "processing", headers: dict | None = None) -> Response:
    return fhir_response(operation_outcome([Issue(diagnostics, code)]), status, headers)


def error_response(exc: FhirError) -> Response:
    return fhir_response(exc.outcome(), exc.status, exc.headers or None)


BREAK_GLASS_HEADER = "expediente-break-glass"


async def search_form(request: Request) -> list[tuple[str, str]]:
    """The parameters of POST [type]/_search: an application/x-www-form-urlencoded body."""
    from urllib.parse import parse_qsl

    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if raw and ctype != "application/x-www-form-urlencoded":
        raise FhirError.of(415, "POST _search espera parámetros application/x-www-form-urlencoded", "not-supported")
    try:
        return parse_qsl(raw.decode("utf-8"), keep_blank_values=True) if raw else []
    except UnicodeDecodeError:
        raise FhirError.of(400, "El cuerpo de POST _search no es UTF-8 válido", "invalid") from None


def caller_of(request: Request) -> Caller:
    """The authenticated caller the auth middleware put on the request, with the stated reason
    of an emergency access (break-the-glass) when the request carries one."""
    client = request.client
    return Caller(request.state.principal, client.host if client else None, _emergency_reason(request))


def _emergency_reason(request: Request) -> str | None:
    raw = request.headers.get(BREAK_GLASS_HEADER)
    if raw is None:
        return None
    # Header values travel as latin-1; clients send the Spanish reason as UTF-8 bytes.
    reason = " ".join(raw.encode("latin-1", errors="replace").decode("utf-8", errors="replace").split())
    if len(reason) < 10 or len(reason) > 200:
        raise FhirError.of(
            400,
            "El acceso de emergencia requiere un motivo de 10 a 200 caracteres en el encabezado Expediente-Break-Glass",
            "required",
        )
    return reason
