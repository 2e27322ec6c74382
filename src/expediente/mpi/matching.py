"""Are two Patient records the same person? A Fellegi–Sunter comparison of their features.

``compare(a, b)`` gives a ``Comparison``: a score in [0, 1], a grade ('certain', 'probable',
'possible' or None) and the reasons, in Spanish, a reviewer reads.

- The same valid CURP is the same person: score 1, certain.
- Two different valid CURPs are two people: the score stays under ``POSSIBLE`` unless
  everything else is identical (a CURP captured wrong), which is at most 'possible'.
- Otherwise each field adds its weight ``log2(m / u)`` (m: the chance the field looks like
  this when both records are the same person; u: when they are not) and the total weight
  ``W`` becomes the posterior probability with prior odds ``2**PRIOR_LOG2_ODDS`` (about one
  in a million: two records of a national index drawn at random). Fields: first and second
  surname (exact with the name's frequency as u, phonetic or Jaro–Winkler close, swapped,
  missing), given names (exact, reordered, one a part of the other, close), birth date
  (exact, day and month transposed, one digit wrong, year off by one, only the year known),
  sex, state of birth and shared institutional identifiers (IMSS NSS and the like).
- Given names that clearly disagree (twins and siblings share everything else) cap the grade
  at 'possible': a human decides.

Thresholds: ``AUTO_LINK_THRESHOLD`` (grade 'certain', the only one linked automatically),
``PROBABLE`` and ``POSSIBLE``; calibrated with ``bench/mpi_quality.py`` (docs/mpi.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from expediente.mpi.features import PersonFeatures
from expediente.mx.systems import TEMPORARY_ID_PREFIX
from expediente.mpi.frequencies import given_share, given_token_share, surname_share

AUTO_LINK_THRESHOLD = 0.99
PROBABLE = 0.9
POSSIBLE = 0.2
PRIOR_LOG2_ODDS = -20.0

GRADES = ("certain", "probable", "possible")
_GRADE_RANK = {"certain": 3, "probable": 2, "possible": 1, None: 0}


@dataclass(frozen=True, slots=True)
class Comparison:
    score: float
    grade: str | None
    reasons: tuple[str, ...]
    weight: float = 0.0  # the Fellegi–Sunter total, in bits (before the prior)


def grade_rank(grade: str | None) -> int:
    return _GRADE_RANK[grade]


def grade_of(score: float) -> str | None:
    if score >= AUTO_LINK_THRESHOLD:
        return "certain"
    if score >= PROBABLE:
        return "probable"
    if score >= POSSIBLE:
        return "possible"
    return None


def _w(m: float, u: float) -> float:
    return math.log2(m / u)


# ------------------------------------------------------------------------------------------
# String similarity


def jaro_winkler(s: str, t: str, prefix_scale: float = 0.1) -> float:
    """Jaro–Winkler similarity in [0, 1] (1: identical)."""
    if s == t:
        return 1.0
    if s > t:
        s, t = t, s  # the greedy matching is order-dependent: make the result symmetric
    ls, lt = len(s), len(t)
    if not ls or not lt:
        return 0.0
    window = max(0, max(ls, lt) // 2 - 1)
    s_match = [False] * ls
    t_match = [False] * lt
    matches = 0
    for i, c in enumerate(s):
        lo, hi = max(0, i - window), min(lt, i + window + 1)
        for j in range(lo, hi):
            if not t_match[j] and t[j] == c:
                s_match[i] = t_match[j] = True
                matches += 1
                break
    if not matches:
        return 0.0
    transpositions = 0
    j = 0
    for i in range(ls):
        if s_match[i]:
            while not t_match[j]:
                j += 1
            if s[i] != t[j]:
                transpositions += 1
            j += 1
    m = matches
    jaro = (m / ls + m / lt + (m - transpositions / 2) / m) / 3
    prefix = 0
    for a, b in zip(s[:4], t[:4]):
        if a != b:
            break
        prefix += 1
    return jaro + prefix * prefix_scale * (1 - jaro)


def _one_edit(s: str, t: str) -> bool:
    """One typo apart (substitution, insertion, deletion or adjacent transposition), for words
    of 4 letters or more (shorter names differ by a letter and are other names: Ana/Eva)."""
    if s == t or min(len(s), len(t)) < 4 or abs(len(s) - len(t)) > 1:
        return s == t
    if len(s) == len(t):
        diff = [i for i in range(len(s)) if s[i] != t[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and s[diff[0]] == t[diff[1]] and s[diff[1]] == t[diff[0]])
    short, long_ = (s, t) if len(s) < len(t) else (t, s)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def _close(a: str, b: str, a_key: str, b_key: str) -> bool:
    return a_key == b_key or jaro_winkler(a, b) >= 0.92


# ------------------------------------------------------------------------------------------
# Field comparisons: each returns (weight in bits, reason or None)


def _surname(a: str, b: str, a_key: str, b_key: str) -> tuple[float, str]:
    if a == b:
        return _w(0.92, surname_share(a)), "exact"
    if _close(a, b, a_key, b_key):
        return _w(0.05, min(0.05, 4 * surname_share(a) + 0.002)), "close"
    return _w(0.03, 0.97), "different"


_SURNAME_TEXT = {"exact": "coincide", "close": "similar (ortografía o fonética)", "different": "distinto"}


def _surnames(a: PersonFeatures, b: PersonFeatures) -> tuple[float, list[str]]:
    if not a.first_surname or not b.first_surname:
        return 0.0, ["apellidos desconocidos en uno de los registros"]
    straight, r1 = _surname(a.first_surname, b.first_surname, a.first_key, b.first_key)
    reasons = [f"primer apellido {_SURNAME_TEXT[r1]}"]
    if a.second_surname and b.second_surname:
        w2, r2 = _surname(a.second_surname, b.second_surname, a.second_key, b.second_key)
        straight += w2
        reasons.append(f"segundo apellido {_SURNAME_TEXT[r2]}")
        s1, q1 = _surname(a.first_surname, b.second_surname, a.first_key, b.second_key)
        s2, q2 = _surname(a.second_surname, b.first_surname, a.second_key, b.first_key)
        swapped = s1 + s2 + _w(0.03, 1.0)
        if swapped > straight and "different" not in (q1, q2):
            return swapped, ["apellidos invertidos"]
        return straight, reasons
    # One record lacks the second surname: common in emergency and institutional registrations.
    other = b.second_surname or a.second_surname
    if other:
        missing_first = a.first_surname if not a.second_surname else b.first_surname
        missing_key = a.first_key if not a.second_surname else b.first_key
        other_key = b.second_key or a.second_key
        if r1 == "different" and _close(missing_first, other, missing_key, other_key):
            # "López" alone against "García López": the record kept only the mother's surname.
            w, _ = _surname(missing_first, other, missing_key, other_key)
            return w + _w(0.02, 1.0), ["solo un apellido, coincide con el segundo del otro registro"]
        reasons.append("falta el segundo apellido en un registro")
        return straight + _w(0.1, 0.2), reasons
    return straight, reasons


def _given(a: PersonFeatures, b: PersonFeatures) -> tuple[float, str | None, bool]:
    """(weight, reason, clearly different)."""
    if not a.given or not b.given:
        return 0.0, "nombre desconocido en uno de los registros", False
    if a.given == b.given:
        return _w(0.88, given_share(a.given)), "nombre coincide", False
    if sorted(a.given) == sorted(b.given):
        return _w(0.02, given_share(a.given) / 4), "nombres en otro orden", False
    short, long_ = (a.given, b.given) if len(a.given) <= len(b.given) else (b.given, a.given)
    if set(short) <= set(long_):
        share = min(given_token_share(t) for t in short)
        return _w(0.05, 2 * share), "un nombre es parte del otro (p. ej. José Luis / Luis)", False
    if len(a.given) == len(b.given) and all(
        x == y or kx == ky or _one_edit(x, y) for x, y, kx, ky in zip(a.given, b.given, a.given_keys, b.given_keys)
    ):
        return _w(0.04, 0.004), "nombre similar (ortografía o fonética)", False
    return _w(0.01, 0.95), "nombre distinto", True


def _digit_typo(a: str, b: str) -> bool:
    return len(a) == len(b) and sum(x != y for x, y in zip(a, b)) == 1


_DATE_U = 1 / (365.25 * 80)


def _birth_dates(a: str | None, b: str | None) -> tuple[float, str | None]:
    if not a or not b:
        return 0.0, None
    if len(a) == 10 and len(b) == 10:
        if a == b:
            return _w(0.93, _DATE_U), "fecha de nacimiento coincide"
        ya, ma, da = a[:4], a[5:7], a[8:10]
        yb, mb, db = b[:4], b[5:7], b[8:10]
        if ya == yb and ma == db and da == mb:
            return _w(0.015, _DATE_U), "fecha de nacimiento con día y mes invertidos"
        if ma == mb and da == db and abs(int(ya) - int(yb)) == 1:
            return _w(0.01, 2 * _DATE_U), "año de nacimiento difiere en uno"
        if _digit_typo(a, b):
            return _w(0.025, 30 * _DATE_U), "fecha de nacimiento con un dígito distinto"
        return _w(0.01, 0.999), "fecha de nacimiento distinta"
    # Partial (an estimated age in an emergency): only the years can agree.
    ya, yb = int(a[:4]), int(b[:4])
    if ya == yb:
        return _w(0.85, 1 / 80), "año de nacimiento coincide (fecha incompleta)"
    if abs(ya - yb) <= 2:
        return _w(0.12, 4 / 80), "año de nacimiento cercano (fecha incompleta)"
    return _w(0.03, 0.95), "año de nacimiento distinto"


def _identifiers(a: PersonFeatures, b: PersonFeatures) -> tuple[float, list[str]]:
    systems = {s for s, _ in a.identifiers} & {s for s, _ in b.identifiers}
    weight, reasons = 0.0, []
    for system in sorted(systems):
        va = {v for s, v in a.identifiers if s == system}
        vb = {v for s, v in b.identifiers if s == system}
        if va & vb:
            weight += _w(0.98, 1e-7)
            reasons.append(f"mismo identificador institucional ({system})")
        elif not system.startswith(TEMPORARY_ID_PREFIX):
            # A temporary identifier disagreeing says nothing: one person gets a new one per admission.
            weight += _w(0.05, 1.0)
            reasons.append(f"identificador institucional distinto ({system})")
    return weight, reasons


def _shares_identifier(a: PersonFeatures, b: PersonFeatures) -> bool:
    return not a.identifiers.isdisjoint(b.identifiers)


def _demographic(a: PersonFeatures, b: PersonFeatures) -> tuple[float, list[str], bool, bool]:
    """(weight, reasons, given names clearly different, everything identical)."""
    weight, reasons = _surnames(a, b)
    wg, rg, given_different = _given(a, b)
    weight += wg
    if rg:
        reasons.append(rg)
    wd, rd = _birth_dates(a.birth_date, b.birth_date)
    weight += wd
    if rd:
        reasons.append(rd)
    if a.sex and b.sex:
        if a.sex == b.sex:
            weight += _w(0.97, 0.5)
            reasons.append("sexo coincide")
        else:
            weight += _w(0.03, 0.5)
            reasons.append("sexo distinto")
    if a.birth_state and b.birth_state:
        if a.birth_state == b.birth_state:
            weight += _w(0.9, 0.06)
            reasons.append("entidad de nacimiento coincide")
        else:
            weight += _w(0.06, 0.94)
            reasons.append("entidad de nacimiento distinta")
    wi, ri = _identifiers(a, b)
    weight += wi
    reasons.extend(ri)
    identical = (
        bool(a.first_surname and a.given and a.full_birth_date and a.sex and a.birth_state)
        and (a.first_surname, a.second_surname, a.given, a.birth_date, a.sex, a.birth_state)
        == (b.first_surname, b.second_surname, b.given, b.birth_date, b.sex, b.birth_state)
    )
    return weight, reasons, given_different, identical


def _posterior(weight: float) -> float:
    x = weight + PRIOR_LOG2_ODDS
    if x > 60:
        return 1.0
    if x < -60:
        return 0.0
    return 1.0 / (1.0 + 2.0 ** (-x))


def compare(a: PersonFeatures, b: PersonFeatures) -> Comparison:
    """How likely ``a`` and ``b`` are the same person (symmetric: compare(a, b) == compare(b, a))."""
    if a.curp and b.curp and a.curp == b.curp:
        return Comparison(1.0, "certain", ("misma CURP",), 64.0)
    weight, reasons, given_different, identical = _demographic(a, b)
    if a.curp and b.curp:
        # Two valid CURPs: two people, unless all else is identical (one CURP captured wrong).
        if identical:
            score = min(_posterior(weight), (POSSIBLE + PROBABLE) / 2)
            return Comparison(score, "possible", ("CURP distintas con todos los demás datos idénticos", *reasons), weight)
        score = min(_posterior(weight), POSSIBLE / 2)
        return Comparison(score, None, ("CURP distintas", *reasons), weight)
    curp_a, curp_b = a.curp or a.curp_other, b.curp or b.curp_other
    curp_typo = bool(curp_a and curp_b and curp_a != curp_b and _digit_typo(curp_a, curp_b))
    if curp_typo:
        weight += _w(0.02, 1e-5)
        reasons.insert(0, "CURP con un carácter distinto (posible error de captura)")
    score = _posterior(weight)
    grade = grade_of(score)
    if curp_a and curp_b and curp_a != curp_b and not curp_typo and grade_rank(grade) > grade_rank("probable"):
        # Two records that each carry a CURP, and not the same one nor one capture error
        # apart, are never linked without a person looking.
        grade = "probable"
        score = min(score, (PROBABLE + AUTO_LINK_THRESHOLD) / 2)
        reasons.append("CURP distintas en los dos registros: requiere revisión")
    if given_different and grade_rank(grade) > grade_rank("possible") and not _shares_identifier(a, b):
        grade = "possible"
        score = min(score, (POSSIBLE + PROBABLE) / 2)
        reasons.append("nombres distintos: podría ser un hermano o gemelo; requiere revisión")
    return Comparison(score, grade, tuple(reasons), weight)
