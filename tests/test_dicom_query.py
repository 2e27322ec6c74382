"""The imaging query engine (C-FIND and QIDO-RS matching) on the index tables, both backends.

Examples through the real ingest pipeline, then a property test: random small worlds written
straight into the index tables, random queries, compared with a plain-Python oracle.
"""

from __future__ import annotations

import re
from datetime import datetime

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from dicom_samples import ct_slice
from expediente.app import Services
from expediente.config import Settings
from expediente.db.migrate import upgrade
from expediente.db.schema import dicom_instance, dicom_series, dicom_study, dicom_study_name
from expediente.dicom.archive import EVERYTHING, Scope
from expediente.dicom.ingest import Origin
from expediente.dicom.names import name_tokens, normalized_name
from expediente.dicom.query import QueryError, plan

IMSS, ISSSTE = "DFIMS000011", "DFSSA003442"


@pytest.fixture
def archive(settings: Settings):
    """An archive holding four patients' studies (and the extra tag PhotometricInterpretation)."""
    services = Services.build(Settings(**{**settings.__dict__, "dicom_extra_tags": "PhotometricInterpretation"}))
    upgrade(services.engine)
    a = services.archive

    def put(institution: str, **tags) -> None:
        a.store_file(ct_slice(**tags), origin=Origin("dimse", "MODALIDAD", institution=institution))

    for n in (2, 1, 3):  # out of order: the answer sorts by InstanceNumber
        put(IMSS, study_uid="1.2.1", series_uid="1.2.1.1", sop_uid=f"1.2.1.1.{n}", number=n, name="Hernández Cruz^María Guadalupe",
            patient_id="MRN-0001", accession="ACC-100", study_date="20261115", modality="CT",
            other_ids=(("HECM791203MDFRRR05", "CURP"), ("ISS-77", "ISSSTE")), procedure_codes=(("TAC-TX", "IMSS", "TAC de tórax"),),
            requests=(("RP-1", "SPS-1"), ("RP-2", "SPS-9")))
    put(ISSSTE, study_uid="1.2.2", series_uid="1.2.2.1", sop_uid="1.2.2.1.1", name="García López^José Luis", patient_id="P2",
        accession="ACC-200", study_date="20200101", modality="MR", other_ids=(("ISS-88", "ISSSTE"),), requests=(("RP-1", "SPS-5"),))
    put(ISSSTE, study_uid="1.2.2", series_uid="1.2.2.2", sop_uid="1.2.2.2.1", name="García López^José Luis", patient_id="P2",
        accession="ACC-200", study_date="20200101", modality="CT", requests=(("RP-3", "SPS-1"),))
    put(IMSS, study_uid="1.2.3", series_uid="1.2.3.1", sop_uid="1.2.3.1.1", name="Núñez^Ana", patient_id="P3", study_date="20150630",
        modality="CR")
    put(IMSS, study_uid="1.2.4", series_uid="1.2.4.1", sop_uid="1.2.4.1.1", name="HERNANDEZ^PEDRO", patient_id="P4", study_date="20150701",
        modality="US", birth="19500101", sex="M")
    put(IMSS, study_uid="1.2.5", series_uid="1.2.5.1", sop_uid="1.2.5.1.1", name="Hernández Cruz^María Guadalupe", patient_id="MRN-0001",
        study_date="20240301", modality="DX", other_ids=(("HECM791203MDFRRR05", "CURP"),))
    a.follower = services.follower
    yield a
    services.close()


def studies(archive, scope=EVERYTHING, fuzzy=False, **keys) -> list[str]:
    return [r["StudyInstanceUID"] for r in archive.find("STUDY", keys, scope=scope, fuzzy=fuzzy)]


