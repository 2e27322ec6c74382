"""A patient's Consent as the deny rules the access policy applies.

Supported shape (FHIR R4 Consent, scope patient-privacy): an ``active`` Consent about a
Patient whose provision, or any nested provision, has ``type: deny``. Each deny provision
yields one rule per (actor, security label): ``provision.actor[].reference`` names an
Organization or Practitioner (none: everyone), ``provision.securityLabel[]`` names a category
of the record, matched against resources' ``meta.security`` (none: the whole record), and
``provision.period`` bounds when it applies. Nested ``permit`` exceptions are not modelled:
a rule is never weakened by them, so the policy errs on the side of the patient's denial.
A Consent that is withdrawn (status inactive, rejected...) or deleted yields no rules.
"""

from __future__ import annotations

from expediente.fhir.search.extract import date_range

_ACTOR_TYPES = ("Organization", "Practitioner")


def consent_rows(consent: dict) -> list[dict]:
    """The ``consent_directive`` rows (without res_type/res_id/patient_key) of one Consent."""
    if consent.get("status") != "active" or not isinstance(consent.get("provision"), dict):
        return []
    rows: list[dict] = []
    _walk(consent["provision"], None, rows)
    unique = {tuple(sorted(r.items())): r for r in rows}
    return list(unique.values())


def _walk(provision: dict, inherited: str | None, rows: list[dict]) -> None:
    kind = provision.get("type", inherited)
    if kind == "deny":
        low, high = _period(provision.get("period"))
        for actor_type, actor_id in _actors(provision) or [(None, None)]:
            for system, code in _labels(provision) or [(None, None)]:
                rows.append(
                    {
                        "param": "deny",
                        "actor_type": actor_type,
                        "actor_id": actor_id,
                        "label_system": system,
                        "label_code": code,
                        "period_low": low,
                        "period_high": high,
                    }
                )
    for child in provision.get("provision") or []:
        if isinstance(child, dict):
            _walk(child, None, rows)


def _actors(provision: dict) -> list[tuple[str, str]]:
    out = []
    for actor in provision.get("actor") or []:
        ref = ((actor or {}).get("reference") or {}).get("reference")
        if isinstance(ref, str) and "/" in ref:
            res_type, res_id = ref.rstrip("/").split("/")[-2:]  # Type/id, also inside an absolute URL
            if res_type in _ACTOR_TYPES and res_id:
                out.append((res_type, res_id[:64]))
    return out


def _labels(provision: dict) -> list[tuple[str | None, str]]:
    return [
        (label.get("system"), label["code"][:255])
        for label in provision.get("securityLabel") or []
        if isinstance(label, dict) and isinstance(label.get("code"), str) and label["code"]
    ]


def _period(period) -> tuple:
    if not isinstance(period, dict):
        return None, None
    start = date_range(period["start"]) if isinstance(period.get("start"), str) else None
    end = date_range(period["end"]) if isinstance(period.get("end"), str) else None
    return (start[0] if start else None), (end[1] if end else None)
