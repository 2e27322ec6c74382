"""Priors: when a new study or order arrives for a patient, the patient's earlier studies are
made ready to open at once (metadata built, thumbnails rendered), across every record of the
person the MPI links. Nothing is moved to a slower tier, so a study from last year is read
exactly like today's; this only removes the first-open work."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from expediente.db.schema import dicom_study, resource
from expediente.dicom.metadata import fill_studies
from expediente.mpi.person import person_records

log = logging.getLogger("expediente.dicom")


class Priors:
    def __init__(self, engine: sa.Engine, blobs):
        self.engine = engine
        self.blobs = blobs
        # Further preparation per study list (thumbnails: expediente.dicom.render).
        self.preparers: list[Callable[[list[str]], object]] = []
        self._orders_since: datetime | None = None
        self._recent: dict[str, datetime] = {}  # patient -> when its priors were last prepared

    def studies_of(self, patient_id: str) -> list[str]:
        with self.engine.connect() as conn:
            records = [patient_id, *person_records(conn, patient_id)]
            query = sa.select(dicom_study.c.study_uid).where(dicom_study.c.patient_key.in_(records)).order_by(dicom_study.c.study_date.desc())
            return list(conn.execute(query).scalars())

    def prepare(self, patient_id: str, except_study: str | None = None) -> list[str]:
        """Make the patient's studies (but ``except_study``, the new one) ready; their UIDs."""
        uids = [u for u in self.studies_of(patient_id) if u != except_study]
        if uids:
            fill_studies(self.engine, self.blobs, uids)
            for prepare in self.preparers:
                prepare(uids)
        return uids

    def study_attached(self, patient_id: str, study_uid: str) -> None:
        """The study linker's listener: a new study in the record."""
        self.prepare(patient_id, except_study=study_uid)

    def new_orders(self) -> int:
        """Orders (ServiceRequest) written since the last look: prepare their patients' priors.
        Runs on every look of the study follower (an indexed range on the resource table)."""
        now = datetime.now(UTC).replace(tzinfo=None)
        since, self._orders_since = self._orders_since, now
        if since is None:
            return 0
        with self.engine.connect() as conn:
            patients = conn.execute(
                sa.select(resource.c.patient_key)
                .where(resource.c.res_type == "ServiceRequest", resource.c.last_updated >= since - timedelta(seconds=5), resource.c.patient_key.is_not(None))
                .distinct()
            ).scalars().all()
        self._recent = {p: t for p, t in self._recent.items() if t > now - timedelta(seconds=30)}
        patients = [p for p in patients if p not in self._recent]
        for patient in patients:
            self._recent[patient] = now
            try:
                self.prepare(patient)
            except Exception:
                log.exception("priors of Patient/%s could not be prepared", patient)
        return len(patients)
