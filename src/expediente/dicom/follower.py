"""Work that follows a study's arrival, off the acknowledgement path.

One thread in the server process watches ``dicom_study.updated`` (indexed) and hands the
studies that changed since its last look to its handlers: build the instances' metadata,
create or update the FHIR ImagingStudy, prepare the priors. Instances may arrive through any
process (DIMSE receivers, HTTP workers); the database is where they meet, so polling it is
enough, and a handler that fails leaves the study for the next look.

The thread waits for a study to settle (no instance for ``settle`` seconds) before handing it
on: a study still arriving would have its metadata built while its instances are received,
taking the CPU and the index's write lock from the receivers, and handled again at each look.
An explicit ``catch_up()`` (tests, the command line) hands on everything at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from expediente.db.schema import dicom_study

log = logging.getLogger("expediente.dicom")

Handler = Callable[[list[str]], object]


class StudyFollower:
    def __init__(
        self,
        engine: sa.Engine,
        handlers: list[Handler],
        interval: float = 1.0,
        every_look: list[Callable[[], object]] | None = None,
        settle: float = 0.0,
    ):
        self._engine = engine
        self._handlers = handlers
        self._settle = timedelta(seconds=settle)
        self._every_look = every_look or []  # e.g. new orders: their patients' priors
        self._interval = interval
        self._since: datetime | None = None
        self._handled: dict[str, datetime] = {}  # studies of the overlap window already handled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one look at a time (the thread and an explicit call)

    def start(self) -> StudyFollower:
        self._thread = threading.Thread(target=self._run, name="dicom-follower", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.catch_up(settled_only=True)
            except Exception:
                log.exception("study follower failed; it retries on its next look")

    def catch_up(self, settled_only: bool = False) -> list[str]:
        """Handle every study changed since the last look (all studies on the first); with
        ``settled_only``, only those that received nothing in the last ``settle`` seconds."""
        with self._lock:
            uids = self._look(_utcnow() - self._settle if settled_only else None)
            for task in self._every_look:
                task()
            return uids

    def _look(self, settled_before: datetime | None) -> list[str]:
        query = sa.select(dicom_study.c.study_uid, dicom_study.c.updated)
        if settled_before is not None:  # the rest is looked at again once it settles
            query = query.where(dicom_study.c.updated <= settled_before)
        if self._since is not None:
            # A little overlap: a transaction that committed late with an earlier timestamp.
            query = query.where(dicom_study.c.updated >= self._since - timedelta(seconds=5))
        else:
            query = query.where(sa.or_(dicom_study.c.linked.is_(None), dicom_study.c.linked < dicom_study.c.updated))
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(dicom_study.c.updated)).all()
        if not rows:
            if self._since is None:  # nothing waiting: from now on, only what changes
                self._since = settled_before or _utcnow()
            return []
        # The overlap brings back studies already handled at the same `updated`: skip those.
        uids = [r.study_uid for r in rows if self._handled.get(r.study_uid) != r.updated]
        if uids:
            for handler in self._handlers:
                handler(uids)
        self._since = rows[-1].updated
        window = self._since - timedelta(seconds=5)
        self._handled = {r.study_uid: r.updated for r in rows if r.updated >= window}
        return uids

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
