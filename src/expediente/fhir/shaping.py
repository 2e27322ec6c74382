"""Result shaping: the FHIR R4 ``_summary`` and ``_elements`` parameters.

``shape`` reduces a stored resource (JSON bytes) to what a client asked for:

- ``_summary=true``: the elements the R4 definition marks ``isSummary`` (for Patient:
  identifier, name, gender, birthDate...; never ``text``), plus ``resourceType``, ``id``,
  ``meta`` and the mandatory top-level elements;
- ``_summary=text``: ``text``, ``id``, ``meta``, ``resourceType`` and the mandatory top-level
  elements;
- ``_summary=data``: everything except ``text``;
- ``_summary=false`` (or absent): everything;
- ``_summary=count``: returns no resources; the search layer handles it, ``shape`` refuses it;
- ``_elements=a,b``: the listed top-level elements plus ``resourceType``, ``id``, ``meta`` and
  the mandatory ones. Names are bare (``code``) or prefixed with a type (``Observation.code``,
  which applies only to Observation resources, so one list can serve a search with
  ``_include``); a choice element is named by its base (``value`` or ``value[x]``, meaning every
  ``valueXxx``) or by its JSON name (``valueQuantity``). Unknown names are simply absent.

When both are given, both filters apply: an element is returned if both would return it (the
always-kept ones excepted). Primitive extensions (``_birthDate``) follow their element.
A shaped resource carries the tag ``SUBSETTED`` (system
``http://terminology.hl7.org/CodeSystem/v3-ObservationValue``) in ``meta.tag``, added once, so
that a client does not mistake it for the complete resource (e.g. to update it).

The summary and mandatory elements come from ``definitions/summary_elements.json``, derived
from the R4 StructureDefinitions by ``tools/derive_summary_elements.py``. A type the file does
not cover is returned unchanged (nothing is known about it to shape it safely).

``parse_summary`` / ``parse_elements`` validate the raw query values and raise ``ValueError``
with a Spanish message (for an OperationOutcome) when they are not acceptable.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

__all__ = [
    "SUBSETTED_SYSTEM",
    "SUBSETTED_CODE",
    "SUMMARY_VALUES",
    "parse_summary",
    "parse_elements",
    "shape",
    "summary_elements",
    "mandatory_elements",
]

DEFINITIONS = Path(__file__).resolve().parent / "definitions" / "summary_elements.json"

SUBSETTED_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
SUBSETTED_CODE = "SUBSETTED"
SUBSETTED_TAG = {"system": SUBSETTED_SYSTEM, "code": SUBSETTED_CODE, "display": "subsetted"}

SUMMARY_VALUES: tuple[str, ...] = ("true", "text", "data", "count", "false")

# Always returned, whatever was asked.
ALWAYS: frozenset[str] = frozenset({"resourceType", "id", "meta"})

# Type prefixes that apply to every resource type (Resource.id, DomainResource.text).
GENERIC_PREFIXES: frozenset[str] = frozenset({"Resource", "DomainResource"})

MAX_ELEMENTS = 200

# "code", "value[x]", "Observation.code", "Observation.value[x]"
_ELEMENT_RE = re.compile(r"(?:([A-Z][A-Za-z]{0,63})\.)?([a-z][A-Za-z0-9]{0,63})(\[x\])?")


# ---------------------------------------------------------------------------- definitions


@dataclass(frozen=True, slots=True)
class _TypeInfo:
    summary: frozenset[str]
    mandatory: frozenset[str]
    choices: dict[str, tuple[str, ...]]


@functools.cache
def _types() -> dict[str, _TypeInfo]:
    doc = json.loads(DEFINITIONS.read_text(encoding="utf-8"))
    return {
        t: _TypeInfo(
            summary=frozenset(entry["summary"]),
            mandatory=frozenset(entry["mandatory"]),
            choices={k: tuple(v) for k, v in entry["choices"].items()},
        )
        for t, entry in doc["resources"].items()
    }


def summary_elements(res_type: str) -> frozenset[str]:
    """JSON names of the top-level elements R4 marks ``isSummary`` for ``res_type`` (empty if unknown)."""
    info = _types().get(res_type)
    return info.summary if info else frozenset()


def mandatory_elements(res_type: str) -> frozenset[str]:
    """JSON names of the top-level elements with ``min >= 1`` for ``res_type`` (empty if unknown)."""
    info = _types().get(res_type)
    return info.mandatory if info else frozenset()


# ---------------------------------------------------------------------------- parameters


def _single(value: str | Iterable[str], param: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    values = list(value)
    if not all(isinstance(v, str) for v in values):
        raise ValueError(f"Valor no válido para {param}")
    return values


def parse_summary(value: str | Iterable[str]) -> str:
    """Validate a ``_summary`` value: one of ``true``, ``text``, ``data``, ``count``, ``false``.

    Accepts the raw string or the list of values of a repeated parameter (all equal).
    """
    values = {v.strip() for v in _single(value, "_summary")}
    if len(values) != 1:
        if not values:
            raise ValueError("El parámetro _summary no puede estar vacío")
        raise ValueError("El parámetro _summary aparece varias veces con valores distintos: "
                         + ", ".join(f"'{v}'" for v in sorted(values)))
    (v,) = values
    if not v:
        raise ValueError("El parámetro _summary no puede estar vacío; valores permitidos: "
                         + ", ".join(SUMMARY_VALUES))
    if v not in SUMMARY_VALUES:
        shown = v if len(v) <= 40 else v[:40] + "…"
        raise ValueError(f"Valor no válido para _summary: '{shown}'; valores permitidos: "
                         + ", ".join(SUMMARY_VALUES))
    return v


def parse_elements(value: str | Iterable[str]) -> list[str]:
    """Validate an ``_elements`` value (comma-separated; a repeated parameter adds to the list).

    Returns the names without duplicates, in order, normalized: ``value[x]`` -> ``value``,
    ``Observation.value[x]`` -> ``Observation.value``; other names as given (``code``,
    ``Observation.code``, ``valueQuantity``). Empty items between commas are ignored, but at
    least one name is required. Only top-level elements can be named (no ``name.family``).
    """
    names: list[str] = []
    seen: set[str] = set()
    for raw in _single(value, "_elements"):
        for item in raw.split(","):
            item = item.strip()
            if not item:
                continue
            m = _ELEMENT_RE.fullmatch(item)
            if m is None:
                shown = item if len(item) <= 60 else item[:60] + "…"
                raise ValueError(
                    f"Nombre de elemento no válido en _elements: '{shown}'; use elementos de primer "
                    "nivel del recurso, por ejemplo 'identifier', 'name' o 'Patient.name'"
                )
            prefix, name, _ = m.groups()
            norm = f"{prefix}.{name}" if prefix else name
            if norm not in seen:
                seen.add(norm)
                names.append(norm)
    if not names:
        raise ValueError("El parámetro _elements no puede estar vacío; indique al menos un elemento")
    if len(names) > MAX_ELEMENTS:
        raise ValueError(f"El parámetro _elements admite a lo más {MAX_ELEMENTS} elementos")
    return names


# ---------------------------------------------------------------------------- shaping


def _requested(info: _TypeInfo, res_type: str, elements: tuple[str, ...]) -> set[str]:
    """The JSON names ``elements`` asks for on ``res_type`` (no validation: unknown are ignored)."""
    out: set[str] = set()
    for item in elements:
        prefix, dot, name = item.strip().rpartition(".")
        if dot and prefix != res_type and prefix not in GENERIC_PREFIXES:
            continue  # for another resource type
        if name.endswith("[x]"):
            name = name[:-3]
        choice = info.choices.get(name)
        if choice:
            out.update(choice)
        elif name:
            out.add(name)
    return out


@functools.lru_cache(maxsize=1024)
def _plan(res_type: str, summary: str | None, elements: tuple[str, ...] | None) -> tuple[bool, frozenset[str]] | None:
    """What to keep: ``(True, names)`` keep only ``names``; ``(False, names)`` drop ``names``.

    ``None``: leave the resource unchanged (a type without definitions).
    """
    info = _types().get(res_type)
    if info is None:
        return None
    base = ALWAYS | info.mandatory
    # each filter: (keep_only, names)
    if summary == "true":
        by_summary: tuple[bool, frozenset[str]] = (True, info.summary)
    elif summary == "text":
        by_summary = (True, frozenset({"text"}))
    elif summary == "data":
        by_summary = (False, frozenset({"text"}))
    else:
        by_summary = (False, frozenset())
    if elements is None:
        keep_only, names = by_summary
        return (True, base | names) if keep_only else (False, names - base)
    requested = _requested(info, res_type, elements)
    keep_only, names = by_summary
    chosen = (requested & names) if keep_only else (requested - names)
    return True, base | chosen


def _wants_shaping(summary: str | None, elements: list[str] | None) -> bool:
    return elements is not None or (summary is not None and summary != "false")


def shape(body: bytes, *, summary: str | None, elements: list[str] | None, res_type: str) -> bytes:
    """Apply ``_summary`` / ``_elements`` to one resource's JSON.

    ``summary``: a value from ``parse_summary`` or ``None``; ``elements``: a list from
    ``parse_elements`` or ``None``. Without shaping (``summary`` None or ``"false"`` and
    ``elements`` None) ``body`` itself is returned, unparsed. ``summary="count"`` raises
    ``ValueError`` (it returns no resources; the search handles it).
    """
    if summary is not None and summary not in SUMMARY_VALUES:
        raise ValueError(f"Valor no válido para _summary: '{summary}'")
    if summary == "count":
        raise ValueError("_summary=count no devuelve recursos; lo resuelve la búsqueda, no el recorte de recursos")
    if not _wants_shaping(summary, elements):
        return body
    plan = _plan(res_type, summary, tuple(elements) if elements is not None else None)
    if plan is None:
        return body
    keep_only, names = plan
    resource = orjson.loads(body)
    if not isinstance(resource, dict):
        raise ValueError("El contenido a recortar no es un recurso FHIR (objeto JSON)")
    out: dict = {}
    for key, value in resource.items():
        name = key[1:] if key[:1] == "_" else key
        if (name in names) is keep_only:
            out[key] = value
    _tag_subsetted(out)
    return orjson.dumps(out)


def _tag_subsetted(resource: dict) -> None:
    """Add the SUBSETTED tag to ``meta.tag`` unless present (creating ``meta`` if needed)."""
    meta = resource.get("meta")
    if "meta" in resource and not isinstance(meta, dict):
        meta = resource["meta"] = {}  # not valid FHIR; replaced rather than kept
    elif meta is None:
        meta = {}
        # place meta after resourceType / id, as resources usually have it
        items = list(resource.items())
        resource.clear()
        placed = False
        for key, value in items:
            if not placed and key not in ("resourceType", "id", "_id"):
                resource["meta"] = meta
                placed = True
            resource[key] = value
        if not placed:
            resource["meta"] = meta
    tags = meta.get("tag")
    if not isinstance(tags, list):
        tags = []
        meta["tag"] = tags
    for tag in tags:
        if isinstance(tag, dict) and tag.get("system") == SUBSETTED_SYSTEM and tag.get("code") == SUBSETTED_CODE:
            return
    tags.append(dict(SUBSETTED_TAG))
