"""Start Debian's Orthanc (``/usr/sbin/Orthanc``, 1.10) with the DICOMweb plugin for a benchmark.

``running_orthanc(storage_dir)`` writes a temporary JSON configuration next to the storage: its
own storage directory and SQLite index (Orthanc's default index), a free DICOM port and HTTP
port, the DICOMweb plugin from ``/usr/share/orthanc/plugins/``, no HTTP authentication, and
otherwise Orthanc's own defaults (``SyncStorageArea`` true, ``StorageCompression`` false,
``TcpNoDelay`` true, ``MaximumPduLength`` 16 KB, 4 DICOM threads), so it is measured as shipped.
It waits for ``/system`` and always stops the process (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from _server import free_port, log

ORTHANC = "/usr/sbin/Orthanc"
PLUGINS = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
AE_TITLE = "ORTHANC"


def version() -> str | None:
    try:
        out = subprocess.run([ORTHANC, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0].split()[-1] if out else None


def dicomweb_version() -> str | None:
    """The orthanc-dicomweb Debian package version (the plugin does not print one by itself)."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "orthanc-dicomweb"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def config(storage_dir: Path, http_port: int, dicom_port: int, overrides: dict | None = None) -> dict:
    cfg = {
        "Name": "bench-orthanc",
        "StorageDirectory": str(storage_dir),
        "IndexDirectory": str(storage_dir),
        "Plugins": [PLUGINS],
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": AE_TITLE,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpCompressionEnabled": False,  # bytes on the wire as stored, like the Expediente side
        "TcpNoDelay": True,
        "KeepAlive": True,
        "SaveJobs": False,
        "StableAge": 3600,  # no stable-study jobs in the middle of a measurement
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Host": "127.0.0.1", "Ssl": False},
    }
    cfg.update(overrides or {})
    return cfg


@dataclass
class Orthanc:
    proc: subprocess.Popen
    base_url: str
    dicom_port: int
    storage_dir: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def index_path(self) -> Path:
        return self.storage_dir / "index"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def get_json(self, path: str, timeout: float = 60):
        with urllib.request.urlopen(self.base_url + path, timeout=timeout) as resp:
            return json.loads(resp.read())

    def post_json(self, path: str, body, timeout: float = 300):
        req = urllib.request.Request(self.base_url + path, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())


def _wait_ready(o: Orthanc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if o.proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {o.proc.returncode}; log tail:\n{o.log_tail()}")
        try:
            o.get_json("/system", timeout=2)
            # The DICOMweb plugin answers once it is loaded: check it is there, not just Orthanc.
            o.get_json("/dicom-web/studies?limit=1", timeout=5)
            return
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.2)
    raise RuntimeError(f"Orthanc not ready after {timeout:.0f} s; log tail:\n{o.log_tail()}")


@contextmanager
def running_orthanc(storage_dir: Path, overrides: dict | None = None, timeout: float = 120.0) -> Iterator[Orthanc]:
    storage_dir.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    cfg_path = storage_dir.parent / f"{storage_dir.name}.orthanc.json"
    cfg_path.write_text(json.dumps(config(storage_dir, http_port, dicom_port, overrides), indent=2))
    log_path = storage_dir.parent / f"{storage_dir.name}.orthanc.log"
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"  # Orthanc's DICOM server is dcmtk: the same Nagle setting as the peers
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen([ORTHANC, str(cfg_path)], env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True)
    o = Orthanc(proc, f"http://127.0.0.1:{http_port}", dicom_port, storage_dir, log_path)
    try:
        _wait_ready(o, timeout)
        log(f"Orthanc pid {proc.pid} ready on {o.base_url}, DICOM port {dicom_port}")
        yield o
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                log(f"Orthanc {proc.pid} still running after 60 s: SIGKILL")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log(f"Orthanc pid {proc.pid} stopped")
