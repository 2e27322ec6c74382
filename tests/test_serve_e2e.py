"""The run command end to end: a real `expediente demo` process over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from dicom_samples import ct_slice
from expediente.config import Settings
from expediente.dicom.archive import Archive
from expediente.dicom.ingest import Origin


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _a_study_arrives_and_joins_the_record(data_dir: Path, patient: dict, base: str, auth: dict) -> None:
    """The server's study follower (its own process) turns a study that arrived into an
    ImagingStudy of the patient whose CURP the header carries."""
    curp = next(i["value"] for i in patient["identifier"] if i["system"] == "urn:oid:2.16.840.1.113883.4.629")
    archive = Archive.build(Settings(data_dir=data_dir))
    try:
        header = dict(patient_id=curp, birth=patient["birthDate"].replace("-", ""), sex={"female": "F", "male": "M"}.get(patient["gender"], "O"))
        study = archive.store_file(ct_slice(**header, name=_dicom_name(patient)), origin=Origin("stow", subject="e2e")).study_uid
    finally:
        archive.close()
    deadline = time.monotonic() + 30
    while (r := httpx.get(f"{base}/fhir/ImagingStudy/{study}", headers=auth)).status_code != 200:
        assert time.monotonic() < deadline, f"the study did not become an ImagingStudy: {r.text}"
        time.sleep(0.3)
    assert r.json()["subject"] == {"reference": f"Patient/{patient['id']}"}


def _dicom_name(patient: dict) -> str:
    name = patient["name"][0]
    return f"{name['family']}^{' '.join(name['given'])}"


def test_demo_serves_patients_to_token_holders_only(tmp_path: Path):
    port = _free_port()
    env = {**os.environ, "EXPEDIENTE_DATA_DIR": str(tmp_path / "data"), "EXPEDIENTE_PORT": str(port)}
    env.pop("EXPEDIENTE_DATABASE_URL", None)
    exe = Path(sys.executable).with_name("expediente")
    proc = subprocess.Popen([str(exe), "demo", "--patients", "3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the demo server did not start"
            time.sleep(0.3)
        creds = json.loads((tmp_path / "data" / "demo-credentials.json").read_text())["user"]
        token = httpx.post(
            f"{base}/auth/token", data={"grant_type": "password", "username": creds["username"], "password": creds["password"]}
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        # The demo physician sees the patients they and their facility care for, not everyone.
        seen = httpx.get(f"{base}/fhir/Patient?_summary=count", headers=auth).json()["total"]
        assert 0 < seen <= 3
        bundle = httpx.get(f"{base}/fhir/Patient?_count=1", headers=auth).json()
        pid = bundle["entry"][0]["resource"]["id"]
        r = httpx.get(f"{base}/fhir/Patient/{pid}", headers=auth)
        assert r.status_code == 200 and r.json()["resourceType"] == "Patient"
        assert any(i["system"] == "urn:oid:2.16.840.1.113883.4.629" for i in r.json()["identifier"])
        _a_study_arrives_and_joins_the_record(tmp_path / "data", r.json(), base, auth)
        r = httpx.get(f"{base}/fhir/Patient/{pid}")
        assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    text = out.decode()
    # Graceful shutdown on SIGTERM: the application's own shutdown ran in the worker.
    assert proc.returncode == 0, text
    assert "shutdown complete: writes committed, audit flushed" in text
    assert "medico.demo" in text  # printed how to log in
    # Logs are structured and carry no patient data.
    log_lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any(entry.get("route") == "/fhir/Patient/{id}" and entry.get("status") == 200 for entry in log_lines)
    assert pid not in "\n".join(line for line in text.splitlines() if line.startswith("{"))
