"""Generated patients as transaction Bundles (expediente.synth.bundles): stream split, urn:uuid and
conditional references, literal upserts, determinism and FHIR validity."""

from __future__ import annotations

import copy
import itertools
import re
from urllib.parse import parse_qs

import orjson
import pytest

from expediente.fhir.validation import validate_resource
from expediente.synth import bundles
from expediente.synth.bundles import (
    SHARED_TYPES,
    PatientGroup,
    conditional_reference,
    identifier_condition,
    reference_to,
    referenced,
    split_patients,
    transaction_bundle,
)
from expediente.synth.generator import PopulationStream, generate, generate_range

SEED = 7
PATIENTS = 12


@pytest.fixture(scope="module")
def stream() -> list[dict]:
    return list(generate(PATIENTS, SEED))


@pytest.fixture(scope="module")
def groups(stream) -> list[PatientGroup]:
    return list(split_patients(stream))


@pytest.fixture(scope="module")
def shared(groups) -> list[dict]:
    return [r for g in groups for r in g.shared]


REFERENCE_TEXT = re.compile(rb'"reference":"([^"]*)"')


def references(node) -> list[str]:
    return list(bundles.references(node))


def test_references_finds_every_reference(stream):
    """Checked against the JSON text, so that the tests below do not lean on it unchecked."""
    for res in stream:
        assert sorted(references(res)) == sorted(m.decode() for m in REFERENCE_TEXT.findall(orjson.dumps(res)))
    nested = {"contained": [{"a": [{"reference": "urn:uuid:x"}]}], "reference": 7, "b": {"reference": "Patient/p"}}
    assert sorted(references(nested)) == ["Patient/p", "urn:uuid:x"]


def identifier_of(conditional: str) -> tuple[str, str]:
    """(type, 'system|value') of a conditional reference or (type, ) ifNoneExist query."""
    rtype, _, query = conditional.rpartition("?")
    (value,) = parse_qs(query, strict_parsing=True)["identifier"]
    return rtype, value


def first_identifier(resource: dict) -> str:
    ident = resource["identifier"][0]
    return f"{ident['system']}|{ident['value']}"


# ------------------------------------------------------------------ split_patients


def test_split_patients_groups_each_patient_with_the_shared_resources_it_brings(stream, groups):
    assert len(groups) == PATIENTS
    assert list(itertools.chain.from_iterable(g.shared + g.own for g in groups)) == stream
    for g in groups:
        assert g.own[0]["resourceType"] == "Patient"
        assert all(r["resourceType"] not in SHARED_TYPES | {"Patient"} for r in g.own[1:])
        assert all(r["resourceType"] in SHARED_TYPES for r in g.shared)
    # The stream opens with the paying institutions: they come with the first patient.
    assert len(groups[0].shared) > len(groups[1].shared)


def test_split_patients_of_a_range_and_of_an_empty_take():
    tail = list(split_patients(generate_range(5, 8, SEED)))
    assert [g.own for g in tail] == [g.own for g in list(split_patients(generate(8, SEED)))[5:]]
    institutions = list(split_patients(PopulationStream(SEED).take(0)))
    assert len(institutions) == 1 and institutions[0].own == [] and institutions[0].shared
    with pytest.raises(ValueError, match="before any Patient"):
        list(split_patients([{"resourceType": "Observation", "id": "x"}]))


# ------------------------------------------------------------------ Synthea style (conditional)


def test_record_references_own_resources_by_urn_uuid_and_shared_ones_conditionally(groups, shared):
    by_ref = {reference_to(r): r for g in groups for r in g.shared + g.own}
    for g in groups:
        bundle = transaction_bundle(g.own, shared=shared)
        entries = bundle["entry"]
        assert len(entries) == len(g.own)
        full_urls = [e["fullUrl"] for e in entries]
        assert full_urls == [f"urn:uuid:{r['id']}" for r in g.own]
        assert len(set(full_urls)) == len(full_urls)
        for entry, original in zip(entries, g.own, strict=True):
            assert entry["request"] == {"method": "POST", "url": original["resourceType"]}
            assert "id" not in entry["resource"]
            before, after = references(original), references(entry["resource"])
            assert len(before) == len(after)
            for old, new in zip(before, after, strict=True):
                target = by_ref[old]
                if target["resourceType"] in SHARED_TYPES:
                    assert identifier_of(new) == (target["resourceType"], first_identifier(target))
                else:
                    assert new == f"urn:uuid:{target['id']}" and new in full_urls
        # Complete: no literal Type/id reference is left (to the patient's or to shared resources),
        # and no generated id (it only stands in the urn:uuid fullUrls and references).
        text = orjson.dumps(bundle)
        literal = [m for m in REFERENCE_TEXT.findall(text) if not m.startswith(b"urn:uuid:") and b"?identifier=" not in m]
        assert literal == []
        for r in g.own:
            assert text.count(r["id"].encode()) == text.count(f"urn:uuid:{r['id']}".encode()) >= 1
            assert f"{r['resourceType']}/{r['id']}".encode() not in text


