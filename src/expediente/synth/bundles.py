"""Generated patients as FHIR transaction Bundles, the way an exporting system (Synthea) sends them.

The generator (``expediente.synth.generator``) yields a stream in which every patient's own
resources (Patient, Coverage, Encounter, Condition, Composition, MedicationRequest, Observation,
DocumentReference) follow the *shared* resources that patient is the first to use: the paying
institutions, the health facilities (Organization) and their physicians (Practitioner), all of
``SHARED_TYPES``. ``split_patients`` cuts such a stream into one ``PatientGroup`` per patient.

``transaction_bundle`` writes one transaction: the patient's own resources are created (POST, no
id) under ``urn:uuid:<generated id>`` fullUrls, and every reference between them is rewritten to
the urn:uuid, so the server assigns the ids and links them. How the shared resources are referred
to, and written when the Bundle carries them (``include``), is ``shared_refs``:

- ``"conditional"`` (Synthea): a reference ``Practitioner/<id>`` becomes the conditional reference
  ``Practitioner?identifier=<system>|<value>`` (the resource's first identifier, URL-encoded), which
  the server resolves by search; included shared resources are conditional creates (POST with
  ``ifNoneExist`` on that identifier, no id), so sending them again creates nothing. Synthea sends
  them in "hospital" transactions of their own before the patients': ``transaction_bundle(include=...)``.
- ``"literal"``: references to shared resources stay ``Practitioner/<id>``; included ones are
  upserts keeping the generated id (``PUT Practitioner/<id>``). For a store that already holds
  the population those resources belong to (see ``referenced``).

The input resources are never modified; the output only depends on the input and its order.

    groups = list(split_patients(generate(10, seed=1)))
    shared = [r for g in groups for r in g.shared]
    hospital = transaction_bundle(include=shared)
    records = [transaction_bundle(g.own, shared=shared) for g in groups]
"""

from __future__ import annotations

import itertools
from collections import ChainMap
from collections.abc import Iterable, Iterator, Mapping
from typing import Literal, NamedTuple
from urllib.parse import urlencode

SHARED_TYPES = frozenset({"Organization", "Practitioner", "Location"})
"""Resource types shared between patients: referenced from many records, not part of any."""

SharedRefs = Literal["conditional", "literal"]


class PatientGroup(NamedTuple):
    """One patient's part of a generated stream."""

    shared: list[dict]
    """The shared resources the stream yields with this patient: those it is the first to use (and,
    for the first patient of a stream, the paying institutions that open it)."""
    own: list[dict]
    """The patient's own resources, the Patient first."""


def is_shared(resource: dict) -> bool:
    return resource["resourceType"] in SHARED_TYPES


def reference_to(resource: dict) -> str:
    """The literal reference ``Type/id`` to a resource."""
    return f"{resource['resourceType']}/{resource['id']}"


def identifier_condition(resource: dict) -> str:
    """The search that finds a shared resource by its first identifier: ``identifier=<system>|<value>``,
    URL-encoded (the query of a conditional reference or of ``ifNoneExist``)."""
    identifiers = resource.get("identifier") or ()
    if not identifiers or "system" not in identifiers[0] or "value" not in identifiers[0]:
        raise ValueError(f"{reference_to(resource)} has no identifier with system and value to refer to it by")
    ident = identifiers[0]
    return urlencode({"identifier": f"{ident['system']}|{ident['value']}"})


def conditional_reference(resource: dict) -> str:
    """``Type?identifier=<system>|<value>``: a reference the server resolves by search."""
    return f"{resource['resourceType']}?{identifier_condition(resource)}"