def test_study_answers_carry_the_index_and_qido_defaults(archive):
    (row,) = archive.find("STUDY", {"StudyInstanceUID": "1.2.2"}, scope=EVERYTHING)
    assert row["PatientName"] == "García López^José Luis" and row["PatientID"] == "P2"
    assert set(row["ModalitiesInStudy"].split("\\")) == {"MR", "CT"}
    assert row["NumberOfStudyRelatedSeries"] == 2 and row["NumberOfStudyRelatedInstances"] == 2
    assert row["StudyDate"] == "20200101" and row["AccessionNumber"] == "ACC-200"
    # Newest study first, then UID: a stable order.
    assert studies(archive) == ["1.2.1", "1.2.5", "1.2.2", "1.2.4", "1.2.3"]


def test_wildcards_are_case_sensitive_outside_names(archive):
    assert studies(archive, PatientID="MRN*") == ["1.2.1", "1.2.5"]
    assert studies(archive, PatientID="P?") == ["1.2.2", "1.2.4", "1.2.3"]
    assert studies(archive, AccessionNumber="ACC-?00") == ["1.2.1", "1.2.2"]
    assert studies(archive, AccessionNumber="acc*") == []
    assert studies(archive, AccessionNumber="ACC-100") == ["1.2.1"]
    assert studies(archive, AccessionNumber="*") == studies(archive)  # "*" matches empty values too
    assert studies(archive, PatientID="%") == [] and studies(archive, PatientID="P_") == []  # SQL wildcards are literal


def test_date_and_time_ranges(archive):
    assert studies(archive, StudyDate="20200101-20241231") == ["1.2.5", "1.2.2"]
    assert studies(archive, StudyDate="-20151231") == ["1.2.4", "1.2.3"]
    assert studies(archive, StudyDate="20240301-") == ["1.2.1", "1.2.5"]
    assert studies(archive, StudyDate="20150630") == ["1.2.3"]
    assert studies(archive, StudyDate="20150630\\20200101") == ["1.2.2", "1.2.3"]
    assert studies(archive, StudyTime="1000-1015") == studies(archive)  # 101500 is within 10:15
    assert studies(archive, StudyTime="1016-") == []
    assert studies(archive, PatientBirthDate="-19600101") == ["1.2.4"]
    for bad in ("2019-2021", "20200101-20201301x", "-", "ayer"):
        with pytest.raises(QueryError, match="StudyDate"):
            studies(archive, StudyDate=bad)


def test_uid_lists_and_modalities_in_study(archive):
    assert studies(archive, StudyInstanceUID="1.2.3\\1.2.1") == ["1.2.1", "1.2.3"]
    assert studies(archive, ModalitiesInStudy="CT") == ["1.2.1", "1.2.2"]
    assert studies(archive, ModalitiesInStudy="MR\\US") == ["1.2.2", "1.2.4"]
    assert studies(archive, ModalitiesInStudy="CT", StudyDate="20200101-20201231") == ["1.2.2"]


