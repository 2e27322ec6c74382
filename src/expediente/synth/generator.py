"""Deterministic synthetic Mexican population as FHIR R4 resources, for demos, tests and benchmarks.

``generate(patients, seed)`` yields plain JSON dicts (FHIR R4 4.0.1) in an order that lets them be stored
one by one: whatever a resource references has been yielded before it. The stream starts with the
paying institutions (IMSS, ISSSTE, IMSS-Bienestar, private insurers); health facilities (Organization with a
CLUES key) and their physicians (Practitioner with a cédula profesional) follow lazily, right before the
first patient who uses them; then each patient comes with everything about them: Patient, Coverage, and per
encounter (chronological) the Encounter, the Conditions diagnosed there, the progress note
(Composition), prescriptions (MedicationRequest), lab results (Observation) and sick-leave certificates
(DocumentReference).

Determinism: every patient is drawn from its own random stream, seeded from ``(seed, patient index)``,
and facilities and physicians from streams seeded from ``(seed, their key)``; what is shared between
patients (which facilities were already yielded, the CURPs and cédulas already taken) only depends on the
patients before. So the same ``(patients, seed)`` gives identical output, and ``generate(n, seed)`` is a
prefix of ``generate(m, seed)`` for ``n < m``: benchmarks at several sizes share their data. Dates are
relative to ``as_of`` (a fixed default, not today), covering the ``HISTORY_YEARS`` before it.
``generate_range(start, stop, seed)`` (or a ``PopulationStream``) gives the part of the stream for patients
[start, stop), so separate processes can each produce one slice: concatenated, the slices are the full run.

Per patient, on average: 1 Patient, 1 Coverage, ~13 Encounter (almost all ambulatory; 0.15 emergency and
0.05 inpatient), ~13 Composition (one progress note per encounter), ~33 MedicationRequest, ~22
Observation, ~4.5 Condition (chronic problems plus one diagnosis per acute visit) and ~1.3
DocumentReference; ~89 resources in all, plus a few shared Organization/Practitioner resources (the pools
are bounded: ~750 facilities and ~5,300 physicians at most). Utilization is skewed like a real practice:
half the patients have 5 visits or fewer, chronic patients up to one a month.

    python -m expediente.synth.generator --patients 1000 --seed 1 --out /tmp/pop   # NDJSON per type
    python -m expediente.synth.generator --patients 2000 --bench                     # resources/s
"""

from __future__ import annotations

import argparse
import base64
import bisect
import hashlib
import itertools
import math
import random
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from html import escape
from pathlib import Path

import orjson

from expediente.mx.affiliation import AFFILIATIONS
from expediente.mx.curp import build_curp
from expediente.mx.identifiers import nss_check_digit
from expediente.mx.nom004 import BY_CODE as DOCUMENT_TYPES
from expediente.mx.nom004 import section_narrative
from expediente.mx.systems import (  # noqa: F401 - re-exported: tests and tools read them from here
    AFFILIATION_SYSTEM,
    BIRTH_PLACE_URL,
    BIRTH_STATE_URL,
    CEDULA_SYSTEM,
    CLUES_SYSTEM,
    CURP_SYSTEM,
    DOCUMENT_TYPE_SYSTEM,
    FATHERS_FAMILY_URL,
    INCAPACITY_BRANCH_URL,
    INCAPACITY_DAYS_URL,
    INCAPACITY_FOLIO_SYSTEM,
    INSTITUTION_SYSTEM,
    MOTHERS_FAMILY_URL,
    NSS_SYSTEM,
    POLICY_SYSTEM,
    RENAPO_STATE_SYSTEM,
)
from expediente.mx.states import ENTIDADES, NACIDO_EN_EL_EXTRANJERO, Entidad
from expediente.synth import catalogs as cat
from expediente.synth.names import FEMALE_GIVEN, MALE_GIVEN, SURNAMES, given_parts

# ------------------------------------------------------------------------------------------------
# Systems and URLs
# ------------------------------------------------------------------------------------------------

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ORGANIZATION_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
OBSERVATION_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
SUBSCRIBER_RELATIONSHIP = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
DISCHARGE_DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
ADMIT_SOURCE = "http://terminology.hl7.org/CodeSystem/admit-source"
XHTML_NS = "http://www.w3.org/1999/xhtml"

DEFAULT_AS_OF = date(2026, 1, 1)
HISTORY_YEARS = 10

# Mean numbers of events per patient the model is tuned for (see tests/test_synth.py).
EMERGENCY_VISITS_PER_PATIENT = 0.15
ADMISSIONS_PER_PATIENT = 0.05

# Calibration of the visit model (tuned so that a population averages ~13 notes, ~33 prescriptions,
# ~22 lab results and ~1.3 sick-leave certificates per patient).
_CONTROL_VISIT_SCALE = 0.68
_ACUTE_VISIT_SCALE = 0.62
_MAX_CONTROL_VISITS_PER_YEAR = 12.0
_CONTROL_LAB_PROBABILITY = 0.29
_PANEL_KEEP_PROBABILITY = 0.75
_CONTROL_EXTRA_PROBABILITY = 0.35  # a symptomatic medication added in a control visit
_CONTROL_EXTRA = ("paracetamol", "omeprazol", "loratadina", "naproxeno", "psyllium", "diclofenaco")
_INCAPACITY_PROBABILITY = {"acute": 0.8, "control": 0.05, "EMER": 0.75, "IMP": 1.0}

_PRACTITIONERS_PER_UNIT = 6
_PRACTITIONERS_PER_HOSPITAL = 10
_DAYS_PER_YEAR = 365.2425


# ------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------


