"""Leak tests: nothing a physician may not see comes back, or betrays that it exists — not by
guessing ids, nor through _include, _revinclude, chains, _has, _elements, _summary=count,
totals, paging, compartments, history, $everything or a Bundle's GET entries.

The physician of hospital A cares for "care" and "label" (whose consent hides mental-health
notes from A); "none" is hospital B's patient; "consent" denies hospital A (tests/access_world.py).
"""

from __future__ import annotations

import secrets

import pytest

from expediente.security.accounts import add_account
from tests.access_world import CLUES_A, World, build_world, resource_for
from tests.conftest import PASSWORD


@pytest.fixture
def world(client, services, auth) -> tuple[World, dict]:
    w = build_world(client, auth)
    # The "care" patient's observation names the "none" patient as performer (a relative who
    # took the reading) and as focus: references that cross records.
    cross = resource_for("Observation", w.patient["care"])
    cross["performer"] = [{"reference": f"Patient/{w.patient['none']}"}]
    cross["focus"] = [{"reference": f"Patient/{w.patient['none']}"}]
    r = client.post("/fhir/Observation", json=cross, headers=auth)
    w.res[("care", "Observation-cross")] = r.json()["id"]
    # And one of "none"'s observations points back at "care".
    back = resource_for("Observation", w.patient["none"])
    back["focus"] = [{"reference": f"Patient/{w.patient['care']}"}]
    back["code"] = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "Frecuencia cardiaca"}
    w.res[("none", "Observation-back")] = client.post("/fhir/Observation", json=back, headers=auth).json()["id"]
    username = f"dra.a.{secrets.token_hex(3)}"
    add_account(services.engine, username, PASSWORD, "physician", organization=CLUES_A, practitioner_ref=f"Practitioner/{w.prac['physician']}")
    token = client.post("/auth/token", data={"grant_type": "password", "username": username, "password": PASSWORD}).json()["access_token"]
    return w, {"Authorization": f"Bearer {token}"}


def ids(bundle: dict, mode: str | None = None) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if "resource" in e and e["resource"]["resourceType"] != "OperationOutcome" and (mode is None or e["search"]["mode"] == mode)
    }


def forbidden_refs(w: World) -> set[str]:
    out = {f"Patient/{w.patient[t]}" for t in ("none", "consent")}
    out |= {f"{k[1].split('-')[0]}/{v}" for k, v in w.res.items() if k[0] in ("none", "consent")}
    out.add(f"Condition/{w.res[('label', 'Condition-PSY')]}")
    return out


def assert_clean(bundle: dict, w: World) -> None:
    leaked = ids(bundle) & forbidden_refs(w)
    assert not leaked, f"forbidden resources returned: {sorted(leaked)}"


def test_guessed_ids_answer_like_missing_ones(client, world):
    w, dra = world
    for res_type, res_id in [
        ("Observation", w.res[("none", "Observation")]),
        ("Condition", w.res[("label", "Condition-PSY")]),
        ("Patient", w.patient["consent"]),
    ]:
        hidden = client.get(f"/fhir/{res_type}/{res_id}", headers=dra)
        missing = client.get(f"/fhir/{res_type}/00000000-0000-7000-8000-000000000000", headers=dra)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["issue"][0]["diagnostics"].replace(res_id, "X") == missing.json()["issue"][0]["diagnostics"].replace(
            "00000000-0000-7000-8000-000000000000", "X"
        )
        for path in (f"/fhir/{res_type}/{res_id}/_history", f"/fhir/{res_type}/{res_id}/_history/1"):
            assert client.get(path, headers=dra).status_code == 404, path
    # Deleted and hidden look the same as missing too (no 410 that would confirm it existed).
    assert client.get(f"/fhir/Observation/{w.res[('none', 'Observation')]}", headers=dra).status_code == 404


def test_searches_and_totals_see_only_allowed_rows(client, world):
    w, dra = world
    for query in (
        f"Observation?subject=Patient/{w.patient['none']}&_total=accurate",
        f"Observation?patient={w.patient['consent']}&_total=accurate",
        f"Patient?family={w.family['none']}&_total=accurate",
        f"Condition?code=F32.9&_total=accurate",
        f"Condition?_security=PSY&_total=accurate",
    ):
        r = client.get(f"/fhir/{query}", headers=dra)
        assert r.status_code == 200 and r.json()["total"] == 0 and not ids(r.json()), query
        count = client.get(f"/fhir/{query.split('&')[0]}&_summary=count", headers=dra).json()
        assert count["total"] == 0, query
    everything = client.get("/fhir/Observation?_total=accurate&_count=500", headers=dra).json()
    assert_clean(everything, w)
    assert everything["total"] == len(ids(everything, "match")) > 0


def test_paging_never_crosses_into_forbidden_records(client, world):
    w, dra = world
    seen: list[str] = []
    url = "/fhir/Observation?_count=1&_sort=-_lastUpdated"
    while url:
        page = client.get(url, headers=dra).json()
        assert_clean(page, w)
        seen += sorted(ids(page, "match"))
        url = next((link["url"].replace("http://testserver", "") for link in page["link"] if link["relation"] == "next"), None)
    total = client.get("/fhir/Observation?_total=accurate&_count=0", headers=dra).json()["total"]
    assert len(seen) == len(set(seen)) == total


