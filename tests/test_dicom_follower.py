"""The study follower hands each change of a study to its handlers once, however often it looks."""

from __future__ import annotations

from dicom_samples import ct_slice
from expediente.dicom.follower import StudyFollower
from expediente.dicom.ingest import Origin

ORIGIN = Origin("dimse", "CT_URG", institution="DFIMS000011")


def test_each_change_is_handled_once(services):
    seen: list[str] = []
    follower = StudyFollower(services.engine, [seen.extend])
    assert follower.catch_up() == []  # nothing waiting
    services.archive.store_file(ct_slice(study_uid="1.2.9", sop_uid="1.2.9.1.1", series_uid="1.2.9.1"), origin=ORIGIN)
    follower.catch_up()
    follower.catch_up()  # the overlap window brings the study back: not handed again
    assert seen == ["1.2.9"]
    services.archive.store_file(ct_slice(study_uid="1.2.9", sop_uid="1.2.9.1.2", series_uid="1.2.9.1", number=2), origin=ORIGIN)
    follower.catch_up()
    assert seen == ["1.2.9", "1.2.9"]  # a new instance is a change


def test_a_handler_that_fails_leaves_the_study_for_the_next_look(services):
    calls: list[list[str]] = []

    def flaky(uids):
        calls.append(uids)
        if len(calls) == 1:
            raise RuntimeError("momentarily unavailable")

    follower = StudyFollower(services.engine, [flaky])
    services.archive.store_file(ct_slice(study_uid="1.2.8", sop_uid="1.2.8.1.1", series_uid="1.2.8.1"), origin=ORIGIN)
    try:
        follower.catch_up()
    except RuntimeError:
        pass
    follower.catch_up()
    assert calls == [["1.2.8"], ["1.2.8"]]


def test_the_background_look_waits_for_a_study_to_settle(services):
    seen: list[str] = []
    follower = StudyFollower(services.engine, [seen.extend], settle=3600)
    services.archive.store_file(ct_slice(study_uid="1.2.7", sop_uid="1.2.7.1.1", series_uid="1.2.7.1"), origin=ORIGIN)
    assert follower.catch_up(settled_only=True) == []  # still arriving, as far as it knows
    assert seen == []
    assert follower.catch_up() == ["1.2.7"]  # an explicit catch-up does not wait
    settled = StudyFollower(services.engine, [seen.extend], settle=0)
    assert settled.catch_up(settled_only=True) == ["1.2.7"]


def test_the_settle_time_is_a_setting(tmp_path, monkeypatch):
    from expediente.config import load_settings

    monkeypatch.setenv("EXPEDIENTE_DICOM_SETTLE_SECONDS", "0.5")
    assert load_settings(tmp_path / "none.toml").dicom_settle_seconds == 0.5