def test_patient_series_and_image_levels(archive):
    patients = archive.find("PATIENT", {"PatientName": ""}, scope=EVERYTHING)
    assert [p["PatientID"] for p in patients] == ["MRN-0001", "P2", "P3", "P4"]
    assert patients[0]["NumberOfPatientRelatedStudies"] == 2 and patients[0]["NumberOfPatientRelatedInstances"] == 4
    assert archive.find("PATIENT", {"PatientSex": "M"}, scope=EVERYTHING)[0]["PatientID"] == "P4"
    series = archive.find("SERIES", {"StudyInstanceUID": "1.2.2", "Modality": ""}, scope=EVERYTHING)
    assert {s["Modality"] for s in series} == {"MR", "CT"} and all(s["NumberOfSeriesRelatedInstances"] == 1 for s in series)
    assert [s["SeriesInstanceUID"] for s in archive.find("SERIES", {"Modality": "CT"}, scope=EVERYTHING)] == ["1.2.1.1", "1.2.2.2"]
    # All-series queries match on study attributes too (QIDO /series?PatientID=...).
    assert [s["SeriesInstanceUID"] for s in archive.find("SERIES", {"PatientID": "P2", "Modality": "M?"}, scope=EVERYTHING)] == ["1.2.2.1"]
    images = archive.find("IMAGE", {"SeriesInstanceUID": "1.2.1.1"}, scope=EVERYTHING)
    assert [i["InstanceNumber"] for i in images] == [1, 2, 3] and images[0]["SOPInstanceUID"] == "1.2.1.1.1"
    assert images[0]["Rows"] == 64 and images[0]["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.2" and images[0]["StudyInstanceUID"] == "1.2.1"
    assert [i["SOPInstanceUID"] for i in archive.find("IMAGE", {"StudyInstanceUID": "1.2.1", "InstanceNumber": "2"}, scope=EVERYTHING)] == ["1.2.1.1.2"]
    with pytest.raises(QueryError, match="InstanceNumber"):
        archive.find("IMAGE", {"InstanceNumber": "dos"}, scope=EVERYTHING)


def test_extra_tags_match_at_image_level(archive):
    got = archive.find("IMAGE", {"PhotometricInterpretation": "MONO*", "StudyInstanceUID": "1.2.2"}, scope=EVERYTHING)
    assert [i["PhotometricInterpretation"] for i in got] == ["MONOCHROME2", "MONOCHROME2"]
    assert archive.find("IMAGE", {"PhotometricInterpretation": "RGB"}, scope=EVERYTHING) == []


def test_scope_restricts_every_level(archive):
    assert studies(archive, Scope(institution=ISSSTE)) == ["1.2.2"]
    assert studies(archive, Scope(institution=ISSSTE), PatientID="MRN-0001") == []
    assert [s["StudyInstanceUID"] for s in archive.find("SERIES", {}, scope=Scope(institution=ISSSTE))] == ["1.2.2", "1.2.2"]
    assert archive.find("IMAGE", {"StudyInstanceUID": "1.2.1"}, scope=Scope(institution=ISSSTE)) == []
    assert [p["PatientID"] for p in archive.find("PATIENT", {}, scope=Scope(institution=ISSSTE))] == ["P2"]
    only_p3 = Scope(condition=lambda t: t.c.patient_id == "P3")
    assert studies(archive, only_p3) == ["1.2.3"]


def test_names_ignore_accents_and_case_and_fuzzy_finds_spanish_names(archive):
    assert studies(archive, PatientName="HERNANDEZ*") == ["1.2.1", "1.2.5", "1.2.4"]
    assert studies(archive, PatientName="hernández cruz^maría guadalupe") == ["1.2.1", "1.2.5"]
    assert studies(archive, PatientName="Nunez^Ana") == ["1.2.3"]
    assert studies(archive, PatientName="Cruz*") == []  # without fuzzy the value matches from the start
    # Fuzzy: each word starts some word of the name, in any component and order.
    assert studies(archive, fuzzy=True, PatientName="cruz") == ["1.2.1", "1.2.5"]  # second surname
    assert studies(archive, fuzzy=True, PatientName="guada hern") == ["1.2.1", "1.2.5"]
    assert studies(archive, fuzzy=True, PatientName="López^José") == ["1.2.2"]
    assert studies(archive, fuzzy=True, PatientName="luis garcia") == ["1.2.2"]
    assert studies(archive, fuzzy=True, PatientName="NUÑ") == ["1.2.3"]
    assert studies(archive, fuzzy=True, PatientName="hernandez pedro") == ["1.2.4"]
    assert studies(archive, fuzzy=True, PatientName="ernandez") == []  # prefixes, not substrings


def test_limit_offset_pages_in_a_stable_order(archive):
    everything = studies(archive)
    paged = [r["StudyInstanceUID"] for o in range(len(everything)) for r in archive.find("STUDY", {}, scope=EVERYTHING, limit=1, offset=o)]
    assert paged == everything
    assert [r["StudyInstanceUID"] for r in archive.find("STUDY", {}, scope=EVERYTHING, limit=2, offset=4)] == everything[4:]


def test_unindexed_sequences_and_keys_come_back_empty(archive):
    (row,) = archive.find("STUDY", {"StudyInstanceUID": "1.2.3", "ReferencedStudySequence": [{"ReferencedSOPInstanceUID": "1.9"}], "InstitutionName": ""},
                          scope=EVERYTHING)
    assert row["ReferencedStudySequence"] == [] and row["InstitutionName"] == ""
    query = plan("sqlite", "STUDY", {"ReferencedStudySequence": [{"ReferencedSOPInstanceUID": "1.9"}], "InstitutionName": "H*", "SOPInstanceUID": "1.2",
                                     "ProcedureCodeSequence": [{"CodeValue": "", "CodeMeaning": "TAC*", "ContextUID": "1.2"}]}, scope=EVERYTHING)
    assert query.ignored == ["ReferencedStudySequence", "InstitutionName", "SOPInstanceUID", "ProcedureCodeSequence.ContextUID"]
    with pytest.raises(QueryError, match="desconocido"):
        archive.find("STUDY", {"NoSuchKeyword": ""}, scope=EVERYTHING)
    with pytest.raises(QueryError, match="Nivel"):
        archive.find("WORKLIST", {}, scope=EVERYTHING)


# --------------------------------------------------------------------------- property test

NAMES = ["Hernández Cruz^María Guadalupe", "HERNANDEZ^JOSE", "García López^José Luis", "Núñez^Ana", "Peña Ruiz^Sofía", "garcia^maria", ""]
IDS = ["MRN-1", "MRN-2", "P1", "P10", "X_1"]
DATES = ["", "20150630", "20191231", "20200101", "20240229", "20261115"]
MODS = ["CT", "MR", "CR", "US"]

world_strategy = st.lists(
    st.tuples(
        st.sampled_from(NAMES), st.sampled_from(IDS), st.sampled_from(DATES), st.sampled_from(["A", "B"]),
        st.sampled_from(["", "ACC1", "acc1", "ACC2"]), st.lists(st.sampled_from(MODS), min_size=1, max_size=3),
    ),
    min_size=0,
    max_size=8,
)


def _glob(value: str) -> re.Pattern:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value) + r"\Z", re.S)


