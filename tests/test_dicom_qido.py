"""QIDO-RS through the API (TestClient) and with dicomweb-client against a served process."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from dicom_samples import ct_slice
from expediente.app import Services
from expediente.config import Settings
from expediente.db.migrate import upgrade
from expediente.db.schema import audit_log
from expediente.dicom.ingest import Origin
from expediente.security.accounts import add_account
from served import free_port, serving

JSON = "application/dicom+json"


def _put(archive, **tags) -> None:
    archive.store_file(ct_slice(**tags), origin=Origin("dimse", "MODALIDAD", institution="DFIMS000011"))


def _fill(archive) -> None:
    for n in (2, 1):
        _put(archive, study_uid="1.2.1", series_uid="1.2.1.1", sop_uid=f"1.2.1.1.{n}", number=n, name="Hernández Cruz^María Guadalupe",
             patient_id="MRN-0001", accession="ACC-100", study_date="20261115", modality="CT",
             other_ids=(("HECM791203MDFRRR05", "CURP"), ("ISS-77", "ISSSTE")))
    _put(archive, study_uid="1.2.2", series_uid="1.2.2.1", sop_uid="1.2.2.1.1", name="García López^José Luis", patient_id="P2",
         accession="ACC-200", study_date="20200101", modality="MR", requests=(("RP-3", "SPS-3"),))
    _put(archive, study_uid="1.2.2", series_uid="1.2.2.2", sop_uid="1.2.2.2.1", name="García López^José Luis", patient_id="P2",
         accession="ACC-200", study_date="20200101", modality="CT")


@pytest.fixture
def world(services):
    _fill(services.archive)
    services.follower.catch_up()  # the instances' metadata (BitsAllocated comes from there)
    return services


def _get(client, auth, path: str, **params):
    return client.get(path, params=params, headers=auth)


def _value(item: dict, tag: str):
    return item[tag].get("Value", [None])[0]


def test_study_search_answers_dicom_json(client, auth, world):
    r = _get(client, auth, "/dicomweb/studies", PatientID="P2")
    assert r.status_code == 200 and r.headers["content-type"].startswith(JSON)
    (study,) = r.json()
    assert _value(study, "0020000D") == "1.2.2"
    assert study["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "García López^José Luis"}]}
    assert set(study["00080061"]["Value"]) == {"MR", "CT"} and study["00080061"]["vr"] == "CS"
    assert study["00201206"] == {"vr": "IS", "Value": [2]} and study["00201208"] == {"vr": "IS", "Value": [2]}
    assert study["00081190"]["Value"] == ["http://testserver/dicomweb/studies/1.2.2"]
    assert _value(study, "00080020") == "20200101" and _value(study, "00080050") == "ACC-200"
    assert list(study) == sorted(study)  # attributes in tag order
    # The same by tag, and by a fuzzy Spanish name.
    assert [_value(s, "0020000D") for s in _get(client, auth, "/dicomweb/studies", **{"00100020": "P2"}).json()] == ["1.2.2"]
    got = _get(client, auth, "/dicomweb/studies", PatientName="jose garc", fuzzymatching="true").json()
    assert [_value(s, "0020000D") for s in got] == ["1.2.2"]
    assert _get(client, auth, "/dicomweb/studies", PatientName="jose garc").status_code == 204  # exact match without fuzzy


def test_sequence_matching_by_dotted_keys(client, auth, world):
    """The dotted keys of one sequence are one item: a study matches when one item meets them."""
    r = _get(client, auth, "/dicomweb/studies", **{"OtherPatientIDsSequence.PatientID": "ISS-*", "OtherPatientIDsSequence.IssuerOfPatientID": "ISSSTE"})
    (study,) = r.json()
    assert _value(study, "0020000D") == "1.2.1"
    assert study["00101002"] == {"vr": "SQ", "Value": [{"00100020": {"vr": "LO", "Value": ["ISS-77"]}, "00100021": {"vr": "LO", "Value": ["ISSSTE"]}}]}
    by_tags = _get(client, auth, "/dicomweb/studies", **{"00101002.00100020": "ISS-77", "00101002.00100021": "CURP"})
    assert by_tags.status_code == 204  # both values exist, in different items
    series = _get(client, auth, "/dicomweb/studies/1.2.2/series", **{"RequestAttributesSequence.RequestedProcedureID": "RP-3"}).json()
    assert [_value(s, "0020000E") for s in series] == ["1.2.2.1"]
    assert series[0]["00400275"]["Value"] == [{"00401001": {"vr": "SH", "Value": ["RP-3"]}}]
    r = _get(client, auth, "/dicomweb/studies", **{"OtherPatientIDsSequence.PurposeOfReferenceCodeSequence.CodeValue": "X"})
    assert r.status_code == 400 and "un nivel" in r.text


def test_matching_ranges_wildcards_and_uid_lists(client, auth, world):
    def uids(**params):
        r = _get(client, auth, "/dicomweb/studies", **params)
        return [] if r.status_code == 204 else [_value(s, "0020000D") for s in r.json()]

    assert uids(StudyDate="20200101-20201231") == ["1.2.2"]
    assert uids(StudyDate="20210101-") == ["1.2.1"]
    assert uids(PatientName="HERN*") == ["1.2.1"]
    assert uids(AccessionNumber="ACC-?00") == ["1.2.1", "1.2.2"]
    assert uids(StudyInstanceUID="1.2.2,1.2.1") == ["1.2.1", "1.2.2"]
    assert uids(ModalitiesInStudy="MR") == ["1.2.2"]
    assert uids(PatientID="nadie") == []


def test_includefield_adds_attributes(client, auth, world):
    (study,) = _get(client, auth, "/dicomweb/studies", PatientID="P2", includefield="00081030").json()
    assert study["00081030"] == {"vr": "LO", "Value": ["TAC de tórax"]}
    (study,) = _get(client, auth, "/dicomweb/studies", PatientID="P2", includefield="all").json()
    assert "00081030" in study and "00100021" in study  # StudyDescription, IssuerOfPatientID (empty)
    (study,) = _get(client, auth, "/dicomweb/studies", PatientID="P2", includefield="InstitutionName").json()
    assert study["00080080"] == {"vr": "LO"}  # not indexed: present, no value


def test_series_and_instances_routes(client, auth, world):
    series = _get(client, auth, "/dicomweb/studies/1.2.2/series").json()
    assert sorted(_value(s, "00080060") for s in series) == ["CT", "MR"]
    assert all(_value(s, "00201209") == 1 for s in series) and "00100010" not in series[0]
    (ct,) = _get(client, auth, "/dicomweb/studies/1.2.2/series", Modality="CT").json()
    assert ct["00081190"]["Value"] == ["http://testserver/dicomweb/studies/1.2.2/series/1.2.2.2"]
    # All series: study attributes come along, and study keys match.
    every = _get(client, auth, "/dicomweb/series", PatientID="MRN-0001").json()
    assert [_value(s, "0020000E") for s in every] == ["1.2.1.1"] and _value(every[0], "00100020") == "MRN-0001"
    instances = _get(client, auth, "/dicomweb/studies/1.2.1/series/1.2.1.1/instances").json()
    assert [_value(i, "00200013") for i in instances] == [1, 2]
    assert _value(instances[0], "00080018") == "1.2.1.1.1" and _value(instances[0], "00280010") == 64
    assert instances[0]["00280100"] == {"vr": "US", "Value": [16]}
    assert instances[0]["00081190"]["Value"] == ["http://testserver/dicomweb/studies/1.2.1/series/1.2.1.1/instances/1.2.1.1.1"]
    in_study = _get(client, auth, "/dicomweb/studies/1.2.2/instances").json()
    assert sorted(_value(i, "00080060") for i in in_study) == ["CT", "MR"]  # series attributes included
    (one,) = _get(client, auth, "/dicomweb/instances", SOPInstanceUID="1.2.1.1.2").json()
    assert _value(one, "00100020") == "MRN-0001" and _value(one, "0020000E") == "1.2.1.1"
    # The path and the query disagree: nothing.
    assert _get(client, auth, "/dicomweb/studies/1.2.2/series", StudyInstanceUID="1.2.1").status_code == 204
    assert _get(client, auth, "/dicomweb/studies/9.9/series").status_code == 204


def test_limit_offset_and_the_servers_maximum(client, auth, world):
    first = _get(client, auth, "/dicomweb/studies", limit="1").json()
    second = _get(client, auth, "/dicomweb/studies", limit="1", offset="1").json()
    assert [_value(s, "0020000D") for s in first + second] == ["1.2.1", "1.2.2"]
    assert _get(client, auth, "/dicomweb/studies", limit="1", offset="2").status_code == 204
    r = _get(client, auth, "/dicomweb/studies", limit="5000")
    assert r.status_code == 200 and "299" in r.headers["warning"]
    r = _get(client, auth, "/dicomweb/studies", limit="1")
    assert "offset" in r.headers["warning"]  # more results than returned
    r = _get(client, auth, "/dicomweb/studies", InstitutionName="H*")
    assert r.status_code == 200 and "InstitutionName" in r.headers["warning"]  # not matched: said so


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"NoExiste": "1"}, "desconocido"),
        ({"99999999": "1"}, "desconocido"),
        ({"StudyDate": "ayer"}, "StudyDate"),
        ({"limit": "-1"}, "limit"),
        ({"offset": "x"}, "offset"),
        ({"fuzzymatching": "quizá"}, "fuzzymatching"),
        ({"includefield": "Nada"}, "desconocido"),
    ],
)
def test_bad_queries_are_spanish_400s(client, auth, world, params, words):
    r = client.get("/dicomweb/studies", params=params, headers=auth)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome" and words in body["issue"][0]["diagnostics"]


def test_search_needs_a_token_follows_the_policy_and_is_audited(client, auth, world, make_token):
    assert client.get("/dicomweb/studies").status_code == 401
    # These studies are not reconciled with a patient: a clinician sees none of them.
    physician = {"Authorization": f"Bearer {make_token('physician', organization='DFIMS000011')}"}
    r = client.get("/dicomweb/studies", headers=physician)
    assert r.status_code == 204, r.text
    assert client.get("/dicomweb/studies", headers=auth).status_code == 200
    with world.engine.connect() as conn:
        rows = conn.execute(sa.select(audit_log.c.action, audit_log.c.entities, audit_log.c.outcome).where(audit_log.c.res_type == "ImagingStudy")).all()
    searches = [r for r in rows if r.action == "search" and r.outcome == "allowed" and r.entities]
    assert any(set(orjson.loads(r.entities)) == {"ImagingStudy/1.2.1", "ImagingStudy/1.2.2"} for r in searches)


# --------------------------------------------------------------------------- served process


@pytest.fixture
def served(settings: Settings, tmp_path: Path):
    """`expediente serve` on a free port over the test database, with a system client's token."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    local = Settings(**{**settings.__dict__, "base_url": base})
    services = Services.build(local)
    upgrade(services.engine)
    _fill(services.archive)
    add_account(services.engine, "pacs.sistema", "contraseña-de-prueba-segura", "system", kind="system")
    services.close()
    with serving(local, port, "pacs.sistema", "contraseña-de-prueba-segura", tmp_path) as served:
        yield served