def references(node) -> Iterator[str]:
    """Every ``Reference.reference`` in a resource (or any JSON value), contained resources included."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("reference")
            if isinstance(ref, str):
                yield ref
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def split_patients(resources: Iterable[dict]) -> Iterator[PatientGroup]:
    """Cut a generated stream (``generate``, ``generate_range``, ``PopulationStream.take``) into one
    group per patient: the shared resources yielded since the previous patient, then the patient's
    own. Shared resources after the last patient (none in a generated stream) form a last group with
    no own resources."""
    shared: list[dict] = []
    own: list[dict] | None = None
    for res in resources:
        if is_shared(res):
            if own is not None:
                yield PatientGroup(shared, own)
                shared, own = [], None
            shared.append(res)
        elif res["resourceType"] == "Patient":
            if own is not None:
                yield PatientGroup(shared, own)
                shared = []
            own = [res]
        elif own is None:
            raise ValueError(f"{reference_to(res)} comes before any Patient")
        else:
            own.append(res)
    if own is not None or shared:
        yield PatientGroup(shared, own or [])


def referenced(resources: Iterable[dict], among: Mapping[str, dict]) -> list[dict]:
    """The resources of ``among`` (``Type/id`` -> resource) that ``resources`` reference, directly or
    through one another (a facility's ``partOf``), sorted by reference: for instance the facilities
    and physicians a store does not hold yet that a patient's Bundle must carry (``include``)."""
    found: dict[str, dict] = {}
    todo = [ref for res in resources for ref in references(res)]
    while todo:
        ref = todo.pop()
        if ref in among and ref not in found:
            found[ref] = among[ref]
            todo.extend(references(among[ref]))
    return [found[ref] for ref in sorted(found)]


def transaction_bundle(
    own: Iterable[dict] = (),
    *,
    include: Iterable[dict] = (),
    shared: Iterable[dict] | Mapping[str, dict] = (),
    shared_refs: SharedRefs = "conditional",
) -> dict:
    """A transaction Bundle creating ``own`` (a patient's resources) and carrying the shared ``include``.

    Entries: ``include`` first (each shared resource once, in the given order), then ``own`` in
    order. Own resources are POSTed without their id under ``urn:uuid:<id>``; references to them
    become that urn:uuid. References to shared resources, and the entries of ``include``, follow
    ``shared_refs`` (see the module docstring). With ``"conditional"``, every shared resource
    referenced must be in ``include`` or ``shared`` (resources, or a mapping ``Type/id`` ->
    resource), whose identifier makes the reference; ``shared`` is not otherwise used. Raises
    ``ValueError`` when one is missing, when an own resource is shared or given twice, or when an
    included one is not shared. With nothing to write, the Bundle has no ``entry``.
    """
    if shared_refs not in ("conditional", "literal"):
        raise ValueError(f"shared_refs must be 'conditional' or 'literal', not {shared_refs!r}")
    conditional = shared_refs == "conditional"
    carried: dict[str, dict] = {}
    for res in include:
        if not is_shared(res):
            raise ValueError(f"{reference_to(res)} is not a shared resource ({', '.join(sorted(SHARED_TYPES))})")
        carried.setdefault(reference_to(res), res)
    own = list(own)
    mapping: dict[str, str] = {}
    for res in own:
        key = reference_to(res)
        if is_shared(res):
            raise ValueError(f"{key} is a shared resource: pass it in include")
        if key in mapping:
            raise ValueError(f"{key} is given twice")
        mapping[key] = f"urn:uuid:{res['id']}"
    if conditional:
        known = shared if isinstance(shared, Mapping) else {reference_to(r): r for r in shared}
        lookup = ChainMap(carried, known)
        for res in itertools.chain(carried.values(), own):
            for ref in references(res):
                if ref not in mapping and ref.partition("/")[0] in SHARED_TYPES:
                    target = lookup.get(ref)
                    if target is None:
                        raise ValueError(f"{reference_to(res)} references {ref}, which is in neither include nor shared")
                    mapping[ref] = conditional_reference(target)

    entries = []
    for key, res in carried.items():
        if conditional:
            body = _rewritten(_without_id(res), mapping)
            request = {"method": "POST", "url": res["resourceType"], "ifNoneExist": identifier_condition(res)}
        else:
            body = _rewritten(res, mapping)
            request = {"method": "PUT", "url": key}
        entries.append({"resource": body, "request": request})
    for res in own:
        body = _rewritten(_without_id(res), mapping)
        entries.append({"fullUrl": mapping[reference_to(res)], "resource": body, "request": {"method": "POST", "url": res["resourceType"]}})
    bundle = {"resourceType": "Bundle", "type": "transaction"}
    if entries:  # FHIR has no empty lists
        bundle["entry"] = entries
    return bundle


# ------------------------------------------------------------------ helpers


def _without_id(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k != "id"}


def _rewritten(node, mapping: Mapping[str, str]):
    """A deep copy of ``node`` (a JSON value) with every Reference.reference found in ``mapping`` replaced."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "reference" and isinstance(v, str):
                out[k] = mapping.get(v, v)
            elif isinstance(v, (dict, list)):
                out[k] = _rewritten(v, mapping)
            else:
                out[k] = v
        return out
    if isinstance(node, list):
        return [_rewritten(v, mapping) for v in node]
    return node
