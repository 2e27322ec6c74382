"""The DIMSE listener: one listening socket, ``dicom_processes`` pre-forked receiving processes
that share it (the kernel hands each new association to one of them), a thread per association
inside each, and a graceful stop (no new associations, the current ones finish)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

from expediente.config import Settings

log = logging.getLogger("expediente.dicom.net")
STOP_GRACE_S = 30.0


@dataclass
class DimseHandle:
    port: int
    pids: list[int] = field(default_factory=list)
    _sock: socket.socket | None = None

    def stop(self, timeout: float = STOP_GRACE_S) -> None:
        """Stop accepting; let current associations finish (up to ``timeout``), then end."""
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout + 5
        for pid in self.pids:
            while True:
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if done:
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.05)
        self.pids.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def listen(settings: Settings) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.dicom_port))
    sock.listen(128)
    return sock


def start_dimse(settings: Settings, sock: socket.socket | None = None) -> DimseHandle:
    """Listen on ``dicom_port`` as ``dicom_ae_title`` and fork the receiving processes."""
    from expediente.dicom.aes import AeDirectory
    from expediente.dicom.archive import Archive  # noqa: F401 - imported once, before the fork
    from expediente.dicom.net.provider import Provider  # noqa: F401

    AeDirectory.load(settings.dicom_aes)  # a broken AE file stops the start here, with its reason
    sock = sock or listen(settings)
    handle = DimseHandle(port=sock.getsockname()[1], _sock=sock)
    for _ in range(max(1, settings.dicom_processes)):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                _child(settings, sock)
            except BaseException:  # noqa: BLE001
                log.exception("dimse: el proceso receptor terminó con error")
                code = 1
            finally:
                os._exit(code)
        handle.pids.append(pid)
    log.info("DIMSE: AE %s escuchando en el puerto %d con %d procesos", settings.dicom_ae_title, handle.port, len(handle.pids))
    return handle


def _child(settings: Settings, sock: socket.socket) -> None:
    from expediente.dicom.aes import AeDirectory
    from expediente.dicom.archive import Archive
    from expediente.dicom.net.provider import Provider

    stopping = threading.Event()
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    archive = Archive.build(settings)
    provider = Provider(archive, settings, AeDirectory.load(settings.dicom_aes))
    sock.settimeout(0.25)
    active: set[threading.Thread] = set()
    while not stopping.is_set():
        if os.getppid() != parent:  # the server died without stopping us: stop too
            break
        try:
            conn, address = sock.accept()
        except (TimeoutError, socket.timeout, InterruptedError, BlockingIOError):
            continue
        conn.setblocking(True)
        thread = threading.Thread(target=_serve_one, args=(provider, conn, address, active), daemon=True)
        active.add(thread)
        thread.start()
    sock.close()
    deadline = time.monotonic() + STOP_GRACE_S
    for thread in list(active):
        thread.join(max(0.0, deadline - time.monotonic()))
    archive.close()


def _serve_one(provider, conn: socket.socket, address, active: set) -> None:
    try:
        provider.serve(conn, address)
    except Exception:  # noqa: BLE001
        log.exception("dimse: error atendiendo a %s", address)
    finally:
        try:
            conn.close()
        finally:
            active.discard(threading.current_thread())
