"""How common a surname or a given name is: the chance two different people share it.

Fellegi–Sunter weighs an agreement by ``log2(m / u)``, with ``u`` the chance of agreeing by
coincidence: two "Hernández" agree far more often by chance than two "Zúñiga". The shares come
from the name tables of ``synth/names.py`` (rough RENAPO frequencies); a name not listed gets
``DEFAULT_SHARE`` (rare names are the majority of distinct names, each rare).
"""

from __future__ import annotations

import functools

from expediente.mpi.features import normalize_given, normalize_surname
from expediente.synth.names import FEMALE_GIVEN, MALE_GIVEN, SURNAMES, given_parts

DEFAULT_SHARE = 0.002
MIN_SHARE = 0.0005


@functools.cache
def _tables() -> tuple[dict[str, float], dict[tuple[str, ...], float], dict[str, float]]:
    total = sum(w for _, w in SURNAMES)
    surnames: dict[str, float] = {}
    for name, w in SURNAMES:
        key = normalize_surname(name)
        surnames[key] = surnames.get(key, 0.0) + w / total
    given: dict[tuple[str, ...], float] = {}
    tokens: dict[str, float] = {}
    for table in (MALE_GIVEN, FEMALE_GIVEN):
        t_total = sum(w for _, w in table) * 2  # each sex is about half the population
        for name, w in table:
            key = normalize_given(given_parts(name))
            given[key] = given.get(key, 0.0) + w / t_total
            for tok in set(key):
                tokens[tok] = tokens.get(tok, 0.0) + w / t_total
    return surnames, given, tokens


def surname_share(surname: str) -> float:
    return max(MIN_SHARE, _tables()[0].get(surname, DEFAULT_SHARE))


def given_share(given: tuple[str, ...]) -> float:
    return max(MIN_SHARE, _tables()[1].get(given, DEFAULT_SHARE))


def given_token_share(token: str) -> float:
    return max(MIN_SHARE, _tables()[2].get(token, DEFAULT_SHARE))