def _sub_seed(*parts: object) -> int:
    """A 128-bit seed for an independent random stream, from a tuple of ints and strings."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=16).digest(), "big")


_V4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_V4_SET = (0x4000 << 64) | (0x8000 << 48)


def _uuid4(getrandbits) -> str:
    """Same text as ``str(uuid.UUID(int=getrandbits(128), version=4))``, faster."""
    h = "%032x" % ((getrandbits(128) & _V4_CLEAR) | _V4_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _Weighted:
    """Fast weighted choice: ``pick(random())`` with a precomputed cumulative table."""

    __slots__ = ("items", "cum", "total")

    def __init__(self, pairs: Iterable[tuple[object, float]]):
        self.items: list = []
        self.cum: list[float] = []
        total = 0.0
        for item, weight in pairs:
            if weight <= 0:
                continue
            total += weight
            self.items.append(item)
            self.cum.append(total)
        self.total = total

    def pick(self, u: float):
        return self.items[bisect.bisect_right(self.cum, u * self.total)]


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam < 30:
        limit = math.exp(-lam)
        k = 0
        p = rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    return max(0, round(rng.gauss(lam, math.sqrt(lam))))


def _family(first: str, second: str | None) -> tuple[str, dict]:
    """HumanName.family ("García Núñez") and its ``_family`` with the father's/mother's surname extensions."""
    ext = [{"url": FATHERS_FAMILY_URL, "valueString": first}]
    if second:
        ext.append({"url": MOTHERS_FAMILY_URL, "valueString": second})
        return f"{first} {second}", {"extension": ext}
    return first, {"extension": ext}


def _affiliation(inst: cat.Institution) -> dict:
    """The derechohabiencia coding of a Coverage (mx/affiliation.py)."""
    return {"system": AFFILIATION_SYSTEM, "code": inst.key, "display": AFFILIATIONS[inst.key]}


def _div(text: str) -> str:
    return f'<div xmlns="{XHTML_NS}"><p>{escape(text, quote=False)}</p></div>'


def _days_text(days: int) -> str:
    return "1 día" if days == 1 else f"{days} días"


def _age(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


_MALE_GIVEN = _Weighted(MALE_GIVEN)
_FEMALE_GIVEN = _Weighted(FEMALE_GIVEN)
_SURNAME = _Weighted(SURNAMES)
_STATE = _Weighted((e, e.population_2020) for e in ENTIDADES)
_AGE_GROUP = _Weighted(enumerate(cat.AGE_GROUP_WEIGHTS))
_INSTITUTION = _Weighted((i, i.weight) for i in cat.INSTITUTIONS)
_INSTITUTIONS = {i.key: i for i in cat.INSTITUTIONS}
_PRIMARY_SPECIALTY = _Weighted(cat.PRIMARY_SPECIALTIES)
_HOSPITAL_SPECIALTY = _Weighted(cat.HOSPITAL_SPECIALTIES)
_FOREIGN_COUNTRIES = ("US", "GT", "HN", "CO", "VE", "ES", "AR", "CU", "SV")

_STREETS = (
    "Av. Juárez", "Calle Hidalgo", "Calle Morelos", "Av. Insurgentes", "Calle 5 de Mayo", "Calle Zaragoza",
    "Av. Revolución", "Calle Allende", "Calle Vicente Guerrero", "Av. Reforma", "Calle Independencia",
    "Calle Francisco I. Madero", "Calle Aldama", "Calle Niños Héroes", "Av. Benito Juárez", "Calle Emiliano Zapata",
    "Calle Francisco Villa", "Calle Venustiano Carranza", "Av. Lázaro Cárdenas", "Calle Sor Juana Inés de la Cruz",
    "Calle Nicolás Bravo", "Calle Galeana", "Av. Universidad", "Calle Pino Suárez", "Calle Matamoros",
)  # fmt: skip
_NEIGHBORHOODS = (
    "Col. Centro", "Col. Las Flores", "Col. San José", "Col. Guadalupe", "Col. Jardines", "Col. Benito Juárez",
    "Col. Obrera", "Col. Del Valle", "Col. Santa María", "Col. Emiliano Zapata", "Fracc. Los Pinos",
    "Col. Independencia", "Col. La Joya", "Col. El Mirador", "Fracc. Villas del Sol", "Col. Revolución",
)  # fmt: skip

_INTERPRETATION = {"H": "High", "L": "Low", "N": "Normal"}
_ENCOUNTER_CLASS = {"AMB": "ambulatory", "EMER": "emergency", "IMP": "inpatient encounter"}


@dataclass(slots=True)
class _LabSpec:
    loinc: str
    display: str
    text: str
    unit: str
    decimals: int
    mean: float
    sd: float
    low: float | None
    high: float | None
    minimum: float


def _lab_specs(sex: str) -> dict[str, _LabSpec]:
    out = {}
    for t in cat.LAB_TESTS.values():
        low, high, mean = t.low, t.high, t.mean
        if sex == "female" and (t.low_female is not None or t.high_female is not None):
            f_low = t.low_female if t.low_female is not None else low
            f_high = t.high_female if t.high_female is not None else high
            if low is not None and high is not None and f_low is not None and f_high is not None:
                mean += (f_low + f_high - low - high) / 2
            elif low is not None and f_low is not None:
                mean += f_low - low
            low, high = f_low, f_high
        out[t.loinc] = _LabSpec(t.loinc, t.display, t.text, t.unit, t.decimals, mean, t.sd, low, high, t.minimum)
    return out


_LABS = {"male": _lab_specs("male"), "female": _lab_specs("female")}


def _acute_tables() -> tuple[_Weighted, ...]:
    tables = []
    for group in range(3):
        for sex in ("male", "female"):
            tables.append(_Weighted((d, d.weights[group]) for d in cat.ACUTE_DIAGNOSES if d.sex in (None, sex)))
    return tuple(tables)


_ACUTE = _acute_tables()  # index: age group * 2 + (1 if female)
_ACUTE_FALLBACK = next(d for d in cat.ACUTE_DIAGNOSES if d.code == "J06.9")


def _age_group(age: int) -> int:
    return 0 if age < 15 else (1 if age < 60 else 2)


_REGIMENS = {c.code: _Weighted(c.regimens) for c in cat.CHRONIC_CONDITIONS}
_ACUTE_MEDS = {d.code: _Weighted(d.medications) for d in cat.ACUTE_DIAGNOSES}


# ------------------------------------------------------------------------------------------------
# Shared resources: institutions, facilities and their physicians
# ------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Facility:
    id: str
    institution: cat.Institution
    hospital: bool
    key: tuple
    practitioners: list[str | None] = field(default_factory=list)


class _Registry:
    """Facilities and physicians, created and yielded on first use (each from its own seeded stream)."""

    def __init__(self, seed: int):
        self.seed = seed
        self.pending: list[dict] = []
        self.facilities: dict[tuple, _Facility] = {}
        self.cedulas: set[str] = set()
        self.curps: set[str] = set()
        self.institution_ids: dict[str, str] = {}
        self.insurer_ids: dict[str, str] = {}
        rng = random.Random(_sub_seed(seed, "institutions"))
        for inst in cat.INSTITUTIONS:
            if inst.key == "PRIVADO":
                continue
            oid = _uuid4(rng.getrandbits)
            self.institution_ids[inst.key] = oid
            self.pending.append(
                {
                    "resourceType": "Organization",
                    "id": oid,
                    "identifier": [{"use": "official", "system": INSTITUTION_SYSTEM, "value": inst.key}],
                    "active": True,
                    "type": [
                        {"coding": [{"system": ORGANIZATION_TYPE, "code": "govt", "display": "Government"}]},
                        {"coding": [{"system": ORGANIZATION_TYPE, "code": "pay", "display": "Payer"}]},
                    ],
                    "name": inst.name,
                    "alias": [inst.key.replace("IMSS-BIENESTAR", "IMSS-Bienestar")],
                    "address": [{"city": "Ciudad de México", "state": "Ciudad de México", "country": "MX"}],
                }
            )
        for key, name in cat.PRIVATE_INSURERS:
            oid = _uuid4(rng.getrandbits)
            self.insurer_ids[key] = oid
            self.pending.append(
                {
                    "resourceType": "Organization",
                    "id": oid,
                    "identifier": [{"use": "official", "system": INSTITUTION_SYSTEM, "value": key}],
                    "active": True,
                    "type": [{"coding": [{"system": ORGANIZATION_TYPE, "code": "ins", "display": "Insurance Company"}]}],
                    "name": name,
                    "alias": [key],
                }
            )
        self._insurer_keys = [k for k, _ in cat.PRIVATE_INSURERS]

    def take_pending(self) -> list[dict]:
        out, self.pending = self.pending, []
        return out

    @staticmethod
    def pool_size(state: Entidad, inst: cat.Institution, hospital: bool) -> int:
        per_million = inst.hospitals_per_million if hospital else inst.units_per_million
        return max(1, round(state.population_2020 / 1_000_000 * per_million))

    def facility(self, state: Entidad, inst: cat.Institution, hospital: bool, idx: int) -> _Facility:
        key = (state.renapo, inst.key, hospital, idx)
        fac = self.facilities.get(key)
        if fac is not None:
            return fac
        rng = random.Random(_sub_seed(self.seed, "facility", *key))
        oid = _uuid4(rng.getrandbits)
        number = (500_000 if hospital else 0) + 10 + idx * 13
        city = state.capital
        pattern = inst.hospital if hospital else inst.primary
        name = pattern.format(
            n=rng.randrange(1, 99) if inst.key == "PRIVADO" else idx * 3 + rng.randrange(1, 3),
            city=city,
            surname=_SURNAME.pick(rng.random()),
            chain=cat.PRIVATE_HOSPITAL_CHAINS[rng.randrange(len(cat.PRIVATE_HOSPITAL_CHAINS))],
        )
        org = {
            "resourceType": "Organization",
            "id": oid,
            "identifier": [
                {"use": "official", "type": {"text": "CLUES"}, "system": CLUES_SYSTEM, "value": f"{state.renapo}{inst.clues}{number:06d}"}
            ],
            "active": True,
            "type": [{"coding": [{"system": ORGANIZATION_TYPE, "code": "prov", "display": "Healthcare Provider"}]}],
            "name": name,
            "address": [
                {
                    "line": [f"{_STREETS[rng.randrange(len(_STREETS))]} {rng.randrange(1, 2500)}"],
                    "city": city,
                    "state": state.name,
                    "postalCode": self._postal_code(rng, state),
                    "country": "MX",
                }
            ],
        }
        if inst.key in self.institution_ids:
            org["partOf"] = {"reference": f"Organization/{self.institution_ids[inst.key]}"}
        self.pending.append(org)
        size = _PRACTITIONERS_PER_HOSPITAL if hospital else _PRACTITIONERS_PER_UNIT
        fac = _Facility(oid, inst, hospital, key, [None] * size)
        self.facilities[key] = fac
        return fac

    @staticmethod
    def _postal_code(rng: random.Random, state: Entidad) -> str:
        lo, hi = state.postal_prefixes[rng.randrange(len(state.postal_prefixes))]
        return f"{rng.randint(lo, hi):02d}{rng.randrange(1000):03d}"

    def practitioner(self, fac: _Facility, j: int) -> str:
        pid = fac.practitioners[j]
        if pid is not None:
            return pid
        rng = random.Random(_sub_seed(self.seed, "practitioner", *fac.key, j))
        pid = _uuid4(rng.getrandbits)
        female = rng.random() < 0.5
        given = (_FEMALE_GIVEN if female else _MALE_GIVEN).pick(rng.random())
        first, second = _SURNAME.pick(rng.random()), _SURNAME.pick(rng.random())
        family, family_ext = _family(first, second)
        while True:
            cedula = str(rng.randrange(1_000_000, 14_000_000))
            if cedula not in self.cedulas:
                self.cedulas.add(cedula)
                break
        specialty = (_HOSPITAL_SPECIALTY if fac.hospital else _PRIMARY_SPECIALTY).pick(rng.random())
        qualifications = [
            {
                "identifier": [{"system": CEDULA_SYSTEM, "value": cedula}],
                "code": {"text": "Médico Cirujano"},
                "issuer": {"display": "Secretaría de Educación Pública, Dirección General de Profesiones"},
            }
        ]
        if specialty != "Medicina General":
            qualifications.append({"code": {"text": specialty}})
        self.pending.append(
            {
                "resourceType": "Practitioner",
                "id": pid,
                "identifier": [{"use": "official", "type": {"text": "Cédula profesional"}, "system": CEDULA_SYSTEM, "value": cedula}],
                "active": True,
                "name": [
                    {
                        "use": "official",
                        "family": family,
                        "_family": family_ext,
                        "given": given_parts(given),
                        "prefix": ["Dra." if female else "Dr."],
                    }
                ],
                "gender": "female" if female else "male",
                "qualification": qualifications,
            }
        )
        fac.practitioners[j] = pid
        return pid


# ------------------------------------------------------------------------------------------------
# One patient
# ------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Visit:
    ordinal: int
    seq: int
    kind: str  # "control", "acute", "EMER", "IMP"
    payload: object = None


class _PatientBuilder:
    """Builds the resources of one patient from its own random stream."""

    def __init__(self, registry: _Registry, seed: int, index: int, as_of: date):
        self.reg = registry
        self.rng = random.Random(_sub_seed(seed, "patient", index))
        self.as_of = as_of
        self.out: list[dict] = []

    # -- identity --------------------------------------------------------------------------------

    def build(self) -> list[dict]:
        rng = self.rng
        rnd = rng.random
        getrandbits = rng.getrandbits
        as_of = self.as_of
        as_of_ord = as_of.toordinal()

        female = rnd() < 0.512
        sex = "female" if female else "male"
        self.sex = sex
        group = _AGE_GROUP.pick(rnd())
        age_days = int((group * 5 + rnd() * 5) * _DAYS_PER_YEAR)
        birth_ord = as_of_ord - max(30, age_days)
        birth = date.fromordinal(birth_ord)
        self.birth = birth
        self.birth_ord = birth_ord

        if rnd() < 0.006:
            birth_state = None  # born abroad
            state = _STATE.pick(rnd())
        else:
            birth_state = _STATE.pick(rnd())
            state = birth_state if rnd() < 0.85 else _STATE.pick(rnd())
        self.state = state
        self.tz = state.utc_offset

        first = _SURNAME.pick(rnd())
        second = None if rnd() < 0.005 else _SURNAME.pick(rnd())
        given_table = _FEMALE_GIVEN if female else _MALE_GIVEN
        given = given_table.pick(rnd())
        curp_state = birth_state.renapo if birth_state else NACIDO_EN_EL_EXTRANJERO
        curps = self.reg.curps
        while True:
            n_homoclaves = 10 if birth.year < 2000 else 26
            start = rng.randrange(n_homoclaves)
            for k in range(n_homoclaves):
                curp = build_curp(first, second, given, birth, "M" if female else "H", curp_state, start + k)
                if curp not in curps:
                    break
            else:
                given = given_table.pick(rnd())  # all homoclaves taken: a different given name
                continue
            break
        curps.add(curp)

        inst = _INSTITUTION.pick(rnd())
        self.inst = inst
        reg = self.reg
        n_units = reg.pool_size(state, inst, False)
        self.unit = reg.facility(state, inst, False, rng.randrange(n_units))
        self.hospital_index = rng.randrange(reg.pool_size(state, inst, True))
        self.hospital: _Facility | None = None
        self.family_doctor_index = rng.randrange(_PRACTITIONERS_PER_UNIT)
        family_doctor = reg.practitioner(self.unit, self.family_doctor_index)

        pid = _uuid4(getrandbits)
        self.pid = pid
        self.pref = f"Patient/{pid}"
        family, family_ext = _family(first, second)
        identifiers = [
            {
                "use": "official",
                "type": {"coding": [{"system": V2_0203, "code": "NI", "display": "National unique individual identifier"}], "text": "CURP"},
                "system": CURP_SYSTEM,
                "value": curp,
            }
        ]
        age_now = _age(birth, as_of)
        nss = None
        if inst.key == "IMSS":
            reg_year = min(as_of.year, birth.year + max(0, min(age_now, 16 + rng.randrange(12))))
            body = f"{rng.randrange(1, 100):02d}{reg_year % 100:02d}{birth.year % 100:02d}{rng.randrange(10000):04d}"
            nss = body + nss_check_digit(body)
            identifiers.append(
                {"use": "secondary", "type": {"text": "Número de Seguridad Social (IMSS)"}, "system": NSS_SYSTEM, "value": nss}
            )
        if birth_state is not None:
            birth_coding = {"system": RENAPO_STATE_SYSTEM, "code": birth_state.renapo, "display": birth_state.name}
            birth_place = {"state": birth_state.name, "country": "MX"}
        else:
            birth_coding = {"system": RENAPO_STATE_SYSTEM, "code": NACIDO_EN_EL_EXTRANJERO, "display": "Nacido en el extranjero"}
            birth_place = {"country": _FOREIGN_COUNTRIES[rng.randrange(len(_FOREIGN_COUNTRIES))]}
        lo, hi = state.postal_prefixes[rng.randrange(len(state.postal_prefixes))]
        address_line = [f"{_STREETS[rng.randrange(len(_STREETS))]} {rng.randrange(1, 3000)}"]
        if rnd() < 0.3:
            address_line[0] += f" Int. {rng.randrange(1, 20)}"
        address_line.append(_NEIGHBORHOODS[rng.randrange(len(_NEIGHBORHOODS))])
        patient = {
            "resourceType": "Patient",
            "id": pid,
            "extension": [
                {"url": BIRTH_STATE_URL, "valueCodeableConcept": {"coding": [birth_coding]}},
                {"url": BIRTH_PLACE_URL, "valueAddress": birth_place},
            ],
            "identifier": identifiers,
            "active": True,
            "name": [{"use": "official", "family": family, "_family": family_ext, "given": given_parts(given)}],
            "telecom": [{"system": "phone", "value": f"{rng.randrange(2_000_000_000, 10_000_000_000)}", "use": "mobile"}],
            "gender": sex,
            "birthDate": birth.isoformat(),
            "address": [
                {
                    "use": "home",
                    "type": "physical",
                    "line": address_line,
                    "city": state.capital,
                    "state": state.name,
                    "postalCode": f"{rng.randint(lo, hi):02d}{rng.randrange(1000):03d}",
                    "country": "MX",
                }
            ],
            "generalPractitioner": [{"reference": f"Practitioner/{family_doctor}"}],
            "managingOrganization": {"reference": f"Organization/{self.unit.id}"},
        }
        out = self.out
        out.append(patient)

        # Coverage
        coverage = {
            "resourceType": "Coverage",
            "id": _uuid4(getrandbits),
            "status": "active",
        }
        if inst.key == "PRIVADO":
            insurer_key = reg._insurer_keys[rng.randrange(len(reg._insurer_keys))]
            payor = reg.insurer_ids[insurer_key]
            coverage["identifier"] = [{"system": POLICY_SYSTEM, "value": f"{insurer_key}-{rng.randrange(10**9):09d}"}]
            coverage["type"] = {"coding": [{"system": V3_ACT_CODE, "code": "HIP", "display": "health insurance plan policy"}, _affiliation(inst)], "text": inst.coverage_text}
        else:
            payor = reg.institution_ids[inst.key]
            if nss:
                coverage["identifier"] = [{"system": NSS_SYSTEM, "value": nss}]
            coverage["type"] = {"coding": [{"system": V3_ACT_CODE, "code": "PUBLICPOL", "display": "public healthcare"}, _affiliation(inst)], "text": inst.coverage_text}
        if nss:
            coverage["subscriberId"] = nss
        coverage["beneficiary"] = {"reference": self.pref}
        relationship = "self" if age_now >= 16 or inst.key == "IMSS-BIENESTAR" else "child"
        coverage["relationship"] = {"coding": [{"system": SUBSCRIBER_RELATIONSHIP, "code": relationship}]}
        coverage_start = max(birth_ord, as_of_ord - int(HISTORY_YEARS * _DAYS_PER_YEAR) - rng.randrange(3650))
        coverage["period"] = {"start": date.fromordinal(coverage_start).isoformat()}
        coverage["payor"] = [{"reference": f"Organization/{payor}"}]
        out.append(coverage)

        self._clinical_history(age_now)
        return out

    # -- clinical history --------------------------------------------------------------------------

    def _clinical_history(self, age_now: int) -> None:
        rng = self.rng
        rnd = rng.random
        as_of_ord = self.as_of.toordinal()
        birth_ord = self.birth_ord
        start_ord = max(birth_ord + 1, as_of_ord - int(HISTORY_YEARS * _DAYS_PER_YEAR))
        span = as_of_ord - start_ord  # days with possible events
        years = span / _DAYS_PER_YEAR
        female = self.sex == "female"

        # Chronic conditions, with their onset date and treatment.
        chronic = []  # [onset_ordinal, condition, regimen, condition_id or None]
        for cond in cat.CHRONIC_CONDITIONS:
            if cond.sex is not None and cond.sex != self.sex:
                continue
            p = 0.0
            first_age = None
            for from_age, prob in cond.prevalence:
                if age_now >= from_age:
                    p = prob
                    if first_age is None:
                        first_age = from_age
            if p == 0.0 or rnd() >= p:
                continue
            onset_age = first_age + rnd() * (age_now - first_age)
            onset = min(as_of_ord - 1, birth_ord + int(onset_age * _DAYS_PER_YEAR))
            regimen = _REGIMENS[cond.code].pick(rnd())
            extra = tuple(key for key, prob in cond.adjuncts if rnd() < prob)
            if extra:
                regimen = regimen + extra
            chronic.append([onset, cond, regimen, None])
        chronic.sort(key=lambda c: c[0])
        self.obese = any(c[1].code == "E66.9" for c in chronic)
        self.hypertensive = any(c[1].code == "I10" for c in chronic)

        visits: list[_Visit] = []
        seq = itertools.count()
        adherence = rng.gammavariate(4.0, 0.25)  # mean 1, sd 0.5
        if chronic:
            control_start = max(start_ord, chronic[0][0])
            control_span = as_of_ord - control_start
            rate = max(c[1].visits_per_year for c in chronic) + 1.0 * (len(chronic) - 1)
            rate = min(_MAX_CONTROL_VISITS_PER_YEAR, rate * adherence * _CONTROL_VISIT_SCALE)
            n = _poisson(rng, rate * control_span / _DAYS_PER_YEAR)
            for _ in range(n):
                visits.append(_Visit(control_start + rng.randrange(max(1, control_span)), next(seq), "control"))
        if age_now < 5:
            acute_rate = 1.6
        elif age_now < 15:
            acute_rate = 0.8
        elif age_now < 60:
            acute_rate = 0.6
        else:
            acute_rate = 0.7
        frailty = rng.gammavariate(4.0, 0.25)
        n = _poisson(rng, acute_rate * frailty * _ACUTE_VISIT_SCALE * years)
        for _ in range(n):
            visits.append(_Visit(start_ord + rng.randrange(max(1, span)), next(seq), "acute"))
        for kind, mean, reasons in (
            ("EMER", EMERGENCY_VISITS_PER_PATIENT, cat.EMERGENCY_REASONS),
            ("IMP", ADMISSIONS_PER_PATIENT, cat.ADMISSION_REASONS),
        ):
            for _ in range(_poisson(rng, mean)):
                ordinal = start_ord + rng.randrange(max(1, span))
                age = _age(self.birth, date.fromordinal(ordinal))
                table = _Weighted(
                    (r, r.weights[_age_group(age)])
                    for r in reasons
                    if r.min_age <= age <= r.max_age and r.sex in (None, self.sex)
                )
                if not table.items:
                    continue
                visits.append(_Visit(ordinal, next(seq), kind, table.pick(rnd())))
        visits.sort(key=lambda v: (v.ordinal, v.seq))

        # Patient constants used by notes.
        self.build_z = max(-2.5, min(2.5, rng.gauss(0, 1)))  # body-weight percentile, for the notes
        self.chronic = chronic
        for visit in visits:
            if visit.ordinal < birth_ord + 1:
                continue
            self._visit(visit)

        # Chronic conditions never seen in a visit are still on the problem list.
        for item in chronic:
            if item[3] is None:
                self._condition_chronic(item, None, None, max(item[0], start_ord))

    # -- pieces ------------------------------------------------------------------------------------

    def _dt(self, ordinal: int, minutes: int) -> str:
        """FHIR dateTime/instant at ``minutes`` after midnight of day ``ordinal``, local time of the patient."""
        ordinal += minutes // 1440
        minutes %= 1440
        return f"{date.fromordinal(ordinal).isoformat()}T{minutes // 60:02d}:{minutes % 60:02d}:00{self.tz}"

    def _practitioner_at(self, fac: _Facility) -> str:
        return self.reg.practitioner(fac, self.rng.randrange(len(fac.practitioners)))

    def _condition_chronic(self, item, eref: str | None, author: str | None, recorded_ord: int) -> str:
        onset, cond, _regimen, _ = item
        cid = _uuid4(self.rng.getrandbits)
        item[3] = cid
        res = {
            "resourceType": "Condition",
            "id": cid,
            "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "active", "display": "Active"}]},
            "verificationStatus": {"coding": [{"system": CONDITION_VERIFICATION, "code": "confirmed", "display": "Confirmed"}]},
            "category": [{"coding": [{"system": CONDITION_CATEGORY, "code": "problem-list-item", "display": "Problem List Item"}]}],
            "code": {"coding": [{"system": cat.CIE10_SYSTEM, "code": cond.code, "display": cond.display}], "text": cond.display},
            "subject": {"reference": self.pref},
        }
        if eref:
            res["encounter"] = {"reference": eref}
        res["onsetDateTime"] = date.fromordinal(onset).isoformat()
        res["recordedDate"] = self._dt(recorded_ord, 9 * 60)
        if author:
            res["recorder"] = {"reference": f"Practitioner/{author}"}
        self.out.append(res)
        return cid

    def _condition_episode(self, code: str, display: str, eref: str, author: str, ordinal: int, minutes: int, resolve_days: int) -> str:
        cid = _uuid4(self.rng.getrandbits)
        resolved = ordinal + resolve_days < self.as_of.toordinal()
        res = {
            "resourceType": "Condition",
            "id": cid,
            "clinicalStatus": {
                "coding": [
                    {"system": CONDITION_CLINICAL, "code": "resolved", "display": "Resolved"}
                    if resolved
                    else {"system": CONDITION_CLINICAL, "code": "active", "display": "Active"}
                ]
            },
            "verificationStatus": {"coding": [{"system": CONDITION_VERIFICATION, "code": "confirmed", "display": "Confirmed"}]},
            "category": [{"coding": [{"system": CONDITION_CATEGORY, "code": "encounter-diagnosis", "display": "Encounter Diagnosis"}]}],
            "code": {"coding": [{"system": cat.CIE10_SYSTEM, "code": code, "display": display}], "text": display},
            "subject": {"reference": self.pref},
            "encounter": {"reference": eref},
            "onsetDateTime": date.fromordinal(max(self.birth_ord, ordinal - self.rng.randrange(0, 4))).isoformat(),
        }
        if resolved:
            res["abatementDateTime"] = date.fromordinal(ordinal + resolve_days).isoformat()
        res["recordedDate"] = self._dt(ordinal, minutes)
        res["recorder"] = {"reference": f"Practitioner/{author}"}
        self.out.append(res)
        return cid

    def _visit(self, visit: _Visit) -> None:
        rng = self.rng
        rnd = rng.random
        reg = self.reg
        ordinal = visit.ordinal
        kind = visit.kind
        on = date.fromordinal(ordinal)
        age = _age(self.birth, on)
        female = self.sex == "female"

        if kind in ("control", "acute"):
            fac = self.unit
            if kind == "control" and rnd() < 0.85:
                author = reg.practitioner(fac, self.family_doctor_index)
            else:
                author = self._practitioner_at(fac)
            start_min = 7 * 60 + rng.randrange(12 * 60)
            end_min = start_min + 15 + rng.randrange(20)
            enc_class = "AMB"
        else:
            if self.hospital is None:
                self.hospital = reg.facility(self.state, self.inst, True, self.hospital_index)
            fac = self.hospital
            author = self._practitioner_at(fac)
            start_min = rng.randrange(24 * 60)
            if kind == "EMER":
                end_min = start_min + 60 + rng.randrange(6 * 60)
            else:
                lo, hi = visit.payload.stay_days
                end_min = start_min + rng.randint(lo, hi) * 1440 + rng.randrange(-300, 300)
            enc_class = kind
        eid = _uuid4(rng.getrandbits)
        eref = f"Encounter/{eid}"
        start_dt = self._dt(ordinal, start_min)
        end_dt = self._dt(ordinal, end_min)
        end_ord = ordinal + end_min // 1440
        author_ref = f"Practitioner/{author}"
        org_ref = f"Organization/{fac.id}"

        # What happens in this visit.
        reason_codings = []
        meds: list[tuple[cat.Medication, list | None]] = []  # (medication, chronic entry it treats)
        panels: list[str] = []
        lab_shift: dict[str, tuple[float, float]] = {}
        new_chronic = []
        episode = None  # (code, display, resolve days)
        incapacity_days = None
        branch = "Enfermedad general"
        if kind == "control":
            enc_type = "Consulta de control de enfermedad crónica"
            for item in self.chronic:
                if item[0] > ordinal:
                    break
                cond = item[1]
                reason_codings.append({"system": cat.CIE10_SYSTEM, "code": cond.code, "display": cond.display})
                if item[3] is None:
                    new_chronic.append(item)
                for key in item[2]:
                    meds.append((cat.MEDICATIONS[key], item))
                lab_shift.update(cond.lab_shift)
            if rnd() < _CONTROL_EXTRA_PROBABILITY:
                meds.append((cat.MEDICATIONS[_CONTROL_EXTRA[rng.randrange(len(_CONTROL_EXTRA))]], None))
            if rnd() < _CONTROL_LAB_PROBABILITY:
                for item in self.chronic:
                    if item[0] > ordinal:
                        break
                    for p in item[1].panels:
                        if p not in panels and rnd() < _PANEL_KEEP_PROBABILITY:
                            panels.append(p)
            if not reason_codings:  # visit before any onset: treat it as an acute visit
                kind = "acute"
        if kind == "acute":
            enc_type = "Consulta externa de medicina familiar"
            diag = _ACUTE[_age_group(age) * 2 + (1 if female else 0)].pick(rnd())
            if diag.not_before and on.isoformat() < diag.not_before:
                diag = _ACUTE_FALLBACK
            reason_codings = [{"system": cat.CIE10_SYSTEM, "code": diag.code, "display": diag.display}]
            episode = (diag.code, diag.display, 5 + rng.randrange(10))
            for key in _ACUTE_MEDS[diag.code].pick(rnd()):
                meds.append((cat.MEDICATIONS[key], None))
            if diag.panels and rnd() < diag.lab_probability:
                panels.extend(diag.panels)
            lab_shift.update(diag.lab_shift)
            incapacity_days = diag.incapacity_days
        elif kind in ("EMER", "IMP"):
            reason = visit.payload
            enc_type = "Atención en urgencias" if kind == "EMER" else "Hospitalización"
            reason_codings = [{"system": cat.CIE10_SYSTEM, "code": reason.code, "display": reason.display}]
            episode = (reason.code, reason.display, (end_ord - ordinal) + 7 + rng.randrange(21))
            for key in reason.medications:
                meds.append((cat.MEDICATIONS[key], None))
            if rnd() < 0.85:
                panels.extend(reason.panels)
            lab_shift.update(reason.lab_shift)
            incapacity_days = reason.incapacity_days
            branch = reason.incapacity_branch
        if kind == "control":
            incapacity_days = (1, 3)

        # Encounter
        encounter = {
            "resourceType": "Encounter",
            "id": eid,
            "status": "finished",
            "class": {"system": V3_ACT_CODE, "code": enc_class, "display": _ENCOUNTER_CLASS[enc_class]},
            "type": [{"text": enc_type}],
            "subject": {"reference": self.pref},
            "participant": [
                {
                    "type": [{"coding": [{"system": PARTICIPATION_TYPE, "code": "ATND", "display": "attender"}]}],
                    "individual": {"reference": author_ref},
                }
            ],
            "period": {"start": start_dt, "end": end_dt},
            "reasonCode": [{"coding": [c], "text": c["display"]} for c in reason_codings],
            "serviceProvider": {"reference": org_ref},
        }
        if enc_class == "IMP":
            encounter["hospitalization"] = {
                "admitSource": {"coding": [{"system": ADMIT_SOURCE, "code": "emd", "display": "From accident/emergency department"}]},
                "dischargeDisposition": {"coding": [{"system": DISCHARGE_DISPOSITION, "code": "home", "display": "Home"}]},
            }
        out = self.out
        out.append(encounter)

        # Conditions diagnosed here
        for item in new_chronic:
            self._condition_chronic(item, eref, author, ordinal)
        episode_id = None
        if episode is not None:
            episode_id = self._condition_episode(episode[0], episode[1], eref, author, ordinal, start_min + 5, episode[2])

        # What is prescribed: each medication once, in its pediatric form for children (or not at all).
        prescriptions = []
        seen = set()
        pediatric = age < 12
        for med, item in meds:
            if med.key in seen:
                continue
            seen.add(med.key)
            if pediatric:
                if med.pediatric is None:
                    continue
                text, dosage = med.pediatric
            else:
                text, dosage = med.text, med.dosage
            prescriptions.append((med, text, dosage, item))

        # Progress note
        out.append(
            self._note(kind, ordinal, age, reason_codings, prescriptions, eref, author_ref, org_ref, end_dt, end_ord - ordinal, panels)
        )

        # Prescriptions
        as_of_ord = self.as_of.toordinal()
        pref = self.pref
        authored = self._dt(ordinal, end_min - 3 if kind in ("control", "acute") else start_min + 30)
        for med, text, dosage, item in prescriptions:
            route_code, route_display, route_text = cat.ROUTES[med.route]
            mr = {
                "resourceType": "MedicationRequest",
                "id": _uuid4(rng.getrandbits),
                "status": "active" if end_ord + med.days >= as_of_ord else "completed",
                "intent": "order",
                "medicationCodeableConcept": {
                    "coding": [{"system": cat.RXNORM_SYSTEM, "code": med.rxnorm, "display": med.rxnorm_name}],
                    "text": text,
                },
                "subject": {"reference": pref},
                "encounter": {"reference": eref},
                "authoredOn": authored,
                "requester": {"reference": author_ref},
            }
            if item is not None:
                mr["reasonReference"] = [{"reference": f"Condition/{item[3]}"}]
            elif episode_id is not None:
                mr["reasonReference"] = [{"reference": f"Condition/{episode_id}"}]
            mr["dosageInstruction"] = [
                {
                    "text": dosage,
                    "timing": {"repeat": {"frequency": med.frequency, "period": med.period, "periodUnit": med.period_unit}},
                    "route": {"coding": [{"system": cat.SNOMED_SYSTEM, "code": route_code, "display": route_display}], "text": route_text},
                }
            ]
            mr["dispenseRequest"] = {
                "expectedSupplyDuration": {"value": med.days, "unit": "días", "system": cat.UCUM_SYSTEM, "code": "d"}
            }
            out.append(mr)

        # Lab results
        if panels:
            labs = _LABS[self.sex]
            effective = self._dt(ordinal, start_min)
            issued = self._dt(ordinal, start_min + 180 + rng.randrange(240))
            gauss = rng.gauss
            done = set()
            for p in panels:
                for loinc in cat.LAB_PANELS[p][1]:
                    if loinc in done:
                        continue
                    done.add(loinc)
                    spec = labs[loinc]
                    mean, sd = lab_shift.get(loinc, (spec.mean, spec.sd))
                    value = gauss(mean, sd)
                    if value < spec.minimum:
                        value = spec.minimum
                    value = round(value) if spec.decimals == 0 else round(value, spec.decimals)
                    unit = spec.unit
                    if spec.low is not None and value < spec.low:
                        flag = "L"
                    elif spec.high is not None and value > spec.high:
                        flag = "H"
                    else:
                        flag = "N"
                    ref_range = {}
                    if spec.low is not None:
                        ref_range["low"] = {"value": spec.low, "unit": unit, "system": cat.UCUM_SYSTEM, "code": unit}
                    if spec.high is not None:
                        ref_range["high"] = {"value": spec.high, "unit": unit, "system": cat.UCUM_SYSTEM, "code": unit}
                    out.append(
                        {
                            "resourceType": "Observation",
                            "id": _uuid4(rng.getrandbits),
                            "status": "final",
                            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "laboratory", "display": "Laboratory"}]}],
                            "code": {"coding": [{"system": cat.LOINC_SYSTEM, "code": loinc, "display": spec.display}], "text": spec.text},
                            "subject": {"reference": pref},
                            "encounter": {"reference": eref},
                            "effectiveDateTime": effective,
                            "issued": issued,
                            "performer": [{"reference": org_ref}],
                            "valueQuantity": {"value": value, "unit": unit, "system": cat.UCUM_SYSTEM, "code": unit},
                            "interpretation": [
                                {"coding": [{"system": OBSERVATION_INTERPRETATION, "code": flag, "display": _INTERPRETATION[flag]}]}
                            ],
                            "referenceRange": [ref_range],
                        }
                    )

        # Sick-leave certificate (certificado de incapacidad temporal para el trabajo)
        if (
            incapacity_days is not None
            and self.inst.key in ("IMSS", "ISSSTE")
            and 16 <= age <= 65
            and rnd() < _INCAPACITY_PROBABILITY[kind]
        ):
            lo, hi = incapacity_days
            days = rng.randint(lo, hi)
            if branch == "Maternidad":
                leave_start = ordinal + 1
            else:
                leave_start = end_ord
            leave_end = leave_start + days - 1
            dx = reason_codings[0]
            start_txt = date.fromordinal(leave_start).isoformat()
            end_txt = date.fromordinal(leave_end).isoformat()
            folio = f"{chr(65 + rng.randrange(26))}{chr(65 + rng.randrange(26))}{rng.randrange(1_000_000):06d}"
            text = (
                f"Certificado de incapacidad temporal para el trabajo. Folio {folio}. Ramo de seguro: {branch}. "
                f"Días autorizados: {days}, del {start_txt} al {end_txt}. Diagnóstico: {dx['code']} {dx['display']}."
            )
            out.append(
                {
                    "resourceType": "DocumentReference",
                    "id": _uuid4(rng.getrandbits),
                    "extension": [
                        {"url": INCAPACITY_DAYS_URL, "valuePositiveInt": days},
                        {"url": INCAPACITY_BRANCH_URL, "valueString": branch},
                    ],
                    "identifier": [{"system": INCAPACITY_FOLIO_SYSTEM, "value": folio}],
                    "status": "current",
                    "docStatus": "final",
                    "type": {
                        "coding": [
                            {
                                "system": DOCUMENT_TYPE_SYSTEM,
                                "code": "incapacidad-temporal",
                                "display": "Certificado de incapacidad temporal para el trabajo",
                            }
                        ],
                        "text": "Certificado de incapacidad temporal para el trabajo",
                    },
                    "subject": {"reference": pref},
                    "date": end_dt,
                    "author": [{"reference": author_ref}],
                    "custodian": {"reference": f"Organization/{self.reg.institution_ids[self.inst.key]}"},
                    "description": f"Incapacidad temporal ({branch}) por {_days_text(days)}",
                    "content": [
                        {
                            "attachment": {
                                "contentType": "text/plain; charset=utf-8",
                                "language": "es-MX",
                                "data": base64.b64encode(text.encode()).decode("ascii"),
                                "title": f"Incapacidad {folio}",
                                "creation": end_dt,
                            }
                        }
                    ],
                    "context": {"encounter": [{"reference": eref}], "period": {"start": start_txt, "end": end_txt}},
                }
            )

    def _note(self, kind, ordinal, age, reason_codings, prescriptions, eref, author_ref, org_ref, end_dt, stay_days, panels) -> dict:
        rng = self.rng
        female = self.sex == "female"
        if age >= 1:
            who = f"Paciente {'femenina' if female else 'masculino'} de {age} años"
        else:
            months = max(0, (ordinal - self.birth_ord) // 30)
            who = f"Paciente {'femenina' if female else 'masculino'} de {min(months, 11)} meses"
        if age >= 18:
            weight = (67 if female else 77) + 9 * self.build_z + (18 if self.obese else 0) + rng.gauss(0, 1.5)
        else:
            weight = (3.5 + 2.9 * age) * (1 + 0.12 * self.build_z) + rng.gauss(0, 0.3)
        if age < 12:
            systolic, diastolic = 92 + rng.randrange(18), 55 + rng.randrange(15)
        elif self.hypertensive:
            systolic, diastolic = 128 + rng.randrange(25), 80 + rng.randrange(15)
        else:
            systolic, diastolic = 105 + rng.randrange(25), 65 + rng.randrange(15)
        vitals = f"TA {systolic}/{diastolic} mmHg, FC {62 + rng.randrange(30)} lpm, peso {weight:.1f} kg"
        dx = "; ".join(f"{c['display']} ({c['code']})" for c in reason_codings)
        plan = ", ".join(p[1] for p in prescriptions) if prescriptions else "medidas higiénico-dietéticas"
        if kind == "control":
            course = ("Refiere buen apego al tratamiento.", "Refiere apego parcial a la dieta.", "Asintomático.", "Niega datos de alarma.")[rng.randrange(4)]
            text = f"{who} que acude a consulta de control de {dx}. {course} {vitals}. Plan: continúa con {plan}; cita de control en un mes."
        elif kind == "acute":
            temp = 36.2 + rng.random() * 2.4
            text = (
                f"{who} con cuadro de {_days_text(1 + rng.randrange(6))} de evolución. Temperatura {temp:.1f} °C, {vitals}. "
                f"Diagnóstico: {dx}. Plan: {plan}. Se dan datos de alarma."
            )
        elif kind == "EMER":
            text = f"{who} que ingresa a urgencias. {vitals}. Diagnóstico: {dx}. Manejo: {plan}. Egresa a domicilio por mejoría."
        else:
            text = (
                f"{who} hospitalizado(a) por {dx}; estancia de {_days_text(max(1, stay_days))}. {vitals}. "
                f"Tratamiento: {plan}. Evolución favorable; egreso por mejoría."
            )
        # The sections of NOM-004-SSA3-2012 6.2, the first one the whole narrative (no extra
        # random draws: the rest of the population stays as it was).
        results = (
            "Se solicitan: " + ", ".join(cat.LAB_PANELS[p][0] for p in panels) + "; resultados por reportar."
            if panels
            else "Sin estudios de laboratorio o gabinete en esta consulta."
        )
        outlook = "Bueno para la vida y la función." if kind in ("acute", "control") else "Reservado a evolución; bueno a corto plazo."
        contents = {
            "evolucion": text,
            "signos-vitales": vitals + ".",
            "resultados-estudios": results,
            "diagnosticos": dx + ".",
            "pronostico": outlook,
            "tratamiento": plan + ".",
        }
        doc = DOCUMENT_TYPES["nota-evolucion"]
        return {
            "resourceType": "Composition",
            "id": _uuid4(rng.getrandbits),
            "status": "final",
            "type": {
                "coding": [{"system": cat.LOINC_SYSTEM, "code": "11506-3", "display": "Progress note"}, doc.coding()],
                "text": "Nota de evolución",
            },
            "subject": {"reference": self.pref},
            "encounter": {"reference": eref},
            "date": end_dt,
            "author": [{"reference": author_ref}],
            "title": "Nota de evolución",
            "custodian": {"reference": org_ref},
            "section": [section_narrative(sec, _div(contents[sec.code])) for sec in doc.sections],
        }


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------


class PopulationStream:
    """A position in the population of one seed: the resources of the next patients, in order.

    ``take(n)`` yields what ``generate`` yields for the next ``n`` patients (the paying institutions
    first when at the start, each facility and physician right before the first patient who uses
    it); ``skip(n)`` moves past ``n`` patients without yielding them, their shared resources
    counting as already yielded. So ``skip(a)`` then ``take(b - a)`` yields exactly the part of
    ``generate(b, seed)`` that follows ``generate(a, seed)``: processes can each produce their own
    slice of patients and, together, every resource once. Skipping costs as much as generating
    (what is shared between patients depends on all the patients before), without the output.
    """

    def __init__(self, seed: int, *, as_of: date = DEFAULT_AS_OF):
        self.seed = seed
        self.as_of = as_of
        self.position = 0  # index of the next patient
        self._registry = _Registry(seed)

    def skip(self, patients: int) -> None:
        if patients < 0:
            raise ValueError("patients must be >= 0")
        registry = self._registry
        for index in range(self.position, self.position + patients):
            _PatientBuilder(registry, self.seed, index, self.as_of).build()
            registry.pending.clear()  # the institutions too, on a first skip: yielded before
            self.position = index + 1

    def take(self, patients: int) -> Iterator[dict]:
        """The next ``patients`` patients' resources; the position advances as they are consumed."""
        if patients < 0:
            raise ValueError("patients must be >= 0")
        registry = self._registry
        if registry.pending:
            yield from registry.take_pending()
        for index in range(self.position, self.position + patients):
            resources = _PatientBuilder(registry, self.seed, index, self.as_of).build()
            self.position = index + 1
            if registry.pending:
                yield from registry.take_pending()
            yield from resources


