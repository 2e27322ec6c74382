"""Statements run on the driver's cursor (db/prepared.py) write what ``conn.execute`` would."""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime

import pytest
import sqlalchemy as sa

from expediente.db.engine import DriverWrites, is_sqlite, write_transaction
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


def test_driver_writes_commit_roll_back_and_reuse_their_connections(services):
    """SQLite's driver-level write transactions (the ingest's hot path): committed rows are
    seen through SQLAlchemy, a raising block leaves nothing, the connection is reused after a
    rollback, and a write waits its turn behind a SQLAlchemy writer."""
    if not is_sqlite(services.engine):
        with pytest.raises(ValueError):
            DriverWrites(services.engine)
        return
    writes = DriverWrites(services.engine)
    insert = prepare(services.engine.dialect, dicom_study.insert(), tuple(STUDY))
    with writes.transaction() as cursor:
        cursor.execute(insert.sql, insert.args(STUDY))
    with pytest.raises(RuntimeError):
        with writes.transaction() as cursor:
            cursor.execute(insert.sql, insert.args({**STUDY, "study_uid": "1.2.4"}))
            raise RuntimeError("the caller changed its mind")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        with writes.transaction() as cursor:
            cursor.execute(insert.sql, insert.args(STUDY))  # the same key again: the driver refuses
    assert len(writes._idle) == 1  # one connection, rolled back and reused each time
    # Queued behind a writer that holds the lock: the driver transaction starts after it commits.
    order = []
    holding = threading.Event()

    def other_writer():
        with write_transaction(services.engine) as conn:
            holding.set()
            conn.execute(dicom_study.insert(), {**STUDY, "study_uid": "1.2.5"})
            threading.Event().wait(0.2)
            order.append("sqlalchemy")

    thread = threading.Thread(target=other_writer)
    thread.start()
    holding.wait(5)
    with writes.transaction() as cursor:
        order.append("driver")
        cursor.execute(insert.sql, insert.args({**STUDY, "study_uid": "1.2.6"}))
    thread.join()
    writes.close()
    assert order == ["sqlalchemy", "driver"]
    with services.engine.connect() as conn:
        uids = conn.execute(sa.select(dicom_study.c.study_uid).order_by(dicom_study.c.study_uid)).scalars().all()
    assert uids == ["1.2.3", "1.2.5", "1.2.6"]
