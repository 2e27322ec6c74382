"""Synthetic population generator (expediente.synth): determinism, shape, ratios and FHIR correctness."""

from __future__ import annotations

import base64
import itertools
import re
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import date

import orjson
import pytest

from expediente.mx.curp import build_curp, is_valid_curp
from expediente.mx.states import CURP_STATE_CODES, RENAPO_CODES
from expediente.synth import generator as gen
from expediente.synth.catalogs import CIE10_SYSTEM, LAB_TESTS, LOINC_SYSTEM, MEDICATIONS, RXNORM_SYSTEM, UCUM_SYSTEM
from expediente.synth.generator import DEFAULT_AS_OF, generate, write_ndjson

POPULATION = 1000
SEED = 2024

EXPECTED_TYPES = {
    "Organization",
    "Practitioner",
    "Patient",
    "Coverage",
    "Encounter",
    "Condition",
    "Composition",
    "MedicationRequest",
    "Observation",
    "DocumentReference",
}

DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}")


@pytest.fixture(scope="module")
def population() -> list[dict]:
    return list(generate(POPULATION, SEED))


@pytest.fixture(scope="module")
def counts(population) -> Counter:
    return Counter(r["resourceType"] for r in population)


def _references(node, path=""):
    """(path, reference) for every Reference.reference inside a resource."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield path, value
            else:
                yield from _references(value, f"{path}.{key}")
    elif isinstance(node, list):
        for item in node:
            yield from _references(item, path)


def _serialize(resources) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in resources)


# --- determinism ---------------------------------------------------------------------------------


def test_same_seed_same_bytes():
    assert _serialize(generate(40, 7)) == _serialize(generate(40, 7))


def test_same_bytes_in_another_process():
    """No dependence on hash randomization (set order) or on anything but (patients, seed)."""
    import hashlib
    import os
    import subprocess
    import sys

    code = (
        "import hashlib, orjson\n"
        "from expediente.synth.generator import generate\n"
        "h = hashlib.sha256()\n"
        "for r in generate(30, 99): h.update(orjson.dumps(r))\n"
        "print(h.hexdigest())\n"
    )
    here = hashlib.sha256(_serialize(generate(30, 99)).replace(b"\n", b"")).hexdigest()
    for hash_seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
        assert out.strip() == here


def test_other_seed_other_population():
    a = [r for r in generate(5, 7) if r["resourceType"] == "Patient"]
    b = [r for r in generate(5, 8) if r["resourceType"] == "Patient"]
    assert [p["id"] for p in a] != [p["id"] for p in b]


def test_smaller_population_is_a_prefix():
    small = list(generate(15, 7))
    big = list(generate(60, 7))
    assert _serialize(big[: len(small)]) == _serialize(small)
    assert sum(r["resourceType"] == "Patient" for r in small) == 15


def test_slices_concatenate_to_the_full_run():
    """Patients [0, a), [a, b), [b, n) generated separately give the full run: same resources in the
    same order, each shared facility, physician and institution exactly once (parallel loading)."""
    n = 90
    full = list(generate(n, 7))
    parts = [list(gen.generate_range(lo, hi, 7)) for lo, hi in ((0, 25), (25, 26), (26, 60), (60, n))]
    assert _serialize(itertools.chain.from_iterable(parts)) == _serialize(full)
    shared = [r["id"] for part in parts for r in part if r["resourceType"] in ("Organization", "Practitioner")]
    assert len(shared) == len(set(shared)) > 0
    # The institutions belong to the slice that starts at 0; a later slice starts with what it shares.
    payors = [r["id"] for r in generate(0, 7)]
    assert [r["id"] for r in parts[0][: len(payors)]] == payors
    assert not set(payors) & {r["id"] for part in parts[1:] for r in part}
    assert sum(r["resourceType"] == "Patient" for r in parts[2]) == 34


def test_population_stream_skip_and_take():
    stream = gen.PopulationStream(7)
    head = list(stream.take(10))
    stream.skip(15)
    assert stream.position == 25
    tail = list(stream.take(0)) + list(stream.take(5))
    assert stream.position == 30
    assert _serialize(head) == _serialize(generate(10, 7))
    assert _serialize(tail) == _serialize(gen.generate_range(25, 30, 7))
    with pytest.raises(ValueError):
        list(gen.generate_range(5, 4, 7))


def test_as_of_moves_dates_not_identity():
    a = [r for r in generate(3, 7) if r["resourceType"] == "Patient"]
    b = [r for r in generate(3, 7, as_of=date(2020, 1, 1)) if r["resourceType"] == "Patient"]
    assert [p["id"] for p in a] == [p["id"] for p in b]
    assert [p["birthDate"] for p in a] != [p["birthDate"] for p in b]


def test_zero_patients_gives_only_payors():
    resources = list(generate(0, 1))
    assert resources and {r["resourceType"] for r in resources} == {"Organization"}


def test_uuid4_helper_matches_uuid_module():
    import random

    a, b = random.Random(5), random.Random(5)
    for _ in range(50):
        assert gen._uuid4(a.getrandbits) == str(uuid.UUID(int=b.getrandbits(128), version=4))


# --- shape and referential order -----------------------------------------------------------------


def test_resource_types(counts):
    assert set(counts) == EXPECTED_TYPES
    assert counts["Patient"] == POPULATION
    assert counts["Coverage"] == POPULATION


def test_ids_unique_and_uuid4(population):
    ids = [(r["resourceType"], r["id"]) for r in population]
    assert len(set(ids)) == len(ids)
    assert len({i for _, i in ids}) == len(ids)
    for _, rid in ids[:2000]:
        assert uuid.UUID(rid).version == 4 and str(uuid.UUID(rid)) == rid


def test_every_reference_points_backwards(population):
    seen: set[str] = set()
    n_refs = 0
    for r in population:
        for path, ref in _references(r):
            assert re.fullmatch(r"(Patient|Practitioner|Organization|Encounter|Condition)/[0-9a-f-]{36}", ref), (path, ref)
            assert ref in seen, f"{r['resourceType']}/{r['id']}{path} -> {ref} not yielded before"
            n_refs += 1
        seen.add(f"{r['resourceType']}/{r['id']}")
    assert n_refs > len(population)


def test_clinical_resources_point_to_their_patient(population):
    patient = None
    for r in population:
        rtype = r["resourceType"]
        if rtype == "Patient":
            patient = f"Patient/{r['id']}"
        elif rtype == "Coverage":
            assert r["beneficiary"]["reference"] == patient
        elif rtype not in ("Organization", "Practitioner"):
            assert r["subject"]["reference"] == patient


# --- ratios --------------------------------------------------------------------------------------


def _per_patient(counts, rtype):
    return counts[rtype] / POPULATION


@pytest.mark.parametrize(
    ("rtype", "target", "tolerance"),
    [
        ("Composition", 13, 0.20),
        ("MedicationRequest", 33, 0.25),
        ("Observation", 22, 0.25),
        ("DocumentReference", 1.3, 0.25),
    ],
)
def test_ratios(counts, rtype, target, tolerance):
    ratio = _per_patient(counts, rtype)
    assert abs(ratio - target) <= tolerance * target, f"{rtype}: {ratio:.2f} per patient, expected ~{target}"


def test_encounter_classes(population):
    classes = Counter(r["class"]["code"] for r in population if r["resourceType"] == "Encounter")
    assert set(classes) == {"AMB", "EMER", "IMP"}
    assert 0.10 <= classes["EMER"] / POPULATION <= 0.20
    assert 0.025 <= classes["IMP"] / POPULATION <= 0.08
    notes = sum(1 for r in population if r["resourceType"] == "Composition")
    assert notes == sum(classes.values())  # one progress note per encounter


def test_total_per_patient(counts):
    per_patient = sum(counts.values()) / POPULATION
    assert 70 <= per_patient <= 105


# --- patients ------------------------------------------------------------------------------------


def _patients(population):
    return [r for r in population if r["resourceType"] == "Patient"]


def _ext(resource, url):
    return next(e for e in resource.get("extension", []) if e["url"] == url)


def test_curps_valid_unique_and_match_patient_data(population):
    curps = []
    for p in _patients(population):
        curp = next(i["value"] for i in p["identifier"] if i["system"] == gen.CURP_SYSTEM)
        curps.append(curp)
        assert is_valid_curp(curp), curp
        born = date.fromisoformat(p["birthDate"])
        assert curp[4:10] == born.strftime("%y%m%d")
        assert curp[10] == {"male": "H", "female": "M"}[p["gender"]]
        birth_state = _ext(p, gen.BIRTH_STATE_URL)["valueCodeableConcept"]["coding"][0]["code"]
        assert birth_state in CURP_STATE_CODES and curp[11:13] == birth_state
        name = p["name"][0]
        fam = {e["url"]: e["valueString"] for e in name["_family"]["extension"]}
        rebuilt = build_curp(
            fam[gen.FATHERS_FAMILY_URL],
            fam.get(gen.MOTHERS_FAMILY_URL),
            " ".join(name["given"]),
            born,
            curp[10],
            curp[11:13],
            curp[16],
        )
        assert rebuilt == curp
    assert len(set(curps)) == len(curps) == POPULATION


def test_names_two_surnames_with_accents(population):
    patients = _patients(population)
    two = 0
    for p in patients:
        name = p["name"][0]
        assert name["use"] == "official" and name["given"]
        fam = {e["url"]: e["valueString"] for e in name["_family"]["extension"]}
        father = fam[gen.FATHERS_FAMILY_URL]
        mother = fam.get(gen.MOTHERS_FAMILY_URL)
        assert name["family"] == (f"{father} {mother}" if mother else father)
        two += mother is not None
    assert two >= 0.98 * len(patients)
    text = " ".join(" ".join([p["name"][0]["family"], *p["name"][0]["given"]]) for p in patients)
    for ch in "áéíóúñÁ":
        assert ch in text, ch
    assert "ñ" in text and any(s in text for s in ("Peña", "Núñez", "Ibáñez", "Muñoz", "Zúñiga"))


def test_patient_demographics(population):
    as_of = DEFAULT_AS_OF
    genders = Counter()
    for p in _patients(population):
        genders[p["gender"]] += 1
        born = date.fromisoformat(p["birthDate"])
        assert date(1900, 1, 1) <= born < as_of
        address = p["address"][0]
        assert address["country"] == "MX" and address["state"] and re.fullmatch(r"\d{5}", address["postalCode"])
        place = _ext(p, gen.BIRTH_PLACE_URL)["valueAddress"]
        assert place["country"]
        assert p["generalPractitioner"][0]["reference"].startswith("Practitioner/")
        assert p["managingOrganization"]["reference"].startswith("Organization/")
    assert set(genders) == {"male", "female"}
    assert 0.4 < genders["female"] / POPULATION < 0.6


def _luhn_ok(nss: str) -> bool:
    total = 0
    for i, ch in enumerate(nss[:10]):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return (10 - total % 10) % 10 == int(nss[10])


def test_coverage_and_nss(population):
    orgs = {r["id"]: r for r in population if r["resourceType"] == "Organization"}
    payors = Counter()
    for i, r in enumerate(population):
        if r["resourceType"] != "Coverage":
            continue
        patient = population[i - 1]
        assert patient["resourceType"] == "Patient"
        assert r["status"] == "active"
        payor = orgs[r["payor"][0]["reference"].split("/")[1]]
        key = payor["identifier"][0]["value"]
        payors[key] += 1
        nss = [ident["value"] for ident in patient["identifier"] if ident["system"] == gen.NSS_SYSTEM]
        if key == "IMSS":
            assert len(nss) == 1 and re.fullmatch(r"\d{11}", nss[0]) and _luhn_ok(nss[0])
            assert r["subscriberId"] == nss[0]
        else:
            assert not nss
    assert {"IMSS", "ISSSTE", "IMSS-BIENESTAR"} <= set(payors)
    assert payors["IMSS"] > payors["IMSS-BIENESTAR"] > payors["ISSSTE"]
    assert sum(v for k, v in payors.items() if k not in ("IMSS", "ISSSTE", "IMSS-BIENESTAR")) > 0  # private


# --- shared resources ----------------------------------------------------------------------------


def test_facilities_and_practitioners(population):
    clues_values = []
    institutions = 0
    for r in population:
        if r["resourceType"] == "Organization":
            assert r["name"]
            ident = r["identifier"][0]
            if ident["system"] == gen.CLUES_SYSTEM:
                assert re.fullmatch(r"[A-Z]{2}(IMS|IST|IMB|SMP)\d{6}", ident["value"]), ident
                assert ident["value"][:2] in RENAPO_CODES
                clues_values.append(ident["value"])
            else:
                institutions += 1
        elif r["resourceType"] == "Practitioner":
            ced = r["identifier"][0]
            assert ced["system"] == gen.CEDULA_SYSTEM and re.fullmatch(r"\d{7,8}", ced["value"])
            assert r["name"][0]["prefix"][0] in ("Dr.", "Dra.")
    assert institutions == 3 + 5
    assert len(clues_values) == len(set(clues_values)) > 30
    cedulas = [r["identifier"][0]["value"] for r in population if r["resourceType"] == "Practitioner"]
    assert len(cedulas) == len(set(cedulas))


# --- FHIR correctness (required value sets, types, dates) -----------------------------------------


def test_status_codes_and_required_elements(population):
    for r in population:
        t = r["resourceType"]
        if t == "Observation":
            assert r["status"] == "final"
            assert r["category"][0]["coding"][0]["code"] == "laboratory"
            coding = r["code"]["coding"][0]
            assert coding["system"] == LOINC_SYSTEM and coding["code"] in LAB_TESTS
            q = r["valueQuantity"]
            assert isinstance(q["value"], (int, float)) and q["value"] > 0
            assert q["system"] == UCUM_SYSTEM and q["code"] == LAB_TESTS[coding["code"]].unit
            rr = r["referenceRange"][0]
            assert "low" in rr or "high" in rr
            assert r["interpretation"][0]["coding"][0]["code"] in ("H", "L", "N")
        elif t == "Encounter":
            assert r["status"] == "finished"
            assert r["class"]["system"] == gen.V3_ACT_CODE
            assert r["period"]["start"] <= r["period"]["end"]
        elif t == "Condition":
            assert r["clinicalStatus"]["coding"][0]["system"] == gen.CONDITION_CLINICAL
            assert r["clinicalStatus"]["coding"][0]["code"] in ("active", "resolved")
            if "abatementDateTime" in r:
                assert r["clinicalStatus"]["coding"][0]["code"] == "resolved"
            assert r["code"]["coding"][0]["system"] == CIE10_SYSTEM
            assert re.fullmatch(r"[A-Z]\d{2}(\.\d)?", r["code"]["coding"][0]["code"])
        elif t == "Composition":
            assert r["status"] == "final"
            assert r["type"]["coding"][0] == {"system": LOINC_SYSTEM, "code": "11506-3", "display": "Progress note"}
            assert r["title"] and r["author"] and r["encounter"]
        elif t == "MedicationRequest":
            assert r["intent"] == "order" and r["status"] in ("active", "completed")
            coding = r["medicationCodeableConcept"]["coding"][0]
            assert coding["system"] == RXNORM_SYSTEM and coding["code"] in {m.rxnorm for m in MEDICATIONS.values()}
            assert r["dosageInstruction"][0]["text"]
        elif t == "DocumentReference":
            assert r["status"] == "current"
            assert "incapacidad" in r["type"]["text"].lower()
            attachment = r["content"][0]["attachment"]
            assert "Certificado de incapacidad" in base64.b64decode(attachment["data"]).decode("utf-8")
        elif t == "Coverage":
            assert r["status"] == "active" and r["beneficiary"] and r["payor"]


def test_status_mix(population):
    mr = Counter(r["status"] for r in population if r["resourceType"] == "MedicationRequest")
    assert mr["completed"] > mr["active"] > 0
    cond = Counter(r["clinicalStatus"]["coding"][0]["code"] for r in population if r["resourceType"] == "Condition")
    assert cond["active"] > 0 and cond["resolved"] > 0


def test_narratives_are_xhtml(population):
    for r in population[:20000]:
        if r["resourceType"] == "Composition":
            div = r["section"][0]["text"]["div"]
            root = ET.fromstring(div)
            assert root.tag == "{http://www.w3.org/1999/xhtml}div"
            assert "".join(root.itertext()).startswith("Paciente")


def test_dates_after_birth_and_recent(population):
    as_of = DEFAULT_AS_OF.isoformat()
    window_start = date(DEFAULT_AS_OF.year - gen.HISTORY_YEARS, DEFAULT_AS_OF.month, DEFAULT_AS_OF.day).isoformat()
    birth = None
    for r in population:
        t = r["resourceType"]
        if t == "Patient":
            birth = r["birthDate"]
            continue
        stamps = []
        if t == "Encounter":
            stamps = [r["period"]["start"], r["period"]["end"]]
        elif t == "Observation":
            stamps = [r["effectiveDateTime"], r["issued"]]
        elif t == "MedicationRequest":
            stamps = [r["authoredOn"]]
        elif t == "Composition":
            stamps = [r["date"]]
        elif t == "DocumentReference":
            stamps = [r["date"]]
        elif t == "Condition":
            stamps = [r["recordedDate"]]
            assert DATE_RE.fullmatch(r["onsetDateTime"]) and r["onsetDateTime"] >= birth
        for s in stamps:
            assert DATETIME_RE.fullmatch(s), (t, s)
            day = s[:10]
            assert birth <= day, (t, s, birth)
            assert window_start <= day, (t, s)
            # an inpatient stay or a lab result may end a few days after the cut-off date
            assert day <= (as_of if t not in ("Encounter", "Composition", "Observation", "DocumentReference") else "2026-02-01"), (t, s)


# --- NDJSON --------------------------------------------------------------------------------------


def test_write_ndjson(tmp_path):
    counts = write_ndjson(generate(25, 3), tmp_path / "a")
    expected = Counter(r["resourceType"] for r in generate(25, 3))
    assert counts == dict(expected)
    for rtype, n in counts.items():
        lines = (tmp_path / "a" / f"{rtype}.ndjson").read_bytes().splitlines()
        assert len(lines) == n
        assert all(orjson.loads(line)["resourceType"] == rtype for line in lines)
    write_ndjson(generate(25, 3), tmp_path / "b")
    for rtype in counts:
        assert (tmp_path / "a" / f"{rtype}.ndjson").read_bytes() == (tmp_path / "b" / f"{rtype}.ndjson").read_bytes()


# --- schema validation (when the server's validator is available) --------------------------------


def test_resources_pass_server_validation():
    validation = pytest.importorskip("expediente.fhir.validation", reason="expediente.fhir.validation not available yet")
    seen = Counter()
    for r in generate(200, 5):
        validation.validate_resource(r)  # raises ResourceInvalid with the issues
        seen[r["resourceType"]] += 1
    assert set(seen) == EXPECTED_TYPES
