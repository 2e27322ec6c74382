"""_include / _revinclude: the resources a page refers to, or that refer to it, bounded.

Both follow the ``idx_reference`` rows written with every resource, so an include costs one
indexed query per include parameter and one primary-key fetch per target type. ``:iterate``
repeats the includes on what was just included, at most ``MAX_ROUNDS`` times. At most ``limit``
resources are added to a page; beyond that the caller gets ``truncated=True`` and says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from expediente.db.schema import idx_reference, resource
from expediente.fhir.search.engine import COLUMNS, Include
from expediente.fhir.search.registry import compartment_params

MAX_ROUNDS = 3


@dataclass(slots=True)
class Included:
    rows: list  # resource rows (COLUMNS order)
    truncated: bool


def _targets(conn: sa.Connection, inc: Include, sources: list[tuple[str, str]]) -> set[tuple[str, str]]:
    ids = [rid for rtype, rid in sources if rtype == inc.source]
    if not ids:
        return set()
    t = idx_reference
    query = sa.select(t.c.target_type, t.c.target_id).where(
        t.c.res_type == inc.source, t.c.res_id.in_(ids), t.c.target_id.is_not(None)
    )
    if inc.param != "*":
        query = query.where(t.c.param == inc.param)
    if inc.target:
        query = query.where(t.c.target_type == inc.target)
    return {(a, b) for a, b in conn.execute(query)}


def _referrers(conn: sa.Connection, inc: Include, targets: list[tuple[str, str]], limit: int, visible=None) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    by_type: dict[str, list[str]] = {}
    for rtype, rid in targets:
        if inc.target is None or inc.target == rtype:
            by_type.setdefault(rtype, []).append(rid)
    t = idx_reference
    for rtype, ids in by_type.items():
        query = sa.select(t.c.res_type, t.c.res_id).where(
            t.c.target_id.in_(ids), t.c.target_type == rtype, t.c.res_type == inc.source
        )
        if inc.param != "*":
            query = query.where(t.c.param == inc.param)
        if visible is not None:  # the referrer's own row rule, read off its index rows
            query = query.where(visible(t.c.res_type, t.c.res_id, t.c.patient_key))
        found.update((a, b) for a, b in conn.execute(query.distinct().limit(limit + 1)))
    return found


def fetch(conn: sa.Connection, keys: Iterable[tuple[str, str]], visible=None) -> list:
    """Live resources by (type, id) that the caller may see (``visible``: the access policy's
    row rule), in a stable order."""
    by_type: dict[str, list[str]] = {}
    for rtype, rid in keys:
        by_type.setdefault(rtype, []).append(rid)
    rows = []
    for rtype, ids in sorted(by_type.items()):
        for chunk in range(0, len(ids), 500):
            query = sa.select(*COLUMNS).where(
                resource.c.res_type == rtype, resource.c.res_id.in_(ids[chunk : chunk + 500]), resource.c.deleted == sa.false()
            )
            if visible is not None:
                query = query.where(visible(resource.c.res_type, resource.c.res_id, resource.c.patient_key))
            rows.extend(conn.execute(query))
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows


def resolve(
    conn: sa.Connection,
    page: list[tuple[str, str]],
    include: list[Include],
    revinclude: list[Include],
    limit: int,
    visible=None,
) -> Included:
    """The resources to add to a page of (type, id) matches; only those the caller may see
    (``visible``) are fetched, counted against ``limit`` or followed by ``:iterate``."""
    seen = set(page)
    added: list[tuple[str, str]] = []
    rows: list = []
    frontier = list(page)
    truncated = False
    for round_ in range(MAX_ROUNDS):
        new: set[tuple[str, str]] = set()
        for inc in include:
            if round_ == 0 or inc.iterate:
                new |= _targets(conn, inc, frontier)
        for inc in revinclude:
            if round_ == 0 or inc.iterate:
                new |= _referrers(conn, inc, frontier, limit, visible)
        new -= seen
        seen |= new
        found = fetch(conn, new, visible)  # live and visible only: hidden ones are never counted
        if not found:
            break
        room = limit - len(added)
        if len(found) > room:
            found = found[:room]
            truncated = True
        rows.extend(found)
        frontier = [(r[0], r[1]) for r in found]
        added.extend(frontier)
        if truncated:
            break
    rows.sort(key=lambda r: (r[0], r[1]))
    return Included(rows, truncated)


def referenced_outside_compartments(conn: sa.Connection, page: list[tuple[str, str]], limit: int, visible=None) -> tuple[list, bool]:
    """Resources a page of one patient's record refers to that belong to no patient's
    compartment (Practitioner, Organization, Location, Medication...): $everything sends them
    along. Compartment types are left out: the patient's own come in their pages, and another
    patient's are not part of this record."""
    if not page:
        return [], False
    t = idx_reference
    by_type: dict[str, list[str]] = {}
    for rtype, rid in page:
        by_type.setdefault(rtype, []).append(rid)
    per_type = [sa.and_(t.c.res_type == rtype, t.c.res_id.in_(ids)) for rtype, ids in by_type.items()]
    query = sa.select(t.c.target_type, t.c.target_id).where(sa.or_(*per_type), t.c.target_type != "Patient").distinct()
    targets = sorted({(a, b) for a, b in conn.execute(query) if b is not None and not compartment_params(a)})
    truncated = len(targets) > limit
    return fetch(conn, targets[:limit], visible), truncated
