"""What the master patient index compares: the identity features of a FHIR Patient, normalized.

``features_of(patient)`` reads a Patient as Expediente stores it (see ``synth/generator.py``):
the CURP identifier, the official name with the HL7 fathers-family / mothers-family
extensions (or a plain ``family`` "García López", split into its two surnames), given names,
gender, birthDate, the state of birth (the RENAPO code of the ``entidad-nacimiento``
extension, else positions 12-13 of a valid CURP) and the other identifiers (IMSS NSS,
temporary identifiers...).

Normalization for Spanish names: accents and case dropped (``Peña`` -> ``pena``), punctuation
removed, particles dropped (de, del, la, las, los, y: "De la Cruz" -> "cruz"), the
abbreviations "Ma." (María) and "Fco." (Francisco) expanded, and a few common hypocoristics
("Lupe" -> "guadalupe", "Pepe" -> "jose"). A name like "Desconocido" (an unconscious
emergency patient) counts as no name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from expediente.fhir.search.extract import normalize_text
from expediente.mpi.phonetic import phonetic_key
from expediente.mx.curp import is_valid_curp
from expediente.mx.states import CURP_STATE_CODES
from expediente.mx.systems import BIRTH_STATE_URL, CURP_SYSTEM, FATHERS_FAMILY_URL, MOTHERS_FAMILY_URL

PARTICLES = frozenset({"de", "del", "la", "las", "los", "y"})
# Abbreviations and hypocoristics read as the full given name.
GIVEN_VARIANTS: dict[str, str] = {
    "ma": "maria", "ma.": "maria", "ma.a": "maria", "fco": "francisco", "fco.": "francisco",
    "lupe": "guadalupe", "lupita": "guadalupe", "pepe": "jose", "chucho": "jesus", "chuy": "jesus",
    "paco": "francisco", "pancho": "francisco", "memo": "guillermo", "lalo": "eduardo",
    "nacho": "ignacio", "concha": "concepcion", "lola": "dolores", "beto": "alberto",
    "quique": "enrique", "toño": "antonio", "tono": "antonio", "rafa": "rafael", "pili": "pilar",
}  # fmt: skip
UNKNOWN_NAMES = frozenset({"desconocido", "desconocida", "no identificado", "no identificada", "n n", "nn", "x"})
_NON_LETTERS = re.compile(r"[^a-z ]+")


def normalize_name(text: str | None) -> str:
    """Accent-free lowercase words of a name, punctuation removed: ``"Peña-Nieto"`` -> ``"pena nieto"``."""
    if not text:
        return ""
    return " ".join(_NON_LETTERS.sub(" ", normalize_text(text)).split())


def _drop_particles(words: list[str]) -> list[str]:
    kept = [w for w in words if w not in PARTICLES]
    return kept or words  # a surname that is only particles ("De") keeps them


def normalize_surname(text: str | None) -> str:
    """A surname normalized and without particles: "De la Cruz" -> "cruz", "Montes de Oca" -> "montes oca"."""
    words = normalize_name(text).split()
    return " ".join(_drop_particles(words)) if words else ""


def normalize_given(items: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Given-name words, normalized, particles dropped, abbreviations expanded:
    ["Ma.", "de los Ángeles"] -> ("maria", "angeles")."""
    words: list[str] = []
    for item in items:
        if not isinstance(item, str):
            continue
        for raw in normalize_text(item).replace(".", ". ").split():
            w = GIVEN_VARIANTS.get(raw)
            if w is None:
                w = _NON_LETTERS.sub("", raw)
                w = GIVEN_VARIANTS.get(w, w)
            if w and w not in PARTICLES:
                words.append(w)
    return tuple(words)


def split_family(family: str) -> tuple[str, str]:
    """A plain ``family`` with both surnames, split: "García López" -> ("garcia", "lopez"),
    "De la Cruz Hernández" -> ("cruz", "hernandez"), "Montes de Oca Pérez" -> ("montes oca", "perez").

    Particles attach to the word after them; with more than two groups the last is the mother's
    surname and the rest the father's (compound first surnames are the common case)."""
    groups: list[list[str]] = []
    pending: list[str] = []
    for w in normalize_name(family).split():
        if w in PARTICLES:
            pending.append(w)
            continue
        groups.append([*pending, w])
        pending = []
    if not groups:
        return (" ".join(pending), "")
    if len(groups) == 1:
        return (" ".join(_drop_particles(groups[0])), "")
    first = [w for g in groups[:-1] for w in g]
    return (" ".join(_drop_particles(first)), " ".join(_drop_particles(groups[-1])))


