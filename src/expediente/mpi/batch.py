"""Batch deduplication of a whole load of Patients with splink on DuckDB.

``dedupe_patients(patients)`` turns each Patient into its MPI features (``features_of``),
gives them to splink (Fellegi–Sunter on DuckDB; the same model runs on Spark at national
scale), and returns the candidate pairs with their match probability, best first. The m and u
parameters are trained on the data (u by random sampling, m by expectation maximisation on
two blocking rules, birth date and names, so each side trains the other's fields) or, with
``train=False``, fixed to values close to those of ``matching.py``. Nothing is linked here:
the pairs at or above ``CERTAIN_PROBABILITY`` are the ones the linking step may take as
certain, the rest are for review.

``expediente mpi dedupe`` reads the current Patients through the store (a system caller, so
the access is audited), optionally of one managing organization, and writes CSV or JSON.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from expediente.mpi.features import features_of
from expediente.mx.systems import NSS_SYSTEM

CERTAIN_PROBABILITY = 0.99
PRIOR_MATCH_PROBABILITY = 1e-4  # two records of one load drawn at random are the same person

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CandidatePair:
    left_id: str
    right_id: str
    probability: float
    weight: float


def feature_rows(patients: Iterable[dict]) -> list[dict]:
    rows = []
    for p in patients:
        f = features_of(p)
        nss = next((v for s, v in sorted(f.identifiers) if s == NSS_SYSTEM), None)
        rows.append(
            {
                "unique_id": p["id"],
                "curp": f.curp,
                "first_surname": f.first_surname or None,
                "second_surname": f.second_surname or None,
                "given": f.given_text or None,
                "first_key": f.first_key.split(" ")[0] or None,
                "second_key": f.second_key.split(" ")[0] or None,
                "given_key": f.given_keys[0] if f.given_keys else None,
                "birth_date": f.birth_date if f.full_birth_date else None,
                "birth_year": f.birth_year,
                "sex": f.sex,
                "birth_state": f.birth_state,
                "nss": nss,
            }
        )
    return rows


def _settings(train: bool):
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    comparisons = [
        cl.ExactMatch("curp"),
        cl.JaroWinklerAtThresholds("first_surname", [0.92]),
        cl.JaroWinklerAtThresholds("second_surname", [0.92]),
        cl.JaroWinklerAtThresholds("given", [0.92, 0.8]),
        cl.DamerauLevenshteinAtThresholds("birth_date", [1, 2]),
        cl.ExactMatch("sex"),
        cl.ExactMatch("birth_state"),
        cl.ExactMatch("nss"),
    ]
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        probability_two_random_records_match=PRIOR_MATCH_PROBABILITY,
        blocking_rules_to_generate_predictions=[
            block_on("curp"),
            block_on("nss"),
            block_on("first_key", "birth_date"),
            block_on("second_key", "birth_date"),
            block_on("given_key", "birth_date"),
            block_on("first_key", "second_key", "given_key"),
            block_on("first_key", "given_key", "birth_year"),
        ],
        comparisons=comparisons,
        retain_intermediate_calculation_columns=False,
    )
    if train:
        return settings
    # Fixed parameters: (m, u) per level, best level first, the null level left out.
    fixed = {
        "curp": [(0.9, 1e-6)],
        "first_surname": [(0.92, 0.02), (0.05, 0.01)],
        "second_surname": [(0.9, 0.02), (0.05, 0.01)],
        "given": [(0.88, 0.01), (0.06, 0.01), (0.03, 0.05)],
        "birth_date": [(0.93, 3.4e-5), (0.04, 1e-3), (0.01, 5e-3)],
        "sex": [(0.97, 0.5)],
        "birth_state": [(0.9, 0.06)],
        "nss": [(0.98, 1e-7)],
    }
    out = settings.get_settings("duckdb").as_dict()
    for comparison in out["comparisons"]:
        name = comparison["output_column_name"]
        levels = [lv for lv in comparison["comparison_levels"] if not lv.get("is_null_level")]
        params = fixed[name]
        for level, (m, u) in zip(levels, params):
            level["m_probability"], level["u_probability"] = m, u
        rest = levels[len(params) :]
        total_m = 1 - sum(m for m, _ in params)
        total_u = 1 - sum(u for _, u in params)
        for level in rest:
            level["m_probability"] = max(total_m, 1e-6) / len(rest)
            level["u_probability"] = max(total_u, 1e-6) / len(rest)
    return out


def dedupe_patients(
    patients: Iterable[dict], *, threshold: float = 0.5, train: bool = True, seed: int = 1
) -> list[CandidatePair]:
    """Candidate pairs of the same person among ``patients`` (match probability >= ``threshold``), best first."""
    import duckdb
    import pyarrow as pa
    from splink import DuckDBAPI, Linker, block_on

    rows = feature_rows(patients)
    if len(rows) < 2:
        return []
    con = duckdb.connect()
    try:
        db_api = DuckDBAPI(connection=con)
        table = db_api.register(pa.Table.from_pylist(rows), table_name="mpi_batch_input")
        linker = Linker(table, _settings(train), validate_settings=True, log_level=logging.WARNING)
        if train:
            linker.training.estimate_u_using_random_sampling(max_pairs=min(2_000_000, len(rows) * 200), seed=seed)
            for rule in (block_on("birth_date"), block_on("first_key", "given_key")):
                try:
                    linker.training.estimate_parameters_using_expectation_maximisation(rule, fix_u_probabilities=True)
                except Exception as exc:  # noqa: BLE001 - too few pairs to train this side: keep the defaults
                    log.warning("splink EM on %s skipped: %s", rule, exc)
        predictions = linker.inference.predict(threshold_match_probability=threshold)
        records = predictions.as_record_list()
    finally:
        con.close()
    pairs = [
        CandidatePair(str(r["unique_id_l"]), str(r["unique_id_r"]), float(r["match_probability"]), float(r["match_weight"]))
        for r in records
    ]
    pairs.sort(key=lambda p: (-p.probability, p.left_id, p.right_id))
    return pairs


def write_pairs(pairs: list[CandidatePair], out: Path) -> None:
    """CSV (``.csv``) or JSON (anything else), with a ``certain`` column for the linking step."""
    out = Path(out)
    data = [{**asdict(p), "certain": p.probability >= CERTAIN_PROBABILITY} for p in pairs]
    if out.suffix.lower() == ".csv":
        with out.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["left_id", "right_id", "probability", "weight", "certain"])
            writer.writeheader()
            writer.writerows(data)
    else:
        out.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


def store_patients(store, caller, *, organization: str | None = None, page: int = 500) -> Iterable[dict]:
    """The current Patients of the store (of one managing organization), page by page, through
    the store so the access policy and the audit trail apply."""
    import orjson

    params = [("_count", str(page))]
    if organization:
        params.append(("organization", organization))
    cursor = None
    while True:
        result = store.search(caller, "Patient", params + ([("_cursor", cursor)] if cursor else []), max_count=page)
        for s in result.matches:
            yield orjson.loads(s.body)
        cursor = result.next_cursor
        if not cursor:
            return
