"""The `expediente` command: initialize, serve, manage accounts, generate demo data."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from expediente.config import ENV_PREFIX, Settings, load_settings

app = typer.Typer(help="Expediente: expediente clínico electrónico (FHIR R4) e imágenes médicas.", no_args_is_help=True)
user_app = typer.Typer(help="Cuentas de personas (médicos, enfermería, pacientes...).", no_args_is_help=True)
client_app = typer.Typer(help="Clientes OAuth2 de sistemas (client credentials).", no_args_is_help=True)
db_app = typer.Typer(help="Esquema de la base de datos (migraciones).", no_args_is_help=True)
blobs_app = typer.Typer(help="Almacén de archivos (imágenes, documentos): cifrado y rotación de llaves.", no_args_is_help=True)
signature_app = typer.Typer(help="Firma electrónica avanzada de documentos clínicos (e.firma).", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(client_app, name="client")
app.add_typer(db_app, name="db")
app.add_typer(blobs_app, name="blobs")
app.add_typer(signature_app, name="signature")
audit_app = typer.Typer(help="Bitácora de auditoría: verificar la cadena, consultar accesos.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
console = Console(stderr=True)

DEMO_USER = "medico.demo"
DEMO_CLIENT = "sistema.demo"


def _settings(**overrides) -> Settings:
    return load_settings(**overrides)


def _engine(settings: Settings):
    from expediente.db.engine import make_engine

    return make_engine(settings)


def _initialize(settings: Settings) -> None:
    """Create the data folders, the signing key and the schema (idempotent)."""
    from expediente.db.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.blob_dir.mkdir(parents=True, exist_ok=True)
    settings.signing_key()
    engine = _engine(settings)
    try:
        upgrade(engine)
        _run_reindex(engine)  # a migration may queue index rebuilds; finish them before serving
    finally:
        engine.dispose()


def _run_reindex(engine) -> dict[str, int]:
    from expediente.fhir import reindex

    queued = reindex.pending(engine)
    if not queued:
        return {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("Reconstruyendo índices de búsqueda", total=None)
        done = reindex.run(engine, progress=lambda _t, n: progress.advance(task, n))
    for res_type, n in sorted(done.items()):
        console.print(f"  índices de {res_type}: {n} recursos")
    return done


@app.command()
def init() -> None:
    """Initialize the data directory and the database schema."""
    settings = _settings()
    _initialize(settings)
    console.print(f"[green]Listo:[/green] base de datos {settings.sqlalchemy_url.split('@')[-1]}, datos en {settings.data_dir}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending schema migrations."""
    _initialize(_settings())
    console.print("[green]Esquema actualizado[/green]")


@db_app.command("reindex")
def db_reindex(
    res_type: list[str] = typer.Option([], "--type", "-t", help="Tipo de recurso (repetible); por omisión, todos"),
) -> None:
    """Rebuild the search indexes (after the search parameters change). Resumable."""
    from expediente.fhir import reindex
    from expediente.fhir.resource_types import SERVED

    unknown = [t for t in res_type if t not in SERVED]
    if unknown:
        raise typer.BadParameter(f"tipo de recurso desconocido: {', '.join(unknown)}")
    engine = _engine(_settings())
    try:
        reindex.request(engine, res_type or sorted(SERVED), "expediente db reindex")
        done = _run_reindex(engine)
    finally:
        engine.dispose()
    console.print(f"[green]Índices reconstruidos:[/green] {sum(done.values())} recursos")


@db_app.command("current")
def db_current() -> None:
    """Show the schema revision of the database and of this version of Expediente."""
    from expediente.db.migrate import current_revision, head_revision

    engine = _engine(_settings())
    typer.echo(f"base de datos: {current_revision(engine)}  código: {head_revision()}")
    engine.dispose()


def _blob_store(settings: Settings):
    from expediente.blobs.keyring import KeyringError
    from expediente.blobs.local import LocalBlobStore

    try:
        return LocalBlobStore.from_settings(settings)
    except KeyringError as exc:
        console.print(f"[red]Error de configuración:[/red] {exc}")
        raise typer.Exit(2) from None


@blobs_app.command("status")
def blobs_status() -> None:
    """Count the stored blobs per encryption key id."""
    from expediente.blobs.rotation import census

    store = _blob_store(_settings())
    counts = census(store)
    current = store.keyring.current if store.keyring else None
    for key_id, n in sorted(counts.items()):
        typer.echo(f"{key_id}: {n}" + ("  (llave actual)" if key_id == current else ""))
    typer.echo(f"total: {sum(counts.values())}")


