"""The 32 entidades federativas of Mexico.

Each entidad carries its INEGI key (Marco Geoestadístico, "01".."32"), its two-letter RENAPO key (the one
that appears in positions 12-13 of a CURP; Ciudad de México keeps the historical "DF"), its name in
Spanish as INEGI publishes it, its capital, its population in the Censo de Población y Vivienda 2020
(used to draw a realistic synthetic population), the ranges of the first two digits of its postal codes
(SEPOMEX) and its usual UTC offset (standard time; Mexico dropped daylight-saving time in 2022).

``NACIDO_EN_EL_EXTRANJERO`` ("NE") is the RENAPO key a CURP carries for people born abroad; it is not an
entidad.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entidad:
    inegi: str  # "01".."32"
    renapo: str  # two letters, as in the CURP
    name: str  # official name (INEGI)
    capital: str
    population_2020: int
    postal_prefixes: tuple[tuple[int, int], ...]  # inclusive ranges of the first two postal-code digits
    utc_offset: str  # "-06:00"

    @property
    def number(self) -> int:
        return int(self.inegi)


ENTIDADES: tuple[Entidad, ...] = (
    Entidad("01", "AS", "Aguascalientes", "Aguascalientes", 1_425_607, ((20, 20),), "-06:00"),
    Entidad("02", "BC", "Baja California", "Mexicali", 3_769_020, ((21, 22),), "-08:00"),
    Entidad("03", "BS", "Baja California Sur", "La Paz", 798_447, ((23, 23),), "-07:00"),
    Entidad("04", "CC", "Campeche", "San Francisco de Campeche", 928_363, ((24, 24),), "-06:00"),
    Entidad("05", "CL", "Coahuila de Zaragoza", "Saltillo", 3_146_771, ((25, 27),), "-06:00"),
    Entidad("06", "CM", "Colima", "Colima", 731_391, ((28, 28),), "-06:00"),
    Entidad("07", "CS", "Chiapas", "Tuxtla Gutiérrez", 5_543_828, ((29, 30),), "-06:00"),
    Entidad("08", "CH", "Chihuahua", "Chihuahua", 3_741_869, ((31, 33),), "-06:00"),
    Entidad("09", "DF", "Ciudad de México", "Ciudad de México", 9_209_944, ((1, 16),), "-06:00"),
    Entidad("10", "DG", "Durango", "Victoria de Durango", 1_832_650, ((34, 35),), "-06:00"),
    Entidad("11", "GT", "Guanajuato", "Guanajuato", 6_166_934, ((36, 38),), "-06:00"),
    Entidad("12", "GR", "Guerrero", "Chilpancingo de los Bravo", 3_540_685, ((39, 41),), "-06:00"),
    Entidad("13", "HG", "Hidalgo", "Pachuca de Soto", 3_082_841, ((42, 43),), "-06:00"),
    Entidad("14", "JC", "Jalisco", "Guadalajara", 8_348_151, ((44, 49),), "-06:00"),
    Entidad("15", "MC", "México", "Toluca de Lerdo", 16_992_418, ((50, 57),), "-06:00"),
    Entidad("16", "MN", "Michoacán de Ocampo", "Morelia", 4_748_846, ((58, 61),), "-06:00"),
    Entidad("17", "MS", "Morelos", "Cuernavaca", 1_971_520, ((62, 62),), "-06:00"),
    Entidad("18", "NT", "Nayarit", "Tepic", 1_235_456, ((63, 63),), "-07:00"),
    Entidad("19", "NL", "Nuevo León", "Monterrey", 5_784_442, ((64, 67),), "-06:00"),
    Entidad("20", "OC", "Oaxaca", "Oaxaca de Juárez", 4_132_148, ((68, 71),), "-06:00"),
    Entidad("21", "PL", "Puebla", "Heroica Puebla de Zaragoza", 6_583_278, ((72, 75),), "-06:00"),
    Entidad("22", "QT", "Querétaro", "Santiago de Querétaro", 2_368_467, ((76, 76),), "-06:00"),
    Entidad("23", "QR", "Quintana Roo", "Chetumal", 1_857_985, ((77, 77),), "-05:00"),
    Entidad("24", "SP", "San Luis Potosí", "San Luis Potosí", 2_822_255, ((78, 79),), "-06:00"),
    Entidad("25", "SL", "Sinaloa", "Culiacán Rosales", 3_026_943, ((80, 82),), "-07:00"),
    Entidad("26", "SR", "Sonora", "Hermosillo", 2_944_840, ((83, 85),), "-07:00"),
    Entidad("27", "TC", "Tabasco", "Villahermosa", 2_402_598, ((86, 86),), "-06:00"),
    Entidad("28", "TS", "Tamaulipas", "Ciudad Victoria", 3_527_735, ((87, 89),), "-06:00"),
    Entidad("29", "TL", "Tlaxcala", "Tlaxcala de Xicohténcatl", 1_342_977, ((90, 90),), "-06:00"),
    Entidad("30", "VZ", "Veracruz de Ignacio de la Llave", "Xalapa-Enríquez", 8_062_579, ((91, 96),), "-06:00"),
    Entidad("31", "YN", "Yucatán", "Mérida", 2_320_898, ((97, 97),), "-06:00"),
    Entidad("32", "ZS", "Zacatecas", "Zacatecas", 1_622_138, ((98, 99),), "-06:00"),
)

NACIDO_EN_EL_EXTRANJERO = "NE"

BY_RENAPO: dict[str, Entidad] = {e.renapo: e for e in ENTIDADES}
BY_INEGI: dict[str, Entidad] = {e.inegi: e for e in ENTIDADES}

RENAPO_CODES: frozenset[str] = frozenset(BY_RENAPO)
# What a CURP may carry in positions 12-13: the 32 entidades plus "NE" (born abroad).
CURP_STATE_CODES: frozenset[str] = RENAPO_CODES | {NACIDO_EN_EL_EXTRANJERO}


def by_renapo(code: str) -> Entidad:
    """The entidad with this RENAPO key ("JC"); KeyError if none (note "NE" is not an entidad)."""
    return BY_RENAPO[code.upper()]


def by_inegi(key: str | int) -> Entidad:
    """The entidad with this INEGI key ("09", "9" or 9); KeyError if none."""
    return BY_INEGI[f"{int(key):02d}"]
