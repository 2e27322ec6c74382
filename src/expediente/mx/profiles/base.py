"""What a profile is: a base type, a canonical URL, its rules and the elements it constrains."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from expediente.fhir.validation import ValidationIssue
from expediente.mx.systems import PROFILE_BASE


@dataclass(frozen=True, slots=True)
class Element:
    """One constrained element, for the StructureDefinition's differential."""

    path: str
    min: int
    short: str  # in Spanish
    max: str = "*"


@dataclass(frozen=True, slots=True)
class Profile:
    id: str
    type: str
    title: str  # Spanish
    description: str  # Spanish
    rules: Callable[[dict], list[ValidationIssue]]
    elements: tuple[Element, ...]

    @property
    def url(self) -> str:
        return PROFILE_BASE + self.id

    def check(self, resource: dict) -> list[ValidationIssue]:
        return self.rules(resource)