def generate(patients: int, seed: int, *, as_of: date = DEFAULT_AS_OF) -> Iterator[dict]:
    """Yield the FHIR R4 resources of a synthetic population of ``patients`` people, deterministically.

    Every resource references only resources yielded before it (relative references
    ``Patient/<id>``...); ids are UUIDs drawn from the seeded streams. ``generate(n, seed)`` is a prefix
    of ``generate(m, seed)`` for ``n <= m``. Resources are fresh dicts that callers may modify.
    """
    if patients < 0:
        raise ValueError("patients must be >= 0")
    yield from PopulationStream(seed, as_of=as_of).take(patients)


def generate_range(start: int, stop: int, seed: int, *, as_of: date = DEFAULT_AS_OF) -> Iterator[dict]:
    """The resources of patients ``start`` to ``stop - 1``: for ``start > 0``, what ``generate(stop, seed)``
    yields after ``generate(start, seed)``; from 0, ``generate(stop, seed)`` itself (the paying
    institutions included). So the ranges [0, a), [a, b)... [y, n) together give ``generate(n, seed)``,
    every shared facility, physician and institution once. A range starting at ``start`` first replays
    the ``start`` patients before it (see ``PopulationStream``)."""
    if not 0 <= start <= stop:
        raise ValueError("expected 0 <= start <= stop")
    stream = PopulationStream(seed, as_of=as_of)
    stream.skip(start)
    yield from stream.take(stop - start)


