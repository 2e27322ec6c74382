"""Starting a real `expediente` process in a test: a free port, and waiting for /health."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, base: str, timeout: float = 120) -> None:
    """Until ``base``/health answers 200; fails with the process output if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stdout.read().decode()
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.2)


@contextmanager
def serving(settings, port: int, client_id: str, secret: str, cwd: Path) -> Iterator[tuple[str, str]]:
    """`expediente serve` on ``port`` over ``settings``' data and database (one worker); yields
    the base URL and a token of the system client ``client_id``, stops it with SIGTERM after."""
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "EXPEDIENTE_DATA_DIR": str(settings.data_dir),
        "EXPEDIENTE_SECRET_KEY": settings.secret_key,
        "EXPEDIENTE_PORT": str(port),
        "EXPEDIENTE_HOST": "127.0.0.1",
        "EXPEDIENTE_WORKERS": "1",
        "EXPEDIENTE_BASE_URL": base,
    }
    env.pop("EXPEDIENTE_DATABASE_URL", None)
    if settings.database_url:
        env["EXPEDIENTE_DATABASE_URL"] = settings.database_url
    exe = Path(sys.executable).with_name("expediente")
    proc = subprocess.Popen([str(exe), "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        wait_healthy(proc, base)
        data = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        yield base, httpx.post(f"{base}/auth/token", data=data).json()["access_token"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
