"""The run command end to end: a real `expediente demo` process over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from served import free_port, wait_healthy


def test_demo_serves_patients_to_token_holders_only(tmp_path: Path):
    port = free_port()
    env = {**os.environ, "EXPEDIENTE_DATA_DIR": str(tmp_path / "data"), "EXPEDIENTE_PORT": str(port)}
    env.pop("EXPEDIENTE_DATABASE_URL", None)
    exe = Path(sys.executable).with_name("expediente")
    proc = subprocess.Popen([str(exe), "demo", "--patients", "3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base)
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
