"""Batch deduplication with splink on DuckDB, scored against a labelled synthetic set."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import mpi_quality  # noqa: E402
from expediente.app import Services  # noqa: E402
from expediente.cli import app  # noqa: E402
from expediente.config import load_settings  # noqa: E402
from expediente.db.migrate import upgrade  # noqa: E402
from expediente.fhir.store import Caller  # noqa: E402
from expediente.mpi.batch import CERTAIN_PROBABILITY, dedupe_patients  # noqa: E402
from expediente.security.principal import Principal  # noqa: E402
from mpi_people import person  # noqa: E402


@pytest.fixture(scope="module")
def labelled():
    records, label, _, _ = mpi_quality.labelled_set(400, seed=5)
    return records, label, mpi_quality.true_pairs(label)


def _scores(pairs, truth, cut):
    found = {tuple(sorted((p.left_id, p.right_id))) for p in pairs if p.probability >= cut}
    tp = len(found & truth)
    return tp / max(1, len(found)), tp / len(truth)


@pytest.mark.parametrize("train", [False, True])
def test_splink_finds_the_labelled_duplicates(labelled, train):
    records, _, truth = labelled
    pairs = dedupe_patients(records, threshold=0.5, train=train)
    precision, recall = _scores(pairs, truth, CERTAIN_PROBABILITY)
    assert precision >= 0.85 and recall >= 0.9, (precision, recall)
    _, recall_all = _scores(pairs, truth, 0.5)
    assert recall_all >= 0.95
    assert [p.probability for p in pairs] == sorted((p.probability for p in pairs), reverse=True)


def test_dedupe_cli_reads_the_store_and_writes_csv(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPEDIENTE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("EXPEDIENTE_DATABASE_URL", raising=False)
    monkeypatch.setenv("EXPEDIENTE_CONFIG", str(tmp_path / "none.toml"))
    services = Services.build(load_settings())
    upgrade(services.engine)
    caller = Caller(Principal(subject="prueba", kind="system", role="system"), "test")
    lupe = dict(first="Hernández", second="Cruz", given=["María", "Guadalupe"], birth="1979-12-03", sex="female", state="DF")
    a = services.store.create(caller, "Patient", person(**lupe, curp=False, nss="31047912345")).stored.res_id
    b = services.store.create(caller, "Patient", person(**lupe)).stored.res_id
    services.store.create(caller, "Patient", person("Pech", "May", ["Itzel"], "2001-05-05", "female", "YN"))
    services.close()
    out = tmp_path / "pares.csv"
    r = CliRunner().invoke(app, ["mpi", "dedupe", "--out", str(out), "--fixed"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert {frozenset((row["left_id"], row["right_id"])) for row in rows} == {frozenset((a, b))}
    assert rows[0]["certain"] == "True"
