"""CURP (Clave Única de Registro de Población): check digit, structural validation and construction.

A CURP has 18 characters::

    G  A  R  C  8  5  0  3  1  5  H  J  C  R  N  S  0  4
    1  2  3  4  5  6  7  8  9  10 11 12 13 14 15 16 17 18

1. first letter of the first surname; 2. first internal vowel of the first surname; 3. first letter of
the second surname (X when there is none); 4. first letter of the given name (the second given name when
the first is José or María in a compound name); 5-10. birth date YYMMDD; 11. sex (H hombre, M mujer,
X no binario); 12-13. entidad of birth (RENAPO key, NE born abroad); 14-16. first internal consonant of
the first surname, second surname and given name; 17. homoclave, assigned by RENAPO to tell homonyms
apart: a digit for people born before 2000, a letter from 2000 on; 18. check digit.

This module implements the published RENAPO algorithm (Instructivo Normativo para la Asignación de la
CURP) closely enough to build and check synthetic CURPs. It answers only yes/no; ``mx/curp_reasons.py``
says why a CURP is not valid, in Spanish.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date

from expediente.mx.states import CURP_STATE_CODES

# The alphabet of the check-digit algorithm: the value of a character is its index ("Ñ" is 24).
CHECK_ALPHABET = "0123456789ABCDEFGHIJKLMNÑOPQRSTUVWXYZ"
_VALUE = {c: i for i, c in enumerate(CHECK_ALPHABET)}

_VOWELS = frozenset("AEIOU")
_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_CONSONANTS = _LETTERS - _VOWELS

# Prepositions, conjunctions and contractions that RENAPO drops from compound names and surnames.
PARTICLES = frozenset(
    {"DA", "DAS", "DE", "DEL", "DER", "DI", "DIE", "DD", "EL", "LA", "LOS", "LAS", "LE", "LES", "MAC", "MC", "VAN", "VON", "Y"}
)
# First given names that are skipped in compound given names ("María Guadalupe" -> G), with abbreviations.
SKIPPED_GIVEN = frozenset({"JOSE", "J", "MARIA", "MA", "M"})

# Words RENAPO does not let the first four letters spell ("palabras inconvenientes", Anexo 2 of the
# Instructivo); when they would, the second letter becomes X.
INCONVENIENT_WORDS = frozenset(
    """
    BACA BAKA BUEI BUEY CACA CACO CAGA CAGO CAKA CAKO COGE COGI COJA COJE COJI COJO COLA CULO FALO FETO
    GETA GUEI GUEY JETA JOTO KACA KACO KAGA KAGO KAKA KAKO KOGE KOGI KOJA KOJE KOJI KOJO KOLA KULO LILO
    LOCA LOCO LOKA LOKO MAME MAMO MEAR MEAS MEON MIAR MION MOCO MOKO MULA MULO NACA NACO PEDA PEDO PENE
    PIPI PITO POPO PUTA PUTO QULO RATA ROBA ROBE ROBO RUIN SENO TETA VACA VAGA VAGO VAKA VUEI VUEY WUEI WUEY
    """.split()
)

_STATES_RE = "|".join(sorted(CURP_STATE_CODES))
CURP_RE = re.compile(rf"[A-Z][AEIOUX][A-Z]{{2}}[0-9]{{6}}[HMX](?:{_STATES_RE})[B-DF-HJ-NP-TV-Z]{{3}}[A-Z0-9][0-9]")

_SEX = {
    "H": "H", "M": "M", "X": "X",
    "male": "H", "female": "M", "other": "X",
    "hombre": "H", "mujer": "M", "no binario": "X",
}  # fmt: skip


def curp_check_digit(first17: str) -> str:
    """The 18th character of a CURP from its first 17 (RENAPO algorithm).

    Each character takes its index in ``CHECK_ALPHABET`` as value and is weighted 18, 17, ... 2 from
    the left; the digit is ``(10 - sum % 10) % 10``.
    """
    if len(first17) != 17:
        raise ValueError(f"a CURP check digit needs exactly 17 characters, got {len(first17)}")
    total = 0
    weight = 18
    for ch in first17:
        try:
            total += _VALUE[ch] * weight
        except KeyError:
            raise ValueError(f"character {ch!r} is not allowed in a CURP") from None
        weight -= 1
    return str((10 - total % 10) % 10)


def is_valid_curp(s: object) -> bool:
    """True when ``s`` is a well-formed CURP: structure, entidad key, a real birth date and the check digit.

    The century of the birth date follows the homoclave (a digit: 1900s; a letter: 2000s), so
    "000229" is a valid date only with a letter homoclave (2000 was a leap year, 1900 was not).
    """
    if not isinstance(s, str) or len(s) != 18 or CURP_RE.fullmatch(s) is None:
        return False
    century = 1900 if s[16].isdigit() else 2000
    try:
        date(century + int(s[4:6]), int(s[6:8]), int(s[8:10]))
    except ValueError:
        return False
    return curp_check_digit(s[:17]) == s[17]


def _plain(text: str) -> str:
    """Upper case, Ñ -> X, accents and diaeresis dropped, apostrophes and dots removed, hyphens -> space."""
    text = text.upper().replace("Ñ", "X").replace("ñ", "X")
    text = unicodedata.normalize("NFD", text)
    out = []
    for ch in text:
        if unicodedata.combining(ch) or ch in "'.´`’":
            continue
        out.append(" " if ch in "-_/" else ch)
    return "".join(out)


def _words(name: str | None) -> list[str]:
    """The words of a name that count for the CURP (particles dropped unless nothing else is left)."""
    if not name:
        return []
    words = _plain(name).split()
    kept = [w for w in words if w not in PARTICLES]
    return kept or words


def _initial(word: str) -> str:
    ch = word[0]
    return ch if ch in _LETTERS else "X"


def _internal(word: str, wanted: frozenset[str]) -> str:
    for ch in word[1:]:
        if ch in wanted:
            return ch
    return "X"


def _given_word(given_name: str) -> str:
    words = _words(given_name)
    if not words:
        raise ValueError("a CURP needs a given name")
    if len(words) > 1 and words[0] in SKIPPED_GIVEN:
        return words[1]
    return words[0]


def build_curp(
    first_surname: str,
    second_surname: str | None,
    given_name: str,
    birth_date: date,
    sex: str,
    state_code: str,
    homoclave: str | int = 0,
) -> str:
    """Build the CURP RENAPO would assign (up to the homoclave, which RENAPO picks to separate homonyms).

    ``sex``: "H"/"M"/"X" (or FHIR's "male"/"female"/"other"). ``state_code``: RENAPO key of the entidad
    of birth, "NE" when born abroad. ``homoclave``: the 17th character; a str must be a digit for people
    born before 2000 and a letter from 2000 on; an int ``n`` picks ``str(n % 10)`` or ``"A".."Z"[n % 26]``
    accordingly. A person with a single surname passes ``second_surname=None`` (it becomes X).
    """
    first_words = _words(first_surname)
    if not first_words:
        raise ValueError("a CURP needs a first surname")
    first = first_words[0]
    second_words = _words(second_surname)
    second = second_words[0] if second_words else None
    given = _given_word(given_name)

    try:
        sex_letter = _SEX[sex] if sex in _SEX else _SEX[sex.lower()]
    except KeyError:
        raise ValueError(f"unknown sex {sex!r}; use H, M or X") from None
    state = state_code.upper()
    if state not in CURP_STATE_CODES:
        raise ValueError(f"unknown RENAPO entidad code {state_code!r}")

    if isinstance(homoclave, int):
        hc = str(homoclave % 10) if birth_date.year < 2000 else chr(ord("A") + homoclave % 26)
    else:
        hc = homoclave.upper()
        if len(hc) != 1 or not ((hc.isdigit() and birth_date.year < 2000) or (hc in _LETTERS and birth_date.year >= 2000)):
            raise ValueError(f"homoclave {homoclave!r} must be a digit before 2000 and a letter from 2000 on")
    if not 1900 <= birth_date.year <= 2099:
        raise ValueError("a CURP encodes birth dates from 1900 to 2099 only")

    head = _initial(first) + _internal(first, _VOWELS) + (_initial(second) if second else "X") + _initial(given)
    if head in INCONVENIENT_WORDS:
        head = head[0] + "X" + head[2:]
    body = (
        head
        + f"{birth_date.year % 100:02d}{birth_date.month:02d}{birth_date.day:02d}"
        + sex_letter
        + state
        + _internal(first, _CONSONANTS)
        + (_internal(second, _CONSONANTS) if second else "X")
        + _internal(given, _CONSONANTS)
        + hc
    )
    return body + curp_check_digit(body)
