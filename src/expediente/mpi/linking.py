"""Linking, unlinking and merging the records of one person, and linking new registrations
automatically.

Every change is a new version of the Patient records involved, written as one transaction
Bundle through the store: the access policy decides (the caller must see and may update every
record touched), the audit trail records each update under the caller, and the history keeps
what the links were before, so every link can be undone.

Automatic linking (after a Patient is created or changed): matches of grade ``certain`` (the
same CURP, or a score above the automatic threshold) are linked at once by the MPI itself;
``probable`` and ``possible`` ones go to the review list for a person to decide. A pair a
person rejected is never proposed again.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

import orjson

from expediente.fhir import errors
from expediente.fhir.bundle import BundleOptions, process_bundle
from expediente.fhir.errors import FhirError
from expediente.fhir.store import Caller, ResourceStore, Stored
from expediente.mpi import review
from expediente.mpi.index import Match, find_matches
from expediente.mpi.person import links_of, with_link, without_link
from expediente.security.principal import Principal

log = logging.getLogger("expediente.mpi")

# The MPI acting on its own (automatic links): a system principal, recorded as such.
MPI_PRINCIPAL = Principal(subject="mpi", kind="system", role="system")
MPI_CALLER = Caller(MPI_PRINCIPAL, source="mpi")

# Set while the linker writes links, so its own writes do not trigger matching again.
_writing_links: ContextVar[bool] = ContextVar("mpi_writing_links", default=False)

_MERGE_TYPES = frozenset({"replaced-by", "replaces"})
_RETRIES = 3  # a concurrent edit of one of the records: read again and retry


class Linker:
    def __init__(self, store: ResourceStore, base: str):
        self.store = store
        self.base = base

    # ------------------------------------------------------------------ automatic

    def patients_written(self, caller: Caller, patients: list[Stored]) -> None:
        """The store's patient listener: match and link what was just registered."""
        if _writing_links.get():
            return
        for stored in patients:
            if not stored.deleted:
                self.reconcile(orjson.loads(stored.body))

    def reconcile(self, patient: dict) -> list[Match]:
        """Match one Patient against the index; link the certain matches, list the rest."""
        own = patient["id"]
        if patient.get("active") is False:  # inactive or merged away: not a registration
            return []
        known = links_of(patient)
        with self.store.reader.connect() as conn:
            decided = review.decided_pairs(conn, own)
            matches = find_matches(conn, patient, exclude_ids=(own, *known))
        for m in matches:
            if decided.get(m.patient_id, "pending") != "pending":
                continue  # a person (or the MPI) already decided this pair
            if m.grade == "certain":
                try:
                    self.link(MPI_CALLER, own, m.patient_id)
                except FhirError as exc:
                    log.warning("automatic link %s-%s not written: %s", own, m.patient_id, exc)
                    review.record(self.store.engine, own, m.patient_id, m.score, m.grade, m.reasons, "pending")
                    continue
                review.record(self.store.engine, own, m.patient_id, m.score, m.grade, m.reasons, "linked", by=MPI_PRINCIPAL.subject)
            else:
                review.record(self.store.engine, own, m.patient_id, m.score, m.grade, m.reasons, "pending")
        return matches

    # -------------------------------------------------------------------- by hand

    def link(self, caller: Caller, a: str, b: str) -> dict:
        """Records ``a`` and ``b`` are one person: every record of the two persons links every
        other. Returns ``a``'s new body."""
        _distinct(a, b)

        def change(group: dict[str, dict]) -> dict[str, dict]:
            return {rid: _linked_to(body, set(group) - {rid}) for rid, body in group.items()}

        return self._apply(caller, (a, b), change)[a]

    def unlink(self, caller: Caller, a: str, b: str) -> dict:
        """Record ``b`` is not the person of record ``a``: ``b`` leaves the group (all its links
        to the group go, both ways; a merged-away ``b`` becomes active again). The pair is
        remembered as rejected. Returns ``a``'s new body."""
        _distinct(a, b)

        def change(group: dict[str, dict]) -> dict[str, dict]:
            if b not in links_of(group[a]):
                raise FhirError.of(409, f"Patient/{b} no está vinculado a Patient/{a}", "business-rule")
            out = {rid: without_link(body, b) for rid, body in group.items() if rid != b}
            detached = group[b]
            was_merged = any(t == "replaced-by" for t in links_of(detached).values())
            for rid in group:
                detached = without_link(detached, rid)
            if was_merged:
                detached["active"] = True
            out[b] = detached
            return out

        bodies = self._apply(caller, (a,), change)
        review.decide(self.store.engine, a, b, "rejected", caller.principal.subject)
        return bodies[a]

    def merge(self, caller: Caller, source: str, target: str) -> dict:
        """Record ``source`` is a duplicate of ``target`` (same institution, same person): it
        becomes inactive and ``replaced-by`` the target, which ``replaces`` it; both keep their
        data (nothing is moved or erased) and stay one person. Returns the target's new body."""
        _distinct(source, target)

        def change(group: dict[str, dict]) -> dict[str, dict]:
            out = {rid: _linked_to(body, set(group) - {rid}) for rid, body in group.items()}
            out[source] = {**with_link(out[source], target, "replaced-by"), "active": False}
            out[target] = with_link(out[target], source, "replaces")
            return out

        bodies = self._apply(caller, (source, target), change)
        review.decide(self.store.engine, source, target, "linked", caller.principal.subject)
        return bodies[target]

    # ------------------------------------------------------------------ internals

    def _apply(self, caller: Caller, seeds, change) -> dict[str, dict]:
        """Read the group of ``seeds`` (as the caller), compute the new bodies, write the
        changed ones in one transaction; retried when a record changed in between."""
        for attempt in range(_RETRIES):
            group = self._group(caller, seeds)
            bodies = {rid: body for rid, (body, _) in group.items()}
            new = change(bodies)
            changed = {rid: body for rid, body in new.items() if _content(body) != _content(bodies[rid])}
            try:
                self._write(caller, {rid: (body, group[rid][1]) for rid, body in changed.items()})
            except FhirError as exc:
                if exc.status == 412 and attempt < _RETRIES - 1:
                    continue
                raise
            return new
        raise AssertionError("unreachable")

    def _group(self, caller: Caller, seeds) -> dict[str, tuple[dict, int]]:
        """Every record of the persons of ``seeds``: id -> (body, version), read as the caller
        (a record the caller may not see answers 404, and nothing is written)."""
        group: dict[str, tuple[dict, int]] = {}
        pending = list(seeds)
        while pending:
            rid = pending.pop()
            if rid in group:
                continue
            stored = self.store.read(caller, "Patient", rid)
            body = orjson.loads(stored.body)
            group[rid] = (body, stored.version_id)
            pending.extend(other for other in links_of(body) if other not in group)
        return group

    def _write(self, caller: Caller, changes: dict[str, tuple[dict, int]]) -> None:
        if not changes:
            return
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": f"{self.base}/Patient/{rid}",
                    "resource": body,
                    "request": {"method": "PUT", "url": f"Patient/{rid}", "ifMatch": f'W/"{version}"'},
                }
                for rid, (body, version) in sorted(changes.items())
            ],
        }
        token = _writing_links.set(True)
        try:
            process_bundle(self.store, caller, bundle, BundleOptions(base=self.base, max_entries=len(changes)))
        finally:
            _writing_links.reset(token)


def _distinct(a: str, b: str) -> None:
    if a == b:
        raise errors.bad_request("Un registro no puede vincularse consigo mismo", expression="Parameters.parameter")


def _linked_to(body: dict, others: set[str]) -> dict:
    """``body`` linking every record in ``others`` (seealso), keeping merge links as they are."""
    current = links_of(body)
    for other in sorted(others):
        if current.get(other) not in _MERGE_TYPES and current.get(other) != "seealso":
            body = with_link(body, other, "seealso")
    return body


def _content(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "meta"}
