"""Settings: defaults, then a TOML config file, then EXPEDIENTE_* environment variables.

The embedded default needs nothing installed: a SQLite file and a blob folder under
``./data``. Production points ``EXPEDIENTE_DATABASE_URL`` at PostgreSQL.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

ENV_PREFIX = "EXPEDIENTE_"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    database_url: str = ""  # empty: sqlite file under data_dir
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    # Public base URL used in Location headers, fullUrl and paging links.
    base_url: str = ""
    # HMAC key that signs access tokens; empty: a key file under data_dir, made on first use.
    secret_key: str = ""
    token_ttl_seconds: int = 900
    # Authentication
    # Consecutive failed logins (wrong password or TOTP code) that lock a person's account,
    # and for how long; counted in the database, so every server process sees the same count.
    login_max_failures: int = 5
    login_lockout_seconds: int = 900
    # Refresh tokens: a login may be extended while used at least every `refresh_idle_seconds`,
    # and never beyond `refresh_max_seconds` after the password was given (a long shift).
    refresh_idle_seconds: int = 4 * 3600
    refresh_max_seconds: int = 12 * 3600
    # Name shown for the account in authenticator apps (TOTP enrolment URI).
    totp_issuer: str = "Expediente"
    # External OpenID Connect provider (Keycloak, an institution's directory); empty: none.
    oidc_issuer: str = ""
    oidc_audience: str = ""  # empty: the FHIR base URL (public_base + "/fhir")
    oidc_jwks_url: str = ""  # https (or loopback http) JWKS endpoint of the provider
    oidc_jwks_file: str = ""  # or a local JWKS file (offline deployments, tests)
    # Where the provider's tokens carry who the caller is; dotted paths enter nested objects.
    oidc_subject_claim: str = "sub"
    oidc_role_claim: str = "realm_access.roles"
    oidc_role_prefix: str = ""  # e.g. "expediente-": only roles named so are ours
    oidc_organization_claim: str = "clues"
    oidc_practitioner_claim: str = "fhir_practitioner"
    oidc_patient_claim: str = "fhir_patient"
    max_body_bytes: int = 16 * 1024 * 1024
    # Most entries a batch/transaction Bundle may hold (POST /fhir); a transaction holds the
    # write lock for all of them, so this bounds how long other writers can wait.
    bundle_max_entries: int = 5000
    page_size_default: int = 50
    page_size_max: int = 500
    # Most resources _include/_revinclude (and $everything's references) add to one page;
    # beyond it the page says so and links to the rest.
    include_max: int = 1000
    log_level: str = "info"
    # Master patient index: link each new or changed registration to the person's other
    # records when the match is certain (the rest go to the review list). Off: matching only
    # on request ($match, the review list stays empty), e.g. while loading a legacy archive
    # that `expediente mpi dedupe` reconciles afterwards.
    mpi_autolink: bool = True
    # Transport and storage protection (docs/security.md, "Protection in transit and at rest").
    # HTTPS: a PEM certificate chain and its PEM private key (PKCS#8); both empty: plain HTTP.
    tls_certificate: str = ""
    tls_key: str = ""
    tls_key_password: str = ""
    tls_min_version: str = "1.2"  # "1.2" or "1.3"
    # Mutual TLS: PEM file of the CAs whose client certificates are accepted; when set, a client
    # without a valid certificate from them is refused during the handshake.
    tls_client_ca: str = ""
    tls_client_crl: str = ""  # optional PEM certificate revocation list for client certificates
    # Blob encryption at rest (AES-256-GCM): one 32-byte key (base64 or hex), or a keyring file
    # (TOML: current = "<id>", [keys] <id> = "<key>"); both empty: blobs stored as they come.
    blob_key: str = ""
    blob_keyring: str = ""
    # Where blobs live (docs/operations.md, "Blob storage"): "local" files under data_dir/blobs,
    # or "s3": any S3-compatible object store (MinIO, Ceph RGW, AWS S3). Endpoint empty: AWS;
    # region empty: us-east-1 (or AWS_REGION); keys empty: the AWS credential chain (AWS_*
    # variables, instance role). Objects are named <prefix>ab/cd/<sha256>, as the local files.
    blob_backend: str = "local"
    # How received DICOM instances are made durable on local blobs: "auto" flushes the whole
    # file system once for all instances waiting (Linux syncfs; covers the SQLite index when it
    # is on the same file system), "files" flushes each file and directory on its own (for a
    # file system shared with other heavy writers). blobs/fs_flush.py.
    blob_sync: str = "auto"
    s3_endpoint: str = ""
    s3_bucket: str = ""
    s3_region: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_prefix: str = ""
    # Origins allowed to call the API from a browser, comma-separated; empty: no CORS headers.
    cors_origins: str = ""
    # Token-bucket rate limits per worker process (sustained rate, burst size).
    rate_system_per_s: int = 5000  # per authenticated system client
    rate_system_burst: int = 10000
    rate_person_per_s: int = 100  # per authenticated person
    rate_person_burst: int = 500
    rate_address_per_s: int = 50  # per client address, requests without a principal
    rate_address_burst: int = 200
    rate_auth_per_min: int = 30  # per client address on /auth (slows password guessing)
    rate_auth_burst: int = 20
    # SQLite durability: FULL fsyncs every commit (an acknowledged write survives power loss).
    sqlite_synchronous: str = "FULL"
    # Electronic signature (FEA) of clinical documents.
    # PEM file of the certification authorities a signer's chain must lead to (e.g. the SAT's
    # for the e.firma); empty: chains are not checked against anchors (verification says so).
    signature_trust_anchors: str = ""
    # How far (seconds) a signature's signing time may be from the server's clock when it is
    # submitted: bounds back-dating a signature into an expired certificate's validity.
    signature_time_tolerance_seconds: int = 600
    # The certificate's CURP or RFC must match one of the signer's Practitioner identifiers.
    signature_require_identity_match: bool = True
    # Mexican profiles on write (docs/profiles.md): "mx" every Patient, Practitioner,
    # Organization, Coverage, Encounter and NOM-004 document must conform; "declared" only
    # resources naming one of the profiles in meta.profile.
    profiles: str = "mx"
    # Imaging archive (docs/imaging.md). DIMSE listener inside `expediente serve`: port (0: off),
    # this archive's AE title, and the TOML file of known AEs (modalities, PACS, viewers and
    # C-MOVE destinations, each with its institution); an AE not listed there is refused.
    dicom_port: int = 11112
    dicom_ae_title: str = "EXPEDIENTE"
    dicom_aes: str = ""
    dicom_processes: int = 2  # receiving processes (several associations in parallel)
    # Largest P-DATA PDU this archive accepts (advertised in the association): larger PDUs
    # mean fewer per-PDU costs for the sender and for us.
    dicom_max_pdu: int = 4 * 1024 * 1024
    # A SOP Instance UID received again: "keep" the stored instance (answered as success) or
    # "replace" it with the new bytes.
    dicom_duplicates: str = "keep"
    # Extra header attributes indexed for every instance (keywords, comma-separated).
    dicom_extra_tags: str = ""
    # Largest single instance accepted over DIMSE or STOW-RS.
    dicom_max_instance_bytes: int = 2 * 1024 * 1024 * 1024
    # Seconds without a new instance before a study's metadata, ImagingStudy and priors are
    # prepared (the work waits until the modality has finished sending).
    dicom_settle_seconds: float = 2.0
    extra: dict = field(default_factory=dict)

    @property
    def sqlalchemy_url(self) -> str:
        url = self.database_url or f"sqlite:///{(self.data_dir / 'expediente.db').resolve()}"
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_certificate or self.tls_key)

    @property
    def public_base(self) -> str:
        scheme = "https" if self.tls_enabled else "http"
        return (self.base_url or f"{scheme}://{self.host}:{self.port}").rstrip("/")

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    def signing_key(self) -> bytes:
        """The token-signing key: from settings, or a 256-bit key file kept in the data dir."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return path.read_text().strip().encode()


def _coerce(value: str, current):
    if isinstance(current, bool):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(current, int):
        return int(value)
    if isinstance(current, float):
        return float(value)
    if isinstance(current, Path):
        return Path(value)
    return value


def load_settings(config_file: str | os.PathLike | None = None, **overrides) -> Settings:
    """Build settings from defaults, an optional TOML file and the environment (in that order).

    The file is ``config_file``, else ``$EXPEDIENTE_CONFIG``, else ``./expediente.toml`` if present.
    """
    settings = Settings()
    known = {f.name: f for f in fields(Settings) if f.name != "extra"}
    path = config_file or os.environ.get(ENV_PREFIX + "CONFIG") or "expediente.toml"
    values: dict = {}
    if Path(path).is_file():
        with open(path, "rb") as f:
            for key, value in tomllib.load(f).items():
                if key in known:
                    values[key] = _coerce(str(value), getattr(settings, key))
    for name in known:
        env = os.environ.get(ENV_PREFIX + name.upper())
        if env is not None:
            values[name] = _coerce(env, getattr(settings, name))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return replace(settings, **values)