@dataclass(frozen=True, slots=True)
class PersonFeatures:
    """The normalized identity of one Patient record (empty strings / None when unknown)."""

    curp: str | None = None  # a valid CURP only
    curp_other: str | None = None  # a CURP-system value that is not a valid CURP (a typo?)
    first_surname: str = ""
    second_surname: str = ""
    given: tuple[str, ...] = ()
    sex: str | None = None  # FHIR gender: male, female, other, unknown -> only male/female kept
    birth_date: str | None = None  # "YYYY-MM-DD", or "YYYY" / "YYYY-MM" when partial
    birth_state: str | None = None  # RENAPO key ("JC", "NE" born abroad)
    identifiers: frozenset[tuple[str, str]] = frozenset()  # (system, value), CURP excluded
    # Derived phonetic keys (computed on construction).
    first_key: str = field(default="", compare=False)
    second_key: str = field(default="", compare=False)
    given_keys: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "first_key", phonetic_key(self.first_surname))
        object.__setattr__(self, "second_key", phonetic_key(self.second_surname))
        object.__setattr__(self, "given_keys", tuple(phonetic_key(g) for g in self.given))

    @property
    def given_text(self) -> str:
        return " ".join(self.given)

    @property
    def birth_year(self) -> str | None:
        return self.birth_date[:4] if self.birth_date else None

    @property
    def full_birth_date(self) -> bool:
        return self.birth_date is not None and len(self.birth_date) == 10


def _official_name(patient: dict) -> dict | None:
    names = [n for n in patient.get("name") or () if isinstance(n, dict)]
    if not names:
        return None
    for use in ("official", "usual", None):
        for n in names:
            if use is None or n.get("use") == use:
                return n
    return names[0]


def _surnames(name: dict) -> tuple[str, str]:
    ext = (name.get("_family") or {}).get("extension") or ()
    fathers = next((e.get("valueString") for e in ext if isinstance(e, dict) and e.get("url") == FATHERS_FAMILY_URL), None)
    mothers = next((e.get("valueString") for e in ext if isinstance(e, dict) and e.get("url") == MOTHERS_FAMILY_URL), None)
    if fathers or mothers:
        return normalize_surname(fathers), normalize_surname(mothers)
    family = name.get("family")
    return split_family(family) if isinstance(family, str) else ("", "")


def _birth_state(patient: dict, curp: str | None) -> str | None:
    for ext in patient.get("extension") or ():
        if isinstance(ext, dict) and ext.get("url") == BIRTH_STATE_URL:
            for coding in (ext.get("valueCodeableConcept") or {}).get("coding") or ():
                code = coding.get("code") if isinstance(coding, dict) else None
                if isinstance(code, str) and code.upper() in CURP_STATE_CODES:
                    return code.upper()
    return curp[11:13] if curp else None


def _birth_date(value: object) -> str | None:
    if not isinstance(value, str) or not re.match(r"^\d{4}(-\d{2}(-\d{2})?)?$", value):
        return None
    return value


def features_of(patient: dict) -> PersonFeatures:
    """The identity features of a FHIR Patient (never raises on odd content)."""
    curp = curp_other = None
    identifiers: set[tuple[str, str]] = set()
    for ident in patient.get("identifier") or ():
        if not isinstance(ident, dict):
            continue
        system, value = ident.get("system"), ident.get("value")
        if not isinstance(system, str) or not isinstance(value, str) or not value.strip():
            continue
        if system == CURP_SYSTEM:
            candidate = value.strip().upper()
            if is_valid_curp(candidate):
                curp = curp or candidate
            else:
                curp_other = curp_other or candidate
        else:
            identifiers.add((system, value.strip()))
    first = second = ""
    given: tuple[str, ...] = ()
    name = _official_name(patient)
    if name is not None:
        first, second = _surnames(name)
        raw_given = name.get("given") or ()
        given = normalize_given(list(raw_given) if isinstance(raw_given, list) else ())
        if " ".join(given) in UNKNOWN_NAMES or first in UNKNOWN_NAMES:
            first, second, given = "", "", ()
    gender = patient.get("gender")
    return PersonFeatures(
        curp=curp,
        curp_other=curp_other,
        first_surname=first,
        second_surname=second,
        given=given,
        sex=gender if gender in ("male", "female") else None,
        birth_date=_birth_date(patient.get("birthDate")),
        birth_state=_birth_state(patient, curp),
        identifiers=frozenset(identifiers),
    )
