"""Master patient index: match quality on a labelled synthetic set, and $match latency at scale.

Prints one JSON document on stdout (progress on stderr):

- ``quality``: people from ``expediente.synth.generator`` (real-looking Mexican Patients) plus,
  for most of them, a second registration of the same person at another institution with a
  realistic error (``SCENARIOS``), and hard negatives (twins and siblings sharing surnames,
  state and for twins the birth date; namesakes with the same full name). Every record is
  indexed (``mpi_rows``) in a SQLite database and queried with ``find_matches``; the pairs
  found are scored against the labels: precision and recall of automatic links (grade
  'certain'), of each grade and cumulative, recall per scenario, false links per kind of hard
  negative.
- ``batch``: the same records deduplicated with splink on DuckDB (``mpi.batch``), precision and
  recall at the certain-pair probability.
- ``latency``: ``find_matches`` p50/p95 with N patients indexed, per backend. For large N the
  index tables are filled directly with bulk inserts (the rows ``mpi_rows`` derives, from a fast
  sampler of the same name tables), not through the store; the queries are indexed people with
  one realistic error.

    python bench/mpi_quality.py --persons 3000 --patients 100000 --backend sqlite
    python bench/mpi_quality.py --patients 1000000 --backend sqlite --backend postgresql
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
import unicodedata
from collections import Counter, defaultdict
from datetime import date, timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from expediente.db.schema import mpi_key, mpi_person  # noqa: E402
from expediente.mpi import matching  # noqa: E402
from expediente.mpi.index import find_matches, mpi_rows  # noqa: E402
from expediente.mx.curp import build_curp  # noqa: E402
from expediente.mx.states import ENTIDADES  # noqa: E402
from expediente.mx.systems import (  # noqa: E402
    BIRTH_STATE_URL,
    CURP_SYSTEM,
    FATHERS_FAMILY_URL,
    MOTHERS_FAMILY_URL,
    NSS_SYSTEM,
    RENAPO_STATE_SYSTEM,
    TEMPORARY_ID_PREFIX,
)
from expediente.synth.generator import generate  # noqa: E402
from expediente.synth.names import FEMALE_GIVEN, MALE_GIVEN, SURNAMES, given_parts  # noqa: E402


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# Editing a Patient the way registrations go wrong


def _name(p: dict) -> dict:
    return p["name"][0]


def surnames_of(p: dict) -> tuple[str, str | None]:
    ext = {e["url"]: e["valueString"] for e in _name(p).get("_family", {}).get("extension", [])}
    return ext.get(FATHERS_FAMILY_URL, _name(p).get("family", "")), ext.get(MOTHERS_FAMILY_URL)


def set_surnames(p: dict, first: str, second: str | None, *, plain: bool = False) -> None:
    name = _name(p)
    name["family"] = f"{first} {second}" if second else first
    if plain:
        name.pop("_family", None)
        return
    ext = [{"url": FATHERS_FAMILY_URL, "valueString": first}]
    if second:
        ext.append({"url": MOTHERS_FAMILY_URL, "valueString": second})
    name["_family"] = {"extension": ext}


def drop_curp(p: dict, rng: random.Random) -> None:
    clues = f"CL{rng.choice('ABCDEFGH')}SA{rng.randrange(10**6):06d}"
    p["identifier"] = [i for i in p.get("identifier", []) if i.get("system") != CURP_SYSTEM]
    p["identifier"].append({"system": TEMPORARY_ID_PREFIX + clues, "value": f"T-{rng.randrange(10**8):08d}"})


def keep_only_curp(p: dict) -> None:
    p["identifier"] = [i for i in p.get("identifier", []) if i.get("system") == CURP_SYSTEM]


def typo(s: str, rng: random.Random) -> str:
    """One keyboard-style error: substitution, deletion, insertion or transposition."""
    if len(s) < 3:
        return s + rng.choice("aeiou")
    i = rng.randrange(1, len(s) - 1)
    op = rng.randrange(4)
    letters = "abcdefghijlmnoprstuvz"
    if op == 0:
        return s[:i] + rng.choice(letters) + s[i + 1 :]
    if op == 1:
        return s[:i] + s[i + 1 :]
    if op == 2:
        return s[:i] + rng.choice(letters) + s[i:]
    return s[: i - 1] + s[i] + s[i - 1] + s[i + 1 :]


def plain_text(s: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c)).upper()


def s_same_curp(p, rng):  # another institution, the same CURP, accents lost on capture
    first, second = surnames_of(p)
    set_surnames(p, plain_text(first), plain_text(second) if second else None)
    keep_only_curp(p)


def s_imss_nss_issste_curp(p, rng, original):  # IMSS record: NSS, no CURP; ISSSTE: CURP only
    nss = [i for i in original.get("identifier", []) if i.get("system") == NSS_SYSTEM]
    if not nss:
        original["identifier"].append({"system": NSS_SYSTEM, "value": f"{rng.randrange(10**10):010d}1"})
    original["identifier"] = [i for i in original["identifier"] if i.get("system") != CURP_SYSTEM]
    keep_only_curp(p)


def s_no_curp_clean(p, rng):
    drop_curp(p, rng)


def s_accents_case(p, rng):
    drop_curp(p, rng)
    first, second = surnames_of(p)
    set_surnames(p, plain_text(first), plain_text(second) if second else None)
    _name(p)["given"] = [plain_text(g) for g in _name(p)["given"]]


def s_typo_given(p, rng):
    drop_curp(p, rng)
    g = _name(p)["given"]
    k = rng.randrange(len(g))
    g[k] = typo(g[k], rng)


def s_typo_surname(p, rng):
    drop_curp(p, rng)
    first, second = surnames_of(p)
    if second and rng.random() < 0.5:
        set_surnames(p, first, typo(second, rng))
    else:
        set_surnames(p, typo(first, rng), second)


def s_swapped_surnames(p, rng):
    drop_curp(p, rng)
    first, second = surnames_of(p)
    if second:
        set_surnames(p, second, first)


def s_missing_second(p, rng):
    drop_curp(p, rng)
    first, _ = surnames_of(p)
    set_surnames(p, first, None)


def s_plain_family(p, rng):
    drop_curp(p, rng)
    first, second = surnames_of(p)
    set_surnames(p, first, second, plain=True)


def s_transposed_date(p, rng):
    drop_curp(p, rng)
    y, m, d = p["birthDate"].split("-")
    if int(d) <= 12 and d != m:
        p["birthDate"] = f"{y}-{d}-{m}"
    else:  # not transposable: the day off by one instead (another common slip)
        p["birthDate"] = (date.fromisoformat(p["birthDate"]) + timedelta(days=1)).isoformat()


def s_date_typo(p, rng):
    drop_curp(p, rng)
    text = p["birthDate"]
    for _ in range(20):
        i = rng.choice((2, 3, 6, 8, 9))
        cand = text[:i] + str(rng.randrange(10)) + text[i + 1 :]
        try:
            if cand != text and date.fromisoformat(cand) < date(2026, 1, 1):
                p["birthDate"] = cand
                return
        except ValueError:
            continue


def s_given_variant(p, rng):
    drop_curp(p, rng)
    g = _name(p)["given"]
    if len(g) > 1:
        _name(p)["given"] = [g[1]] if rng.random() < 0.5 else ["Ma." if g[0] == "María" else g[0]] + g[1:]
    elif g[0] == "Guadalupe":
        _name(p)["given"] = ["Lupe"]
    else:
        _name(p)["given"] = [plain_text(g[0]).lower()]


def s_curp_typo(p, rng):
    for ident in p["identifier"]:
        if ident.get("system") == CURP_SYSTEM:
            v = ident["value"]
            i = rng.randrange(4, 16)
            ident["value"] = v[:i] + rng.choice("ABCDEFGHJKLMNPRSTUVWXZ0123456789".replace(v[i], "")) + v[i + 1 :]
    keep_only_curp(p)


def s_emergency(p, rng):
    """A CURP-less emergency registration: temporary identifier, no state, age estimated to the
    year, a name taken from a relative (second surname often missing, a typo now and then)."""
    drop_curp(p, rng)
    p["extension"] = []
    p["birthDate"] = p["birthDate"][:4]
    first, second = surnames_of(p)
    if rng.random() < 0.5:
        second = None
    set_surnames(p, first, second)
    if rng.random() < 0.3:
        g = _name(p)["given"]
        g[0] = typo(g[0], rng)


SCENARIOS = (
    ("same_curp_other_institution", 0.24, s_same_curp),
    ("imss_nss_vs_issste_curp", 0.10, s_imss_nss_issste_curp),
    ("no_curp_clean", 0.08, s_no_curp_clean),
    ("dropped_accents_uppercase", 0.08, s_accents_case),
    ("typo_given", 0.07, s_typo_given),
    ("typo_surname", 0.07, s_typo_surname),
    ("swapped_surnames", 0.05, s_swapped_surnames),
    ("missing_second_surname", 0.06, s_missing_second),
    ("plain_family_no_extensions", 0.04, s_plain_family),
    ("transposed_day_month", 0.05, s_transposed_date),
    ("birth_date_digit_typo", 0.04, s_date_typo),
    ("given_name_variant", 0.04, s_given_variant),
    ("curp_typo", 0.03, s_curp_typo),
    ("emergency_no_curp_partial", 0.05, s_emergency),
)

_GIVEN = {"male": [n for n, _ in MALE_GIVEN], "female": [n for n, _ in FEMALE_GIVEN]}


def _renamed(p: dict, rng: random.Random, sex: str) -> None:
    current = " ".join(_name(p)["given"])
    choice = current
    while choice == current or choice.split()[0] == current.split()[0]:
        choice = rng.choice(_GIVEN[sex])
    _name(p)["given"] = given_parts(choice)


def twin(p: dict, rng: random.Random, new_id: str) -> dict:
    """A twin: same surnames, birth date and state; another given name; often registered without CURP."""
    t = copy.deepcopy(p)
    t["id"] = new_id
    sex = p["gender"] if rng.random() < 0.6 else ("male" if p["gender"] == "female" else "female")
    t["gender"] = sex
    _renamed(t, rng, sex)
    keep_only_curp(t)
    first, second = surnames_of(t)
    state = next((e["valueCodeableConcept"]["coding"][0]["code"] for e in t.get("extension", []) if e["url"] == BIRTH_STATE_URL), "NE")
    try:
        curp = build_curp(first, second, " ".join(_name(t)["given"]), date.fromisoformat(t["birthDate"]), sex, state, rng.randrange(10))
        t["identifier"][0]["value"] = curp
    except (ValueError, IndexError):
        pass
    if rng.random() < 0.6:
        drop_curp(t, rng)
    return t


def sibling(p: dict, rng: random.Random, new_id: str) -> dict:
    s = twin(p, rng, new_id)
    born = date.fromisoformat(p["birthDate"]) + timedelta(days=rng.choice((-1, 1)) * rng.randrange(300, 4000))
    s["birthDate"] = min(born, date(2025, 12, 1)).isoformat()
    drop_curp(s, rng)
    return s


def namesake(p: dict, rng: random.Random, new_id: str, state_codes: list[str]) -> dict:
    """Another person with the same full name ("José Hernández López"), another birth date and state."""
    n = copy.deepcopy(p)
    n["id"] = new_id
    n["birthDate"] = (date.fromisoformat(p["birthDate"]) + timedelta(days=rng.randrange(200, 9000) * rng.choice((-1, 1)))).isoformat()
    n["birthDate"] = min(date.fromisoformat(n["birthDate"]), date(2025, 12, 1)).isoformat()
    code = rng.choice(state_codes)
    n["extension"] = [{"url": BIRTH_STATE_URL, "valueCodeableConcept": {"coding": [{"system": RENAPO_STATE_SYSTEM, "code": code}]}}]
    keep_only_curp(n)
    drop_curp(n, rng)
    return n


def labelled_set(persons: int, seed: int, duplicate_share: float = 0.6):
    """Records (Patient dicts) with their person labels, the scenario of each duplicate and
    the kind of each hard negative."""
    rng = random.Random(seed)
    originals = [copy.deepcopy(r) for r in generate(persons, seed) if r["resourceType"] == "Patient"]
    state_codes = [e.renapo for e in ENTIDADES]
    records: list[dict] = []
    label: dict[str, str] = {}
    scenario_of: dict[str, str] = {}
    negative_kind: dict[str, str] = {}
    names, weights, fns = zip(*SCENARIOS)
    for i, p in enumerate(originals):
        person = f"person-{i}"
        dup = None
        if rng.random() < duplicate_share:
            k = rng.choices(range(len(SCENARIOS)), weights)[0]
            dup = copy.deepcopy(p)
            dup["id"] = f"dup-{i}"
            if names[k] == "imss_nss_vs_issste_curp":
                fns[k](dup, rng, p)
            else:
                fns[k](dup, rng)
            scenario_of[dup["id"]] = names[k]
        records.append(p)
        label[p["id"]] = person
        if dup is not None:
            records.append(dup)
            label[dup["id"]] = person
        u = rng.random()
        if u < 0.05:
            neg = twin(p, rng, f"twin-{i}")
            negative_kind[neg["id"]] = "twin"
        elif u < 0.10:
            neg = sibling(p, rng, f"sibling-{i}")
            negative_kind[neg["id"]] = "sibling"
        elif u < 0.15:
            neg = namesake(p, rng, f"namesake-{i}", state_codes)
            negative_kind[neg["id"]] = "namesake"
        else:
            continue
        records.append(neg)
        label[neg["id"]] = f"negative-{neg['id']}"
    return records, label, scenario_of, negative_kind


# ------------------------------------------------------------------------------------------
# Quality


def _scratch_engine(path: Path) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{path}")
    mpi_person.metadata.create_all(engine, tables=[mpi_person, mpi_key])
    return engine


def _index_records(engine: sa.Engine, records: list[dict]) -> None:
    persons, keys = [], []
    for p in records:
        rows = mpi_rows(p)
        base = {"res_type": "Patient", "res_id": p["id"], "patient_key": p["id"]}
        persons.extend({**base, **r} for r in rows["mpi_person"])
        keys.extend({**base, **r} for r in rows.get("mpi_key", ()))
    with engine.begin() as conn:
        conn.execute(mpi_person.insert(), persons)
        if keys:
            conn.execute(mpi_key.insert(), keys)


def _prf(found: set, truth: set) -> dict:
    tp = len(found & truth)
    return {
        "pairs": len(found),
        "true_positives": tp,
        "precision": round(tp / len(found), 4) if found else None,
        "recall": round(tp / len(truth), 4) if truth else None,
    }


def true_pairs(label: dict[str, str]) -> set[tuple[str, str]]:
    clusters = defaultdict(list)
    for rid, person in label.items():
        clusters[person].append(rid)
    return {tuple(sorted(p)) for ids in clusters.values() for p in itertools.combinations(ids, 2)}


def quality(persons: int, seed: int, workdir: Path) -> tuple[dict, tuple]:
    t0 = time.perf_counter()
    records, label, scenario_of, negative_kind = labelled_set(persons, seed)
    log(f"labelled set: {len(records)} records ({time.perf_counter() - t0:.1f} s)")
    engine = _scratch_engine(workdir / "quality.db")
    _index_records(engine, records)
    best: dict[tuple[str, str], tuple[float, str]] = {}
    with engine.connect() as conn:
        for p in records:
            for m in find_matches(conn, p, limit=10, min_grade="possible"):
                pair = tuple(sorted((p["id"], m.patient_id)))
                if pair not in best or best[pair][0] < m.score:
                    best[pair] = (m.score, m.grade)
    engine.dispose()
    truth = true_pairs(label)
    by_grade = {g: {pair for pair, (_, gr) in best.items() if gr == g} for g in matching.GRADES}
    cumulative = {}
    acc: set = set()
    for g in matching.GRADES:
        acc = acc | by_grade[g]
        cumulative[f"{g}_or_better"] = _prf(acc, truth)
    per_grade = {
        g: {
            "pairs": len(s),
            "precision": round(len(s & truth) / len(s), 4) if s else None,
        }
        for g, s in by_grade.items()
    }
    scenario_recall: dict[str, dict] = {name: {} for name, *_ in SCENARIOS}
    # Recall per scenario: the duplicate's pair with its original.
    originals_by_person = {label[r["id"]]: r["id"] for r in records if not r["id"].startswith(("dup-", "twin-", "sibling-", "namesake-"))}
    for name in scenario_recall:
        hit = {g: 0 for g in matching.GRADES}
        dups = [d for d, s in scenario_of.items() if s == name]
        for d in dups:
            pair = tuple(sorted((d, originals_by_person[label[d]])))
            grade = best.get(pair, (0, None))[1]
            if grade:
                hit[grade] += 1
        n = len(dups)
        scenario_recall[name] = {
            "duplicates": n,
            "certain": round(hit["certain"] / n, 3) if n else None,
            "probable_or_better": round((hit["certain"] + hit["probable"]) / n, 3) if n else None,
            "possible_or_better": round(sum(hit.values()) / n, 3) if n else None,
        }
    negatives = {}
    for kind in ("twin", "sibling", "namesake"):
        ids = {rid for rid, k in negative_kind.items() if k == kind}
        graded = Counter(gr for pair, (_, gr) in best.items() if (pair[0] in ids or pair[1] in ids) and pair not in truth)
        negatives[kind] = {"records": len(ids), "false_pairs_by_grade": dict(graded)}
    # Calibration: automatic links at other thresholds (scores above the capped grades only).
    sweep = {}
    for t in (0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999):
        sweep[str(t)] = _prf({pair for pair, (score, grade) in best.items() if score >= t and grade != "possible"}, truth)
    result = {
        "threshold_sweep": sweep,
        "records": len(records),
        "persons": persons,
        "true_pairs": len(truth),
        "seed": seed,
        "automatic_links": _prf(by_grade["certain"], truth),
        "target": {"precision": 0.99, "recall": 0.95},
        "cumulative": cumulative,
        "per_grade": per_grade,
        "recall_per_scenario": scenario_recall,
        "hard_negatives": negatives,
        "thresholds": {
            "AUTO_LINK_THRESHOLD": matching.AUTO_LINK_THRESHOLD,
            "PROBABLE": matching.PROBABLE,
            "POSSIBLE": matching.POSSIBLE,
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return result, (records, label)


def batch_quality(records: list[dict], label: dict[str, str]) -> dict:
    from expediente.mpi.batch import CERTAIN_PROBABILITY, dedupe_patients

    t0 = time.perf_counter()
    pairs = dedupe_patients(records, threshold=0.5)
    truth = true_pairs(label)
    out = {"records": len(records), "seconds": None}
    for cut in (CERTAIN_PROBABILITY, 0.9, 0.5):
        found = {tuple(sorted((p.left_id, p.right_id))) for p in pairs if p.probability >= cut}
        out[f"probability_ge_{cut}"] = _prf(found, truth)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


# ------------------------------------------------------------------------------------------
# Latency at scale


_SURNAME_NAMES, _SURNAME_W = zip(*SURNAMES)
_CUM_SURNAME = list(itertools.accumulate(_SURNAME_W))
_MALE = (list(zip(*MALE_GIVEN))[0], list(itertools.accumulate(w for _, w in MALE_GIVEN)))
_FEMALE = (list(zip(*FEMALE_GIVEN))[0], list(itertools.accumulate(w for _, w in FEMALE_GIVEN)))
_STATES = [e.renapo for e in ENTIDADES]
_STATE_CUM = list(itertools.accumulate(e.population_2020 for e in ENTIDADES))


def sampled_patient(rng: random.Random, index: int) -> dict:
    """A fast Patient drawn from the generator's name and state tables (no clinical data)."""
    female = rng.random() < 0.512
    names, cum = _FEMALE if female else _MALE
    given = rng.choices(names, cum_weights=cum)[0]
    first, second = rng.choices(_SURNAME_NAMES, cum_weights=_CUM_SURNAME, k=2)
    born = date(2025, 12, 31) - timedelta(days=rng.randrange(1, 365 * 90))
    state = rng.choices(_STATES, cum_weights=_STATE_CUM)[0]
    sex = "female" if female else "male"
    curp = build_curp(first, second, given, born, sex, state, index)
    p = {
        "resourceType": "Patient",
        "id": f"s{index:08d}",
        "extension": [{"url": BIRTH_STATE_URL, "valueCodeableConcept": {"coding": [{"system": RENAPO_STATE_SYSTEM, "code": state}]}}],
        "identifier": [{"system": CURP_SYSTEM, "value": curp}],
        "name": [{"use": "official", "given": given_parts(given)}],
        "gender": sex,
        "birthDate": born.isoformat(),
    }
    set_surnames(p, first, second)
    if rng.random() < 0.4:
        p["identifier"].append({"system": NSS_SYSTEM, "value": f"{rng.randrange(10**10):010d}{index % 10}"})
    if rng.random() < 0.1:
        drop_curp(p, rng)
    return p


