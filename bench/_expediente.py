"""Start the real ``expediente serve`` for the imaging benchmark: DIMSE on, DICOMweb, a token.

``running_expediente(data_dir)`` uses ``data_dir`` as the server's data directory (SQLite index
and local blob storage, the defaults; kept when it is a cached population), writes an AE file
that lets the benchmark's storescu (``BENCHSCU``) store, find, move and get, starts
``expediente serve`` (via ``bench/_server.py``: its own process group, /health, always
stopped) with the DIMSE listener on a free port, creates a system client and yields the server,
the DIMSE port and a bearer token.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import _server
from _peers import CALLING_AE

AE_TITLE = "EXPEDIENTE"
INSTITUTION = "DFIMS000011"


@dataclass
class Expediente:
    server: _server.Server
    dicom_port: int
    token: str
    data_dir: Path

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def pid(self) -> int:
        return self.server.pid


def version() -> str | None:
    try:
        out = subprocess.run([str(_server.EXPEDIENTE), "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out or None


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=_server.REPO, capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def environment(data_dir: Path, dicom_port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    aes = data_dir / "bench-aes.toml"
    aes.write_text(f'[[ae]]\ntitle = "{CALLING_AE}"\ninstitution = "{INSTITUTION}"\nservices = ["store", "find", "move", "get"]\n')
    env = dict(os.environ)
    for inherited in ("EXPEDIENTE_DATABASE_URL", "EXPEDIENTE_CONFIG", "EXPEDIENTE_BASE_URL"):
        env.pop(inherited, None)
    env["EXPEDIENTE_DATA_DIR"] = str(data_dir)
    env["EXPEDIENTE_DICOM_AES"] = str(aes)
    env["EXPEDIENTE_DICOM_PORT"] = str(dicom_port)
    env["EXPEDIENTE_DICOM_AE_TITLE"] = AE_TITLE
    env.setdefault("EXPEDIENTE_LOG_LEVEL", "warning")
    env.setdefault("EXPEDIENTE_TOKEN_TTL_SECONDS", "7200")
    env.update(extra or {})
    return env


@contextmanager
def running_expediente(data_dir: Path, workers: int = 2, extra_env: dict[str, str] | None = None) -> Iterator[Expediente]:
    dicom_port = _server.free_port()
    env = environment(data_dir, dicom_port, extra_env)
    client_id = f"bench.imaging.{secrets.token_hex(4)}"  # a cached data dir keeps earlier clients
    secret = _server.add_client(env, client_id, "system")
    with _server.running_server(env, workers) as server:
        token = _server.get_token(server.base_url, client_id, secret)
        yield Expediente(server, dicom_port, token, data_dir)
