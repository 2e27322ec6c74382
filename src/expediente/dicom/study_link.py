"""Every study in the archive becomes (or updates) a FHIR ImagingStudy in the patient's record.

The study follower hands over the studies that changed. A study not yet attached to a patient
is matched (``patient_match``); when the evidence is not conclusive it goes to the
reconciliation list (``dicom_reconcile``) and waits for a person, who attaches it with
``attach``. An attached study's ImagingStudy (id = the Study Instance UID, a valid FHIR id) is
written through the store as the imaging service's system principal, so it is validated,
versioned and audited like any other write: its series and instances, the order it answers
(ServiceRequest by accession number) and the DICOMweb endpoint where the images are.
"""

from __future__ import annotations

import logging

import orjson
import sqlalchemy as sa

from expediente.db.engine import write_transaction
from expediente.db.schema import dicom_instance, dicom_reconcile, dicom_series, dicom_study
from expediente.dicom.ingest import now
from expediente.dicom.patient_match import IMAGING_CALLER, Decision, PatientFinder, person_in
from expediente.fhir.errors import FhirError
from expediente.fhir.store import Caller, ResourceStore

log = logging.getLogger("expediente.dicom")

DICOM_UID_SYSTEM = "urn:dicom:uid"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
ENDPOINT_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"


