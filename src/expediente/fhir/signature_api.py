"""HTTP operations of the electronic signature: $sign, $verify-signature, Provenance/$verify."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from expediente.api_common import caller_of, fhir_response
from expediente.fhir import errors, signing
from expediente.fhir.api import _json_body, _read_headers


def _policy(request: Request) -> signing.SignaturePolicy:
    return signing.SignaturePolicy.from_settings(request.app.state.settings)


def _sign_parameters(body: dict) -> tuple[str, int | None]:
    """The JWS (parameter ``jws``) and, optionally, the version signed (``version``)."""
    if body.get("resourceType") != "Parameters" or not isinstance(body.get("parameter"), list):
        raise errors.bad_request("$sign espera un recurso Parameters con el parámetro 'jws'", expression="Parameters")
    named = {p.get("name"): p for p in body["parameter"] if isinstance(p, dict)}
    jws = (named.get("jws") or {}).get("valueString")
    if not isinstance(jws, str) or not jws:
        raise errors.bad_request("Falta el parámetro 'jws' (valueString) con la firma JWS desprendida", expression="Parameters.parameter")
    version = named.get("version")
    if version is None:
        return jws, None
    raw = next((version[k] for k in ("valueId", "valueString", "valueInteger", "valuePositiveInt") if k in version), None)
    text = str(raw) if raw is not None and not isinstance(raw, bool) else ""
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise errors.bad_request("El parámetro 'version' debe ser el número de versión firmada", expression="Parameters.parameter")
    return jws, int(text)


async def sign(request: Request) -> Response:
    p = request.path_params
    signing.check_signable(p["type"])
    jws, version = _sign_parameters(await _json_body(request))
    stored = await run_in_threadpool(
        signing.sign, request.app.state.services.store, caller_of(request), _policy(request), p["type"], p["id"], jws, version
    )
    base = request.app.state.settings.public_base + "/fhir"
    return fhir_response(stored.body, 201, _read_headers(stored) | {"Location": f"{base}/{stored.location}"})


async def verify_document(request: Request) -> Response:
    p = request.path_params
    checks = await run_in_threadpool(
        signing.verify_document, request.app.state.services.store, caller_of(request), _policy(request), p["type"], p["id"]
    )
    return fhir_response(signing.verification_parameters(checks))


async def verify_provenance(request: Request) -> Response:
    checks = await run_in_threadpool(
        signing.verify_provenance, request.app.state.services.store, caller_of(request), _policy(request), request.path_params["id"]
    )
    if not checks:
        raise errors.FhirError.of(422, f"Provenance/{request.path_params['id'][:64]} no contiene una firma electrónica", "business-rule")
    return fhir_response(signing.verification_parameters(checks))


# Registered before the generic FHIR routes: /fhir/{type}/{id}/{comp} would take these paths.
routes = [
    Route("/fhir/{type}/{id}/$sign", sign, methods=["POST"]),
    Route("/fhir/{type}/{id}/$verify-signature", verify_document, methods=["GET"]),
    Route("/fhir/Provenance/{id}/$verify", verify_provenance, methods=["GET"]),
]
