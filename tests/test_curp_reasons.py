"""Why a CURP is refused: a table of valid and invalid examples with the expected reason
(expediente.mx.curp_reasons), and agreement with the yes/no check on random variations."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from expediente.mx.curp import CHECK_ALPHABET, curp_check_digit, is_valid_curp
from expediente.mx.curp_reasons import curp_problem
from tests.test_curp import HAND_MADE_1, HAND_MADE_2


def with_check_digit(first17: str) -> str:
    return first17 + curp_check_digit(first17)


VALID = [
    HAND_MADE_1,  # Juan Hernández López, DF, 1990
    HAND_MADE_2,  # María Guadalupe Núñez Peña, JC, 2005 (homoclave letter: born from 2000)
    with_check_digit("GOXA800101MNELPN0"),  # born abroad (NE), no second surname (X)
    with_check_digit("PEXJ000229HJCRXNA"),  # 29 February 2000 (leap year), letter homoclave
]

INVALID = [
    ("", "vacía"),
    ("HELJ900115HDFRPN0", "18 caracteres; 'HELJ900115HDFRPN0' tiene 17"),
    (HAND_MADE_1 + "9", "tiene 19"),
    (HAND_MADE_1.lower(), "mayúsculas"),
    ("NUÑG050228MJCXXDA8", "no lleva Ñ"),
    ("1ELJ900115HDFRPN03", "posición 1"),
    ("HBLJ900115HDFRPN03", "posición 2"),  # the internal vowel cannot be a B
    ("HELJ9A0115HDFRPN03", "posición 6"),
    ("HELJ900115QDFRPN03", "posición 11"),  # sex
    ("HELJ900115HDFAPN03", "posición 14"),  # a vowel where a consonant goes
    ("HELJ900115HZZRPN03", "Entidad de nacimiento desconocida en la CURP: 'ZZ'"),
    (with_check_digit("HELJ900230HDFRPN0"), "Fecha de nacimiento imposible en la CURP: 1990-02-30"),
    (with_check_digit("PEXJ000229HJCRXN0"), "1900-02-29"),  # digit homoclave: 1900, not a leap year
    (with_check_digit("HELJ901315HDFRPN0"), "1990-13-15"),
    (with_check_digit("HELJ900115HDFRPNZ")[:-1] + "Z", "posición 18"),
    ("HELJ900115HDFRPN04", "Dígito verificador incorrecto en la CURP: es '4' y debería ser '3'"),
]


@pytest.mark.parametrize("curp", VALID)
def test_valid_curps_have_no_problem(curp):
    assert curp_problem(curp) is None and is_valid_curp(curp)


@pytest.mark.parametrize("curp, reason", INVALID)
def test_invalid_curps_say_why(curp, reason):
    problem = curp_problem(curp)
    assert problem is not None and reason in problem, problem
    assert not is_valid_curp(curp)


def test_none_and_non_strings_are_refused():
    assert curp_problem(None) == curp_problem(123) == "La CURP está vacía"


@settings(max_examples=400, derandomize=True)
@given(
    base=st.sampled_from(VALID),
    position=st.integers(0, 17),
    char=st.sampled_from(CHECK_ALPHABET + "abcñ-* "),
)
def test_reasons_agree_with_the_yes_no_check(base, position, char):
    """Any one-character change: a reason exactly when the yes/no check refuses it."""
    curp = base[:position] + char + base[position + 1 :]
    assert (curp_problem(curp) is None) == is_valid_curp(curp)