def _pg_admin_url() -> str:
    return os.environ.get("EXPEDIENTE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _bulk_rows(n: int, seed: int, start: int = 0):
    rng = random.Random(seed)
    for i in range(start, n):
        p = sampled_patient(rng, i)
        rows = mpi_rows(p)
        yield p["id"], rows


_PERSON_COLS = [c.name for c in mpi_person.columns]
_KEY_COLS = [c.name for c in mpi_key.columns]


def _tuples(pid: str, rows: dict):
    base = {"res_type": "Patient", "res_id": pid, "patient_key": pid}
    person = [tuple({**base, **r}[c] for c in _PERSON_COLS) for r in rows["mpi_person"]]
    keys = [tuple({**base, **r}[c] for c in _KEY_COLS) for r in rows.get("mpi_key", ())]
    return person, keys


def load_sqlite(path: Path, n: int, seed: int) -> dict:
    import sqlite3

    engine = sa.create_engine(f"sqlite:///{path}")
    mpi_person.metadata.create_all(engine, tables=[mpi_person, mpi_key])
    engine.dispose()
    t0 = time.perf_counter()
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name IN ('mpi_person','mpi_key') AND sql IS NOT NULL").fetchall()
    for name, _ in indexes:
        db.execute(f"DROP INDEX {name}")
    ins_p = f"INSERT INTO mpi_person ({','.join(_PERSON_COLS)}) VALUES ({','.join('?' * len(_PERSON_COLS))})"
    ins_k = f"INSERT INTO mpi_key ({','.join(_KEY_COLS)}) VALUES ({','.join('?' * len(_KEY_COLS))})"
    persons, keys, n_keys = [], [], 0
    for pid, rows in _bulk_rows(n, seed):
        pr, kr = _tuples(pid, rows)
        persons.extend(pr)
        keys.extend(kr)
        if len(persons) >= 50_000:
            db.executemany(ins_p, persons)
            db.executemany(ins_k, keys)
            n_keys += len(keys)
            persons, keys = [], []
            db.commit()
            log(f"sqlite: {n_keys:,} keys so far")
    db.executemany(ins_p, persons)
    db.executemany(ins_k, keys)
    n_keys += len(keys)
    db.commit()
    t_rows = time.perf_counter() - t0
    for _, sql in indexes:
        db.execute(sql)
    db.execute("ANALYZE")
    db.commit()
    db.close()
    return {"key_rows": n_keys, "load_seconds": round(t_rows, 1), "index_seconds": round(time.perf_counter() - t0 - t_rows, 1)}


def load_postgresql(url: str, n: int, seed: int) -> dict:
    import psycopg

    engine = sa.create_engine(url)
    mpi_person.metadata.create_all(engine, tables=[mpi_person, mpi_key])
    engine.dispose()
    t0 = time.perf_counter()
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as db:
        idx = db.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('mpi_person','mpi_key')").fetchall()
        for name, _ in idx:
            db.execute(f'DROP INDEX "{name}"')
        n_keys = 0
        with db.cursor() as cur:
            with cur.copy(f"COPY mpi_person ({','.join(_PERSON_COLS)}) FROM STDIN") as cp_p:
                keys_buffer = []
                for pid, rows in _bulk_rows(n, seed):
                    pr, kr = _tuples(pid, rows)
                    for r in pr:
                        cp_p.write_row(r)
                    keys_buffer.extend(kr)
            with cur.copy(f"COPY mpi_key ({','.join(_KEY_COLS)}) FROM STDIN") as cp_k:
                for r in keys_buffer:
                    cp_k.write_row(r)
                n_keys = len(keys_buffer)
        t_rows = time.perf_counter() - t0
        for _, sql in idx:
            db.execute(sql)
        db.execute("ANALYZE mpi_person")
        db.execute("ANALYZE mpi_key")
    return {"key_rows": n_keys, "load_seconds": round(t_rows, 1), "index_seconds": round(time.perf_counter() - t0 - t_rows, 1)}


_ERRORS = (s_no_curp_clean, s_typo_given, s_typo_surname, s_swapped_surnames, s_missing_second, s_transposed_date, s_accents_case, s_emergency)


def measure(engine: sa.Engine, n: int, seed: int, queries: int) -> dict:
    rng = random.Random(seed + 1)
    sample_rng = random.Random(seed)
    # Re-draw the indexed patients for the sample (the stream is deterministic).
    wanted = sorted(rng.sample(range(n), min(queries, n)))
    patients = []
    w = iter(wanted)
    target = next(w, None)
    for i in range(n):
        if target is None:
            break
        p = sampled_patient(sample_rng, i)
        if i == target:
            patients.append(p)
            target = next(w, None)
    probes = []
    for p in patients:
        q = copy.deepcopy(p)
        q["id"] = "probe"
        rng.choice(_ERRORS)(q, rng)
        probes.append((p["id"], q))
    times, found, candidates = [], 0, []
    with engine.connect() as conn:
        for _, q in probes[:20]:
            find_matches(conn, q)  # warm the caches
        for pid, q in probes:
            t = time.perf_counter()
            matches = find_matches(conn, q)
            times.append((time.perf_counter() - t) * 1000)
            found += any(m.patient_id == pid for m in matches)
    times.sort()
    return {
        "queries": len(times),
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
        "max_ms": round(times[-1], 2),
        "found_own_record": round(found / len(times), 3),
    }


def latency(backend: str, n: int, seed: int, queries: int, workdir: Path) -> dict:
    if backend == "sqlite":
        path = workdir / f"latency_{n}.db"
        load = load_sqlite(path, n, seed)
        engine = sa.create_engine(f"sqlite:///{path}")
        try:
            return {"patients": n, "filled_by": "bulk inserts of mpi_rows (not through the store)", **load, **measure(engine, n, seed, queries)}
        finally:
            engine.dispose()
    admin = _pg_admin_url()
    name = f"expediente_bench_mpi_{secrets.token_hex(4)}"
    admin_engine = sa.create_engine(admin.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + f"/{name}"
    try:
        load = load_postgresql(url.replace("postgresql://", "postgresql+psycopg://"), n, seed)
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            return {"patients": n, "filled_by": "COPY of mpi_rows (not through the store)", **load, **measure(engine, n, seed, queries)}
        finally:
            engine.dispose()
    finally:
        with admin_engine.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin_engine.dispose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--persons", type=int, default=3000, help="people of the labelled set")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--patients", type=int, action="append", help="N indexed for the latency runs (repeatable)")
    ap.add_argument("--backend", action="append", choices=("sqlite", "postgresql"))
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--no-batch", action="store_true", help="skip the splink batch evaluation")
    ap.add_argument("--no-quality", action="store_true")
    args = ap.parse_args(argv)
    out: dict = {"benchmark": "mpi_quality"}
    with tempfile.TemporaryDirectory(prefix="mpi-bench-") as tmp:
        workdir = Path(tmp)
        if not args.no_quality:
            out["quality"], (records, label) = quality(args.persons, args.seed, workdir)
            log(json.dumps(out["quality"]["automatic_links"]))
            if not args.no_batch:
                out["batch"] = batch_quality(records, label)
        out["latency"] = {}
        for backend in args.backend or ["sqlite"]:
            for n in args.patients or [10_000]:
                log(f"latency: {backend}, {n:,} patients")
                out["latency"].setdefault(backend, []).append(latency(backend, n, args.seed, args.queries, workdir))
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
