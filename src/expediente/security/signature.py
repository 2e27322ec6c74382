"""Advanced electronic signature (FEA) of clinical documents: canonical form, detached JWS,
certificate checks. Pure cryptography: no database, no HTTP.

- Canonical form: RFC 8785 (JSON Canonicalization Scheme) of the whole resource exactly as
  stored, ``meta.versionId`` and ``meta.lastUpdated`` included, so a signature covers one
  version and cannot be moved onto another one with the same content.
- Signature: a compact JWS with detached payload (RFC 7515 Appendix F, ``header..signature``)
  whose payload is the canonical form. Protected header: ``alg`` (RS256, PS256 or ES256),
  ``typ`` ``JOSE``, ``x5c`` (the signer's chain, leaf first) and ``sigT`` (signing time, UTC,
  as in ETSI JAdES).
- Certificates: X.509 as the SAT issues for the e.firma (a DER ``.cer``, an encrypted PKCS#8
  DER ``.key``); PEM is accepted too. The signer's RFC is in the subject's
  x500UniqueIdentifier and the CURP in its serialNumber.

Errors carry a Spanish message for the person and a stable ``code`` for programs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import NameOID

ALGORITHMS = ("RS256", "PS256", "ES256")
MAX_CHAIN = 10
MIN_RSA_BITS = 2048
RFC_RE = re.compile(r"^[A-ZÑ&]{3,4}[0-9]{6}[A-Z0-9]{3}$")
CURP_RE = re.compile(r"^[A-Z]{4}[0-9]{6}[HMX][A-Z]{5}[A-Z0-9][0-9]$")


class SignatureError(Exception):
    """A signature or certificate that cannot be accepted. ``code`` is one of: malformed,
    signature-mismatch, document-changed, certificate-expired, certificate-not-yet-valid,
    certificate-usage, certificate-key, untrusted, password-required."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# ------------------------------------------------------------------ canonical form (RFC 8785)


def canonical_json(value) -> bytes:
    """RFC 8785 serialization: sorted keys (UTF-16 code units), no whitespace, ECMAScript
    number formatting, minimal string escaping."""
    return _jcs(value).encode("utf-8")


def canonical_document(resource: dict | bytes | str) -> bytes:
    """The bytes a signature covers: the canonical form of the stored resource, nothing left out."""
    if isinstance(resource, (bytes, str)):
        try:
            resource = orjson.loads(resource)
        except orjson.JSONDecodeError:
            raise SignatureError("document-changed", "La versión firmada del documento no es JSON válido") from None
    if not isinstance(resource, dict) or "resourceType" not in resource:
        raise SignatureError("malformed", "Lo que se firma debe ser un recurso FHIR (objeto JSON con resourceType)")
    return canonical_json(resource)


