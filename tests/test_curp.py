"""CURP: check digit, structural validation and construction (expediente.mx.curp)."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from expediente.mx.curp import CHECK_ALPHABET, build_curp, curp_check_digit, is_valid_curp
from expediente.mx.states import CURP_STATE_CODES, ENTIDADES, RENAPO_CODES, by_inegi, by_renapo

# Two CURPs built by hand with the RENAPO rules, check digit computed by hand:
#
# Juan Hernández López, hombre, 1990-01-15, Ciudad de México (DF), homoclave 0:
#   H (Hernández) E (first internal vowel) L (López) J (Juan) 900115 H DF
#   R (HeRnández) P (LóPez) N (JuaN) 0
#   values  H17 E14 L21 J19 9 0 0 1 1 5 H17 D13 F15 R28 P26 N23 0, weights 18..2:
#   306+238+336+285+126+0+0+11+10+45+136+91+90+140+104+69+0 = 1987 -> (10 - 7) % 10 = 3
HAND_MADE_1 = "HELJ900115HDFRPN03"
# María Guadalupe Núñez Peña, mujer, 2005-02-28, Jalisco (JC), homoclave A (born in 2000 or later):
#   N (Núñez) U P (Peña) G (Guadalupe: María is skipped) 050228 M JC
#   X (NuÑez: Ñ counts as X) X (PeÑa) D (GuaDalupe) A
#   values  N23 U31 P26 G16 0 5 0 2 2 8 M22 J19 C12 X34 X34 D13 A10:
#   414+527+416+240+0+65+0+22+20+72+176+133+72+170+136+39+20 = 2522 -> (10 - 2) % 10 = 8
HAND_MADE_2 = "NUPG050228MJCXXDA8"


def test_check_digit_of_hand_made_curps():
    assert curp_check_digit(HAND_MADE_1[:17]) == "3"
    assert curp_check_digit(HAND_MADE_2[:17]) == "8"
    assert is_valid_curp(HAND_MADE_1)
    assert is_valid_curp(HAND_MADE_2)


def test_build_reproduces_hand_made_curps():
    assert build_curp("Hernández", "López", "Juan", date(1990, 1, 15), "H", "DF", 0) == HAND_MADE_1
    assert build_curp("Núñez", "Peña", "María Guadalupe", date(2005, 2, 28), "M", "JC", "A") == HAND_MADE_2
    # FHIR gender codes and lower-case state keys are accepted too
    assert build_curp("Hernández", "López", "Juan", date(1990, 1, 15), "male", "df", "0") == HAND_MADE_1


def test_check_digit_alphabet_counts_enye():
    # Ñ sits between N and O: O is worth 25, not 24.
    assert CHECK_ALPHABET.index("Ñ") == 24 and CHECK_ALPHABET.index("O") == 25
    assert curp_check_digit("0" * 16 + "O") == str((10 - (25 * 2) % 10) % 10)
    assert curp_check_digit("0" * 16 + "1") == "8"  # 1*2 = 2 -> 8
    assert curp_check_digit("0" * 17) == "0"  # (10 - 0) % 10


@pytest.mark.parametrize("bad", ["", "HELJ900115HDFRPN", "HELJ900115HDFRPN03", "HELJ900115HDFRPNé"])
def test_check_digit_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        curp_check_digit(bad)


@pytest.mark.parametrize(
    "curp",
    [
        "HELJ900115HDFRPN04",  # wrong check digit
        "helj900115hdfrpn03",  # lower case
        "HELJ900115HDFRPN03 ",  # 19 characters
        "HELJ900115HDFRPN0",  # 17 characters
        "HBLJ900115HDFRPN03",  # position 2 must be a vowel or X
        "HELJ901315HDFRPN03",  # month 13
        "HELJ900230HDFRPN03",  # 30 February
        "HELJ900115ZDFRPN03",  # sex must be H, M or X
        "HELJ900115HXXRPN03",  # no such entidad
        "HELJ900115HDFAPN03",  # position 14 must be a consonant
        "HELJ900115HDFRPNÑ3",  # homoclave must be A-Z or 0-9
        "HELJ900115HDFRPN0A",  # check digit must be a digit
        "HELJ\uff19\uff10\uff10115HDFRPN03",  # full-width digits are not ASCII digits
        "HELJ900115HDFRPN0\u0663",  # nor is an Arabic-Indic three
        None,
        1234,
    ],
)
def test_invalid_curps_rejected(curp):
    assert not is_valid_curp(curp)


def _with_check(first17: str) -> str:
    return first17 + curp_check_digit(first17)


def test_century_follows_homoclave():
    # 29 February 2000 exists; 29 February 1900 does not. A digit homoclave means 19xx, a letter 20xx.
    assert is_valid_curp(_with_check("HELJ000229HDFRPNA"))
    assert not is_valid_curp(_with_check("HELJ000229HDFRPN0"))
    assert is_valid_curp(_with_check("HELJ960229HDFRPN0"))


def test_born_abroad_and_non_binary_are_valid():
    assert is_valid_curp(_with_check("HELJ900115HNERPN0"))
    assert is_valid_curp(_with_check("HELJ900115XDFRPN0"))


def test_rules_compound_given_names():
    curp = build_curp("Pérez", "López", "José Luis", date(1980, 5, 1), "H", "PL", 3)
    assert curp[:4] == "PELL" and curp[13:16] == "RPS"  # Luis, not José
    curp = build_curp("Pérez", "López", "José de Jesús", date(1980, 5, 1), "H", "PL", 3)
    assert curp[3] == "J" and curp[15] == "S"  # JeSús: "de" dropped, José skipped
    curp = build_curp("Pérez", "López", "María", date(1980, 5, 1), "M", "PL", 3)
    assert curp[3] == "M" and curp[15] == "R"  # María alone is kept
    curp = build_curp("Pérez", "López", "Ma. de los Ángeles", date(1980, 5, 1), "M", "PL", 3)
    assert curp[3] == "A" and curp[15] == "N"  # abbreviation of María skipped too


def test_rules_surnames():
    # particles dropped from compound surnames
    curp = build_curp("De la Cruz", "Montes de Oca", "Ana", date(1975, 7, 9), "M", "VZ", 1)
    assert curp[:4] == "CUMA" and curp[13:16] == "RNN"
    # a single surname gives X in positions 3 and 15
    curp = build_curp("Ek", None, "Raúl", date(1975, 7, 9), "H", "YN", 1)
    assert curp[:4] == "EXXR" and curp[13:16] == "KXL"  # Ek has no internal vowel
    assert is_valid_curp(curp)


def test_inconvenient_words_get_an_x():
    curp = build_curp("Buendía", "Escobar", "Yolanda", date(1992, 3, 4), "M", "GT", 5)
    assert curp[:4] == "BXEY"  # BUEY is on the RENAPO list
    assert is_valid_curp(curp)


def test_homoclave_must_match_century():
    with pytest.raises(ValueError):
        build_curp("Hernández", "López", "Juan", date(1990, 1, 15), "H", "DF", "A")
    with pytest.raises(ValueError):
        build_curp("Hernández", "López", "Juan", date(2001, 1, 15), "H", "DF", "0")
    assert build_curp("Hernández", "López", "Juan", date(2001, 1, 15), "H", "DF", 27)[16] == "B"


def test_build_rejects_unknown_codes():
    with pytest.raises(ValueError):
        build_curp("Hernández", "López", "Juan", date(1990, 1, 15), "H", "ZZ", 0)
    with pytest.raises(ValueError):
        build_curp("Hernández", "López", "Juan", date(1990, 1, 15), "Q", "DF", 0)
    with pytest.raises(ValueError):
        build_curp("Hernández", "López", "", date(1990, 1, 15), "H", "DF", 0)


def test_states_catalog():
    assert len(ENTIDADES) == 32
    assert [e.inegi for e in ENTIDADES] == [f"{i:02d}" for i in range(1, 33)]
    assert len(RENAPO_CODES) == 32 and CURP_STATE_CODES == RENAPO_CODES | {"NE"}
    assert by_renapo("DF").name == "Ciudad de México" and by_inegi(9).renapo == "DF"
    assert by_inegi("01").name == "Aguascalientes" and by_inegi(32).name == "Zacatecas"
    assert by_renapo("mc").name == "México"
    expected = set("AS BC BS CC CL CM CS CH DF DG GT GR HG JC MC MN MS NT NL OC PL QT QR SP SL SR TC TS TL VZ YN ZS".split())
    assert RENAPO_CODES == expected


_NAME_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyzÁÉÍÓÚÜÑáéíóúüñ '-."
_names = st.text(alphabet=_NAME_ALPHABET, min_size=1, max_size=30).filter(lambda s: any(c.isalpha() for c in s))


@settings(max_examples=300, deadline=None)
@given(
    first=_names,
    second=st.one_of(st.none(), _names),
    given_name=_names,
    birth=st.dates(min_value=date(1900, 1, 1), max_value=date(2099, 12, 31)),
    sex=st.sampled_from(["H", "M", "X", "male", "female"]),
    state=st.sampled_from(sorted(CURP_STATE_CODES)),
    homoclave=st.integers(min_value=0, max_value=1000),
)
def test_build_curp_always_valid(first, second, given_name, birth, sex, state, homoclave):
    curp = build_curp(first, second, given_name, birth, sex, state, homoclave)
    assert is_valid_curp(curp), curp
    assert curp[4:10] == birth.strftime("%y%m%d")
    assert curp[11:13] == state
    assert curp[16].isdigit() == (birth.year < 2000)


def test_generated_population_curps_valid():
    from expediente.synth.generator import CURP_SYSTEM, generate

    curps = [
        ident["value"]
        for r in generate(150, 11)
        if r["resourceType"] == "Patient"
        for ident in r["identifier"]
        if ident["system"] == CURP_SYSTEM
    ]
    assert len(curps) == 150
    assert all(is_valid_curp(c) for c in curps)
