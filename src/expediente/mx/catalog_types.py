"""What a catalog is made of: concepts with Spanish displays and the DGIS sex and age limits.

Age limits follow the DGIS notation of its CIE-10 catalog (``LINF``/``LSUP``: three digits and
a unit letter, ``"010A"`` ten years, ``"028D"`` 28 days; ``H`` hours, ``D`` days, ``M`` months,
``A`` years). Internally and on the wire they are a number and a UCUM unit of time
(``"10 a"``, ``"28 d"``, ``"6 mo"``, ``"12 h"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# DGIS unit letter -> UCUM unit of time
DGIS_AGE_UNITS = {"H": "h", "D": "d", "M": "mo", "A": "a"}
# UCUM unit -> (Spanish singular, plural)
AGE_UNIT_NAMES = {"h": ("hora", "horas"), "d": ("día", "días"), "mo": ("mes", "meses"), "a": ("año", "años")}
# How many of each unit fit in a year, to compare an age in completed years with any limit.
_PER_YEAR = {"h": 365 * 24, "d": 365, "mo": 12, "a": 1}

SEXES = ("male", "female")  # FHIR administrative gender a diagnosis may be limited to


@dataclass(frozen=True, slots=True)
class AgeLimit:
    value: int
    unit: str  # UCUM: h, d, mo, a

    @classmethod
    def parse(cls, text: str) -> AgeLimit:
        """``"10 a"`` -> AgeLimit(10, "a"); ValueError if not that form."""
        number, _, unit = text.strip().partition(" ")
        if unit not in _PER_YEAR or not number.isdigit():
            raise ValueError(text)
        return cls(int(number), unit)

    def __str__(self) -> str:
        return f"{self.value} {self.unit}"

    def spanish(self) -> str:
        singular, plural = AGE_UNIT_NAMES[self.unit]
        return f"{self.value} {singular if self.value == 1 else plural}"

    def completed_range(self, age_years: int) -> tuple[int, int]:
        """The age in this limit's unit of someone with ``age_years`` completed years: the
        smallest and largest completed count (``age_years=0`` in days is 0..364)."""
        per = _PER_YEAR[self.unit]
        return age_years * per, (age_years + 1) * per - 1


@dataclass(frozen=True, slots=True)
class Concept:
    code: str
    display: str  # Spanish
    sex: str | None = None  # "male"/"female": the code applies only to that sex
    age_low: AgeLimit | None = None  # inclusive
    age_high: AgeLimit | None = None  # inclusive
    properties: dict[str, str] = field(default_factory=dict)  # other properties (e.g. INEGI key)


def age_outside(concept: Concept, age_years: int) -> bool:
    """True when an age in completed years is certainly outside the concept's limits (an age
    in years that could still fall inside a limit stated in days or months is not)."""
    if concept.age_low is not None and concept.age_low.completed_range(age_years)[1] < concept.age_low.value:
        return True
    return concept.age_high is not None and concept.age_high.completed_range(age_years)[0] > concept.age_high.value