def test_includes_and_revincludes_stay_inside_allowed_records(client, world):
    w, dra = world
    cross = w.res[("care", "Observation-cross")]
    for query in (
        f"Observation?_id={cross}&_include=Observation:performer",
        f"Observation?_id={cross}&_include=Observation:focus",
        f"Observation?_id={cross}&_include=Observation:*",
        f"Patient?_id={w.patient['care']}&_revinclude=Observation:focus",
        f"Patient?_id={w.patient['care']}&_revinclude=Observation:*",
        f"Patient?_id={w.patient['label']}&_revinclude=Condition:subject",
        f"Patient?_id={w.patient['care']}&_revinclude=Observation:subject&_include:iterate=Observation:performer",
    ):
        r = client.get(f"/fhir/{query}", headers=dra)
        assert r.status_code == 200, (query, r.text)
        assert_clean(r.json(), w)
    # The allowed part still comes.
    r = client.get(f"/fhir/Patient?_id={w.patient['label']}&_revinclude=Condition:subject", headers=dra).json()
    assert f"Condition/{w.res[('label', 'Condition')]}" in ids(r, "include")


def test_chains_and_has_reveal_nothing_hidden(client, world):
    w, dra = world
    for query in (
        f"Observation?subject:Patient.family={w.family['none']}",
        f"Observation?performer:Patient.family={w.family['none']}",  # the cross observation is visible, its target is not
        f"Observation?focus:Patient.family={w.family['none']}",
        f"Patient?_has:Condition:subject:code=F32.9",  # only the hidden mental-health note has it
        f"Patient?_has:Observation:focus:code=8867-4",  # only "none"'s observation has this code
        f"Patient?_has:Condition:subject:_security=PSY",
    ):
        r = client.get(f"/fhir/{query}&_total=accurate", headers=dra)
        assert r.status_code == 200, (query, r.text)
        assert r.json()["total"] == 0 and not ids(r.json()), query
    # Positive control: the same shapes find what the physician may see.
    r = client.get(f"/fhir/Observation?focus:Patient.family={w.family['care']}&_total=accurate", headers=dra).json()
    assert r["total"] == 0  # "none"'s observation focuses on "care", but it is not the physician's to see
    r = client.get(f"/fhir/Patient?_has:Condition:subject:code=E11.9&_total=accurate", headers=dra).json()
    assert ids(r) == {f"Patient/{w.patient['care']}", f"Patient/{w.patient['label']}"}


def test_elements_and_summary_do_not_widen_a_search(client, world):
    w, dra = world
    r = client.get("/fhir/Condition?_elements=code&_count=500", headers=dra).json()
    assert_clean(r, w)
    assert f"Condition/{w.res[('label', 'Condition')]}" in ids(r)
    r = client.get("/fhir/Condition?_summary=true&_count=500", headers=dra).json()
    assert_clean(r, w)
    visible = client.get("/fhir/Condition?_count=500", headers=dra).json()
    counted = client.get("/fhir/Condition?_summary=count", headers=dra).json()
    assert counted["total"] == len(ids(visible, "match"))


def test_compartments_everything_and_history(client, world):
    w, dra = world
    r = client.get(f"/fhir/Patient/{w.patient['none']}/Observation", headers=dra)
    # Only the visible "care" observation that names "none" as performer is in that compartment.
    assert r.status_code == 200 and ids(r.json()) == {f"Observation/{w.res[('care', 'Observation-cross')]}"}
    hidden = client.get(f"/fhir/Patient/{w.patient['consent']}/$everything", headers=dra)
    missing = client.get("/fhir/Patient/no-existe/$everything", headers=dra)
    assert hidden.status_code == missing.status_code == 404
    # The record with a consent label: everything but the labelled note.
    r = client.get(f"/fhir/Patient/{w.patient['label']}/$everything?_count=500", headers=dra)
    assert r.status_code == 200
    assert_clean(r.json(), w)
    assert f"Condition/{w.res[('label', 'Condition')]}" in ids(r.json())
    for path in ("/fhir/Observation/_history?_count=500", "/fhir/_history?_count=500"):
        h = client.get(path, headers=dra).json()
        assert_clean(h, w)
        assert h["entry"], path


def test_bundle_get_entries_are_filtered(client, world):
    w, dra = world
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Observation?subject=Patient/{w.patient['none']}"}},
            {"request": {"method": "GET", "url": f"Observation/{w.res[('none', 'Observation')]}"}},
            {"request": {"method": "GET", "url": f"Observation?subject=Patient/{w.patient['care']}"}},
            {"request": {"method": "GET", "url": "AuditEvent?patient=" + w.patient["none"]}},
        ],
    }
    r = client.post("/fhir", json=bundle, headers=dra)
    assert r.status_code == 200, r.text
    first, second, third, trail = r.json()["entry"]
    # The audit trail is not read through a Bundle (it has its own API and rules).
    assert trail["response"]["status"].startswith("400")
    assert first["response"]["status"].startswith("200") and not first["resource"].get("entry")
    assert second["response"]["status"].startswith("404")
    assert third["resource"]["entry"]
    assert_clean(third["resource"], w)