class StudyLinker:
    def __init__(self, engine: sa.Engine, blobs, store: ResourceStore, dicomweb_base: str):
        self.engine = engine
        self.blobs = blobs
        self.store = store
        self.finder = PatientFinder(store)
        self.dicomweb_base = dicomweb_base
        # Called with (patient id, study UID) when a study is attached: the priors' preparation.
        self.attached_listeners: list = []

    def __call__(self, study_uids: list[str]) -> None:
        for uid in study_uids:
            try:
                self.link(uid)
            except Exception:  # one study must not hold the others back; it is retried on change
                log.exception("study %s could not be linked to the record", uid)

    def link(self, study_uid: str) -> str | None:
        """Bring the study's ImagingStudy up to date; the Patient id, or None while it waits."""
        with self.engine.connect() as conn:
            study = conn.execute(sa.select(dicom_study).where(dicom_study.c.study_uid == study_uid)).first()
        if study is None or (study.linked is not None and study.linked >= study.updated):
            return study.patient_key if study is not None else None
        seen = study.updated
        patient_id, order = study.patient_key, None
        person = person_in(self._first_header(study_uid))
        if patient_id is None:
            decision = self.finder.decide(person)
            if decision.patient_id is None:
                self._wait(study_uid, decision, seen)
                return None
            patient_id, order = decision.patient_id, decision.service_request
        else:
            found = self.finder._order(person.accession)
            order = found[0] if found and found[1] in (None, patient_id) else None
        self._write(IMAGING_CALLER, study, patient_id, order)
        self._attached(study_uid, patient_id, seen)
        if study.patient_key is None:
            for listener in self.attached_listeners:
                listener(patient_id, study_uid)
        return patient_id

    def attach(self, caller: Caller, study_uid: str, patient_id: str) -> dict:
        """A person reconciles a waiting study with a Patient they may see; returns the
        ImagingStudy written (under the person's own identity in the audit trail)."""
        self.store.read(caller, "Patient", patient_id)  # the caller must see the record (404 otherwise)
        with self.engine.connect() as conn:
            study = conn.execute(sa.select(dicom_study).where(dicom_study.c.study_uid == study_uid)).first()
        if study is None:
            raise FhirError.of(404, f"No existe el estudio {study_uid}", "not-found")
        stored = self._write(caller, study, patient_id, None)
        self._attached(study_uid, patient_id, study.updated, by=caller.principal.subject)
        for listener in self.attached_listeners:
            listener(patient_id, study_uid)
        return orjson.loads(stored)

    # ------------------------------------------------------------------ internals

    def _first_header(self, study_uid: str) -> bytes:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(dicom_instance.c.blob_key, dicom_instance.c.pixel_offset, dicom_instance.c.size)
                .where(dicom_instance.c.study_uid == study_uid)
                .order_by(dicom_instance.c.received)
                .limit(1)
            ).one()
        return self.blobs.get(row.blob_key, 0, row.pixel_offset if row.pixel_offset is not None else row.size)

    def _write(self, caller: Caller, study, patient_id: str, order: str | None) -> bytes:
        body = self.imaging_study(study, patient_id, order)
        return self.store.update(caller, "ImagingStudy", body["id"], body).stored.body

    def imaging_study(self, study, patient_id: str, order: str | None) -> dict:
        with self.engine.connect() as conn:
            series = conn.execute(
                sa.select(dicom_series).where(dicom_series.c.study_uid == study.study_uid).order_by(dicom_series.c.series_number, dicom_series.c.series_uid)
            ).all()
            instances = conn.execute(
                sa.select(dicom_instance.c.series_uid, dicom_instance.c.sop_instance_uid, dicom_instance.c.sop_class_uid, dicom_instance.c.instance_number)
                .where(dicom_instance.c.study_uid == study.study_uid)
                .order_by(dicom_instance.c.instance_number, dicom_instance.c.sop_instance_uid)
            ).all()
        by_series: dict[str, list] = {}
        for i in instances:
            by_series.setdefault(i.series_uid, []).append(i)
        body = {
            "resourceType": "ImagingStudy",
            "id": study.study_uid,
            "contained": [
                {
                    "resourceType": "Endpoint",
                    "id": "dicomweb",
                    "status": "active",
                    "connectionType": {"system": ENDPOINT_TYPE, "code": "dicom-wado-rs"},
                    "payloadType": [{"text": "DICOM"}],
                    "address": self.dicomweb_base,
                }
            ],
            "identifier": [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study.study_uid}"}],
            "status": "available",
            "subject": {"reference": f"Patient/{patient_id}"},
            "endpoint": [{"reference": "#dicomweb"}],
            "numberOfSeries": len(series),
            "numberOfInstances": len(instances),
            "series": [_series(s, by_series.get(s.series_uid, [])) for s in series],
        }
        modalities = sorted({s.modality for s in series if s.modality})
        if modalities:
            body["modality"] = [{"system": DCM, "code": m} for m in modalities]
        if len(study.study_date) == 8 and study.study_date.isdigit():
            body["started"] = f"{study.study_date[:4]}-{study.study_date[4:6]}-{study.study_date[6:]}"
        if study.study_description:
            body["description"] = study.study_description
        if study.accession_number:
            body["identifier"].append({"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}, "value": study.accession_number})
        if order:
            body["basedOn"] = [{"reference": f"ServiceRequest/{order}"}]
        return body

    def _wait(self, study_uid: str, decision: Decision, seen) -> None:
        row = {"reason": decision.reason[:2000], "candidates": orjson.dumps(decision.candidates).decode(), "status": "pending", "resolved": None, "resolved_by": None}
        with write_transaction(self.engine) as conn:
            if conn.execute(dicom_reconcile.update().where(dicom_reconcile.c.study_uid == study_uid).values(**row)).rowcount == 0:
                conn.execute(dicom_reconcile.insert().values(study_uid=study_uid, created=now(), **row))
            conn.execute(dicom_study.update().where(dicom_study.c.study_uid == study_uid).values(linked=seen))

    def _attached(self, study_uid: str, patient_id: str, seen, by: str = IMAGING_CALLER.principal.subject) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(
                dicom_study.update().where(dicom_study.c.study_uid == study_uid).values(patient_key=patient_id, imaging_study_id=study_uid, linked=seen)
            )
            conn.execute(
                dicom_reconcile.update()
                .where(dicom_reconcile.c.study_uid == study_uid, dicom_reconcile.c.status == "pending")
                .values(status="resolved", resolved=now(), resolved_by=by[:128])
            )


def _series(s, instances) -> dict:
    out = {"uid": s.series_uid, "modality": {"system": DCM, "code": s.modality or "OT"}, "numberOfInstances": len(instances)}
    if s.series_number is not None:
        out["number"] = s.series_number
    if s.series_description:
        out["description"] = s.series_description
    out["instance"] = [
        {"uid": i.sop_instance_uid, "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{i.sop_class_uid}"}, **({"number": i.instance_number} if i.instance_number is not None else {})}
        for i in instances
    ]
    return out
