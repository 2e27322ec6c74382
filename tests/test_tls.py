"""TLS: a real HTTPS server process (and mutual TLS), and the contexts the DICOM service will use."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, load_pem_private_key

from expediente.config import Settings
from expediente.security.tls import TlsConfigError, check_server_files, client_context, granian_options, server_context


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pki:
    """A server CA with a certificate for 127.0.0.1, and a separate CA for client devices."""

    def __init__(self, root: Path):
        self.root = root
        self.ca = trustme.CA(organization_name="CA de servidores de prueba")
        self.client_ca = trustme.CA(organization_name="CA de dispositivos de prueba")
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.cert = self._write("servidor.pem", b"".join(blob.bytes() for blob in server.cert_chain_pems))
        self.key = self._write("servidor-llave.pem", _pkcs8(server.private_key_pem.bytes()))
        self.ca_file = self._write("ca.pem", self.ca.cert_pem.bytes())
        self.client_ca_file = self._write("ca-clientes.pem", self.client_ca.cert_pem.bytes())
        device = self.client_ca.issue_cert("sistema.laboratorio.example")
        self.device_cert = self._write("dispositivo.pem", device.cert_chain_pems[0].bytes())
        self.device_key = self._write("dispositivo-llave.pem", _pkcs8(device.private_key_pem.bytes()))
        stranger = trustme.CA().issue_cert("intruso.example")
        self.stranger_cert = self._write("intruso.pem", stranger.cert_chain_pems[0].bytes())
        self.stranger_key = self._write("intruso-llave.pem", _pkcs8(stranger.private_key_pem.bytes()))

    def _write(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.write_bytes(data)
        return str(path)


def _pkcs8(pem: bytes) -> bytes:
    key = load_pem_private_key(pem, None)
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


class Server:
    def __init__(self, tmp_path: Path, *args: str, extra_env: dict[str, str] | None = None):
        self.port = _free_port()
        env = {**os.environ, "EXPEDIENTE_DATA_DIR": str(tmp_path / "data"), "EXPEDIENTE_PORT": str(self.port)}
        for name in [k for k in env if k.startswith("EXPEDIENTE_") and k not in ("EXPEDIENTE_DATA_DIR", "EXPEDIENTE_PORT")]:
            env.pop(name)
        env["EXPEDIENTE_CONFIG"] = str(tmp_path / "none.toml")
        env.update(extra_env or {})
        exe = Path(sys.executable).with_name("expediente")
        self.proc = subprocess.Popen([str(exe), "serve", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
        self.base = f"https://127.0.0.1:{self.port}"

    def wait_listening(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.proc.stdout.read().decode()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)

    def exit_output(self) -> str:
        out, _ = self.proc.communicate(timeout=60)
        return out.decode()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        return out.decode()


def _health(base: str, verify: ssl.SSLContext, timeout: float = 5) -> httpx.Response:
    return httpx.get(f"{base}/health", verify=verify, timeout=timeout)


def _ready(base: str, verify: ssl.SSLContext) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:
        try:
            return _health(base, verify)
        except httpx.TransportError:
            assert time.monotonic() < deadline
            time.sleep(0.3)


def test_https_server_verifies_and_refuses_plain_http(tmp_path, pki):
    server = Server(tmp_path, "--tls-certificate", pki.cert, "--tls-key", pki.key)
    try:
        server.wait_listening()
        trusting = ssl.create_default_context(cafile=pki.ca_file)
        r = _ready(server.base, trusting)
        assert r.status_code == 200 and r.json()["status"] == "ok"
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert r.http_version in ("HTTP/1.1", "HTTP/2")
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            _health(server.base, ssl.create_default_context())  # system CAs do not know the test CA
        try:
            plain = httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=5)
        except httpx.TransportError:
            pass
        else:
            assert plain.status_code != 200 and "database" not in plain.text
    finally:
        out = server.stop()
    assert server.proc.returncode == 0, out


def test_mutual_tls_refuses_clients_without_a_device_certificate(tmp_path, pki):
    server = Server(
        tmp_path, "--tls-certificate", pki.cert, "--tls-key", pki.key, "--tls-client-ca", pki.client_ca_file, "--tls-min-version", "1.3"
    )
    try:
        server.wait_listening()
        device = ssl.create_default_context(cafile=pki.ca_file)
        device.load_cert_chain(pki.device_cert, pki.device_key)
        r = _ready(server.base, device)
        assert r.status_code == 200
        anonymous = ssl.create_default_context(cafile=pki.ca_file)
        with pytest.raises(httpx.TransportError):
            _health(server.base, anonymous)
        stranger = ssl.create_default_context(cafile=pki.ca_file)
        stranger.load_cert_chain(pki.stranger_cert, pki.stranger_key)
        with pytest.raises(httpx.TransportError):
            _health(server.base, stranger)
        tls12 = ssl.create_default_context(cafile=pki.ca_file)
        tls12.load_cert_chain(pki.device_cert, pki.device_key)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(httpx.ConnectError):
            _health(server.base, tls12)  # below the configured minimum
    finally:
        server.stop()


def test_serve_refuses_unusable_tls_settings(tmp_path, pki):
    cases = [
        (["--tls-certificate", pki.cert], "tls_key"),
        (["--tls-certificate", pki.cert, "--tls-key", str(tmp_path / "no-existe.pem")], "no se encuentra"),
        (["--tls-certificate", pki.cert, "--tls-key", pki.device_key], "no se pueden usar juntos"),
        (["--tls-certificate", pki.cert, "--tls-key", pki.key, "--tls-min-version", "1.0"], "1.2 o 1.3"),
        (["--tls-client-ca", pki.client_ca_file], "tls_certificate"),
    ]
    for args, message in cases:
        server = Server(tmp_path, *args)
        out = " ".join(server.exit_output().split())  # the console wraps long lines
        assert server.proc.returncode == 2 and message in out, (args, out)


def test_traditional_openssl_keys_get_the_conversion_command(tmp_path, pki):
    traditional = tmp_path / "rsa.pem"
    server = trustme.CA().issue_cert("127.0.0.1")
    traditional.write_bytes(server.private_key_pem.bytes())
    cert = tmp_path / "cert.pem"
    cert.write_bytes(server.cert_chain_pems[0].bytes())
    with pytest.raises(TlsConfigError, match="openssl pkcs8 -topk8"):
        check_server_files(Settings(tls_certificate=str(cert), tls_key=str(traditional)))


def test_granian_options_follow_the_settings(pki):
    assert granian_options(Settings()) == {}
    opts = granian_options(Settings(tls_certificate=pki.cert, tls_key=pki.key, tls_min_version="1.3", tls_client_ca=pki.client_ca_file))
    assert str(opts["ssl_protocol_min"]) == "tls1.3" and opts["ssl_client_verify"] is True
    assert str(opts["ssl_ca"]) == pki.client_ca_file
    assert Settings(tls_certificate=pki.cert, tls_key=pki.key).public_base == "https://127.0.0.1:8080"
    assert Settings().public_base == "http://127.0.0.1:8080"


# DICOM: the contexts handed to pynetdicom, exercised over a real socket pair.


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[str | None, dict | None]:
    """Run one TLS handshake on 127.0.0.1; (client's error or None, peer cert seen by the server)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: dict = {}

    def accept() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                seen["peer"] = tls.getpeercert()
                tls.sendall(b"A-ASSOCIATE-AC")
        except (ssl.SSLError, OSError) as exc:
            seen["error"] = exc

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                data = tls.recv(64)  # TLS 1.3 reports a refused client certificate on first read
                if not data:
                    raise ssl.SSLError("closed")
        error = None
    except (ssl.SSLError, OSError) as exc:
        error = str(exc)
    finally:
        thread.join(10)
        listener.close()
    return error, seen.get("peer")


def test_dicom_contexts_handshake_with_the_ca_only(pki):
    listener = server_context(pki.cert, pki.key)
    assert listener.minimum_version == ssl.TLSVersion.TLSv1_2
    error, _ = _handshake(listener, client_context(pki.ca_file))
    assert error is None
    error, _ = _handshake(listener, client_context(pki.client_ca_file))  # a CA that did not sign the server
    assert error and "CERTIFICATE_VERIFY_FAILED" in error


def test_dicom_mutual_tls_refuses_a_client_without_certificate(pki):
    listener = server_context(pki.cert, pki.key, client_ca=pki.client_ca_file, minimum="1.3")
    error, peer = _handshake(listener, client_context(pki.ca_file, certificate=pki.device_cert, key=pki.device_key))
    assert error is None and peer  # the listener saw the device's certificate
    error, _ = _handshake(listener, client_context(pki.ca_file))
    assert error is not None
    error, _ = _handshake(listener, client_context(pki.ca_file, certificate=pki.stranger_cert, key=pki.stranger_key))
    assert error is not None


def test_context_builders_reject_bad_inputs(pki, tmp_path):
    with pytest.raises(TlsConfigError, match="1.2 o 1.3"):
        server_context(pki.cert, pki.key, minimum="1.1")
    with pytest.raises(TlsConfigError, match="no se encuentra"):
        client_context(str(tmp_path / "nada.pem"))
    with pytest.raises(TlsConfigError, match="su llave"):
        client_context(pki.ca_file, certificate=pki.device_cert)
    with pytest.raises(TlsConfigError, match="solo aplica con TLS mutuo"):
        server_context(pki.cert, pki.key, client_crl=pki.ca_file)


def _crl_revoking(ca: trustme.CA, revoked_pem: bytes, numbered: bool = True) -> bytes:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    now = datetime.datetime.now(datetime.timezone.utc)
    revoked = x509.load_pem_x509_certificate(revoked_pem)
    issuer = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    entry = x509.RevokedCertificateBuilder().serial_number(revoked.serial_number).revocation_date(now).build()
    builder = x509.CertificateRevocationListBuilder().issuer_name(issuer.subject).last_update(now)
    crl = builder.next_update(now + datetime.timedelta(days=7)).add_revoked_certificate(entry)
    if numbered:
        crl = crl.add_extension(x509.CRLNumber(1), critical=False)  # RFC 5280 requires it; rustls too
    return crl.sign(ca._private_key, hashes.SHA256()).public_bytes(Encoding.PEM)  # trustme keeps the CA key private


def test_revoked_device_certificates_are_refused(tmp_path, pki):
    crl = tmp_path / "revocados.pem"
    crl.write_bytes(_crl_revoking(pki.client_ca, Path(pki.device_cert).read_bytes()))
    other = pki.client_ca.issue_cert("pacs.hospital.example")
    other_cert, other_key = tmp_path / "pacs.pem", tmp_path / "pacs-llave.pem"
    other_cert.write_bytes(other.cert_chain_pems[0].bytes())
    other_key.write_bytes(_pkcs8(other.private_key_pem.bytes()))
    # DICOM listener context
    listener = server_context(pki.cert, pki.key, client_ca=pki.client_ca_file, client_crl=str(crl))
    assert _handshake(listener, client_context(pki.ca_file, certificate=str(other_cert), key=str(other_key)))[0] is None
    assert _handshake(listener, client_context(pki.ca_file, certificate=pki.device_cert, key=pki.device_key))[0] is not None
    # HTTP server
    env_crl = {"EXPEDIENTE_TLS_CLIENT_CRL": str(crl)}
    server = Server(tmp_path, "--tls-certificate", pki.cert, "--tls-key", pki.key, "--tls-client-ca", pki.client_ca_file, extra_env=env_crl)
    try:
        server.wait_listening()
        good = ssl.create_default_context(cafile=pki.ca_file)
        good.load_cert_chain(other_cert, other_key)
        assert _ready(server.base, good).status_code == 200
        revoked = ssl.create_default_context(cafile=pki.ca_file)
        revoked.load_cert_chain(pki.device_cert, pki.device_key)
        with pytest.raises(httpx.TransportError):
            _health(server.base, revoked)
    finally:
        server.stop()


def test_crl_without_number_is_refused_at_start(tmp_path, pki):
    crl = tmp_path / "sin-numero.pem"
    crl.write_bytes(_crl_revoking(pki.client_ca, Path(pki.device_cert).read_bytes(), numbered=False))
    settings = Settings(tls_certificate=pki.cert, tls_key=pki.key, tls_client_ca=pki.client_ca_file, tls_client_crl=str(crl))
    with pytest.raises(TlsConfigError, match="cRLNumber"):
        check_server_files(settings)
    crl.write_bytes(b"no es una CRL")
    with pytest.raises(TlsConfigError, match="revocación"):
        check_server_files(settings)
