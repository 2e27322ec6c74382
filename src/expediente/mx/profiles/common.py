"""Small helpers shared by the profile rules: issues naming the element, identifiers, references."""

from __future__ import annotations

import re
from collections.abc import Iterator

from expediente.fhir.validation import ValidationIssue

_DATETIME_WITH_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def issue(path: str, text: str, code: str = "required") -> ValidationIssue:
    """An issue whose Spanish message starts with the element it is about."""
    return ValidationIssue(path, f"{path}: {text}", code)


def items(resource: dict, key: str) -> Iterator[tuple[int, dict]]:
    """(index, element) of a repeating element, skipping anything that is not an object."""
    value = resource.get(key)
    for i, item in enumerate(value if isinstance(value, list) else ()):
        if isinstance(item, dict):
            yield i, item


def identifiers(resource: dict, system: str) -> list[tuple[int, dict]]:
    return [(i, ident) for i, ident in items(resource, "identifier") if ident.get("system") == system]


def codings(concept: object) -> list[dict]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding") or () if isinstance(c, dict)]


def has_time(value: object) -> bool:
    """A dateTime that carries the time of day, not only the date (NOM-004 5.10: fecha y hora)."""
    return isinstance(value, str) and _DATETIME_WITH_TIME.match(value) is not None


def reference_type(ref: object) -> str | None:
    """The resource type a Reference names ('Practitioner/1', 'Practitioner?identifier=...',
    an absolute URL); '' for a Bundle-local 'urn:' reference, whose type is known only once
    resolved; None when there is no literal reference."""
    if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
        return None
    text = ref["reference"]
    if text.startswith("urn:"):
        return ""
    path = text.split("?", 1)
    if len(path) == 2:
        return path[0].rsplit("/", 1)[-1]
    parts = text.split("/")
    if len(parts) >= 2 and parts[-2] == "_history":
        parts = parts[:-2]
    return parts[-2] if len(parts) >= 2 else None


def references(ref: object, *types: str) -> bool:
    """True when ``ref`` is a literal reference to one of ``types`` (or a Bundle-local one)."""
    found = reference_type(ref)
    return found == "" or found in types


def extension(element: dict, url: str) -> tuple[int, dict] | None:
    for i, ext in items(element, "extension"):
        if ext.get("url") == url:
            return i, ext
    return None
