"""Whether a CIE-10 diagnosis can be recorded for a patient, and why not, in Spanish.

``diagnosis_problem`` is what a Condition write asks: the code must be a well-formed CIE-10
code in its canonical form (``E11.9``), exist in the catalog when the loaded catalog is the
complete one (the shipped subset cannot say a code does not exist), and respect the code's
sex and age limits (DGIS ``LSEX``/``LINF``/``LSUP``). A code missing from the subset takes the
limits of its three-character category when the subset has it (``O80.1`` those of ``O80``).
"""

from __future__ import annotations

import sqlalchemy as sa

from expediente.mx.catalog_files import cie10_code
from expediente.mx.catalog_store import Catalog, catalog_cache
from expediente.mx.catalog_types import Concept, age_outside
from expediente.mx.systems import CIE10_SYSTEM

_WHO = {"male": "hombres", "female": "mujeres", None: "personas"}


def cie10_catalog(engine: sa.Engine) -> Catalog | None:
    """The CIE-10 catalog as this process has it cached (None before the schema is seeded)."""
    return catalog_cache(engine).get(CIE10_SYSTEM)


def diagnosis_problem(catalog: Catalog | None, code: str, sex: str | None, age_years: int | None) -> str | None:
    """The Spanish reason why ``code`` cannot be recorded for a patient of this ``sex`` (FHIR
    administrative gender; ``other``/``unknown``/None are not checked) and age in completed
    years (None: not checked); None when nothing is wrong."""
    canonical = cie10_code(code)
    if canonical is None:
        return (
            f"'{code[:20]}' no es un código CIE-10 válido: se espera una letra mayúscula, dos dígitos y, "
            "opcionalmente, un punto y uno o dos dígitos (p. ej. E11.9)"
        )
    if canonical != code:
        return f"El código CIE-10 '{code[:20]}' debe escribirse {canonical}"
    concept = _concept(catalog, code) if catalog is not None else None
    if concept is None:
        if catalog is not None and catalog.info.complete:
            version = f" (versión {catalog.info.version})" if catalog.info.version else ""
            return f"El código {code} no existe en el catálogo CIE-10{version}"
        return None
    wrong_sex = concept.sex is not None and sex in ("male", "female") and sex != concept.sex
    wrong_age = age_years is not None and age_outside(concept, age_years)
    if wrong_sex or wrong_age:
        return f"El diagnóstico {code} ({_lower_first(concept.display)}) solo aplica a {applies_to(concept)}"
    return None


def _concept(catalog: Catalog, code: str) -> Concept | None:
    concept = catalog.get(code)
    if concept is None and not catalog.info.complete and len(code) > 3:
        return catalog.get(code[:3])
    return concept


def applies_to(concept: Concept) -> str:
    """Who a limited code applies to: "mujeres de 10 a 54 años", "hombres", "personas de hasta 28 días"."""
    who = _WHO[concept.sex]
    low, high = concept.age_low, concept.age_high
    if low and high:
        low_text = str(low.value) if low.unit == high.unit else low.spanish()
        return f"{who} de {low_text} a {high.spanish()}"
    if low:
        return f"{who} de {low.spanish()} o más"
    if high:
        return f"{who} de hasta {high.spanish()}"
    return who


def _lower_first(text: str) -> str:
    # "Parto único espontáneo" -> "parto único espontáneo"; "COVID-19, ..." stays.
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        return text[0].lower() + text[1:]
    return text