@blobs_app.command("add-key")
def blobs_add_key(
    key_id: Annotated[str | None, typer.Option("--id", help="Identificador de la llave (p. ej. 2026-12); por omisión, su huella")] = None,
) -> None:
    """Add a new random key to the keyring file (blob_keyring) and make it the current one."""
    from expediente.blobs.keyring import KeyringError, add_key

    settings = _settings()
    if not settings.blob_keyring:
        console.print("[red]Error:[/red] configure EXPEDIENTE_BLOB_KEYRING con la ruta del llavero (se crea si no existe)")
        raise typer.Exit(2)
    try:
        new_id = add_key(Path(settings.blob_keyring), key_id)
    except KeyringError as exc:
        console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"[green]Llave {new_id} agregada y marcada como actual.[/green] Reinicie el servidor y ejecute: expediente blobs rotate-key")


@blobs_app.command("rotate-key")
def blobs_rotate_key() -> None:
    """Re-encrypt every blob under the current key. Resumable: run it again after an interruption."""
    from expediente.blobs.keyring import KeyringError
    from expediente.blobs.rotation import rotate

    store = _blob_store(_settings())
    total = sum(1 for _ in store.keys())
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("Cifrando con la llave actual", total=total)
            report = rotate(store, progress=lambda: progress.advance(task))
    except KeyringError as exc:
        console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(2) from None
    for key, reason in sorted(report.failed.items()):
        console.print(f"[red]no se pudo recifrar[/red] {key}: {reason}")
    typer.echo(
        orjson.dumps(
            {"current_key": store.keyring.current, "reencrypted": report.reencrypted, "already_current": report.already_current, "failed": len(report.failed)}
        ).decode()
    )
    if report.failed:
        raise typer.Exit(1)


def _add_account(username: str, password: str | None, role: str, kind: str, **extra) -> str:
    from expediente.security.accounts import AccountError, add_account

    settings = _settings()
    _initialize(settings)
    secret = password or secrets.token_urlsafe(18)
    engine = _engine(settings)
    try:
        add_account(engine, username, secret, role, kind=kind, **extra)
    except AccountError as exc:
        console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    return secret


@user_app.command("add")
def user_add(
    username: str,
    role: Annotated[str, typer.Option(help="physician, nurse, radiologist, imaging_technician, patient, researcher, auditor, administrator")] = "physician",
    password: Annotated[str | None, typer.Option(help="Si se omite, se pide (o se genera con --generate-password).")] = None,
    generate_password: bool = False,
    name: Annotated[str | None, typer.Option(help="Nombre para mostrar")] = None,
    organization: Annotated[str | None, typer.Option(help="CLUES de la institución")] = None,
    practitioner: Annotated[str | None, typer.Option(help="Practitioner/<id> del profesional")] = None,
    patient: Annotated[str | None, typer.Option(help="Patient/<id> (cuenta de un paciente)")] = None,
) -> None:
    """Create a person's account (argon2id password hash)."""
    if password is None and not generate_password:
        password = typer.prompt("Contraseña", hide_input=True, confirmation_prompt=True)
    secret = _add_account(
        username, password, role, "person", display_name=name, organization=organization, practitioner_ref=practitioner, patient_ref=patient
    )
    console.print(f"[green]Cuenta creada:[/green] {username} ({role})")
    if generate_password:
        typer.echo(f"contraseña: {secret}")


def _on_person(action, username: str, *args, **kwargs):
    """Run an accounts function on an existing person's account, reporting its error in Spanish."""
    from expediente.security.accounts import AccountError

    settings = _settings()
    _initialize(settings)
    engine = _engine(settings)
    try:
        return action(engine, username, *args, **kwargs)
    except AccountError as exc:
        console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        engine.dispose()


@user_app.command("totp")
def user_totp(
    username: str,
    reset: Annotated[bool, typer.Option(help="Reemplaza un segundo factor ya inscrito.")] = False,
    disable: Annotated[bool, typer.Option(help="Quita el segundo factor de la cuenta.")] = False,
) -> None:
    """Enroll a TOTP second factor (RFC 6238); prints the otpauth:// URI once."""
    from expediente.security.accounts import disable_totp, enroll_totp
    from expediente.security.totp import enrolment_uri

    if disable:
        _on_person(disable_totp, username)
        console.print(f"[yellow]Segundo factor eliminado:[/yellow] {username}")
        return
    secret = _on_person(enroll_totp, username, reset=reset)
    console.print(f"[green]Segundo factor inscrito:[/green] {username}. Escanee el URI (código QR) en su aplicación de autenticación; no se mostrará de nuevo.")
    typer.echo(enrolment_uri(secret, username, _settings().totp_issuer))


@user_app.command("unlock")
def user_unlock(username: str) -> None:
    """Lift a lockout after failed logins."""
    from expediente.security.accounts import unlock

    _on_person(unlock, username)
    console.print(f"[green]Cuenta desbloqueada:[/green] {username}")