def _match_text(cell: str, value: str) -> bool:
    return any(_glob(v).match(cell) for v in value.split("\\") if v)


def _match_date(cell: str, value: str) -> bool:
    low, sep, high = value.partition("-")
    if not sep:
        high = low
    return cell != "" and (not low or cell >= low) and (not high or cell <= high)


def _fuzzy(name: str, value: str) -> bool:
    words = re.split(r"[ ^\-]+", normalized_name(name))
    return all(any(w.startswith(q) for w in words) for q in normalized_name(value.replace("^", " ")).split())


query_strategy = st.fixed_dictionaries(
    {},
    optional={
        "PatientID": st.sampled_from(["MRN-1", "MRN*", "P?", "P*", "X_1", "*1", "MRN-1\\P1"]),
        "PatientName": st.sampled_from(["hern*", "HERNANDEZ*", "garcia^maria", "*jose*", "Núñez^Ana", "p?na*"]),
        "StudyDate": st.sampled_from(["20200101", "20191231-20240229", "-20200101", "20240229-", "20150630\\20261115"]),
        "AccessionNumber": st.sampled_from(["ACC1", "acc1", "ACC?", "*"]),
        "ModalitiesInStudy": st.sampled_from(["CT", "MR\\US", "C?"]),
    },
)
fuzzy_strategy = st.sampled_from(["hern", "garc mar", "jose", "cruz guada", "peña", "lo"])