def _jcs(value) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _jcs_string(value)
    if isinstance(value, int):
        # JSON numbers are IEEE 754 doubles (RFC 8785 §3.2.2.3): large integers lose precision as they would in JavaScript.
        return str(value) if abs(value) <= 2**53 else _jcs_number(float(value))
    if isinstance(value, float):
        return _jcs_number(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_jcs(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(_jcs_string(k) + ":" + _jcs(value[k]) for k in keys) + "}"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _jcs_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _jcs_number(x: float) -> str:
    """ECMAScript Number.prototype.toString: Python's repr gives the same shortest digits."""
    if not math.isfinite(x):
        raise ValueError("NaN and Infinity are not JSON numbers")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    digits_t, exponent = Decimal(repr(abs(x))).normalize().as_tuple()[1:]
    digits = "".join(map(str, digits_t))
    k = len(digits)
    n = exponent + k  # the value is 0.<digits> * 10**n
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        body = f"{mantissa}e{'+' if e > 0 else '-'}{abs(e)}"
    return sign + body


def content_digest(canonical: bytes) -> str:
    """SHA-256 of a canonical form, base64: recorded beside a signature to tell, when it no
    longer verifies, a changed document from an altered signature."""
    return base64.b64encode(hashlib.sha256(canonical).digest()).decode()


# ------------------------------------------------------------------ key material


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Certificates from a DER file (one, as the SAT's .cer) or a PEM file (one or more)."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise SignatureError("malformed", "El archivo no contiene un certificado X.509 (DER o PEM)") from None


def load_private_key(data: bytes, password: bytes | None):
    """The private key of a SAT .key (encrypted PKCS#8 DER) or a PEM key, decrypted with ``password``."""
    loader = serialization.load_pem_private_key if b"-----BEGIN" in data else serialization.load_der_private_key
    try:
        key = loader(data, password=password)
    except TypeError:  # encrypted without a password, or a password for a key that is not encrypted
        if password is None:
            raise SignatureError("password-required", "La llave privada está cifrada: indique su contraseña") from None
        key = loader(data, password=None)
    except (ValueError, UnsupportedAlgorithm):
        raise SignatureError("malformed", "No se pudo abrir la llave privada: contraseña incorrecta o archivo inválido") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise SignatureError("certificate-key", "La llave privada debe ser RSA o EC P-256")
    return key


# ------------------------------------------------------------------ signing (client side)


def sign_document(
    resource_json: dict | bytes | str,
    private_key,
    certificate_chain: Sequence[x509.Certificate],
    *,
    algorithm: str | None = None,
    signing_time: datetime | None = None,
) -> str:
    """Sign the canonical form of one stored version of a resource; returns the detached JWS.

    ``certificate_chain`` starts with the signer's certificate. The key never leaves the caller.
    """
    if not certificate_chain:
        raise SignatureError("malformed", "Falta el certificado del firmante")
    leaf = certificate_chain[0]
    if private_key.public_key().public_numbers() != leaf.public_key().public_numbers():
        raise SignatureError("certificate-key", "La llave privada no corresponde al certificado")
    alg = algorithm or ("ES256" if isinstance(private_key, ec.EllipticCurvePrivateKey) else "RS256")
    _check_key_for(alg, leaf.public_key())
    when = (signing_time or datetime.now(UTC)).astimezone(UTC)
    header = {
        "alg": alg,
        "typ": "JOSE",
        "x5c": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in certificate_chain],
        "sigT": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    header_b64 = _b64url(canonical_json(header))
    signing_input = f"{header_b64}.{_b64url(canonical_document(resource_json))}".encode("ascii")
    return f"{header_b64}..{_b64url(_raw_signature(private_key, alg, signing_input))}"


def _raw_signature(key, alg: str, data: bytes) -> bytes:
    if alg == "ES256":
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JWS wants r || s, not DER
    pad = padding.PKCS1v15() if alg == "RS256" else _PSS
    return key.sign(data, pad, hashes.SHA256())


_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)  # RFC 7518 §3.5: salt = hash length


# ------------------------------------------------------------------ verification (server side)


@dataclass(frozen=True, slots=True)
class Signer:
    subject: str  # the certificate subject, RFC 4514
    name: str | None
    rfc: str | None
    curp: str | None
    serial: str  # certificate serial number, hex


@dataclass(frozen=True, slots=True)
class ParsedSignature:
    jws: str
    algorithm: str
    chain: tuple[x509.Certificate, ...]
    signing_time: datetime  # aware, UTC
    _header_b64: str
    _signature: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def signer(self) -> Signer:
        return signer_of(self.certificate)

    def matches(self, canonical: bytes) -> bool:
        """Whether the signature verifies over ``canonical`` with the leaf certificate's key."""
        data = f"{self._header_b64}.{_b64url(canonical)}".encode("ascii")
        key = self.certificate.public_key()
        try:
            if self.algorithm == "ES256":
                if len(self._signature) != 64:
                    return False
                der = encode_dss_signature(int.from_bytes(self._signature[:32], "big"), int.from_bytes(self._signature[32:], "big"))
                key.verify(der, data, ec.ECDSA(hashes.SHA256()))
            else:
                key.verify(self._signature, data, padding.PKCS1v15() if self.algorithm == "RS256" else _PSS, hashes.SHA256())
        except InvalidSignature:
            return False
        return True


def parse_jws(jws: str) -> ParsedSignature:
    """Parse a detached compact JWS of this profile; SignatureError('malformed') if it is not one."""
    if not isinstance(jws, str) or not jws.isascii():
        raise _malformed("la firma debe ser un JWS compacto (texto ASCII)")
    parts = jws.strip().split(".")
    if len(parts) != 3:
        raise _malformed("un JWS compacto tiene tres partes separadas por punto")
    header_b64, payload_b64, signature_b64 = parts
    if payload_b64:
        raise _malformed("la carga útil debe ir separada (JWS con carga desprendida, RFC 7515 apéndice F)")
    header = _json_object(_b64url_decode(header_b64, "encabezado"))
    signature = _b64url_decode(signature_b64, "firma")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise _malformed(f"algoritmo no admitido: {str(alg)[:20]!r} (se aceptan {', '.join(ALGORITHMS)})")
    if header.get("b64") is False or "crit" in header:
        raise _malformed("el encabezado pide extensiones críticas no admitidas (crit, b64)")
    chain = _chain_of(header.get("x5c"))
    _check_key_for(alg, chain[0].public_key())
    return ParsedSignature(jws.strip(), alg, chain, _signing_time(header), header_b64, signature)


def _chain_of(x5c) -> tuple[x509.Certificate, ...]:
    if not isinstance(x5c, list) or not x5c or len(x5c) > MAX_CHAIN or not all(isinstance(c, str) for c in x5c):
        raise _malformed(f"x5c debe ser la cadena de certificados del firmante (1 a {MAX_CHAIN}, en base64)")
    chain = []
    for i, text in enumerate(x5c):
        try:
            chain.append(x509.load_der_x509_certificate(base64.b64decode(text, validate=True)))
        except (binascii.Error, ValueError):
            raise _malformed(f"x5c[{i}] no es un certificado X.509 en base64") from None
    return tuple(chain)


def _signing_time(header: dict) -> datetime:
    if "sigT" in header:
        raw = header["sigT"]
        try:
            return datetime.strptime(str(raw), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise _malformed(f"sigT inválido: {str(raw)[:40]!r} (se espera AAAA-MM-DDThh:mm:ssZ)") from None
    iat = header.get("iat")
    if isinstance(iat, int) and not isinstance(iat, bool) and 0 < iat < 2**40:
        return datetime.fromtimestamp(iat, UTC)
    raise _malformed("falta la fecha de firma en el encabezado (sigT o iat)")


def check_certificate(cert: x509.Certificate, at: datetime) -> None:
    """The signer's certificate must be valid at the signing time and allowed to sign."""
    if at < cert.not_valid_before_utc:
        raise SignatureError(
            "certificate-not-yet-valid",
            f"El certificado del firmante aún no era vigente en la fecha de firma (vigente desde {_day(cert.not_valid_before_utc)})",
        )
    if at > cert.not_valid_after_utc:
        raise SignatureError(
            "certificate-expired",
            f"El certificado del firmante estaba vencido en la fecha de firma (vigente hasta {_day(cert.not_valid_after_utc)})",
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise SignatureError("certificate-usage", "El certificado no declara su uso de llave (se requiere firma digital o no repudio)") from None
    if not (usage.digital_signature or usage.content_commitment):
        raise SignatureError("certificate-usage", "El certificado no permite firmar: su uso de llave no incluye firma digital ni no repudio")
    if _is_ca(cert):
        raise SignatureError("certificate-usage", "El certificado es de una autoridad certificadora, no de una persona firmante")


def check_chain(chain: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate], at: datetime) -> None:
    """The chain must lead, certificate by certificate, to one of ``anchors`` (e.g. the SAT's
    certification authorities), every issuer a CA valid at the signing time. Revocation
    (OCSP, CRL) is not checked here."""
    anchor_ders = {a.public_bytes(serialization.Encoding.DER) for a in anchors}
    current, pool = chain[0], list(chain[1:])
    for _ in range(MAX_CHAIN + 1):
        if current.public_bytes(serialization.Encoding.DER) in anchor_ders:
            return
        anchor = next((a for a in anchors if _issued_by(current, a)), None)
        if anchor is not None:
            _check_issuer(anchor, at)
            return
        issuer = next((c for c in pool if _issued_by(current, c)), None)
        if issuer is None:
            break
        _check_issuer(issuer, at)
        pool.remove(issuer)
        current = issuer
    raise SignatureError("untrusted", "El certificado del firmante no proviene de una autoridad certificadora de confianza")


def _check_issuer(issuer: x509.Certificate, at: datetime) -> None:
    if not _is_ca(issuer) or not issuer.not_valid_before_utc <= at <= issuer.not_valid_after_utc:
        raise SignatureError("untrusted", "La cadena del certificado no es válida: una autoridad intermedia no es vigente o no es CA")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def signer_of(cert: x509.Certificate) -> Signer:
    """Who a certificate names. SAT certificates carry "RFC" or "RFC / RFC of the representative"
    in x500UniqueIdentifier and "CURP" or " / CURP" in serialNumber: the person's value is the
    first well-formed one."""
    subject = cert.subject
    return Signer(
        subject=subject.rfc4514_string(),
        name=_attribute(subject, NameOID.COMMON_NAME),
        rfc=_first_match(_attribute(subject, NameOID.X500_UNIQUE_IDENTIFIER), RFC_RE),
        curp=_first_match(_attribute(subject, NameOID.SERIAL_NUMBER), CURP_RE),
        serial=f"{cert.serial_number:x}",
    )


def _attribute(name: x509.Name, oid) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if not values:
        return None
    value = values[0].value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _first_match(value: str | None, pattern: re.Pattern) -> str | None:
    for token in (value or "").upper().split("/"):
        if pattern.match(token.strip()):
            return token.strip()
    return None


def _check_key_for(alg: str, public_key) -> None:
    if alg == "ES256":
        if not (isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1)):
            raise SignatureError("certificate-key", "ES256 requiere un certificado con llave EC P-256")
    elif not isinstance(public_key, rsa.RSAPublicKey):
        raise SignatureError("certificate-key", f"{alg} requiere un certificado con llave RSA")
    elif public_key.key_size < MIN_RSA_BITS:
        raise SignatureError("certificate-key", f"La llave RSA del certificado es demasiado corta (mínimo {MIN_RSA_BITS} bits)")


# ------------------------------------------------------------------ encoding helpers


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str, what: str) -> bytes:
    if not text or not re.fullmatch(r"[A-Za-z0-9_-]+", text) or len(text) % 4 == 1:
        raise _malformed(f"el {what} no está en base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_object(raw: bytes) -> dict:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _malformed("el encabezado no es JSON") from None
    if not isinstance(value, dict):
        raise _malformed("el encabezado debe ser un objeto JSON")
    return value


def _malformed(detail: str) -> SignatureError:
    return SignatureError("malformed", f"Firma mal formada: {detail}")


def _day(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S UTC")
