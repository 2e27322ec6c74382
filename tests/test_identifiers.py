"""Mexican identifiers: CLUES, cédula profesional, RFC (SAT check digit), IMSS NSS, temporary ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from expediente.mx.identifiers import (
    cedula_problem,
    clues_problem,
    is_valid_nss,
    is_valid_rfc,
    issue_temporary_identifier,
    nss_check_digit,
    nss_problem,
    rfc_check_digit,
    rfc_problem,
    temporary_clues,
)
from expediente.mx.systems import CURP_SYSTEM, TEMPORARY_ID_PREFIX


@pytest.mark.parametrize(
    "value, reason",
    [
        ("DFIMS000011", None),
        ("JCSSA000022", None),
        ("MCIMB001234", None),
        ("DFIMS00001", "debe tener 11 caracteres"),
        ("dfims000011", "mayúsculas"),
        ("DFIMS00001A", "mal formada"),
        ("D1IMS000011", "mal formada"),
        ("XXIMS000011", "Entidad desconocida en la CLUES: 'XX'"),
        ("NEIMS000011", "Entidad desconocida"),  # NE is for CURPs of people born abroad, not establishments
        ("", "vacía"),
    ],
)
def test_clues(value, reason):
    found = clues_problem(value)
    assert (found is None) if reason is None else (reason in found), found


@pytest.mark.parametrize(
    "value, reason",
    [
        ("12345678", None),
        ("1234567", None),
        ("1", None),
        ("1234567890", None),
        ("12345678901", "de 1 a 10 dígitos"),
        ("1234-567", "solo lleva dígitos"),
        ("１２３", "solo lleva dígitos"),  # full-width digits are not ASCII
        ("0000000", "solo ceros"),
        ("", "vacía"),
    ],
)
def test_cedula(value, reason):
    found = cedula_problem(value)
    assert (found is None) if reason is None else (reason in found), found


@pytest.mark.parametrize(
    "value, reason",
    [
        ("GODE561231GR8", None),  # the SAT's own example of a persona física
        ("SAT970701NN3", None),  # the SAT itself, persona moral
        ("GODE561231GR9", "Dígito verificador incorrecto en el RFC: es '9' y debería ser '8'"),
        ("GODE561331GR8", "Fecha imposible en el RFC: '561331'"),
        ("GODE560230GR8", "Fecha imposible"),
        ("G0DE561231GR8", "Carácter '0' inválido en la posición 2"),
        ("GODE5612", "13 caracteres (persona física) o 12 (persona moral)"),
        ("gode561231gr8", "mayúsculas"),
        ("GODE561231G_8", "homoclave"),
        ("", "vacío"),
    ],
)
def test_rfc(value, reason):
    found = rfc_problem(value)
    assert (found is None) if reason is None else (reason in found), found


def test_rfc_check_digit_values():
    assert rfc_check_digit("GODE561231GR") == "8"
    assert rfc_check_digit("SAT970701NN") == "3"
    # every remainder gives a digit, 'A' (10) or '0' (11)
    digits = {rfc_check_digit(f"AAAA{n:06d}XX") for n in range(0, 500000, 371)}
    assert digits <= set("0123456789A")


@pytest.mark.parametrize(
    "value, reason",
    [
        ("0123456789" + nss_check_digit("0123456789"), None),
        ("12345678904", "Dígito verificador incorrecto en el NSS: es '4' y debería ser '3'"),
        ("1234567890", "11 dígitos"),
        ("1234567890A", "solo lleva dígitos"),
        ("", "vacío"),
    ],
)
def test_nss(value, reason):
    found = nss_problem(value)
    assert (found is None) if reason is None else (reason in found), found


def test_nss_check_digit_is_luhn():
    # 7992739871 is the textbook Luhn example (check digit 3) with the doubling from the right;
    # the NSS doubles from the left over 10 digits, which for an even length is the same.
    assert nss_check_digit("7992739871") == "3"


RFC_CHARS = st.sampled_from(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789&Ñ a"))


@given(st.text(RFC_CHARS, min_size=11, max_size=14))
def test_rfc_reason_agrees_with_the_yes_no_check(value):
    assert (rfc_problem(value) is None) == is_valid_rfc(value)


@given(st.integers(0, 10**10 - 1), st.integers(0, 9))
def test_valid_rfc_mutated_agrees(n, position):
    body = f"GODE{561231:06d}GR"
    valid = body + rfc_check_digit(body)
    mutated = valid[:position] + str(n % 10) + valid[position + 1 :]
    assert (rfc_problem(mutated) is None) == is_valid_rfc(mutated)


@given(st.text(st.sampled_from(list("0123456789x")), min_size=9, max_size=12))
def test_nss_reason_agrees_with_the_yes_no_check(value):
    assert (nss_problem(value) is None) == is_valid_nss(value)


@given(st.text(st.characters(codec="utf-8"), max_size=12))
def test_checkers_never_raise(value):
    for check in (clues_problem, cedula_problem, rfc_problem, nss_problem):
        assert check(value) is None or isinstance(check(value), str)


def test_temporary_identifier_is_scoped_to_the_establishment_and_never_a_curp():
    ident = issue_temporary_identifier("DFIMS000011")
    assert ident["system"] == TEMPORARY_ID_PREFIX + "DFIMS000011" != CURP_SYSTEM
    assert ident["use"] == "temp" and len(ident["value"]) == 13
    assert temporary_clues(ident["system"]) == "DFIMS000011"
    assert issue_temporary_identifier("DFIMS000011")["value"] != ident["value"]
    assert issue_temporary_identifier("JCSSA000022", "URG-17")["value"] == "URG-17"
    with pytest.raises(ValueError, match="CLUES"):
        issue_temporary_identifier("no-es-clues")


def test_the_generator_uses_the_shared_systems():
    from expediente.mx import systems
    from expediente.synth import generator

    for name in ("CURP_SYSTEM", "NSS_SYSTEM", "CLUES_SYSTEM", "CEDULA_SYSTEM", "INSTITUTION_SYSTEM", "DOCUMENT_TYPE_SYSTEM"):
        assert getattr(generator, name) is getattr(systems, name)
