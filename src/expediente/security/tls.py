"""TLS settings checked once and turned into what each server needs.

HTTP: granian terminates TLS itself (Rust, rustls); `granian_options` maps the settings onto its
arguments after `check_server_files` has made sure the files load, so a wrong path or a key
that does not match its certificate is a clear message at start, not a failure in a worker.

DICOM: the DIMSE service provider (pynetdicom) takes a Python `ssl.SSLContext`:
``AE.start_server((host, port), ssl_context=server_context_from(settings))`` for the listener and
``ae.associate(host, port, tls_args=(client_context(...), hostname))`` for outgoing
associations. Both builders enforce TLS 1.2 or newer; with a client CA the listener requires a
certificate from it (NOM-024: systems authenticate each other, not only the server).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from expediente.config import Settings

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TlsConfigError(ValueError):
    """TLS settings that cannot work; the message says which and why (Spanish, for operators)."""


def min_version(value: str) -> ssl.TLSVersion:
    normalized = value.strip().lower().removeprefix("tls").removeprefix("v").strip()
    try:
        return _VERSIONS[normalized]
    except KeyError:
        raise TlsConfigError(f"versión mínima de TLS no admitida: {value!r} (use 1.2 o 1.3)") from None


def _readable(path: str, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise TlsConfigError(f"no se encuentra el archivo de {what}: {path}")
    try:
        p.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"no se puede leer el archivo de {what} {path}: {exc.strerror}") from None
    return p


def _load_chain(ctx: ssl.SSLContext, certificate: str, key: str, password: str | None) -> None:
    cert = _readable(certificate, "certificado")
    key_path = _readable(key, "llave privada")
    try:
        ctx.load_cert_chain(cert, key_path, password or None)
    except ssl.SSLError as exc:
        raise TlsConfigError(
            f"el certificado {certificate} y la llave {key} no se pueden usar juntos "
            f"(¿llave de otro certificado, contraseña incorrecta o PEM dañado?): {exc.reason or exc}"
        ) from None


def _load_cas(ctx: ssl.SSLContext, cafile: str, what: str) -> None:
    path = _readable(cafile, what)
    try:
        ctx.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise TlsConfigError(f"el archivo de {what} {cafile} no contiene certificados PEM válidos: {exc.reason or exc}") from None


def _harden(ctx: ssl.SSLContext, minimum: str) -> None:
    ctx.minimum_version = min_version(minimum)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


def server_context(
    certificate: str,
    key: str,
    *,
    password: str | None = None,
    client_ca: str | None = None,
    client_crl: str | None = None,
    minimum: str = "1.2",
) -> ssl.SSLContext:
    """A listener's context; with `client_ca`, clients must present a certificate it issued."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx, minimum)
    _load_chain(ctx, certificate, key, password)
    if client_ca:
        _load_cas(ctx, client_ca, "CA de clientes")
        ctx.verify_mode = ssl.CERT_REQUIRED
        if client_crl:
            _load_cas(ctx, client_crl, "lista de revocación")
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    elif client_crl:
        raise TlsConfigError("tls_client_crl sin tls_client_ca: la lista de revocación solo aplica con TLS mutuo")
    return ctx


def client_context(
    ca: str | None = None,
    *,
    certificate: str | None = None,
    key: str | None = None,
    password: str | None = None,
    minimum: str = "1.2",
) -> ssl.SSLContext:
    """An outgoing connection's context: verifies the server (against `ca`, else the system CAs)
    and its host name; presents `certificate` when the other side requires mutual TLS."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx, minimum)
    if ca:
        _load_cas(ctx, ca, "CA de servidores")
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if certificate or key:
        if not (certificate and key):
            raise TlsConfigError("el certificado de cliente necesita su llave privada (y viceversa)")
        _load_chain(ctx, certificate, key, password)
    return ctx


def server_context_from(settings: Settings) -> ssl.SSLContext:
    """The listener context the settings describe (the DICOM service's `ssl_context`)."""
    check_complete(settings)
    return server_context(
        settings.tls_certificate,
        settings.tls_key,
        password=settings.tls_key_password or None,
        client_ca=settings.tls_client_ca or None,
        client_crl=settings.tls_client_crl or None,
        minimum=settings.tls_min_version,
    )


def check_complete(settings: Settings) -> None:
    if not (settings.tls_certificate and settings.tls_key):
        raise TlsConfigError("TLS necesita tls_certificate y tls_key (cadena de certificados y llave privada en PEM)")


_PKCS8_HEADERS = (b"-----BEGIN PRIVATE KEY-----", b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


def check_server_files(settings: Settings) -> None:
    """Fail fast, in Spanish, on TLS settings the HTTP server could not use."""
    if not (settings.tls_enabled or settings.tls_client_ca or settings.tls_client_crl):
        return
    server_context_from(settings)  # loads and cross-checks every file
    if settings.tls_client_crl:
        _check_crl(settings.tls_client_crl)
    if not any(h in Path(settings.tls_key).read_bytes() for h in _PKCS8_HEADERS):
        # granian reads PKCS#8 only; OpenSSL's older "BEGIN RSA/EC PRIVATE KEY" forms are refused.
        raise TlsConfigError(
            f"la llave {settings.tls_key} no está en formato PKCS#8; conviértala con: "
            f"openssl pkcs8 -topk8 -nocrypt -in {settings.tls_key} -out llave-pkcs8.pem"
        )


def _check_crl(path: str) -> None:
    """rustls (granian) accepts only RFC 5280 CRLs: PEM, version 2, with a CRL number."""
    from cryptography import x509

    try:
        crl = x509.load_pem_x509_crl(Path(path).read_bytes())
        crl.extensions.get_extension_for_class(x509.CRLNumber)
    except x509.ExtensionNotFound:
        raise TlsConfigError(f"la lista de revocación {path} no tiene número de CRL (extensión cRLNumber, RFC 5280)") from None
    except ValueError as exc:
        raise TlsConfigError(f"la lista de revocación {path} no es una CRL PEM válida: {exc}") from None


def granian_options(settings: Settings) -> dict:
    """Keyword arguments for `granian.Granian` (empty without TLS)."""
    if not settings.tls_enabled:
        return {}
    from granian.constants import SSLProtocols

    version = {ssl.TLSVersion.TLSv1_2: SSLProtocols.tls12, ssl.TLSVersion.TLSv1_3: SSLProtocols.tls13}[min_version(settings.tls_min_version)]
    return {
        "ssl_cert": Path(settings.tls_certificate),
        "ssl_key": Path(settings.tls_key),
        "ssl_key_password": settings.tls_key_password or None,
        "ssl_protocol_min": version,
        "ssl_ca": Path(settings.tls_client_ca) if settings.tls_client_ca else None,
        "ssl_crl": [Path(settings.tls_client_crl)] if settings.tls_client_crl else None,
        "ssl_client_verify": bool(settings.tls_client_ca),
    }
