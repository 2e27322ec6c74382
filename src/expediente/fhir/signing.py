"""Signing and verifying clinical documents on the store (the FHIR side of security/signature.py).

Every read and write goes through the store with the caller, so the access policy decides and
the audit trail records each one. A signature is stored as a Provenance whose target is the
versioned reference of the signed document (``Composition/<id>/_history/<n>``) and whose
``signature[0].data`` is the base64 of the detached JWS.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import sqlalchemy as sa
from cryptography import x509

from expediente.config import Settings
from expediente.fhir.errors import FhirError
from expediente.fhir.signature_lock import AUTHOR_SIGNATURE, JOSE, SIGNABLE_TYPES, is_signature
from expediente.fhir.store import Caller, ResourceStore, Stored, _prepare, _validated, check_id, instant, new_id
from expediente.mx.systems import CURP_SYSTEM
from expediente.security import signature as fea

SIGNER_ROLES = frozenset({"physician", "nurse", "radiologist"})
# Kept beside each signature by the server: the SHA-256 of the canonical form it verified,
# so a later failure can tell a changed document from an altered signature.
DIGEST_EXTENSION = "https://expediente.mx/fhir/StructureDefinition/signed-content-sha256"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


@dataclass(frozen=True, slots=True)
class SignaturePolicy:
    anchors: tuple[x509.Certificate, ...]  # empty: chains are not checked against anchors
    time_tolerance: timedelta
    require_identity_match: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> SignaturePolicy:
        return cls(
            anchors=_trust_anchors(settings.signature_trust_anchors),
            time_tolerance=timedelta(seconds=settings.signature_time_tolerance_seconds),
            require_identity_match=settings.signature_require_identity_match,
        )


def _trust_anchors(path: str) -> tuple[x509.Certificate, ...]:
    if not path:
        return ()
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        raise FhirError.of(503, "No se pudo leer el archivo de autoridades certificadoras de confianza", "exception") from None
    return _load_anchors(path, mtime)


@functools.lru_cache(maxsize=4)
def _load_anchors(path: str, _mtime: int) -> tuple[x509.Certificate, ...]:
    with open(path, "rb") as f:
        return tuple(x509.load_pem_x509_certificates(f.read()))


# ------------------------------------------------------------------ signing


def sign(
    store: ResourceStore, caller: Caller, policy: SignaturePolicy, res_type: str, res_id: str, jws: str, version: int | None = None
) -> Stored:
    """Check a signature of the current version of a document and store its Provenance."""
    check_signable(res_type)
    check_id(res_id)
    practitioner_ref = _signer_practitioner(caller)
    parsed = _accepted(jws, policy)
    _check_signer(store, caller, policy, practitioner_ref, parsed.signer)
    document = store.read(caller, res_type, res_id)
    if version is not None and version != document.version_id:
        raise _changed_since(res_type, res_id, version, document.version_id)
    canonical = fea.canonical_document(document.body)
    if not parsed.matches(canonical):
        raise FhirError.of(
            422,
            f"La firma no corresponde a la versión {document.version_id} de {res_type}/{res_id}: "
            "se firmó otro contenido o la firma está alterada",
            "invalid",
        )
    provenance = _provenance(document, practitioner_ref, parsed, canonical)
    _validated(provenance, "Provenance")
    prov_id = new_id()
    prepared = _prepare(provenance, prov_id)

    def job(conn: sa.Connection):
        # Under the document's row lock: the version verified must still be the current one.
        current = store._current(conn, res_type, res_id, for_update=True)
        if current is None or current.deleted or current.version_id != document.version_id:
            raise _changed_since(res_type, res_id, document.version_id, current.version_id if current else 0)
        return store._create_in(conn, caller, "Provenance", prov_id, prepared)

    return store._commit(job).stored


def check_signable(res_type: str) -> None:
    if res_type not in SIGNABLE_TYPES:
        raise FhirError.of(
            404, f"Solo se firman y verifican documentos clínicos (Composition, DocumentReference), no {res_type[:40]}", "not-supported"
        )


def _signer_practitioner(caller: Caller) -> str:
    principal = caller.principal
    if principal.role not in SIGNER_ROLES:
        raise FhirError.of(403, "Solo médicos, personal de enfermería y radiólogos firman documentos clínicos", "forbidden")
    ref = principal.practitioner_ref or ""
    if not ref.startswith("Practitioner/") or not ref.split("/", 1)[1]:
        raise FhirError.of(
            422, "Su cuenta no está vinculada a un profesional (Practitioner); no puede firmar documentos", "business-rule"
        )
    return ref


def _accepted(jws: str, policy: SignaturePolicy) -> fea.ParsedSignature:
    """The signature parsed, made now with a certificate valid and trusted at that moment."""
    try:
        parsed = fea.parse_jws(jws)
    except fea.SignatureError as exc:
        raise FhirError.of(400, exc.message, "invalid") from None
    now = datetime.now(UTC)
    if abs(parsed.signing_time - now) > policy.time_tolerance:
        raise FhirError.of(
            422,
            f"La fecha de firma ({parsed.signing_time:%Y-%m-%d %H:%M:%S} UTC) difiere de la hora del servidor en más de "
            f"{int(policy.time_tolerance.total_seconds())} segundos; firme de nuevo",
            "business-rule",
        )
    try:
        fea.check_certificate(parsed.certificate, parsed.signing_time)
        if policy.anchors:
            fea.check_chain(parsed.chain, policy.anchors, parsed.signing_time)
    except fea.SignatureError as exc:
        raise FhirError.of(422, exc.message, "business-rule") from None
    return parsed


def _check_signer(store: ResourceStore, caller: Caller, policy: SignaturePolicy, practitioner_ref: str, signer: fea.Signer) -> None:
    """The certificate must be the caller's: each of CURP and RFC that both the certificate
    and the Practitioner carry must be equal, and (by default) at least one must be shared."""
    pid = practitioner_ref.split("/", 1)[1]
    try:
        practitioner = orjson.loads(store.read(caller, "Practitioner", pid).body)
    except FhirError as exc:
        if exc.status in (404, 410):
            raise FhirError.of(422, f"El profesional {practitioner_ref} de su cuenta no existe", "business-rule") from None
        raise
    curps, rfcs = _practitioner_keys(practitioner)
    compared = False
    for label, cert_value, own in (("CURP", signer.curp, curps), ("RFC", signer.rfc, rfcs)):
        if cert_value and own:
            compared = True
            if cert_value not in own:
                raise FhirError.of(
                    422,
                    f"El certificado pertenece a otra persona: su {label} ({cert_value}) no es el de {practitioner_ref}",
                    "business-rule",
                )
    if policy.require_identity_match and not compared:
        raise FhirError.of(
            422,
            f"No se puede vincular el certificado con {practitioner_ref}: ni la CURP ni el RFC del certificado "
            "figuran entre los identificadores del profesional",
            "business-rule",
        )


def _practitioner_keys(practitioner: dict) -> tuple[set[str], set[str]]:
    """CURPs (by system or shape) and RFCs (by shape) among a Practitioner's identifiers."""
    curps, rfcs = set(), set()
    for ident in practitioner.get("identifier") or ():
        value = str(ident.get("value") or "").strip().upper()
        if ident.get("system") == CURP_SYSTEM or fea.CURP_RE.match(value):
            curps.add(value)
        elif fea.RFC_RE.match(value):
            rfcs.add(value)
    return curps, rfcs


