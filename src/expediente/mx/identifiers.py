"""Mexican identifiers other than the CURP: why a value is not valid, in Spanish (None: valid).

- CLUES (Clave Única de Establecimientos de Salud, DGIS): 11 characters, the entidad's two
  letters (the same keys as the CURP's positions 12-13, e.g. DF, JC, MC), three letters of the
  institution (SSA, IMS, IST, IMB, PMX, SDN, SMA, SMP...) and a six-digit number: DFIMS000011.
- Cédula profesional (SEP, Dirección General de Profesiones): digits only; current ones have 7
  or 8, the registry holds older ones from 1 digit, so 1 to 10 are accepted.
- RFC (SAT): persona física 13 characters (4 letters, YYMMDD, 2-character homoclave, check
  digit), persona moral 12 (3 letters, ...). The check digit is the SAT's modulo 11 over the
  first 12 characters (a moral RFC is padded with a leading space), ``rfc_check_digit``.
- IMSS NSS (Número de Seguridad Social): 11 digits, subdelegación (2), year of registration
  (2), birth year (2), sequence (4) and a Luhn check digit over the first 10.
- Temporary identifier: a patient without a CURP (an unconscious emergency patient) gets one
  scoped to the registering establishment, system ``TEMPORARY_ID_PREFIX + CLUES``; a CURP is
  never invented for them (NOM-024-SSA3-2012, 6.5.1) and the record is reconciled later.
"""

from __future__ import annotations

import re
import secrets
from datetime import date

from expediente.mx.states import RENAPO_CODES
from expediente.mx.systems import TEMPORARY_ID_PREFIX

# --------------------------------------------------------------------------- CLUES

_CLUES_RE = re.compile(r"[A-Z]{2}[A-Z]{3}[0-9]{6}")


def clues_problem(value: object) -> str | None:
    """None when ``value`` is a well-formed CLUES; otherwise why not, in Spanish."""
    if not isinstance(value, str) or not value.strip():
        return "La CLUES está vacía"
    if len(value) != 11:
        return f"La CLUES debe tener 11 caracteres (entidad, institución y número, p. ej. DFIMS000011); '{value[:40]}' tiene {len(value)}"
    if value != value.upper():
        return f"La CLUES se escribe en mayúsculas: '{value.upper()}'"
    if not _CLUES_RE.fullmatch(value):
        return f"CLUES mal formada: '{value}' (dos letras de la entidad, tres de la institución y seis dígitos)"
    if value[:2] not in RENAPO_CODES:
        return f"Entidad desconocida en la CLUES: '{value[:2]}' (posiciones 1 y 2)"
    return None


# --------------------------------------------------------------------------- cédula profesional


def cedula_problem(value: object) -> str | None:
    """None when ``value`` is a well-formed cédula profesional; otherwise why not, in Spanish."""
    if not isinstance(value, str) or not value.strip():
        return "La cédula profesional está vacía"
    if not value.isascii() or not value.isdigit():
        return f"La cédula profesional solo lleva dígitos: '{value[:40]}'"
    if not 1 <= len(value) <= 10:
        return f"La cédula profesional tiene de 1 a 10 dígitos (las actuales 7 u 8); '{value[:40]}' tiene {len(value)}"
    if set(value) == {"0"}:
        return "La cédula profesional no puede ser solo ceros"
    return None


# --------------------------------------------------------------------------- RFC

# SAT's values for the check digit: 0-9, A-N 10-23, & 24, O-Z 25-36, space 37, Ñ 38.
_RFC_ALPHABET = "0123456789ABCDEFGHIJKLMN&OPQRSTUVWXYZ Ñ"
_RFC_VALUE = {c: i for i, c in enumerate(_RFC_ALPHABET)}
_RFC_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ&Ñ")
_RFC_HOMOCLAVE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def rfc_check_digit(first12: str) -> str:
    """The SAT check digit of an RFC from its first 11 (moral) or 12 (física) characters."""
    padded = first12.rjust(12)
    if len(padded) != 12:
        raise ValueError("an RFC check digit needs 11 or 12 characters")
    total = sum(_RFC_VALUE[c] * (13 - i) for i, c in enumerate(padded))
    digit = 11 - total % 11
    return "0" if digit == 11 else ("A" if digit == 10 else str(digit))


def _rfc_date_ok(yymmdd: str) -> bool:
    yy, mm, dd = int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:])
    for century in (1900, 2000):
        try:
            date(century + yy, mm, dd)
            return True
        except ValueError:
            continue
    return False