def _write_world(engine: sa.Engine, world) -> list[dict]:
    at = datetime(2026, 12, 1)
    rows = []
    with engine.begin() as conn:
        for table in (dicom_instance, dicom_series, dicom_study, dicom_study_name):
            conn.execute(table.delete())
        for n, (name, pid, date, inst, acc, mods) in enumerate(world):
            uid = f"2.25.{n}"
            row = dict(study_uid=uid, patient_id=pid, patient_name=name, patient_name_norm=normalized_name(name), study_date=date,
                       study_time=f"{n:02d}0000", accession_number=acc, institution=inst, modalities="\\".join(dict.fromkeys(mods)),
                       series_count=len(mods), instance_count=len(mods), received=at, updated=at)
            conn.execute(dicom_study.insert().values(**row))
            for token in name_tokens(row["patient_name_norm"]):
                conn.execute(dicom_study_name.insert().values(token=token, study_uid=uid))
            for k, mod in enumerate(mods):
                conn.execute(dicom_series.insert().values(series_uid=f"{uid}.{k}", study_uid=uid, modality=mod, series_number=k, instance_count=1))
            rows.append({**row, "mods": mods})
    return rows


@pytest.fixture
def bare(services):
    return services


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(world=world_strategy, keys=query_strategy, institution=st.sampled_from([None, "A"]), fuzzy=st.none() | fuzzy_strategy,
       page=st.tuples(st.sampled_from([None, 1, 3]), st.integers(0, 3)))
def test_study_search_agrees_with_an_oracle(bare, world, keys, institution, fuzzy, page):
    rows = _write_world(bare.engine, world)
    if fuzzy is not None:
        keys = {**keys, "PatientName": fuzzy}
    expected = []
    for r in rows:
        ok = institution is None or r["institution"] == institution
        for k, v in keys.items():
            if k == "PatientID":
                ok &= _match_text(r["patient_id"], v)
            elif k == "PatientName":
                ok &= _fuzzy(r["patient_name"], v) if fuzzy is not None else _match_text(r["patient_name_norm"], normalized_name(v))
            elif k == "StudyDate":
                ok &= any(_match_date(r["study_date"], x) for x in v.split("\\"))
            elif k == "AccessionNumber":
                ok &= _match_text(r["accession_number"], v) if v != "*" else True
            elif k == "ModalitiesInStudy":
                ok &= any(_match_text(m, v) for m in r["mods"])
        if ok:
            expected.append(r)
    expected.sort(key=lambda r: r["study_uid"])
    expected.sort(key=lambda r: (r["study_date"], r["study_time"]), reverse=True)
    limit, offset = page
    expected_uids = [r["study_uid"] for r in expected][offset: None if limit is None else offset + limit]
    scope = Scope(institution=institution) if institution else EVERYTHING
    got = bare.archive.find("STUDY", keys, scope=scope, fuzzy=fuzzy is not None, limit=limit, offset=offset)
    assert [g["StudyInstanceUID"] for g in got] == expected_uids
    by_uid = {r["study_uid"]: r for r in rows}
    for g in got:
        assert g["PatientName"] == by_uid[g["StudyInstanceUID"]]["patient_name"]
        assert g["NumberOfStudyRelatedSeries"] == len(by_uid[g["StudyInstanceUID"]]["mods"])


