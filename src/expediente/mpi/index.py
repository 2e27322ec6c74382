"""The blocking index of the master patient index, and ``find_matches`` over it.

Every current Patient has one ``mpi_person`` row (its normalized features) and a few
``mpi_key`` rows (its blocking keys). They are derived by ``extract_index`` like search-index
rows (``mpi_rows``), so the store writes them in the same transaction as the Patient, replaces
them on update, drops them on delete, and ``expediente db reindex`` rebuilds them.

Blocking keys (P1, P2: phonetic first and second surname; G: phonetic of each given-name word;
D: full birth date; Y: birth year):

- ``c:CURP`` (a valid CURP) and ``i:system|value`` (NSS, temporary and other identifiers)
- ``sd:P|D`` for P1 and P2 (a swapped or missing first surname still meets it)
- ``gd:G|D`` for each given word (a surname typo, a married name)
- ``ss:P1|P2|G1`` (any error in the birth date); queried also swapped
- ``sy:P1|G|Y`` for each given word (a missing second surname, a partial birth date)

The query side adds the variants: day and month transposed, surnames swapped, the second
surname as the first, Y-1 and Y+1 for a partial birth date. ``find_matches`` reads the
candidate ids with one indexed ``IN`` lookup on ``mpi_key`` (bounded by
``MAX_CANDIDATES``), their features with one primary-key-like lookup on ``mpi_person``,
and scores them with ``matching.compare``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from expediente.db.schema import mpi_key, mpi_person
from expediente.mpi.features import PersonFeatures, features_of
from expediente.mpi.matching import compare, grade_rank

MAX_CANDIDATES = 400
_KEY_LEN = mpi_key.c.key.type.length


@dataclass(frozen=True, slots=True)
class Match:
    patient_id: str
    score: float
    grade: str | None
    reasons: tuple[str, ...]


# ------------------------------------------------------------------------------------------
# Rows


def _clip(s: str | None, column: sa.Column) -> str | None:
    n = column.type.length
    return s[:n] if s is not None and n else s


def person_row(f: PersonFeatures) -> dict:
    """The ``mpi_person`` row of one set of features (without res_type/res_id/patient_key)."""
    c = mpi_person.c
    return {
        "param": "person",
        "curp": f.curp,
        "curp_other": _clip(f.curp_other, c.curp_other),
        "first_surname": _clip(f.first_surname, c.first_surname),
        "second_surname": _clip(f.second_surname, c.second_surname),
        "given": _clip(f.given_text, c.given),
        "sex": f.sex,
        "birth_date": f.birth_date,
        "birth_state": f.birth_state,
        "identifiers": "\n".join(f"{s}|{v}" for s, v in sorted(f.identifiers)) or None,
    }


def features_from_row(row) -> PersonFeatures:
    """The features stored in an ``mpi_person`` row (a mapping or a Row with those columns)."""
    idents = row.identifiers
    return PersonFeatures(
        curp=row.curp,
        curp_other=row.curp_other,
        first_surname=row.first_surname,
        second_surname=row.second_surname,
        given=tuple(row.given.split()),
        sex=row.sex,
        birth_date=row.birth_date,
        birth_state=row.birth_state,
        identifiers=frozenset(tuple(line.split("|", 1)) for line in idents.split("\n")) if idents else frozenset(),
    )


def _first(words: str) -> str:
    return words.split(" ", 1)[0] if words else ""


def index_keys(f: PersonFeatures) -> set[tuple[str, str]]:
    """The (kind, key) blocking keys stored for one record."""
    keys: set[tuple[str, str]] = set()
    if f.curp:
        keys.add(("c", f.curp))
    for system, value in f.identifiers:
        keys.add(("i", f"{system}|{value}"))
    p1, p2 = _first(f.first_key), _first(f.second_key)
    given = [g for g in f.given_keys if g]
    if f.full_birth_date:
        d = f.birth_date
        for p in (p1, p2):
            if p:
                keys.add(("sd", f"{p}|{d}"))
        for g in given:
            keys.add(("gd", f"{g}|{d}"))
    if p1 and p2 and given:
        keys.add(("ss", f"{p1}|{p2}|{given[0]}"))
    if p1 and f.birth_year:
        for g in given:
            keys.add(("sy", f"{p1}|{g}|{f.birth_year}"))
    return keys


def query_keys(f: PersonFeatures) -> set[str]:
    """The keys to look up for a query record: its own keys and their error variants."""
    p1, p2 = _first(f.first_key), _first(f.second_key)
    given = [g for g in f.given_keys if g]
    out = {f"{k}:{v}" for k, v in index_keys(f)}
    if f.full_birth_date:
        y, m, d = f.birth_date[:4], f.birth_date[5:7], f.birth_date[8:10]
        if m != d and int(d) <= 12:
            swapped = f"{y}-{d}-{m}"
            for p in (p1, p2):
                if p:
                    out.add(f"sd:{p}|{swapped}")
            for g in given:
                out.add(f"gd:{g}|{swapped}")
    if p1 and p2 and given:
        out.add(f"ss:{p2}|{p1}|{given[0]}")
        for g in given[1:]:
            out.add(f"ss:{p1}|{p2}|{g}")
    if p2 and f.birth_year:
        for g in given:
            out.add(f"sy:{p2}|{g}|{f.birth_year}")  # the second surname stored as the only one
    if p1 and f.birth_date and not f.full_birth_date:
        year = int(f.birth_year)
        for g in given:
            for y in (year - 1, year + 1):
                out.add(f"sy:{p1}|{g}|{y}")
    return {k[:_KEY_LEN] for k in out}


def mpi_rows(patient: dict) -> dict[str, list[dict]]:
    """The ``mpi_person`` and ``mpi_key`` rows of a Patient (for ``extract_index``)."""
    f = features_of(patient)
    keys = [{"param": kind, "key": f"{kind}:{value}"[:_KEY_LEN]} for kind, value in sorted(index_keys(f))]
    out = {"mpi_person": [person_row(f)]}
    if keys:
        out["mpi_key"] = keys
    return out


# ------------------------------------------------------------------------------------------
# Lookup

_PERSON_COLUMNS = (
    mpi_person.c.res_id,
    mpi_person.c.curp,
    mpi_person.c.curp_other,
    mpi_person.c.first_surname,
    mpi_person.c.second_surname,
    mpi_person.c.given,
    mpi_person.c.sex,
    mpi_person.c.birth_date,
    mpi_person.c.birth_state,
    mpi_person.c.identifiers,
)


def candidate_ids(conn: sa.Connection, keys: Iterable[str], limit: int = MAX_CANDIDATES) -> list[str]:
    keys = sorted(set(keys))
    if not keys:
        return []
    query = (
        sa.select(mpi_key.c.res_id)
        .where(mpi_key.c.key.in_(keys), mpi_key.c.res_type == "Patient")
        .distinct()
        .limit(limit)
    )
    return [r[0] for r in conn.execute(query)]


def find_matches(
    conn: sa.Connection,
    patient: dict,
    *,
    exclude_ids: Iterable[str] = (),
    limit: int = 10,
    min_grade: str = "possible",
) -> list[Match]:
    """The indexed Patients most likely the same person as ``patient``, best first (ties by id).

    Only index lookups: the candidates come from ``mpi_key``, their features from
    ``mpi_person``; nothing else is read. ``patient`` need not be stored; its own id and
    ``exclude_ids`` are left out.
    """
    f = features_of(patient)
    excluded = set(exclude_ids)
    if isinstance(patient.get("id"), str):
        excluded.add(patient["id"])
    ids = [i for i in candidate_ids(conn, query_keys(f)) if i not in excluded]
    if not ids:
        return []
    rows = conn.execute(
        sa.select(*_PERSON_COLUMNS).where(mpi_person.c.res_type == "Patient", mpi_person.c.res_id.in_(ids))
    ).all()
    floor = grade_rank(min_grade)
    matches = []
    for row in rows:
        c = compare(f, features_from_row(row))
        if c.grade is not None and grade_rank(c.grade) >= floor:
            matches.append(Match(row.res_id, c.score, c.grade, c.reasons))
    matches.sort(key=lambda m: (-m.score, m.patient_id))
    return matches[:limit]
