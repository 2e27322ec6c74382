"""The study follower's own process under ``expediente serve``.

The HTTP server runs several worker processes and the DIMSE receivers others; the follower
(metadata, ImagingStudy, priors) must run exactly once, so ``serve`` starts it in a process
of its own. A fresh interpreter (spawn), so nothing of the parent's state is shared by accident.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading

from expediente.config import Settings

log = logging.getLogger("expediente.dicom")


def start_follower(settings: Settings) -> multiprocessing.Process:
    process = multiprocessing.get_context("spawn").Process(target=_follow, args=(settings,), name="expediente-follower", daemon=True)
    process.start()
    return process


def stop_follower(process: multiprocessing.Process) -> None:
    if process.is_alive():
        process.terminate()  # SIGTERM: the follower finishes its current look and closes
    process.join(timeout=15)


def _follow(settings: Settings) -> None:
    from expediente.app import Services
    from expediente.ops.logs import configure_logging

    configure_logging(settings.log_level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    services = Services.build(settings)
    services.follower.start()
    log.info("study follower started")
    try:
        stop.wait()
    finally:
        services.close()  # stops the follower thread first