@client_app.command("add")
def client_add(
    client_id: str,
    role: str = "system",
    organization: Annotated[str | None, typer.Option(help="CLUES de la institución")] = None,
) -> None:
    """Create an OAuth2 client for a system; prints its secret once."""
    secret = _add_account(client_id, None, role, "system", organization=organization)
    console.print(f"[green]Cliente creado:[/green] {client_id}")
    typer.echo(f"client_secret: {secret}")


def _document_ref(value: str) -> tuple[str, str]:
    res_type, _, res_id = value.partition("/")
    if not res_type or not res_id or "/" in res_id:
        raise typer.BadParameter(f"se espera TIPO/ID, p. ej. Composition/123, no '{value}'")
    return res_type, res_id


def _fhir_http(method: str, url: str, token: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One FHIR request with a bearer token; (status, body) whatever the status."""
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    if body is not None:
        headers["Content-Type"] = "application/fhir+json"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError as exc:
        console.print(f"[red]Error:[/red] no se pudo conectar con {url}: {exc.reason}")
        raise typer.Exit(2) from None


def _diagnostics(body: bytes) -> str:
    try:
        return "; ".join(i.get("diagnostics", "") for i in orjson.loads(body).get("issue", [])) or body.decode()[:300]
    except (orjson.JSONDecodeError, AttributeError):
        return body.decode("utf-8", "replace")[:300]


@signature_app.command("sign")
def signature_sign(
    document: Annotated[str, typer.Argument(help="Documento a firmar: Composition/<id> o DocumentReference/<id>")],
    cert: Annotated[Path, typer.Option(help="Certificado del firmante (.cer DER del SAT, o PEM con la cadena)")],
    key: Annotated[Path, typer.Option(help="Llave privada (.key PKCS#8 DER cifrada del SAT, o PEM)")],
    password_file: Annotated[Path | None, typer.Option(help="Archivo con la contraseña de la llave; si se omite, se pide")] = None,
    chain: Annotated[Path | None, typer.Option(help="Certificados intermedios (PEM) que acompañan la firma")] = None,
    alg: Annotated[str | None, typer.Option(help="RS256 o PS256 (llave RSA), ES256 (EC P-256); por omisión según la llave")] = None,
    url: Annotated[str | None, typer.Option(envvar=ENV_PREFIX + "URL", help="URL base del servidor (sin /fhir)")] = None,
    token: Annotated[str | None, typer.Option(envvar=ENV_PREFIX + "TOKEN", help="Token de acceso (Bearer) del firmante")] = None,
) -> None:
    """Sign a clinical document locally with an e.firma certificate and submit the signature."""
    from expediente.security import signature as fea

    res_type, res_id = _document_ref(document)
    if not token:
        console.print(f"[red]Error:[/red] falta el token de acceso (--token o {ENV_PREFIX}TOKEN)")
        raise typer.Exit(2)
    base = (url or _settings().public_base).rstrip("/") + "/fhir"
    try:
        certificates = fea.load_certificates(cert.read_bytes())
        if chain is not None:
            certificates += fea.load_certificates(chain.read_bytes())
        key_bytes = key.read_bytes()
        password = password_file.read_text().rstrip("\r\n").encode() if password_file else None
        try:
            private_key = fea.load_private_key(key_bytes, password)
        except fea.SignatureError as exc:
            if exc.code != "password-required":
                raise
            private_key = fea.load_private_key(key_bytes, typer.prompt("Contraseña de la llave privada", hide_input=True).encode())
    except OSError as exc:
        console.print(f"[red]Error:[/red] no se pudo leer {exc.filename}: {exc.strerror}")
        raise typer.Exit(2) from None
    except fea.SignatureError as exc:
        console.print(f"[red]Error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    status, body = _fhir_http("GET", f"{base}/{res_type}/{res_id}", token)
    if status != 200:
        console.print(f"[red]Error al leer {document}[/red] ({status}): {_diagnostics(body)}")
        raise typer.Exit(2)
    version = orjson.loads(body).get("meta", {}).get("versionId")
    try:
        jws = fea.sign_document(body, private_key, certificates, algorithm=alg)
    except fea.SignatureError as exc:
        console.print(f"[red]Error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "jws", "valueString": jws}]}
    if version:
        parameters["parameter"].append({"name": "version", "valueString": version})
    status, body = _fhir_http("POST", f"{base}/{res_type}/{res_id}/$sign", token, orjson.dumps(parameters))
    if status not in (200, 201):
        console.print(f"[red]Firma rechazada[/red] ({status}): {_diagnostics(body)}")
        raise typer.Exit(2)
    provenance = orjson.loads(body)
    console.print(f"[green]Firmado:[/green] {res_type}/{res_id}/_history/{version}")
    typer.echo(f"Provenance/{provenance.get('id')}")


@signature_app.command("verify")
def signature_verify(
    document: Annotated[str, typer.Argument(help="Documento: Composition/<id> o DocumentReference/<id>")],
) -> None:
    """Verify every signature of a document on the database (exit code 1 if any fails)."""
    from expediente.app import Services
    from expediente.fhir import signing
    from expediente.fhir.errors import FhirError
    from expediente.fhir.store import Caller
    from expediente.security.principal import Principal

    res_type, res_id = _document_ref(document)
    settings = _settings()
    services = Services.build(settings)
    caller = Caller(Principal(subject="expediente-cli", kind="system", role="system"), "cli")
    try:
        checks = signing.verify_document(services.store, caller, signing.SignaturePolicy.from_settings(settings), res_type, res_id)
    except FhirError as exc:
        console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        services.close()
    if not checks:
        typer.echo(f"{document}: sin firmas electrónicas")
        raise typer.Exit(1)
    for c in checks:
        who = c.signer.subject if c.signer else "firmante desconocido"
        ids = " ".join(f"{k} {v}" for k, v in (("RFC", c.signer and c.signer.rfc), ("CURP", c.signer and c.signer.curp)) if v)
        verdict = "válida" if c.valid else f"NO válida: {c.reason}"
        typer.echo(f"{c.provenance} {c.target or ''} {verdict}\n  firmante: {who} {ids}\n  fecha de firma: {c.when or '-'}")
    if not all(c.valid for c in checks):
        raise typer.Exit(1)


def _counted(resources: Iterable[dict], progress: Progress, task) -> Iterator[dict]:
    for res in resources:
        if res.get("resourceType") == "Patient":
            progress.advance(task)
        yield res


@app.command()
def generate(
    patients: Annotated[int, typer.Option(min=1, help="Número de pacientes sintéticos")] = 100,
    seed: Annotated[int, typer.Option(help="Semilla (misma semilla, mismos datos)")] = 1,
    ndjson: Annotated[Path | None, typer.Option(help="Escribir NDJSON en esta carpeta en vez de cargar al almacén")] = None,
    batch: Annotated[int, typer.Option(min=1, help="Recursos por transacción al cargar")] = 1000,
) -> None:
    """Generate a synthetic Mexican population at IMSS ratios; load it or write NDJSON."""
    stats = _generate(patients, seed, ndjson, batch)
    typer.echo(orjson.dumps(stats).decode())


def _generate(patients: int, seed: int, ndjson: Path | None, batch: int) -> dict:
    from expediente.synth.generator import generate as synth, write_ndjson

    start = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("pacientes", total=patients)
        stream = _counted(synth(patients, seed), progress, task)
        if ndjson is not None:
            counts = write_ndjson(stream, ndjson)
            total = sum(counts.values())
        else:
            total = _load(stream, batch)
    elapsed = time.perf_counter() - start
    return {"patients": patients, "resources": total, "seconds": round(elapsed, 2), "resources_per_s": round(total / elapsed, 1)}


def _load(stream: Iterable[dict], batch: int) -> int:
    from expediente.app import Services
    from expediente.db.statistics import refresh as refresh_statistics
    from expediente.fhir.store import Caller
    from expediente.security.principal import Principal

    settings = _settings()
    _initialize(settings)
    services = Services.build(settings)
    caller = Caller(Principal(subject="expediente-cli", kind="system", role="system"), "cli")
    try:
        total = sum(services.store.bulk_load(caller, stream, batch_size=batch))
        refresh_statistics(services.engine)  # plans for the new data volume
        return total
    finally:
        services.close()


def _export_env(settings_overrides: dict) -> None:
    """Worker processes read settings from the environment: pass command-line overrides on."""
    for key, value in settings_overrides.items():
        if value is not None:
            os.environ[ENV_PREFIX + key.upper()] = str(value)


def _aggregate_worker_metrics(settings: Settings) -> None:
    """Metrics from every worker, aggregated at /metrics. Must run before anything imports
    prometheus_client in this process: the workers are forked from it, and the client picks its
    multiprocess mode once, at import."""
    if settings.workers > 1:
        metrics_dir = settings.data_dir / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())


def _serve(settings: Settings) -> None:
    from expediente.ops.logs import configure_logging, server_log_config

    configure_logging(settings.log_level)
    dimse = _start_dimse(settings)
    from granian import Granian

    from expediente.dicom.background import start_follower, stop_follower
    from expediente.security.tls import granian_options

    follower = start_follower(settings)  # imaging: metadata, ImagingStudy, priors (one process)
    try:
        Granian(
            "expediente.app:app_factory",
            factory=True,
            address=settings.host,
            port=settings.port,
            interface="asgi",
            workers=settings.workers,
            loop="uvloop",
            log_enabled=True,
            log_dictconfig=server_log_config(settings.log_level),
            workers_kill_timeout=20,
            **granian_options(settings),
        ).serve()
    finally:
        stop_follower(follower)
        if dimse is not None:
            dimse.stop()


def _start_dimse(settings: Settings):
    """The DIMSE listener (forked before Granian), only when an AE file says who may connect."""
    if not settings.dicom_aes or not settings.dicom_port:
        logging.getLogger("expediente.dicom.net").info(
            "DIMSE desactivado: defina EXPEDIENTE_DICOM_AES (archivo de AE conocidos) / DIMSE off: no AE file (dicom_aes)"
        )
        return None
    from expediente.dicom.aes import AeConfigError
    from expediente.dicom.net.server import start_dimse

    try:
        return start_dimse(settings)
    except (AeConfigError, OSError) as exc:
        console.print(f"[red]Error de configuración DIMSE:[/red] {exc}")
        raise typer.Exit(2) from None


TlsCertificate = Annotated[str | None, typer.Option(help="Cadena de certificados PEM: sirve HTTPS (con --tls-key)")]
TlsKey = Annotated[str | None, typer.Option(help="Llave privada PEM (PKCS#8); su contraseña en EXPEDIENTE_TLS_KEY_PASSWORD")]
TlsMinVersion = Annotated[str | None, typer.Option(help="Versión mínima de TLS: 1.2 o 1.3")]
TlsClientCa = Annotated[str | None, typer.Option(help="TLS mutuo: CA (PEM) de los certificados de cliente aceptados")]


def _tls_overrides(certificate, key, min_version, client_ca) -> dict:
    return {"tls_certificate": certificate, "tls_key": key, "tls_min_version": min_version, "tls_client_ca": client_ca}


def _check_protection(settings: Settings) -> None:
    """Refuse to start on TLS or blob-key settings that cannot work, saying why."""
    from expediente.blobs.keyring import KeyringError, load_keyring
    from expediente.security.tls import TlsConfigError, check_server_files

    from expediente.ops.protection import RateLimits

    try:
        check_server_files(settings)
        load_keyring(settings)
        RateLimits(settings)
    except (TlsConfigError, KeyringError, ValueError) as exc:
        console.print(f"[red]Error de configuración:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Dirección de escucha")] = None,
    port: Annotated[int | None, typer.Option(help="Puerto HTTP")] = None,
    workers: Annotated[int | None, typer.Option(help="Procesos de trabajo")] = None,
    tls_certificate: TlsCertificate = None,
    tls_key: TlsKey = None,
    tls_min_version: TlsMinVersion = None,
    tls_client_ca: TlsClientCa = None,
) -> None:
    """Serve the FHIR API (and health, metrics, OAuth2 token endpoint)."""
    overrides = {"host": host, "port": port, "workers": workers, **_tls_overrides(tls_certificate, tls_key, tls_min_version, tls_client_ca)}
    _export_env(overrides)
    settings = _settings()
    _aggregate_worker_metrics(settings)
    _check_protection(settings)
    _initialize(settings)
    _serve(settings)


def _demo_credentials(settings: Settings) -> dict:
    """Demo accounts, created once with random secrets kept (mode 600) in the data directory."""
    from expediente.security.accounts import add_account

    path = settings.data_dir / "demo-credentials.json"
    if path.exists():
        return orjson.loads(path.read_bytes())
    creds = {
        "user": {"username": DEMO_USER, "password": secrets.token_urlsafe(12), "role": "physician"},
        "client": {"client_id": DEMO_CLIENT, "client_secret": secrets.token_urlsafe(24), "role": "system"},
    }
    engine = _engine(settings)
    try:
        # The demo physician is the synthetic practitioner who saw the most patients, working at
        # the facility that cares for the most: the access policy shows a clinician the records
        # of the patients they or their institution care for.
        practitioner = _busiest(engine, "Practitioner")
        creds["user"]["practitioner"] = f"Practitioner/{practitioner}" if practitioner else None
        creds["user"]["organization"] = _clues_of(engine, _busiest(engine, "Organization"))
        add_account(
            engine,
            DEMO_USER,
            creds["user"]["password"],
            "physician",
            display_name="Dra. Demo",
            practitioner_ref=creds["user"]["practitioner"],
            organization=creds["user"]["organization"],
        )
        add_account(engine, DEMO_CLIENT, creds["client"]["client_secret"], "system", kind="system")
    finally:
        engine.dispose()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps(creds, option=orjson.OPT_INDENT_2))
    return creds


def _busiest(engine, actor_type: str) -> str | None:
    """The practitioner or organization that cares for the most patients (``care_link``)."""
    import sqlalchemy as sa

    from expediente.db.schema import care_link as c

    with engine.connect() as conn:
        return conn.execute(
            sa.select(c.c.actor_id)
            .where(c.c.actor_type == actor_type)
            .group_by(c.c.actor_id)
            .order_by(sa.func.count(sa.distinct(c.c.patient_key)).desc(), c.c.actor_id)
            .limit(1)
        ).scalar()


def _clues_of(engine, organization_id: str | None) -> str | None:
    import sqlalchemy as sa

    from expediente.db.schema import idx_token as t
    from expediente.security.policy import CLUES_SYSTEM

    if organization_id is None:
        return None
    with engine.connect() as conn:
        return conn.execute(
            sa.select(t.c.code).where(
                t.c.res_type == "Organization", t.c.res_id == organization_id, t.c.param == "identifier", t.c.system == CLUES_SYSTEM
            )
        ).scalar()


def _first_patient_id(settings: Settings, practitioner: str | None = None) -> str | None:
    """The first patient (in id order), or the first one ``practitioner`` has cared for."""
    import sqlalchemy as sa

    from expediente.db.schema import resource

    engine = _engine(settings)
    try:
        with engine.connect() as conn:
            if practitioner:
                from expediente.db.schema import care_link as c

                query = sa.select(c.c.patient_key).where(c.c.actor_type == "Practitioner", c.c.actor_id == practitioner.split("/", 1)[1])
                return conn.execute(query.order_by(c.c.patient_key).limit(1)).scalar()
            return conn.execute(
                sa.select(resource.c.res_id).where(resource.c.res_type == "Patient").order_by(resource.c.res_id).limit(1)
            ).scalar()
    finally:
        engine.dispose()


@app.command()
def demo(
    patients: Annotated[int, typer.Option(min=1, help="Pacientes sintéticos a cargar la primera vez")] = 200,
    port: Annotated[int | None, typer.Option(help="Puerto HTTP")] = None,
    workers: Annotated[int | None, typer.Option(help="Procesos de trabajo")] = None,
    tls_certificate: TlsCertificate = None,
    tls_key: TlsKey = None,
    tls_min_version: TlsMinVersion = None,
    tls_client_ca: TlsClientCa = None,
) -> None:
    """Initialize the embedded default, load a synthetic population once, and serve it."""
    _export_env({"port": port, "workers": workers, **_tls_overrides(tls_certificate, tls_key, tls_min_version, tls_client_ca)})
    settings = _settings()
    _aggregate_worker_metrics(settings)
    _check_protection(settings)
    _initialize(settings)
    if _first_patient_id(settings) is None:
        console.print(f"Cargando población sintética de demostración ({patients} pacientes)...")
        stats = _generate(patients, 1, None, 1000)
        console.print(f"{stats['resources']} recursos en {stats['seconds']} s ({stats['resources_per_s']} recursos/s)")
    creds = _demo_credentials(settings)
    base = settings.public_base
    user = creds["user"]
    # With HTTPS, curl must trust the CA that signed the server (and, with mutual TLS, present a
    # device certificate): placeholders the operator replaces.
    curl = "curl --cacert ca.pem" if settings.tls_enabled else "curl"
    if settings.tls_client_ca:
        curl += " --cert dispositivo.pem --key dispositivo-llave.pem"
    console.print(
        f"""
[bold]Expediente[/bold] sirviendo FHIR R4 en {base}/fhir  (Ctrl+C para detener)

Usuario de demostración: [bold]{user['username']}[/bold]  contraseña: [bold]{user['password']}[/bold]
(credenciales guardadas en {settings.data_dir / 'demo-credentials.json'})

  TOKEN=$({curl} -s {base}/auth/token -d grant_type=password -d username={user['username']} -d password={user['password']} | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  {curl} -H "Authorization: Bearer $TOKEN" {base}/fhir/Patient/{_first_patient_id(settings, user.get('practitioner'))}
""",
        soft_wrap=True,
        highlight=False,
    )
    _serve(settings)



# ------------------------------------------------------------------------------------- audit

_report = Console(highlight=False, soft_wrap=True)  # stdout: the report itself


@audit_app.command("verify")
def audit_verify(
    expect_head: Annotated[
        str | None, typer.Option("--expect-head", help="Cabeza anotada antes (SEQ:HASH o HASH): debe seguir en la cadena")
    ] = None,
    batch: Annotated[int, typer.Option(min=1, max=100_000, help="Entradas leídas por consulta")] = 5000,
) -> None:
    """Recompute the audit chain over the whole log; exit 1 if any entry was altered."""
    from expediente.security.audit_chain import Anchor, verify

    try:
        anchor = Anchor.parse(expect_head) if expect_head else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--expect-head") from None
    engine = _engine(_settings())
    try:
        result = verify(engine, batch=batch, anchor=anchor)
    except Exception as exc:  # noqa: BLE001 - no verdict without the chain (ChainUnavailable, database down)
        console.print(f"[red]No se pudo verificar la bitácora:[/red] {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    if result.break_count:
        first = result.breaks[0]
        when = f"registrada {first.recorded.isoformat(timespec='seconds')}Z" if first.recorded else "entrada ausente"
        _report.print(f"[red]Bitácora alterada:[/red] {result.break_count} rupturas en {result.entries} entradas")
        _report.print(f"Primera ruptura: seq {first.seq} ({when}): {first.problem}")
        for b in result.breaks[1:]:
            _report.print(f"  seq {b.seq}: {b.problem}")
        if result.break_count > len(result.breaks):
            _report.print(f"  ... y {result.break_count - len(result.breaks)} más")
    if result.anchor_found is False:
        _report.print(f"[red]La cabeza anotada no está en la cadena:[/red] {expect_head}")
    if not result.intact:
        raise typer.Exit(1)
    _report.print(f"[green]Bitácora íntegra:[/green] {result.entries} entradas")
    _report.print(f"Cabeza: {result.head}")
    _report.print("Anote la cabeza fuera de la base de datos y compruébela después con --expect-head")


def _audit_table(params: list[tuple[str, str]], patient: str | None, title: str) -> None:
    """Print the newest entries matching ``params``; the consultation is itself recorded."""
    import getpass

    from expediente.db.engine import write_transaction
    from expediente.fhir.errors import FhirError
    from expediente.security.audit import AuditEntry, AuditWriter
    from expediente.security.audit_search import parse, statement

    try:
        query = parse(params, default_count=50, max_count=10_000)
    except FhirError as exc:
        raise typer.BadParameter(str(exc)) from None
    engine = _engine(_settings())
    try:
        entry = AuditEntry(
            actor=f"cli:{getpass.getuser()}"[:128],
            role="administrator",  # an operator of the server, reading the trail locally
            action="search",
            res_type="AuditEvent",
            res_id=None,
            patient_key=patient,
            outcome="allowed",
            reason="consulta local de la bitácora (línea de comandos)",
            source="cli",
        )
        with write_transaction(engine) as conn:
            AuditWriter.record_in(conn, [entry])
        with engine.connect() as conn:
            rows = conn.execute(statement(query)).mappings().all()[: query.count]
    finally:
        engine.dispose()
    from rich.table import Table

    table = Table(title=title)
    for column in ("seq", "registrada (UTC)", "usuario", "rol", "acción", "recurso", "paciente", "resultado", "motivo"):
        table.add_column(column)
    for r in rows:
        resource = "/".join(x for x in (r["res_type"], r["res_id"]) if x)
        outcome = {"allowed": "permitido", "denied": "denegado"}.get(r["outcome"], r["outcome"])
        reason = (f"[{r['purpose']}] " if r["purpose"] else "") + (r["reason"] or "")
        table.add_row(
            str(r["seq"]), r["recorded"].isoformat(timespec="seconds"), r["actor"], r["role"] or "", r["action"],
            resource, r["patient_key"] or "", outcome, reason,
        )
    # Piped to a file, rows stay whole (one line each) instead of wrapping at 80 columns.
    out = Console(highlight=False, width=None if sys.stdout.isatty() else 240)
    out.print(table)
    out.print(f"{len(rows)} entradas (las más recientes primero)")


def _since_param(since: str | None) -> list[tuple[str, str]]:
    return [("date", f"ge{since}")] if since else []


@audit_app.command("list")
def audit_list(
    patient: Annotated[str | None, typer.Option(help="Id del paciente (Patient/<id> o <id>)")] = None,
    user: Annotated[str | None, typer.Option(help="Nombre de usuario")] = None,
    since: Annotated[str | None, typer.Option(help="Desde esta fecha (AAAA, AAAA-MM-DD o instante)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
) -> None:
    """Who accessed what: the newest audit entries, filtered by patient, user and date."""
    params = [("patient", patient)] if patient else []
    params += [("agent", user)] if user else []
    params += _since_param(since) + [("_count", str(limit))]
    key = patient.removeprefix("Patient/") if patient else None
    _audit_table(params, key, "Bitácora de accesos")


@audit_app.command("break-glass")
def audit_break_glass(
    since: Annotated[str | None, typer.Option(help="Desde esta fecha (AAAA, AAAA-MM-DD o instante)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 500,
) -> None:
    """The break-the-glass review list: emergency accesses, newest first."""
    _audit_table([("purpose", "BTG"), *_since_param(since), ("_count", str(limit))], None, "Accesos de emergencia (romper el cristal)")


# ------------------------------------------------------------------------------------- catalog

catalog_app = typer.Typer(help="Catálogos (CIE-10, CIE-9-MC, entidades, derechohabiencia): cargar los archivos oficiales de la DGIS.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("load")
def catalog_load(
    kind: Annotated[str, typer.Argument(help="cie10, cie9mc o generic")],
    file: Annotated[Path, typer.Argument(help="Archivo CSV del catálogo (formato de la DGIS)", exists=True, dir_okay=False)],
    version: Annotated[str | None, typer.Option(help="Versión del catálogo (p. ej. 2024)")] = None,
    system: Annotated[str | None, typer.Option(help="generic: URL canónica del sistema de códigos")] = None,
    name: Annotated[str | None, typer.Option(help="generic: nombre (y id) del catálogo")] = None,
    title: Annotated[str | None, typer.Option(help="generic: título en español")] = None,
) -> None:
    """Replace a catalog with an official file, in one transaction (a bad file changes nothing)."""
    from expediente.mx.catalog_files import CatalogFileError
    from expediente.mx.catalogs import generic_definition, load_file

    settings = _settings()
    _initialize(settings)
    engine = _engine(settings)
    try:
        definition = generic_definition(system or "", name or "", title) if kind == "generic" else None
        info = load_file(engine, kind, file.read_bytes(), version=version, definition=definition)
    except CatalogFileError as exc:
        console.print(f"[red]No se cargó el catálogo:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    typer.echo(f"{info.id}: {info.concept_count} conceptos, versión {info.version or '-'}, completo ({info.url})")


@catalog_app.command("list")
def catalog_list() -> None:
    """The catalogs in the database: id, URL, version, concepts, complete or subset, origin."""
    from expediente.mx.catalog_store import list_systems

    settings = _settings()
    _initialize(settings)
    engine = _engine(settings)
    try:
        for s in list_systems(engine):
            content = "completo" if s.complete else "subconjunto"
            origin = "incluido" if s.origin == "shipped" else "cargado"
            typer.echo(f"{s.id}\t{s.url}\t{s.version or '-'}\t{s.concept_count}\t{content}\t{origin}\t{s.loaded.isoformat(timespec='seconds')}")
    finally:
        engine.dispose()


# --- master patient index ------------------------------------------------------------------
mpi_app = typer.Typer(help="Índice maestro de pacientes: deduplicación por lotes.", no_args_is_help=True)
app.add_typer(mpi_app, name="mpi")


@mpi_app.command("dedupe")
def mpi_dedupe(
    out: Annotated[Path, typer.Option(help="Archivo de salida: .csv o .json con los pares candidatos")],
    organization: Annotated[str | None, typer.Option(help="Solo los pacientes de esta organización (Organization/<id>)")] = None,
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Probabilidad mínima de los pares")] = 0.5,
    fixed: Annotated[bool, typer.Option(help="Parámetros m/u fijos en lugar de entrenarlos con los datos")] = False,
) -> None:
    """Candidate duplicate Patients of the store (splink on DuckDB); links nothing by itself."""
    from expediente.app import Services
    from expediente.fhir.store import Caller
    from expediente.mpi import batch
    from expediente.security.principal import Principal

    services = Services.build(_settings())
    caller = Caller(Principal(subject="expediente-cli", kind="system", role="system"), "cli")
    try:
        patients = list(batch.store_patients(services.store, caller, organization=organization))
        pairs = batch.dedupe_patients(patients, threshold=threshold, train=not fixed)
    finally:
        services.close()
    batch.write_pairs(pairs, out)
    certain = sum(p.probability >= batch.CERTAIN_PROBABILITY for p in pairs)
    typer.echo(f"{len(patients)} pacientes, {len(pairs)} pares candidatos ({certain} con probabilidad >= {batch.CERTAIN_PROBABILITY}) en {out}")


# ---- record: retention and purge of a patient's clinical record (records/retention.py) ----
record_app = typer.Typer(help="Expediente clínico: retención (NOM-004, 5 años) y depuración.", no_args_is_help=True)
app.add_typer(record_app, name="record")


@record_app.command("purge")
def record_purge(
    patient_id: Annotated[str, typer.Argument(help="id del Patient cuyo expediente se depura")],
    yes: Annotated[bool, typer.Option("--yes", help="no pedir confirmación")] = False,
) -> None:
    """Depurar (borrar físicamente) el expediente de un paciente, solo 5 años después de su último acto médico."""
    from expediente.app import Services
    from expediente.fhir.errors import FhirError
    from expediente.fhir.store import Caller
    from expediente.records import retention
    from expediente.security.principal import Principal

    if not yes:
        typer.confirm(f"¿Depurar definitivamente el expediente de Patient/{patient_id}?", abort=True)
    settings = _settings()
    services = Services.build(settings)
    caller = Caller(Principal(subject="expediente-cli", kind="system", role="system"), "cli")
    try:
        result = retention.purge(services.store, caller, patient_id)
    except FhirError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        services.close()
    last = result.last_act.isoformat() if result.last_act else "ninguno"
    console.print(f"Expediente de Patient/{patient_id} depurado (último acto médico: {last}); la bitácora lo registra.")
    for table, n in sorted(result.removed.items()):
        if n:
            print(f"{table}\t{n}")


if __name__ == "__main__":
    app()
