"""One person, several records: the ``Patient.link`` entries the MPI writes, and the
``person_link`` rows derived from them.

Link types (FHIR R4 ``link-type``):

- ``seealso``: another institution's record of the same person (IMSS and ISSSTE each keep
  theirs); written in both records.
- ``replaced-by`` / ``replaces``: a duplicate record of one institution merged into the
  surviving one; the duplicate is marked inactive. Nothing is moved or erased (NOM-004): the
  duplicate's notes stay attributed to it and appear in the person's record through the link.

Every record of a person links every other (the MPI keeps the group complete), so "the same
person" is one hop in SQL: the access policy and ``$everything`` need no recursion.
"""

from __future__ import annotations

import copy

import sqlalchemy as sa

from expediente.db.schema import person_link

LINK_TYPES = frozenset({"seealso", "replaced-by", "replaces", "refer"})


def _linked_id(link: dict) -> str | None:
    ref = (link.get("other") or {}).get("reference") if isinstance(link, dict) else None
    if isinstance(ref, str) and ref.startswith("Patient/") and "/" not in ref[8:]:
        return ref[8:] or None
    return None


def person_rows(patient: dict) -> list[dict]:
    """The ``person_link`` rows (without res_type/res_id/patient_key) of one Patient."""
    own = patient.get("id")
    rows = {}
    for link in patient.get("link") or ():
        other = _linked_id(link)
        kind = link.get("type") if isinstance(link, dict) else None
        if other and other != own and kind in LINK_TYPES:
            rows.setdefault(other, kind)
    return [{"param": "link", "linked_key": other, "link_type": kind} for other, kind in sorted(rows.items())]


def person_records(conn: sa.Connection, patient_id: str) -> list[str]:
    """The other records of the person whose record is ``patient_id`` (one index seek)."""
    query = sa.select(person_link.c.linked_key).where(person_link.c.patient_key == patient_id).order_by(person_link.c.linked_key)
    return list(conn.execute(query).scalars())


def links_of(patient: dict) -> dict[str, str]:
    """{linked record id: link type} of a Patient body."""
    return {r["linked_key"]: r["link_type"] for r in person_rows(patient)}


def with_link(patient: dict, other: str, kind: str) -> dict:
    """The Patient body with one link to ``other`` of type ``kind`` (replacing any link to it)."""
    body = copy.deepcopy(patient)
    kept = [link for link in body.get("link") or () if _linked_id(link) != other]
    body["link"] = [*kept, {"other": {"reference": f"Patient/{other}"}, "type": kind}]
    return body


def without_link(patient: dict, other: str) -> dict:
    """The Patient body without its link to ``other``."""
    body = copy.deepcopy(patient)
    kept = [link for link in body.get("link") or () if _linked_id(link) != other]
    if kept:
        body["link"] = kept
    else:
        body.pop("link", None)
    return body
