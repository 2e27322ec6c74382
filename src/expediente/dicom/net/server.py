"""The DIMSE listener: one listening socket, ``dicom_processes`` pre-forked receiving processes
that share it (a process serving more associations than a sibling leaves the next one to it, so
parallel associations spread evenly), a thread per association inside each, and a graceful stop
(no new associations, the current ones finish)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

from expediente.config import Settings

log = logging.getLogger("expediente.dicom.net")
STOP_GRACE_S = 30.0
DEFER_S = 0.02  # how long a busier process leaves a new association to a less busy sibling


@dataclass
class DimseHandle:
    port: int
    pids: list[int] = field(default_factory=list)
    _sock: socket.socket | None = None
    loads: object = None  # associations being served by each process (shared memory)

    def associations(self) -> list[int]:
        """How many associations each receiving process serves now (-1: not accepting yet)."""
        return list(self.loads) if self.loads is not None else []

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
    processes = max(1, settings.dicom_processes)
    loads = handle.loads = multiprocessing.RawArray("i", [-1] * processes)  # shared; -1: not serving yet
    for me in range(processes):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                _child(settings, sock, loads, me)
            except BaseException:  # noqa: BLE001
                log.exception("dimse: el proceso receptor terminó con error")
                code = 1
            finally:
                os._exit(code)
        handle.pids.append(pid)
    log.info("DIMSE: AE %s escuchando en el puerto %d con %d procesos", settings.dicom_ae_title, handle.port, len(handle.pids))
    return handle


def _child(settings: Settings, sock: socket.socket, loads, me: int) -> None:
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
    load = _Load(loads, me)
    deferring_since: float | None = None
    while not stopping.is_set():
        if os.getppid() != parent:  # the server died without stopping us: stop too
            break
        if load.above_least():
            # A sibling serves fewer associations: it takes the next one. Only for a moment,
            # so that a sibling that stopped never leaves a new association waiting.
            deferring_since = deferring_since or time.monotonic()
            if time.monotonic() - deferring_since < DEFER_S:
                if stopping.wait(0.002):
                    break
                continue
        deferring_since = None
        try:
            conn, address = sock.accept()
        except (TimeoutError, socket.timeout, InterruptedError, BlockingIOError):
            continue
        conn.setblocking(True)
        load.change(1)
        thread = threading.Thread(target=_serve_one, args=(provider, conn, address, active, load), daemon=True)
        active.add(thread)
        thread.start()
    sock.close()
    deadline = time.monotonic() + STOP_GRACE_S
    for thread in list(active):
        thread.join(max(0.0, deadline - time.monotonic()))
    archive.close()


class _Load:
    """This process's slot in the shared count of associations each receiving process serves,
    so that parallel associations spread evenly (one interpreter lock per process)."""

    def __init__(self, loads, me: int):
        self._loads = loads
        self._me = me
        self._lock = threading.Lock()
        loads[me] = 0  # ready to accept

    def change(self, n: int) -> None:
        with self._lock:
            self._loads[self._me] += n

    def above_least(self) -> bool:
        return self._loads[self._me] > min(n for n in self._loads if n >= 0)


def _serve_one(provider, conn: socket.socket, address, active: set, load: _Load) -> None:
    try:
        provider.serve(conn, address)
    except Exception:  # noqa: BLE001
        log.exception("dimse: error atendiendo a %s", address)
    finally:
        try:
            conn.close()
        finally:
            load.change(-1)
            active.discard(threading.current_thread())