def test_dicomweb_client_searches_a_served_archive(served):
    import requests
    from dicomweb_client.api import DICOMwebClient

    base, token = served
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    dw = DICOMwebClient(url=f"{base}/dicomweb", session=session)
    studies = dw.search_for_studies(search_filters={"PatientName": "garcía*"}, fuzzymatching=False)
    assert [s["0020000D"]["Value"][0] for s in studies] == ["1.2.2"]
    assert dw.search_for_studies(search_filters={"PatientID": "nadie"}) == []  # 204: an empty list
    fuzzy = dw.search_for_studies(search_filters={"PatientName": "cruz maria"}, fuzzymatching=True)
    assert [s["0020000D"]["Value"][0] for s in fuzzy] == ["1.2.1"]
    paged = dw.search_for_studies(limit=1, offset=1)
    assert [s["0020000D"]["Value"][0] for s in paged] == ["1.2.2"]
    series = dw.search_for_series(study_instance_uid="1.2.2", fields=["SeriesDescription"])
    assert sorted(s["00080060"]["Value"][0] for s in series) == ["CT", "MR"] and "0008103E" in series[0]
    all_series = dw.search_for_series(search_filters={"Modality": "CT"})
    assert [s["0020000E"]["Value"][0] for s in all_series] == ["1.2.1.1", "1.2.2.2"]
    instances = dw.search_for_instances(study_instance_uid="1.2.1", series_instance_uid="1.2.1.1")
    assert [i["00200013"]["Value"][0] for i in instances] == [1, 2]
    assert instances[0]["00081190"]["Value"][0] == f"{base}/dicomweb/studies/1.2.1/series/1.2.1.1/instances/1.2.1.1.1"
    every = dw.search_for_instances(search_filters={"StudyDate": "20200101"})
    assert sorted(i["00080018"]["Value"][0] for i in every) == ["1.2.2.1.1", "1.2.2.2.1"]