def test_hospital_bundle_conditionally_creates_the_shared_resources(shared):
    bundle = transaction_bundle(include=shared)
    entries = bundle["entry"]
    assert len(entries) == len(shared)
    for entry, original in zip(entries, shared, strict=True):
        assert set(entry) == {"resource", "request"}
        request = entry["request"]
        assert request["method"] == "POST" and request["url"] == original["resourceType"]
        assert request["ifNoneExist"] == identifier_condition(original)
        assert parse_qs(request["ifNoneExist"])["identifier"] == [first_identifier(original)]
        assert "id" not in entry["resource"]
        # A facility's partOf (its institution) is conditional too.
        for ref in references(entry["resource"]):
            assert ref.split("?", 1)[0] in SHARED_TYPES and "?identifier=" in ref
    assert any(references(e["resource"]) for e in entries)
    # The same identifier makes the reference and the condition.
    doctor = next(r for r in shared if r["resourceType"] == "Practitioner")
    assert conditional_reference(doctor) == f"Practitioner?{identifier_condition(doctor)}"


def test_include_is_written_once_and_the_lookup_may_be_a_mapping(groups, shared):
    g = groups[1]
    as_mapping = {reference_to(r): r for r in shared}
    with_list = transaction_bundle(g.own, include=g.shared + g.shared, shared=shared)
    with_mapping = transaction_bundle(g.own, include=g.shared, shared=as_mapping)
    assert with_list == with_mapping
    assert len(with_list["entry"]) == len(g.shared) + len(g.own)


# ------------------------------------------------------------------ literal references and upserts


def test_literal_mode_keeps_shared_references_and_upserts_with_their_ids(groups, stream):
    among = {reference_to(r): r for r in stream if r["resourceType"] in SHARED_TYPES}
    g = groups[3]
    include = referenced(g.own, among)
    bundle = transaction_bundle(g.own, include=include, shared_refs="literal")
    entries = bundle["entry"]
    upserts, creates = entries[: len(include)], entries[len(include) :]
    assert [e["request"] for e in upserts] == [{"method": "PUT", "url": reference_to(r)} for r in include]
    assert [e["resource"] for e in upserts] == include  # ids and references kept
    full_urls = {e["fullUrl"] for e in creates}
    for entry in creates:
        assert "id" not in entry["resource"]
        for ref in references(entry["resource"]):
            if ref.split("/", 1)[0] in SHARED_TYPES:
                assert ref in among and any(reference_to(r) == ref for r in include)
            else:
                assert ref in full_urls


def test_referenced_follows_references_between_shared_resources(stream, groups):
    among = {reference_to(r): r for r in stream if r["resourceType"] in SHARED_TYPES}
    # A patient of a public institution: its unit is partOf the institution, which the Patient
    # itself does not reference.
    patient = next(g.own[0] for g in groups if "partOf" in among[g.own[0]["managingOrganization"]["reference"]])
    unit = among[patient["managingOrganization"]["reference"]]
    expected = {patient["managingOrganization"]["reference"], patient["generalPractitioner"][0]["reference"], unit["partOf"]["reference"]}
    found = referenced([patient], among)
    keys = [reference_to(r) for r in found]
    assert keys == sorted(expected)
    assert found == [among[k] for k in keys]
    # A whole record: each once, sorted; only what is among the candidates.
    keys = [reference_to(r) for r in referenced(groups[0].own, among)]
    assert keys == sorted(set(keys))
    assert referenced(groups[0].own, {}) == []


# ------------------------------------------------------------------ determinism, purity, validity


def test_deterministic_and_inputs_untouched(shared):
    first = list(generate(4, SEED))
    pristine = copy.deepcopy(first)
    groups = list(split_patients(first))
    out = [orjson.dumps(transaction_bundle(g.own, shared=shared)) for g in groups]
    assert first == pristine
    again = [orjson.dumps(transaction_bundle(g.own, shared=shared)) for g in split_patients(generate(4, SEED))]
    assert out == again
    literal = orjson.dumps(transaction_bundle(groups[0].own, include=groups[0].shared, shared_refs="literal"))
    assert literal == orjson.dumps(transaction_bundle(groups[0].own, include=groups[0].shared, shared_refs="literal"))
    assert first == pristine


def test_every_bundle_validates(groups, shared):
    bundles = [transaction_bundle(include=shared)]
    for g in groups:
        bundles.append(transaction_bundle(g.own, shared=shared))
        bundles.append(transaction_bundle(g.own, include=g.shared, shared_refs="literal"))
    for bundle in bundles:
        validate_resource(bundle)
        for entry in bundle["entry"]:
            validate_resource(entry["resource"])
    assert transaction_bundle() == {"resourceType": "Bundle", "type": "transaction"}
    validate_resource(transaction_bundle())


# ------------------------------------------------------------------ misuse


def test_misuse_is_a_value_error(groups, shared):
    g = groups[0]
    with pytest.raises(ValueError, match="in neither include nor shared"):
        transaction_bundle(g.own)  # conditional references need the shared resources
    with pytest.raises(ValueError, match="shared resource: pass it in include"):
        transaction_bundle(g.own + g.shared[:1], shared=shared)
    with pytest.raises(ValueError, match="given twice"):
        transaction_bundle(g.own + g.own[-1:], shared=shared)
    with pytest.raises(ValueError, match="not a shared resource"):
        transaction_bundle(include=g.own[:1])
    with pytest.raises(ValueError, match="shared_refs"):
        transaction_bundle(g.own, shared=shared, shared_refs="direct")
    nameless = {"resourceType": "Organization", "id": "x", "name": "Sin identificador"}
    with pytest.raises(ValueError, match="no identifier"):
        transaction_bundle(include=[nameless])
    # Literal mode needs no lookup.
    assert len(transaction_bundle(g.own, shared_refs="literal")["entry"]) == len(g.own)
