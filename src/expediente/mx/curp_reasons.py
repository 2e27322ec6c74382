"""Why a CURP is not valid, in Spanish, position by position (NOM-024 6.5.1: a system checks
the CURP it is given and never invents one).

``curp_problem(value)`` returns None for a valid CURP, else the first thing wrong with it, said
so that a person at a registration desk can fix it: the length, lower case, an Ñ (RENAPO writes
X), the character at a position that cannot hold it, an impossible birth date, an unknown
entidad, a homoclave that contradicts the century, or the check digit. ``is_valid_curp`` (the
yes/no answer) agrees with it on every input.
"""

from __future__ import annotations

from datetime import date

from expediente.mx.curp import CHECK_ALPHABET, curp_check_digit
from expediente.mx.states import CURP_STATE_CODES

_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_INTERNAL_VOWEL = frozenset("AEIOUX")
_CONSONANTS = frozenset("BCDFGHJKLMNPQRSTVWXYZ")
_DIGITS = frozenset("0123456789")

# (positions, allowed characters, what belongs there) for the fixed-shape parts of a CURP.
_SHAPE: tuple[tuple[range, frozenset[str], str], ...] = (
    (range(0, 1), _LETTERS, "la inicial del primer apellido (una letra)"),
    (range(1, 2), _INTERNAL_VOWEL, "la primera vocal interna del primer apellido (A, E, I, O, U o X)"),
    (range(2, 3), _LETTERS, "la inicial del segundo apellido (una letra; X si no hay)"),
    (range(3, 4), _LETTERS, "la inicial del nombre (una letra)"),
    (range(4, 10), _DIGITS, "la fecha de nacimiento AAMMDD (dígitos)"),
    (range(10, 11), frozenset("HMX"), "el sexo (H, M o X)"),
    (range(11, 13), _LETTERS, "la entidad de nacimiento (dos letras)"),
    (range(13, 16), _CONSONANTS, "las consonantes internas de apellidos y nombre"),
    (range(16, 17), _LETTERS | _DIGITS, "la homoclave (un dígito o una letra)"),
    (range(17, 18), _DIGITS, "el dígito verificador"),
)


def curp_problem(value: object) -> str | None:
    """None when ``value`` is a valid CURP; otherwise the reason it is not, in Spanish."""
    if not isinstance(value, str) or not value.strip():
        return "La CURP está vacía"
    if len(value) != 18:
        return f"La CURP debe tener 18 caracteres; '{value[:40]}' tiene {len(value)}"
    if value != value.upper():
        return f"La CURP se escribe en mayúsculas: '{value.upper()}', no '{value}'"
    if "Ñ" in value:
        return "La CURP no lleva Ñ: RENAPO la sustituye por X (por ejemplo NUÑEZ da NUXZ...)"
    for positions, allowed, meaning in _SHAPE:
        for i in positions:
            if value[i] not in allowed:
                return f"Carácter '{value[i]}' inválido en la posición {i + 1} de la CURP: corresponde a {meaning}"
    entidad = value[11:13]
    if entidad not in CURP_STATE_CODES:
        return f"Entidad de nacimiento desconocida en la CURP: '{entidad}' (posiciones 12 y 13; NE para nacidos en el extranjero)"
    century = 1900 if value[16].isdigit() else 2000
    yy, mm, dd = int(value[4:6]), int(value[6:8]), int(value[8:10])
    try:
        date(century + yy, mm, dd)
    except ValueError:
        return (
            f"Fecha de nacimiento imposible en la CURP: {century + yy:04d}-{mm:02d}-{dd:02d} "
            f"(posiciones 5 a 10; la homoclave '{value[16]}' indica nacimiento en {century}-{century + 99})"
        )
    expected = curp_check_digit(value[:17])
    if value[17] != expected:
        return f"Dígito verificador incorrecto en la CURP: es '{value[17]}' y debería ser '{expected}'; revise la captura"
    return None


assert set(CHECK_ALPHABET) >= _LETTERS | _DIGITS  # every accepted character has a check-digit value
