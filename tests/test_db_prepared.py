"""Statements run on the driver's cursor (db/prepared.py) write what ``conn.execute`` would."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from expediente.db.engine import write_transaction
from expediente.db.prepared import prepare
from expediente.db.schema import dicom_study

STUDY = {"study_uid": "1.2.3", "patient_id": "P1", "issuer": "", "patient_name": "", "patient_name_norm": "", "patient_birth_date": "", "patient_sex": "", "study_date": "", "study_time": "", "accession_number": "", "study_id": "", "study_description": "", "referring_physician": "", "modalities": "", "institution": "", "series_count": 0, "instance_count": 0, "received": datetime(2026, 1, 1), "updated": datetime(2026, 1, 1)}


def test_a_prepared_update_with_literals_and_dates_matches_sqlalchemy(services):
    bump = (
        dicom_study.update()
        .where(dicom_study.c.study_uid == sa.bindparam("b_study"))
        .values(instance_count=dicom_study.c.instance_count + 1, updated=sa.bindparam("b_at", type_=sa.DateTime))
    )
    at = datetime(2026, 12, 3, 11, 0, 0)  # no microseconds: SQLite's text form must still match
    with write_transaction(services.engine) as conn:
        conn.execute(dicom_study.insert(), STUDY)
        prepared = prepare(conn.dialect, bump)
        assert prepared.run(conn, {"b_study": "1.2.3", "b_at": at}) == 1
        assert prepared.run(conn, {"b_study": "1.2.3", "b_at": at}) == 1
        assert prepared.run(conn, {"b_study": "no-such", "b_at": at}) == 0
    with services.engine.connect() as conn:
        row = conn.execute(sa.select(dicom_study.c.instance_count, dicom_study.c.updated).where(dicom_study.c.study_uid == "1.2.3")).one()
        later = conn.execute(sa.select(sa.func.count()).select_from(dicom_study).where(dicom_study.c.updated >= at)).scalar()
    assert row == (2, at) and later == 1