def write_ndjson(resources: Iterable[dict], out_dir: Path) -> dict[str, int]:
    """Write resources as FHIR bulk-data NDJSON, one ``<ResourceType>.ndjson`` per type, one resource per
    line (orjson, UTF-8). Creates ``out_dir``; replaces files of the same name. Returns the count per type."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, object] = {}
    counts: dict[str, int] = {}
    dumps = orjson.dumps
    try:
        for resource in resources:
            rtype = resource["resourceType"]
            fh = files.get(rtype)
            if fh is None:
                fh = files[rtype] = open(out_dir / f"{rtype}.ndjson", "wb", buffering=1 << 20)  # noqa: SIM115
                counts[rtype] = 0
            fh.write(dumps(resource) + b"\n")
            counts[rtype] += 1
    finally:
        for fh in files.values():
            fh.close()
    return counts


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m expediente.synth.generator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write NDJSON files here")
    parser.add_argument("--bench", action="store_true", help="only generate, and report the rate")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.out:
        counts = write_ndjson(generate(args.patients, args.seed), args.out)
    else:
        counts: dict[str, int] = {}
        for r in generate(args.patients, args.seed):
            counts[r["resourceType"]] = counts.get(r["resourceType"], 0) + 1
    elapsed = time.perf_counter() - t0
    total = sum(counts.values())
    for rtype, n in sorted(counts.items()):
        print(f"{rtype:20s} {n:10d}  {n / max(1, args.patients):7.2f}/patient")
    print(f"{'total':20s} {total:10d}  {total / max(1, args.patients):7.2f}/patient")
    print(f"{elapsed:.2f} s, {total / elapsed:,.0f} resources/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
