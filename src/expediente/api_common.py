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


def caller_of(request: Request) -> Caller:
    """The authenticated caller the auth middleware put on the request."""
    client = request.client
    return Caller(request.state.principal, client.host if client else None)
