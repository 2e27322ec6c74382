"""Person names as the index keeps them: accent-free, case-folded (fuzzy and exact matching)."""

from __future__ import annotations

from expediente.fhir.search.extract import normalize_text


def normalized_name(person_name: str) -> str:
    """``"Hernández^María Guadalupe"`` -> ``"hernandez^maria guadalupe"`` (components kept)."""
    return "^".join(normalize_text(part) for part in person_name.split("^"))
