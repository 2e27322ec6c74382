"""Person names as the index keeps them: accent-free, case-folded (fuzzy and exact matching)."""

from __future__ import annotations

import re

from expediente.fhir.search.extract import normalize_text


def normalized_name(person_name: str) -> str:
    """``"Hernández^María Guadalupe"`` -> ``"hernandez^maria guadalupe"`` (components kept)."""
    return "^".join(normalize_text(part) for part in person_name.split("^"))


_WORD_SEPARATORS = re.compile(r"[\s^\-]+")


def name_tokens(norm: str) -> set[str]:
    """The words of a normalized name (split at spaces, ``^`` and hyphens), at most 64 chars."""
    return {w[:64] for w in _WORD_SEPARATORS.split(norm) if w}