def _changed_since(res_type: str, res_id: str, signed: int, current: int) -> FhirError:
    return FhirError.of(
        409,
        f"{res_type}/{res_id} cambió: se firmó la versión {signed} y la actual es la {current}; léalo y firme de nuevo",
        "conflict",
    )


def _provenance(document: Stored, practitioner_ref: str, parsed: fea.ParsedSignature, canonical: bytes) -> dict:
    who = {"reference": practitioner_ref}
    signer = parsed.signer
    if signer.name:
        who["display"] = signer.name
    return {
        "resourceType": "Provenance",
        "target": [{"reference": document.location}],
        "recorded": instant(datetime.now(UTC)),
        "agent": [{"type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "author"}]}, "who": who}],
        "signature": [
            {
                "extension": [{"url": DIGEST_EXTENSION, "valueBase64Binary": fea.content_digest(canonical)}],
                "type": [AUTHOR_SIGNATURE],
                "when": parsed.signing_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "who": who,
                "targetFormat": "application/fhir+json",
                "sigFormat": JOSE,
                "data": base64.b64encode(parsed.jws.encode("ascii")).decode(),
            }
        ],
    }


# ------------------------------------------------------------------ verification


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    provenance: str  # Provenance/<id>
    target: str | None  # the versioned reference signed
    valid: bool
    code: str | None = None  # why not (SignatureError codes, plus target, no-signature)
    reason: str | None = None  # Spanish
    signer: fea.Signer | None = None
    when: str | None = None
    anchored: bool = False  # the chain was checked against configured trust anchors


def verify_document(store: ResourceStore, caller: Caller, policy: SignaturePolicy, res_type: str, res_id: str) -> list[SignatureCheck]:
    """Every signature of a document, each checked against the stored version it names."""
    check_signable(res_type)
    store.read(caller, res_type, res_id)  # 404/410 for what does not exist; access decided and audited
    found = store.search(caller, "Provenance", [("target", f"{res_type}/{res_id}"), ("_count", "500")])
    checks = []
    for prov in found.matches:
        body = orjson.loads(prov.body)
        checks += [
            verify_signature(store, caller, policy, body, sig, res_type, res_id)
            for sig in body.get("signature") or ()
            if isinstance(sig, dict) and is_signature(sig)
        ]
    return checks


def verify_provenance(store: ResourceStore, caller: Caller, policy: SignaturePolicy, prov_id: str) -> list[SignatureCheck]:
    body = orjson.loads(store.read(caller, "Provenance", prov_id).body)
    return [verify_signature(store, caller, policy, body, s) for s in body.get("signature") or () if isinstance(s, dict) and is_signature(s)]


def verify_signature(
    store: ResourceStore,
    caller: Caller,
    policy: SignaturePolicy,
    provenance: dict,
    signature: dict,
    res_type: str | None = None,
    res_id: str | None = None,
) -> SignatureCheck:
    """Recompute the canonical form of the version the Provenance names and check the JWS,
    the certificate at the signing time and, when anchors are configured, its chain."""
    prov_ref = f"Provenance/{provenance.get('id')}"
    target = _versioned_target(provenance, res_type, res_id)
    if target is None:
        return SignatureCheck(prov_ref, None, False, "target", "La firma no indica qué versión del documento se firmó")
    t_type, t_id, t_version = target
    target_ref = f"{t_type}/{t_id}/_history/{t_version}"
    failed = functools.partial(SignatureCheck, prov_ref, target_ref, False)
    try:
        parsed = fea.parse_jws(base64.b64decode(str(signature.get("data") or ""), validate=True).decode("ascii"))
    except (binascii.Error, UnicodeDecodeError):
        return failed("malformed", "La firma fue alterada: sus datos no son base64 válido")
    except fea.SignatureError as exc:
        return failed("malformed", f"La firma fue alterada: {exc.message}")
    when = parsed.signing_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    failed = functools.partial(failed, signer=parsed.signer, when=when)
    try:
        stored = store.vread(caller, t_type, t_id, t_version)
    except FhirError as exc:
        if exc.status not in (404, 410):
            raise
        return failed("document-changed", f"La versión firmada {target_ref} ya no existe en el expediente")
    try:
        canonical = fea.canonical_document(stored.body)
    except fea.SignatureError as exc:
        return failed(exc.code, exc.message)
    if not parsed.matches(canonical):
        recorded = _recorded_digest(signature)
        if recorded is not None and recorded != fea.content_digest(canonical):
            return failed("document-changed", f"El documento {target_ref} fue modificado después de firmarse")
        return failed("signature-mismatch", "La firma fue alterada: no corresponde al documento firmado")
    try:
        fea.check_certificate(parsed.certificate, parsed.signing_time)
        if policy.anchors:
            fea.check_chain(parsed.chain, policy.anchors, parsed.signing_time)
    except fea.SignatureError as exc:
        return failed(exc.code, exc.message)
    return SignatureCheck(prov_ref, target_ref, True, signer=parsed.signer, when=when, anchored=bool(policy.anchors))


def _versioned_target(provenance: dict, res_type: str | None, res_id: str | None) -> tuple[str, str, str] | None:
    for target in provenance.get("target") or ():
        parts = str((target or {}).get("reference") or "").split("/")
        if len(parts) == 4 and parts[2] == "_history" and parts[0] in SIGNABLE_TYPES:
            if res_type is None or (parts[0], parts[1]) == (res_type, res_id):
                return parts[0], parts[1], parts[3]
    return None


def _recorded_digest(signature: dict) -> str | None:
    return next(
        (e.get("valueBase64Binary") for e in signature.get("extension") or () if isinstance(e, dict) and e.get("url") == DIGEST_EXTENSION),
        None,
    )


def verification_parameters(checks: list[SignatureCheck]) -> dict:
    """The answer of $verify-signature: overall ``valid`` and one ``signature`` part per signature."""
    params: list[dict] = [{"name": "valid", "valueBoolean": bool(checks) and all(c.valid for c in checks)}]
    if not checks:
        params.append({"name": "reason", "valueString": "El documento no tiene firmas electrónicas"})
    for c in checks:
        parts: list[dict] = [{"name": "provenance", "valueReference": {"reference": c.provenance}}]
        if c.target:
            parts.append({"name": "target", "valueReference": {"reference": c.target}})
        parts.append({"name": "valid", "valueBoolean": c.valid})
        if not c.valid:
            parts += [{"name": "code", "valueCode": c.code}, {"name": "reason", "valueString": c.reason}]
        if c.signer:
            parts.append({"name": "signer", "valueString": c.signer.subject})
            parts += [{"name": k, "valueString": v} for k, v in (("rfc", c.signer.rfc), ("curp", c.signer.curp)) if v]
        if c.when:
            parts.append({"name": "when", "valueInstant": c.when})
        parts.append({"name": "trustAnchorChecked", "valueBoolean": c.anchored})
        params.append({"name": "signature", "part": parts})
    return {"resourceType": "Parameters", "parameter": params}

