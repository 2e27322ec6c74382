"""Shared by tests/test_dicom_dimse*.py: an archive's DIMSE listener on a free port, the AE file
it knows, and runners for the dcmtk peers."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from expediente.db.schema import dicom_instance, dicom_series, dicom_study
from expediente.dicom.net.server import start_dimse

AE_TITLE = "EXPEDIENTE"
AES_TOML = """
[[ae]]
title = "MODALIDAD"
institution = "DFIMS000011"

[[ae]]
title = "SOLO_BUSCA"
institution = "DFIMS000011"
services = ["find"]

[[ae]]
title = "OTRA_INST"
institution = "DFSSA000022"

[[ae]]
title = "VISOR"
institution = "DFIMS000011"
host = "127.0.0.1"
port = {dest_port}
"""


def need_dcmtk() -> None:
    if shutil.which("storescu") is None:
        if os.environ.get("EXPEDIENTE_REQUIRE_DCMTK") == "1":
            pytest.fail("dcmtk (storescu, findscu, ...) no está instalado y EXPEDIENTE_REQUIRE_DCMTK=1")
        pytest.skip("dcmtk no está instalado (storescu); instale dcmtk o defina EXPEDIENTE_REQUIRE_DCMTK=1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Dimse:
    settings: object
    port: int
    dest_port: int
    tmp: Path

    def run(self, tool: str, *args: str, files=(), calling: str = "MODALIDAD", called: str = AE_TITLE, check: bool = False, timeout: float = 60):
        """``args`` are options; ``files`` come after the peer and port, as dcmtk wants."""
        cmd = [tool, "-aet", calling, "-aec", called, *args, "127.0.0.1", str(self.port), *files]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "TCP_NODELAY": "1"})
        if check and done.returncode != 0:
            raise AssertionError(f"{tool} falló ({done.returncode}): {done.stdout}\n{done.stderr}")
        return done

    def write(self, name: str, data: bytes) -> str:
        path = self.tmp / name
        path.write_bytes(data)
        return str(path)

    def counts(self) -> tuple[int, int, int]:
        engine = sa.create_engine(self.settings.sqlalchemy_url)
        try:
            with engine.connect() as conn:
                return tuple(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() for t in (dicom_study, dicom_series, dicom_instance))
        finally:
            engine.dispose()

    def blobs(self) -> list[Path]:
        root = Path(self.settings.blob_dir)
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []

    def echo(self) -> None:
        self.run("echoscu", check=True)


def start(settings, services, tmp_path: Path, **overrides):
    dest_port = free_port()
    aes = tmp_path / "aes.toml"
    aes.write_text(AES_TOML.format(dest_port=dest_port))
    port = free_port()
    values = {"dicom_aes": str(aes), "dicom_port": port, "dicom_ae_title": AE_TITLE, "dicom_processes": 1, **overrides}
    s = dataclasses.replace(settings, **values)
    handle = start_dimse(s)
    return handle, Dimse(s, port, dest_port, tmp_path)