def test_keys_as_pydicom_holds_them(archive):
    """The C-FIND provider may pass a Dataset's values as they are (PersonName, MultiValue)."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PatientName = "HERNANDEZ*"
    ds.StudyInstanceUID = ["1.2.1", "1.2.4"]
    item = Dataset()
    item.CodeValue = "X"
    rows = archive.find("STUDY", {"PatientName": ds.PatientName, "StudyInstanceUID": ds.StudyInstanceUID, "StudyDate": None,
                                  "ReferencedStudySequence": [item]}, scope=EVERYTHING)
    assert [r["StudyInstanceUID"] for r in rows] == ["1.2.1", "1.2.4"] and rows[0]["ReferencedStudySequence"] == []
    assert plan("sqlite", "STUDY", {"ReferencedStudySequence": [item]}, scope=EVERYTHING).ignored == ["ReferencedStudySequence"]
    item.CodeValue = "TAC-TX"
    (row,) = archive.find("STUDY", {"ProcedureCodeSequence": [item]}, scope=EVERYTHING)
    assert row["StudyInstanceUID"] == "1.2.1" and row["ProcedureCodeSequence"] == [{"CodeValue": "TAC-TX"}]


def test_sequence_matching_needs_one_item_to_match_every_item_key(archive):
    """PS3.4 C.2.2.2.6: an item key matches when one item meets all its attributes."""
    other = "OtherPatientIDsSequence"
    assert studies(archive, OtherPatientIDsSequence=[{"PatientID": "HECM791203MDFRRR05"}]) == ["1.2.1", "1.2.5"]
    assert studies(archive, OtherPatientIDsSequence=[{"PatientID": "HECM791203MDFRRR05", "IssuerOfPatientID": "CURP"}]) == ["1.2.1", "1.2.5"]
    # Both values exist in study 1.2.1, but not in the same item: no match.
    assert studies(archive, OtherPatientIDsSequence=[{"PatientID": "ISS-77", "IssuerOfPatientID": "CURP"}]) == []
    assert studies(archive, OtherPatientIDsSequence=[{"PatientID": "ISS-*", "IssuerOfPatientID": "ISSSTE"}]) == ["1.2.1", "1.2.2"]
    assert studies(archive, OtherPatientIDsSequence=[{"PatientID": "ISS-77\\ISS-88"}]) == ["1.2.1", "1.2.2"]  # list matching
    assert studies(archive, OtherPatientIDsSequence=[{"PatientID": "iss-*"}]) == []  # case-sensitive, as other text
    # The answer carries the matching items with the requested attributes only.
    (row,) = archive.find("STUDY", {"StudyInstanceUID": "1.2.1", other: [{"PatientID": "ISS*", "TypeOfPatientID": ""}]}, scope=EVERYTHING)
    assert row[other] == [{"PatientID": "ISS-77", "TypeOfPatientID": ""}]
    # An empty item (or sequence) is a return key: every item, every kept attribute; no filtering.
    (row,) = archive.find("STUDY", {"StudyInstanceUID": "1.2.1", other: [{}]}, scope=EVERYTHING)
    assert row[other] == [{"PatientID": "HECM791203MDFRRR05", "IssuerOfPatientID": "CURP", "TypeOfPatientID": ""},
                          {"PatientID": "ISS-77", "IssuerOfPatientID": "ISSSTE", "TypeOfPatientID": ""}]
    assert len(studies(archive, OtherPatientIDsSequence=[])) == 5
    (row,) = archive.find("STUDY", {"StudyInstanceUID": "1.2.3", other: [{"PatientID": ""}]}, scope=EVERYTHING)
    assert row[other] == []
    # Combined with other keys.
    assert studies(archive, OtherPatientIDsSequence=[{"IssuerOfPatientID": "CURP"}], StudyDate="20250101-") == ["1.2.1"]


def test_sequence_matching_at_the_patient_and_series_levels(archive):
    patients = archive.find("PATIENT", {"OtherPatientIDsSequence": [{"PatientID": "HECM791203MDFRRR05", "IssuerOfPatientID": ""}]}, scope=EVERYTHING)
    assert [p["PatientID"] for p in patients] == ["MRN-0001"]
    # Both of the patient's studies hold the CURP: it is answered once.
    assert patients[0]["OtherPatientIDsSequence"] == [{"PatientID": "HECM791203MDFRRR05", "IssuerOfPatientID": "CURP"}]
    # A series is found by the order that caused it (IHE Query Images: Request Attributes).
    series = archive.find("SERIES", {"RequestAttributesSequence": [{"RequestedProcedureID": "RP-1", "ScheduledProcedureStepID": ""}]}, scope=EVERYTHING)
    assert [s["SeriesInstanceUID"] for s in series] == ["1.2.1.1", "1.2.2.1"]
    assert series[0]["RequestAttributesSequence"] == [{"RequestedProcedureID": "RP-1", "ScheduledProcedureStepID": "SPS-1"}]
    series = archive.find("SERIES", {"RequestAttributesSequence": [{"ScheduledProcedureStepID": "SPS-1"}]}, scope=EVERYTHING)
    assert [s["SeriesInstanceUID"] for s in series] == ["1.2.1.1", "1.2.2.2"]
    images = archive.find("IMAGE", {"StudyInstanceUID": "1.2.1", "RequestAttributesSequence": [{"RequestedProcedureID": "RP-2"}]}, scope=EVERYTHING)
    assert [i["SOPInstanceUID"] for i in images] == ["1.2.1.1.1", "1.2.1.1.2", "1.2.1.1.3"]
    # A series sequence is no study attribute: at STUDY level it does not restrict.
    query = plan("sqlite", "STUDY", {"RequestAttributesSequence": [{"RequestedProcedureID": "RP-1"}]}, scope=EVERYTHING)
    assert query.ignored == ["RequestAttributesSequence"]
    # The patient level shows only the items of studies the caller may see.
    imss = Scope(institution=IMSS)
    (patient,) = archive.find("PATIENT", {"PatientID": "P2", "OtherPatientIDsSequence": [{}]}, scope=Scope(institution=ISSSTE))
    assert patient["OtherPatientIDsSequence"] == [{"PatientID": "ISS-88", "IssuerOfPatientID": "ISSSTE", "TypeOfPatientID": ""}]
    assert archive.find("PATIENT", {"OtherPatientIDsSequence": [{"PatientID": "ISS-88"}]}, scope=imss) == []


def test_bad_sequence_keys_are_refused(archive):
    with pytest.raises(QueryError, match="un solo ítem"):
        archive.find("STUDY", {"OtherPatientIDsSequence": [{"PatientID": "A"}, {"PatientID": "B"}]}, scope=EVERYTHING)
    with pytest.raises(QueryError, match="desconocido en OtherPatientIDsSequence"):
        archive.find("STUDY", {"OtherPatientIDsSequence": [{"NoSuchKeyword": "A"}]}, scope=EVERYTHING)
    with pytest.raises(QueryError, match="es una secuencia"):
        archive.find("STUDY", {"OtherPatientIDsSequence": "A"}, scope=EVERYTHING)


def test_image_answers_read_other_attributes_from_the_stored_metadata(archive):
    keys = {"SOPInstanceUID": "1.2.3.1.1", "WindowCenter": "", "PatientName": ""}
    (before,) = archive.find("IMAGE", keys, scope=EVERYTHING)
    assert before["BitsAllocated"] == "" and before["WindowCenter"] == ""  # not built yet: empty, not wrong
    archive.follower.catch_up()
    (after,) = archive.find("IMAGE", keys, scope=EVERYTHING)
    assert after["BitsAllocated"] == 16 and float(after["WindowCenter"]) == 40 and after["PatientName"] == "Núñez^Ana"


def test_the_migration_backfills_items_from_the_stored_metadata(archive):
    """Studies indexed before dicom_item existed get their items from their DICOM JSON."""
    from expediente.db.schema import dicom_item
    from expediente.dicom.sequences import backfill

    archive.follower.catch_up()
    order = (dicom_item.c.owner_uid, dicom_item.c.sequence, dicom_item.c.item, dicom_item.c.keyword)
    with archive.engine.begin() as conn:
        ingested = conn.execute(sa.select(dicom_item).order_by(*order)).all()
        conn.execute(dicom_item.delete())
        assert backfill(conn) == len(ingested)
        assert conn.execute(sa.select(dicom_item).order_by(*order)).all() == ingested
    assert {("1.2.1", "OtherPatientIDsSequence"), ("1.2.1.1", "RequestAttributesSequence")} <= {(r.owner_uid, r.sequence) for r in ingested}