def rfc_problem(value: object) -> str | None:
    """None when ``value`` is a valid RFC (física or moral); otherwise why not, in Spanish."""
    if not isinstance(value, str) or not value.strip():
        return "El RFC está vacío"
    if len(value) not in (12, 13):
        return f"El RFC tiene 13 caracteres (persona física) o 12 (persona moral); '{value[:40]}' tiene {len(value)}"
    if value != value.upper():
        return f"El RFC se escribe en mayúsculas: '{value.upper()}'"
    n = len(value) - 9  # letters of the name: 4 (física) or 3 (moral)
    kind = "persona física" if n == 4 else "persona moral"
    for i in range(n):
        if value[i] not in _RFC_LETTERS:
            return f"Carácter '{value[i]}' inválido en la posición {i + 1} del RFC: las primeras {n} son letras ({kind})"
    when = value[n : n + 6]
    if not when.isascii() or not when.isdigit():
        return f"El RFC lleva la fecha AAMMDD en las posiciones {n + 1} a {n + 6}: '{when}'"
    if not _rfc_date_ok(when):
        return f"Fecha imposible en el RFC: '{when}' (AAMMDD)"
    for i in (n + 6, n + 7):
        if value[i] not in _RFC_HOMOCLAVE:
            return f"Carácter '{value[i]}' inválido en la homoclave del RFC (posición {i + 1})"
    expected = rfc_check_digit(value[:-1])
    if value[-1] != expected:
        return f"Dígito verificador incorrecto en el RFC: es '{value[-1]}' y debería ser '{expected}'"
    return None


_RFC_RE = re.compile(r"[A-Z&Ñ]{3,4}[0-9]{6}[A-Z0-9]{2}[0-9A]")


def is_valid_rfc(value: object) -> bool:
    """The yes/no answer ``rfc_problem`` explains (kept separate, as an oracle for the tests)."""
    if not isinstance(value, str) or len(value) not in (12, 13) or not _RFC_RE.fullmatch(value):
        return False
    n = len(value) - 9
    return _rfc_date_ok(value[n : n + 6]) and rfc_check_digit(value[:-1]) == value[-1]


# --------------------------------------------------------------------------- IMSS NSS


def nss_check_digit(first10: str) -> str:
    """IMSS NSS check digit: Luhn over the first 10 digits (weights 1, 2, 1, 2... from the left)."""
    total = 0
    for i, ch in enumerate(first10):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def nss_problem(value: object) -> str | None:
    """None when ``value`` is a valid IMSS NSS; otherwise why not, in Spanish."""
    if not isinstance(value, str) or not value.strip():
        return "El Número de Seguridad Social (NSS) está vacío"
    if not value.isascii() or not value.isdigit():
        return f"El NSS solo lleva dígitos: '{value[:40]}'"
    if len(value) != 11:
        return f"El NSS tiene 11 dígitos; '{value[:40]}' tiene {len(value)}"
    expected = nss_check_digit(value[:10])
    if value[10] != expected:
        return f"Dígito verificador incorrecto en el NSS: es '{value[10]}' y debería ser '{expected}'; revise la captura"
    return None


def is_valid_nss(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9]{11}", value) is not None and nss_check_digit(value[:10]) == value[10]


# --------------------------------------------------------------------------- temporary identifiers


def temporary_system(clues: str) -> str:
    """The identifier system of an establishment's temporary identifiers."""
    problem = clues_problem(clues)
    if problem:
        raise ValueError(problem)
    return TEMPORARY_ID_PREFIX + clues


def temporary_clues(system: object) -> str | None:
    """The CLUES a temporary-identifier system is scoped to; None if ``system`` is not one."""
    if not isinstance(system, str) or not system.startswith(TEMPORARY_ID_PREFIX):
        return None
    return system[len(TEMPORARY_ID_PREFIX) :]


def issue_temporary_identifier(clues: str, value: str | None = None) -> dict:
    """A FHIR Identifier for a patient registered without a CURP at establishment ``clues``.

    ``value``: the establishment's own number for the registration (its admission folio, say);
    by default 12 random hexadecimal characters (48 bits: no collision within one
    establishment in practice). Never a CURP: NOM-024 forbids inventing one.
    """
    return {
        "use": "temp",
        "type": {"text": "Identificador temporal (sin CURP)"},
        "system": temporary_system(clues),
        "value": value or "T" + secrets.token_hex(6).upper(),
    }
