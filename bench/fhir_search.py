"""FHIR search latency at several population sizes, on SQLite and PostgreSQL, and transaction ingest.

For each backend and each size in ``--sizes`` (patients, increasing), it:

1. Gets a database holding exactly the first N patients of the synthetic population
   (``expediente.synth.generator``, seed ``--seed``): reused from ``--data-dir`` when a previous
   run built it, else built from the largest smaller one by loading only the additional patients
   with the parallel loader (``--processes``; see ``_population.py``), else from scratch. Each
   load step reports resources/s.
2. Starts ``expediente serve`` on it, takes a token for a system client, draws ``--sample-patients``
   random patients and reads their records from the database to build queries whose answers are
   known, then measures, one request at a time (latency, not throughput), ``--requests`` requests
   per query kind after ``--warmup`` unmeasured ones, ``--repeat`` times:

   - ``obs_by_code``: ``Observation?subject=Patient/{id}&code=http://loinc.org|{code}&_sort=-date&_count=10``
     with a lab code the patient has;
   - ``active_prescriptions``: ``MedicationRequest?subject=Patient/{id}&status=active``;
   - ``encounters_in_period``: ``Encounter?subject=Patient/{id}&date=ge{Y}-01-01&date=lt{Y+1}-01-01``,
     Y a year in which the patient had an encounter;
   - ``facility_diagnosis``: ``Patient?organization=Organization/{id}&_has:Condition:patient:code=
     {CIE-10 system}|{code}&_count=20``: the patients of a facility (Patient.managingOrganization, the
     patient's primary-care unit) with a diagnosis; taken from a sampled patient, so at least one matches;
   - ``everything_first_page``: ``Patient/{id}/$everything`` (first page, default page size).

   Every answer that is not 200 counts in ``errors`` (with the first one's status, URL and body
   excerpt); 200 answers are checked against what the database says (``check_failures``: counts,
   ``_sort`` order, facility), which flags a search that answers but answers wrong.
3. Ingest: POST /fhir transaction Bundles, one per patient, each holding one new patient's
   resources (patients right after the first N, as the population would grow) with urn:uuid
   fullUrls and references between them; existing facilities and physicians are referenced
   directly (``Practitioner/{id}``), those these patients are the first to use are upserted in the
   same Bundle (``PUT Practitioner/{id}``). ``--ingest-clients`` concurrent clients,
   ``--ingest-patients`` patients per repeat; resources/s counts the patients' own resources in
   committed Bundles. Afterwards the server is stopped and what the ingest created is removed from
   the database (physically), so the cached population stays the generated one. Until the server
   supports transactions (501), the result says so.

Targets: patient-scoped searches p95 < 20 ms, $everything first page p95 < 100 ms, each query's
p95 at the largest size within 2x of the smallest, ingest >= 2000 resources/s, no errors.

Run (from the repository root; JSON on stdout, progress on stderr):

    .venv/bin/python bench/fhir_search.py --sizes 2000,20000,100000          # both backends
    .venv/bin/python bench/fhir_search.py --sizes 50,100 --backend sqlite --requests 50 --repeat 1
    .venv/bin/python bench/fhir_search.py --sizes 2000 --build-only          # load figures only

Cached databases are large (about 6-8 KB per resource, ~71 resources per patient): see
``--clean``, ``--no-keep-smaller`` and the disk-space check.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import random
import re
import statistics
import sys
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from time import perf_counter

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _population  # noqa: E402
import _server  # noqa: E402
from _server import log  # noqa: E402

from expediente.synth.bundles import referenced, transaction_bundle  # noqa: E402
from expediente.synth.catalogs import CIE10_SYSTEM, LOINC_SYSTEM  # noqa: E402 - the systems the generator codes with

DEFAULT_DATA_DIR = Path("/tmp/expediente-bench-search")
DEFAULT_PG_DATABASE = "expediente_bench_search"

QUERIES: dict[str, str] = {
    "obs_by_code": "/fhir/Observation?subject=Patient/{patient}&code={system}|{code}&_sort=-date&_count=10",
    "active_prescriptions": "/fhir/MedicationRequest?subject=Patient/{patient}&status=active",
    "encounters_in_period": "/fhir/Encounter?subject=Patient/{patient}&date=ge{year}-01-01&date=lt{next_year}-01-01",
    "facility_diagnosis": "/fhir/Patient?organization=Organization/{organization}&_has:Condition:patient:code={system}|{code}&_count=20",
    "everything_first_page": "/fhir/Patient/{patient}/$everything",
}
PATIENT_SCOPED = ("obs_by_code", "active_prescriptions", "encounters_in_period")
TARGETS = {
    "patient_scoped_max_p95_ms": 20.0,
    "everything_max_p95_ms": 100.0,
    "max_p95_ratio_largest_to_smallest": 2.0,
    "min_ingest_resources_per_s": 2000.0,
}
MAX_P95_MS = {**{k: TARGETS["patient_scoped_max_p95_ms"] for k in PATIENT_SCOPED}, "everything_first_page": TARGETS["everything_max_p95_ms"]}
ESTIMATE_SIZES = (2000, 20000, 100000)
DEFINITIONS = {
    "latency_ms": "nearest-rank percentiles of 200 answers, request sent to body read, one request at a time; "
    "summary: medians across repeats",
    "errors": "answers other than 200 and transport errors (summed across repeats); first_error: the first one",
    "check_failures": "200 answers that disagree with the database (result count, _sort order, facility); a sanity "
    "check of the answer, not part of pass/fail",
    "entries_mean": "mean number of entries per 200 answer (search matches and included resources)",
    "load": "resources stored per second by the parallel loader (generation, validation, index extraction, "
    "audit, batched inserts) for one build step; finish_s: SQLite WAL checkpoint or PostgreSQL VACUUM (ANALYZE) after it",
    "ingest": "transaction Bundles, one per new patient; resources_per_s: the patients' own resources in committed "
    "Bundles per second of wall time; entries_per_s adds the upserted facilities and physicians",
    "ratio_largest_to_smallest": "p95 (and p50) latency at the largest size divided by the smallest",
    "cpu": "cores = CPU seconds / wall seconds over the measured window (see fhir_crud.py)",
}


# ------------------------------------------------------------------ figures


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


def _r(value: float | None, nd: int = 2) -> float | None:
    return None if value is None else round(value, nd)


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def latency_figures(latencies_ms: list[float]) -> dict:
    lat = sorted(latencies_ms)
    return {
        "p50": _r(percentile(lat, 50)),
        "p95": _r(percentile(lat, 95)),
        "p99": _r(percentile(lat, 99)),
        "max": _r(lat[-1] if lat else None),
        "mean": _r(statistics.fmean(lat) if lat else None),
    }


def _excerpt(body: bytes, limit: int = 400) -> str:
    """The diagnostics of an OperationOutcome if there are any, else the body's start."""
    try:
        doc = orjson.loads(body)
        if isinstance(doc, dict) and doc.get("resourceType") == "OperationOutcome":
            text = " | ".join(str(i.get("diagnostics") or i.get("details", {}).get("text") or i.get("code")) for i in doc.get("issue", []))
            return text[:limit]
    except orjson.JSONDecodeError:
        pass
    return body[:limit].decode("utf-8", "replace")


# ------------------------------------------------------------------ HTTP (one keep-alive connection per client)


class Client:
    def __init__(self, base_url: str, token: str, timeout: float = 120.0):
        parts = urllib.parse.urlsplit(base_url)
        self.base_url = base_url
        self.host, self.port, self.timeout = parts.hostname, parts.port, timeout
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body); status 0 and the exception's name as body on a transport error."""
        headers = self.headers if body is None else {**self.headers, "Content-Type": "application/fhir+json"}
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return resp.status, data
            except (http.client.HTTPException, OSError) as exc:
                self.close()
                # A keep-alive connection the server closed meanwhile: retry once on a new one.
                if attempt == 2 or not isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
                    return 0, type(exc).__name__.encode()
        return 0, b"unreachable"

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# ------------------------------------------------------------------ query targets from the database


def _ref_id(ref: str | None, rtype: str) -> str | None:
    if ref and ref.startswith(rtype + "/"):
        return ref.split("/", 1)[1]
    return None


def sample_targets(db: _population.PopulationDb, rng: random.Random, n: int) -> tuple[dict[str, list[dict]], dict]:
    """Query targets per kind from ``n`` random patients whose records are read from the database
    (current rows of the ``resource`` table), with what each answer must contain."""
    import sqlalchemy as sa

    from expediente.db.schema import resource

    t0 = perf_counter()
    engine = db.engine()
    try:
        with engine.connect() as conn:
            ids = list(conn.execute(sa.select(resource.c.res_id).where(resource.c.res_type == "Patient").order_by(resource.c.res_id)).scalars())
            chosen = rng.sample(ids, min(n, len(ids)))
            records = {}
            for pid in chosen:
                rows = conn.execute(sa.select(resource.c.res_type, resource.c.body).where(resource.c.patient_key == pid, resource.c.deleted == sa.false()))
                records[pid] = [orjson.loads(body) for _t, body in rows]
    finally:
        engine.dispose()
    targets: dict[str, list[dict]] = {k: [] for k in QUERIES}
    for pid, resources in records.items():
        labs: dict[str, list[str]] = {}
        active = 0
        encounters: list[tuple[str, str]] = []
        conditions: set[str] = set()
        organization = None
        for r in resources:
            rtype = r["resourceType"]
            if rtype == "Observation":
                for c in r.get("code", {}).get("coding", []):
                    if c.get("system") == LOINC_SYSTEM and c.get("code"):
                        labs.setdefault(c["code"], []).append(r.get("effectiveDateTime", ""))
            elif rtype == "MedicationRequest":
                active += r.get("status") == "active"
            elif rtype == "Encounter":
                period = r.get("period", {})
                if period.get("start"):
                    encounters.append((period["start"][:10], (period.get("end") or period["start"])[:10]))
            elif rtype == "Condition":
                for c in r.get("code", {}).get("coding", []):
                    if c.get("system") == CIE10_SYSTEM and c.get("code"):
                        conditions.add(c["code"])
            elif rtype == "Patient":
                organization = _ref_id(r.get("managingOrganization", {}).get("reference"), "Organization")
        if labs:
            code = rng.choice(sorted(labs))
            targets["obs_by_code"].append({"patient": pid, "system": LOINC_SYSTEM, "code": code, "expected": min(10, len(labs[code]))})
        targets["active_prescriptions"].append({"patient": pid, "expected": active})
        if encounters:
            year = int(rng.choice(encounters)[0][:4])
            lo, hi = f"{year}-01-01", f"{year + 1}-01-01"
            expected = sum(1 for start, end in encounters if start < hi and end >= lo)
            targets["encounters_in_period"].append({"patient": pid, "year": year, "next_year": year + 1, "expected": expected})
        if organization and conditions:
            code = rng.choice(sorted(conditions))
            targets["facility_diagnosis"].append({"organization": organization, "system": CIE10_SYSTEM, "code": code, "patient": pid})
        targets["everything_first_page"].append({"patient": pid, "expected_min": 1})
    info = {
        "patients_sampled": len(records),
        "population_patients": len(ids),
        "eligible": {k: len(v) for k, v in targets.items()},
        "seconds": round(perf_counter() - t0, 2),
    }
    return targets, info


def query_path(kind: str, target: dict) -> str:
    values = {k: urllib.parse.quote(str(v), safe="/:-._") for k, v in target.items()}
    return QUERIES[kind].format(**values)


# ------------------------------------------------------------------ answer checks


def _matches(bundle: dict, rtype: str) -> list[dict]:
    out = []
    for e in bundle.get("entry", []) or []:
        res = e.get("resource") or {}
        if res.get("resourceType") == rtype and (e.get("search") or {}).get("mode", "match") == "match":
            out.append(res)
    return out


def _has_next(bundle: dict) -> bool:
    return any(link.get("relation") == "next" for link in bundle.get("link", []) or [])


def _count_check(bundle: dict, found: int, expected: int) -> str | None:
    total = bundle.get("total")
    if total is not None and total != expected:
        return f"total {total}, expected {expected}"
    if _has_next(bundle):
        return None if 0 < found <= expected else f"{found} matches on a first page with a next link, expected {expected} in all"
    return None if found == expected else f"{found} matches, expected {expected}"


def check_answer(kind: str, target: dict, bundle: dict) -> str | None:
    """None when a 200 answer agrees with the database, else what is wrong."""
    if bundle.get("resourceType") != "Bundle":
        return f"not a Bundle: {str(bundle.get('resourceType'))[:40]}"
    if kind == "obs_by_code":
        found = _matches(bundle, "Observation")
        if len(found) != target["expected"]:
            return f"{len(found)} matches, expected {target['expected']}"
        dates = [r.get("effectiveDateTime", "") for r in found]
        if dates != sorted(dates, reverse=True):
            return "not sorted by -date"
        return None
    if kind == "active_prescriptions":
        found = _matches(bundle, "MedicationRequest")
        if any(r.get("status") != "active" for r in found):
            return "a MedicationRequest that is not active"
        return _count_check(bundle, len(found), target["expected"])
    if kind == "encounters_in_period":
        return _count_check(bundle, len(_matches(bundle, "Encounter")), target["expected"])
    if kind == "facility_diagnosis":
        found = _matches(bundle, "Patient")
        if not found:
            return "no match (the sampled patient qualifies)"
        org = f"Organization/{target['organization']}"
        if any((r.get("managingOrganization") or {}).get("reference") != org for r in found):
            return "a Patient of another facility"
        return None
    if kind == "everything_first_page":
        return None if len(bundle.get("entry", []) or []) >= target["expected_min"] else "empty page"
    return None


# ------------------------------------------------------------------ one query kind


def measure_kind(client: Client, kind: str, targets: list[dict], rng: random.Random, requests: int, warmup: int, meter) -> dict:
    for _ in range(warmup):
        client.request("GET", query_path(kind, rng.choice(targets)))
    answers = []
    security_before = _server.security_counters(client.base_url)
    meter.start()
    for _ in range(requests):
        target = rng.choice(targets)
        path = query_path(kind, target)
        t0 = perf_counter()
        status, body = client.request("GET", path)
        answers.append(((perf_counter() - t0) * 1000, status, path, target, body))
    cpu = meter.stop()
    security = _server.security_share(security_before, _server.security_counters(client.base_url))
    latencies, statuses, entries = [], Counter(), []
    first_error = first_check = None
    checks = 0
    for ms, status, path, target, body in answers:
        statuses[str(status) if status else body.decode()] += 1
        if status != 200:
            if first_error is None:
                first_error = {"status": status, "url": path, "body_excerpt": _excerpt(body)}
            continue
        latencies.append(ms)
        try:
            bundle = orjson.loads(body)
        except orjson.JSONDecodeError:
            bundle = {}
        entries.append(len(bundle.get("entry", []) or []))
        problem = check_answer(kind, target, bundle)
        if problem:
            checks += 1
            if first_check is None:
                first_check = {"url": path, "problem": problem}
    errors = requests - len(latencies)
    return {
        "requests": requests,
        "errors": errors,
        "statuses": dict(statuses),
        "first_error": first_error,
        "latency_ms": latency_figures(latencies),
        "entries_mean": _r(statistics.fmean(entries) if entries else None),
        "check_failures": checks,
        "first_check_failure": first_check,
        "cpu": cpu,
        "security": security,
    }


def summarize_kind(kind: str, runs: list[dict]) -> dict:
    return {
        "url": QUERIES[kind],
        "requests": sum(r["requests"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "first_error": next((r["first_error"] for r in runs if r["first_error"]), None),
        "latency_ms": {k: _median([r["latency_ms"][k] for r in runs]) for k in ("p50", "p95", "p99", "max", "mean")},
        "entries_mean": _median([r["entries_mean"] for r in runs]),
        "check_failures": sum(r["check_failures"] for r in runs),
        "first_check_failure": next((r["first_check_failure"] for r in runs if r["first_check_failure"]), None),
        "cpu_cores": {k: _median([r["cpu"][f"{k}_cores"] for r in runs]) for k in ("loadgen", "server", "postgres", "other", "machine_busy")},
        # Access-policy decision + audit append, as a share of the server's request time.
        "security_percent": {
            k: _median([r["security"][k] for r in runs]) for k in ("policy_percent", "audit_percent", "security_percent")
        },
        "runs": runs,
    }



# ------------------------------------------------------------------ transaction ingest


def ingest_bundle(own: list[dict], shared_new: dict[str, dict]) -> tuple[bytes, int, int]:
    """One patient's resources as a transaction: POST with urn:uuid fullUrls (references between
    them rewritten), plus a PUT upsert of each facility or physician they use that the population
    does not hold yet. (body, own resources, upserted shared resources)."""
    upserts = referenced(own, shared_new)
    bundle = transaction_bundle(own, include=upserts, shared_refs="literal")
    return orjson.dumps(bundle), len(own), len(upserts)


_LOCATION = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?/?$")


def created_in(answer: dict) -> tuple[list[tuple[str, str]], int]:
    """(type, id) of the resources a transaction-response says it created, and how many created
    entries gave no usable location."""
    out, unknown = [], 0
    for e in answer.get("entry", []) or []:
        resp = e.get("response") or {}
        if not str(resp.get("status", "")).startswith("201"):
            continue
        m = _LOCATION.search(str(resp.get("location", "")))
        if m:
            out.append((m.group(1), m.group(2)))
        else:
            unknown += 1
    return out, unknown


class IngestLedger:
    """What the ingest created, to purge it afterwards."""

    def __init__(self):
        self.lock = threading.Lock()
        self.created: dict[str, list[str]] = {}
        self.unknown = 0
        self.unparsed_answers = 0

    def add(self, body: bytes) -> None:
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            with self.lock:
                self.unparsed_answers += 1
            return
        found, unknown = created_in(answer)
        with self.lock:
            self.unknown += unknown
            for rtype, rid in found:
                self.created.setdefault(rtype, []).append(rid)

    @property
    def complete(self) -> bool:
        return self.unknown == 0 and self.unparsed_answers == 0


def post_bundles(base_url: str, token: str, bundles: list[tuple[bytes, int, int]], clients: int, ledger: IngestLedger) -> dict:
    """POST the bundles with ``clients`` concurrent connections; figures for the whole batch."""
    todo = list(enumerate(bundles))
    lock = threading.Lock()
    results: list[tuple[int, float, int, int, bytes]] = []

    def worker():
        client = Client(base_url, token, timeout=300)
        try:
            while True:
                with lock:
                    if not todo:
                        return
                    _i, (body, n_own, n_shared) = todo.pop(0)
                t0 = perf_counter()
                status, answer = client.request("POST", "/fhir", body)
                ms = (perf_counter() - t0) * 1000
                if status == 200:
                    ledger.add(answer)
                with lock:
                    results.append((status, ms, n_own, n_shared, answer if status != 200 else b""))
        finally:
            client.close()

    t0 = perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, min(clients, len(bundles))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = perf_counter() - t0
    ok = [r for r in results if r[0] == 200]
    bad = [r for r in results if r[0] != 200]
    resources = sum(r[2] for r in ok)
    entries = sum(r[2] + r[3] for r in ok)
    return {
        "bundles": len(results),
        "errors": len(bad),
        "statuses": dict(Counter(str(r[0]) for r in results)),
        "first_error": {"status": bad[0][0], "body_excerpt": _excerpt(bad[0][4])} if bad else None,
        "resources": resources,
        "seconds": round(wall, 3),
        "resources_per_s": round(resources / wall, 1) if wall > 0 else None,
        "entries_per_s": round(entries / wall, 1) if wall > 0 else None,
        "bundle_latency_ms": latency_figures([r[1] for r in ok]),
    }


def run_ingest(base_url: str, token: str, material: dict, args, meter) -> dict:
    shared = material["shared"]
    bundles = [ingest_bundle(own, shared) for own in material["patients"]]
    ledger = IngestLedger()
    out: dict = {
        "clients": args.ingest_clients,
        "patients_per_repeat": args.ingest_patients,
        "resources_per_bundle_mean": _r(statistics.fmean(b[1] for b in bundles) if bundles else None, 1),
        "bundle_bytes_mean": round(statistics.fmean(len(b[0]) for b in bundles)) if bundles else None,
    }
    warm, rest = bundles[: args.ingest_warmup], bundles[args.ingest_warmup :]
    runs = []
    if warm:
        w = post_bundles(base_url, token, warm, args.ingest_clients, ledger)
        out["warmup"] = {k: w[k] for k in ("bundles", "errors", "statuses", "first_error")}
        if w["errors"] == w["bundles"]:
            out.update(_ingest_unavailable(w), resources_per_s=None, errors=w["errors"], runs=[])
            return out | {"ledger": ledger}
    for rep in range(args.repeat):
        part = rest[rep * args.ingest_patients : (rep + 1) * args.ingest_patients]
        meter.start()
        fig = post_bundles(base_url, token, part, args.ingest_clients, ledger)
        fig["cpu"] = meter.stop()
        runs.append(fig)
        log(
            f"  ingest {rep + 1}/{args.repeat}: {fig['resources_per_s']} resources/s, bundle p50 {fig['bundle_latency_ms']['p50']} ms, "
            f"errors {fig['errors']} {fig['statuses']}"
        )
        if fig["errors"] == fig["bundles"]:
            out.update(_ingest_unavailable(fig))
            break
    out.update(
        {
            "status": out.get("status", "measured"),
            "resources_per_s": _median([r["resources_per_s"] for r in runs if r["errors"] < r["bundles"]]),
            "entries_per_s": _median([r["entries_per_s"] for r in runs if r["errors"] < r["bundles"]]),
            "errors": sum(r["errors"] for r in runs),
            "first_error": next((r["first_error"] for r in runs if r["first_error"]), out.get("first_error")),
            "bundle_latency_ms": {k: _median([r["bundle_latency_ms"][k] for r in runs]) for k in ("p50", "p95", "p99", "max", "mean")},
            "runs": runs,
        }
    )
    return out | {"ledger": ledger}


def _ingest_unavailable(fig: dict) -> dict:
    statuses = fig["statuses"]
    status = "not-implemented" if set(statuses) == {"501"} else "failing"
    return {"status": status, "http_statuses": statuses, "first_error": fig["first_error"]}


# ------------------------------------------------------------------ one size on one backend


def measure_size(db: _population.PopulationDb, args, rng: random.Random, material: dict | None) -> dict:
    env = db.env()
    client_info = db.marker["client"]
    out: dict = {"reindex_pending": db.reindex_pending()}
    ledger = None
    with _server.running_server(env, args.workers) as server:
        token = _server.get_token(server.base_url, client_info["id"], client_info["secret"])
        pg_pid = _server.postmaster_pid() if db.backend == "postgresql" else None
        meter = _server.CpuMeter(server.pid, pg_pid)
        if args.requests > 0:
            targets, info = sample_targets(db, rng, args.sample_patients)
            out["sample"] = info
            client = Client(server.base_url, token)
            runs: dict[str, list[dict]] = {k: [] for k in args.query}
            try:
                for rep in range(1, args.repeat + 1):
                    for kind in args.query:
                        if not targets[kind]:
                            continue
                        fig = measure_kind(client, kind, targets[kind], rng, args.requests, args.warmup, meter)
                        runs[kind].append(fig)
                        lat = fig["latency_ms"]
                        log(
                            f"  {db.backend} p{db.patients} {rep}/{args.repeat} {kind:22s} p50 {lat['p50']} p95 {lat['p95']} p99 {lat['p99']} ms  "
                            f"errors {fig['errors']} {fig['statuses'] if fig['errors'] else ''} checks failed {fig['check_failures']}  "
                            f"security {fig['security']['security_percent']} %"
                        )
            finally:
                client.close()
            out["queries"] = {
                kind: summarize_kind(kind, r) if r else {"url": QUERIES[kind], "skipped": "no eligible patient in the sample"}
                for kind, r in runs.items()
            }
        if material is not None:
            db.set_state("ingesting")  # until what the ingest creates is purged
            ingest = run_ingest(server.base_url, token, material, args, meter)
            ledger = ingest.pop("ledger")
            out["ingest"] = ingest
    if ledger is not None:
        out["ingest"]["purge"] = purge_ingest(db, ledger)
    return out


def purge_ingest(db: _population.PopulationDb, ledger: IngestLedger) -> dict:
    created = sum(len(v) for v in ledger.created.values())
    deleted = _population.purge(db, ledger.created) if created else 0
    patients, resources = db.counts()
    clean = ledger.complete and (patients, resources) == (db.marker["patients"], db.marker["resources"])
    db.set_state("complete" if clean else "dirty")
    if not clean:
        log(f"WARNING: {db.backend} p{db.patients}: the ingest left resources behind ({patients} patients / {resources} resources); it will be rebuilt next run")
    return {"created": created, "deleted": deleted, "clean": clean}


# ------------------------------------------------------------------ targets, ratios, estimates


def size_targets(size_result: dict) -> dict:
    checks = {}
    for kind, q in (size_result.get("queries") or {}).items():
        if "skipped" in q:
            continue
        limit = MAX_P95_MS.get(kind)
        p95 = q["latency_ms"]["p95"]
        ok = q["errors"] == 0 and p95 is not None and (limit is None or p95 < limit)
        checks[kind] = {"p95_ms": p95, "max_p95_ms": limit, "errors": q["errors"], "pass": ok}
    ingest = size_result.get("ingest")
    if ingest is not None:
        rate = ingest.get("resources_per_s")
        checks["ingest"] = {
            "status": ingest.get("status"),
            "resources_per_s": rate,
            "min_resources_per_s": TARGETS["min_ingest_resources_per_s"],
            "errors": ingest.get("errors"),
            "pass": bool(ingest.get("status") == "measured" and rate is not None and rate >= TARGETS["min_ingest_resources_per_s"] and not ingest.get("errors")),
        }
    return checks


def ratios(sizes: dict[int, dict]) -> dict:
    measured = sorted(n for n, r in sizes.items() if r.get("queries"))
    if len(measured) < 2:
        return {}
    small, large = sizes[measured[0]]["queries"], sizes[measured[-1]]["queries"]
    out = {}
    for kind in small:
        a, b = small[kind].get("latency_ms", {}), large.get(kind, {}).get("latency_ms", {})
        r95 = b.get("p95") / a["p95"] if a.get("p95") and b.get("p95") else None
        r50 = b.get("p50") / a["p50"] if a.get("p50") and b.get("p50") else None
        out[kind] = {
            "sizes": [measured[0], measured[-1]],
            "p95_ratio": _r(r95),
            "p50_ratio": _r(r50),
            "max_ratio": TARGETS["max_p95_ratio_largest_to_smallest"],
            "pass": r95 is not None and r95 <= TARGETS["max_p95_ratio_largest_to_smallest"],
        }
    return out


def targets(results: dict) -> dict:
    out: dict = {
        "rule": "patient-scoped searches (obs_by_code, active_prescriptions, encounters_in_period) p95 < 20 ms; "
        "everything_first_page p95 < 100 ms; facility_diagnosis: no latency target; no errors; every query's p95 at "
        "the largest size <= 2x the smallest; ingest >= 2000 resources/s with no errors, at every size",
    }
    for backend, r in results.items():
        per_size = {str(n): size_targets(s) for n, s in r["sizes"].items()}
        flat = r.get("ratio_largest_to_smallest", {})
        all_checks = [c["pass"] for s in per_size.values() for c in s.values()] + [c["pass"] for c in flat.values()]
        out[backend] = {"sizes": per_size, "flat": flat, "pass": bool(all_checks) and all(all_checks)}
    return out


def build_estimates(cache: _population.PopulationCache, sizes: list[int]) -> dict:
    """Time and disk to build populations from scratch with this loader, extrapolated linearly from
    the largest load step measured on this backend (this run or an earlier one)."""
    basis = cache.measured_basis()
    step = basis["load_step"]
    if step is None:
        return {"basis": None, "note": "nothing loaded yet on this backend"}
    rate, rpp, bpr = step["resources_per_s"], basis["resources_per_patient"], basis["bytes_per_resource"]
    est = {}
    for n in sorted(set(sizes) | set(ESTIMATE_SIZES)):
        resources = n * rpp
        est[str(n)] = {
            "resources": round(resources),
            "build_from_scratch_min": round(resources / rate / 60, 1),
            "database_gb": round(resources * bpr / 1e9, 1),
        }
    return {
        "basis": {"load_step": step, "resources_per_patient": round(rpp, 1), "bytes_per_resource": round(bpr)},
        "assumes": "the load rate stays what it was in basis.load_step: optimistic once the indexes outgrow memory, "
        "and it depends on what else the machine runs (see the step's cpu); --keep-smaller also keeps each smaller size's copy",
        "sizes": est,
    }


def check_plans(caches: list[_population.PopulationCache], sizes: list[int], disk_check: bool) -> dict:
    """What building the requested sizes takes on each backend; refuse up front when the databases
    would not fit on their filesystem (backends sharing a filesystem are added up)."""
    plans, per_fs = {}, {}
    for cache in caches:
        plan = cache.plan(sizes)
        plans[cache.backend] = plan
        where = cache.disk_location()
        minutes = "?" if plan["seconds"] is None else f"{plan['seconds'] / 60:.0f} min"
        log(
            f"{cache.backend}: cached sizes {plan['cached'] or 'none'}; to build {plan['to_build'] or 'nothing'}: "
            f"{plan['resources_to_load']} resources, ~{plan['bytes_to_add'] / 1e9:.1f} GB, ~{minutes}"
        )
        if where is not None:
            dev = os.stat(where).st_dev
            fs = per_fs.setdefault(dev, {"path": str(where), "free": _disk_free(where), "need": 0, "backends": []})
            fs["need"] += plan["bytes_to_add"]
            fs["backends"].append(cache.backend)
    for fs in per_fs.values():
        if fs["need"] > 0.9 * fs["free"]:
            message = (
                f"building needs about {fs['need'] / 1e9:.1f} GB ({', '.join(fs['backends'])}) and {fs['path']} has "
                f"{fs['free'] / 1e9:.1f} GB free: use smaller --sizes, one --backend at a time, --no-keep-smaller, or --clean"
            )
            if disk_check:
                raise _population.DiskSpaceError(message)
            log("WARNING: " + message)
    return plans


def _disk_free(path: Path) -> int:
    import shutil

    return shutil.disk_usage(path).free


# ------------------------------------------------------------------ main


def make_cache(backend: str, args) -> _population.PopulationCache:
    return _population.PopulationCache(
        backend,
        args.data_dir,
        args.seed,
        pg_admin_url=args.pg_admin_url,
        pg_database=args.pg_database,
        processes=args.processes,
        batch_size=args.batch_size,
        keep_smaller=args.keep_smaller,
        reuse_stale=args.reuse_stale,
        disk_check=args.disk_check,
        load_sqlite_synchronous=args.load_sqlite_synchronous,
    )


def run_backend(cache: _population.PopulationCache, args, material_for: Callable[[int, str], dict | None]) -> dict:
    backend = cache.backend
    log(f"--- backend {backend}")
    out: dict = {"fingerprint": cache.fingerprint, "sizes": {}}
    rng = random.Random(args.seed * 7919 + len(backend))
    for n in args.sizes:
        try:
            db, load = cache.ensure(n)
        except _population.DiskSpaceError as exc:
            log(str(exc))
            out["sizes"][n] = {"skipped": str(exc)}
            break
        size: dict = {
            "population": {
                "patients": n,
                "resources": db.marker["resources"],
                "resources_per_patient": round(db.marker["resources"] / n, 1),
                "database_bytes": db.size_bytes(),
            },
            "load": load | {"steps": db.marker.get("steps", [])},
        }
        if not args.build_only:
            material = material_for(n, cache.fingerprint["population"]) if args.ingest_patients > 0 else None
            size |= measure_size(db, args, rng, material)
        out["sizes"][n] = size
    measured = {n: s for n, s in out["sizes"].items() if "skipped" not in s}
    out["ratio_largest_to_smallest"] = ratios(measured)
    out["build_estimates"] = build_estimates(cache, args.sizes)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", action="append", choices=_server.BACKENDS, help="repeatable; default: both")
    p.add_argument("--sizes", default="2000,20000,100000", help="population sizes in patients, comma-separated")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where built populations are kept between runs")
    p.add_argument(
        "--pg-database",
        help=f"prefix of the kept PostgreSQL databases (<prefix>_p<N>); default {DEFAULT_PG_DATABASE}, "
        "plus a hash of --data-dir when that is not the default one (two data dirs never share a database)",
    )
    p.add_argument("--pg-admin-url", default=_server.pg_admin_url(), help="PostgreSQL account allowed to create databases")
    g = p.add_argument_group("building")
    g.add_argument("--processes", type=int, default=2, help="loader processes")
    g.add_argument("--batch-size", type=int, default=2000, help="resources per load transaction")
    g.add_argument(
        "--load-sqlite-synchronous",
        default="OFF",
        choices=("OFF", "NORMAL", "FULL"),
        help="SQLite synchronous while loading (the load ends with a synced checkpoint before it counts as complete)",
    )
    g.add_argument("--fresh", action="store_true", help="drop the kept populations of the chosen backends first")
    g.add_argument("--clean", action="store_true", help="drop the kept populations of the chosen backends, and exit")
    g.add_argument("--no-keep-smaller", dest="keep_smaller", action="store_false", help="grow the smaller population in place instead of copying it")
    g.add_argument("--reuse-stale", action="store_true", help="reuse populations built by another generator/indexer/schema")
    g.add_argument("--no-disk-check", dest="disk_check", action="store_false")
    g.add_argument("--build-only", action="store_true", help="build (or reuse) the populations, measure nothing else")
    g = p.add_argument_group("measuring")
    g.add_argument("--workers", type=int, default=2, help="server processes")
    g.add_argument("--requests", type=int, default=200, help="measured requests per query kind and repeat")
    g.add_argument("--warmup", type=int, default=20, help="unmeasured requests per query kind and repeat")
    g.add_argument("--repeat", type=int, default=3, help="repeats; summaries hold medians")
    g.add_argument("--sample-patients", type=int, default=400, help="random patients the queries are drawn from")
    g.add_argument("--query", action="append", choices=tuple(QUERIES), help="repeatable; default: all")
    g.add_argument("--ingest-patients", type=int, default=100, help="patients (transaction Bundles) per ingest repeat; 0: no ingest")
    g.add_argument("--ingest-warmup", type=int, default=5, help="unmeasured Bundles before the ingest repeats")
    g.add_argument("--ingest-clients", type=int, default=4, help="concurrent ingest clients (4: keep-alive connections reach both server processes)")
    args = p.parse_args(argv)
    args.backend = list(dict.fromkeys(args.backend or _server.BACKENDS))
    if args.pg_database is None:
        args.pg_database = DEFAULT_PG_DATABASE
        if args.data_dir.resolve() != DEFAULT_DATA_DIR.resolve():
            args.pg_database += "_" + hashlib.sha256(str(args.data_dir.resolve()).encode()).hexdigest()[:6]
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", args.pg_database):
        p.error("--pg-database: lowercase letters, digits and _ (at most 41 characters)")
    args.query = list(dict.fromkeys(args.query or QUERIES))
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        p.error("--sizes: comma-separated integers")
    if not args.sizes or args.sizes[0] < 1:
        p.error("--sizes must be positive")
    if min(args.processes, args.batch_size, args.workers, args.repeat, args.sample_patients) < 1:
        p.error("--processes, --batch-size, --workers, --repeat and --sample-patients must be positive")
    if min(args.requests, args.warmup, args.ingest_patients, args.ingest_warmup) < 0 or args.ingest_clients < 1:
        p.error("counts must not be negative, --ingest-clients positive")
    return args


def parameters(args) -> dict:
    return {
        "backends": args.backend,
        "sizes": args.sizes,
        "seed": args.seed,
        "data_dir": str(args.data_dir),
        "pg_database_prefix": args.pg_database if "postgresql" in args.backend else None,
        "loader": {"processes": args.processes, "batch_size": args.batch_size, "sqlite_synchronous": args.load_sqlite_synchronous},
        "keep_smaller": args.keep_smaller,
        "workers": args.workers,
        "requests": args.requests,
        "warmup": args.warmup,
        "repeat": args.repeat,
        "concurrency": 1,
        "sample_patients": args.sample_patients,
        "queries": {k: QUERIES[k] for k in args.query},
        "ingest": {"patients_per_repeat": args.ingest_patients, "warmup": args.ingest_warmup, "clients": args.ingest_clients},
        "server_env": {
            "EXPEDIENTE_LOG_LEVEL": os.environ.get("EXPEDIENTE_LOG_LEVEL", "info (default)"),
            "EXPEDIENTE_SQLITE_SYNCHRONOUS": os.environ.get("EXPEDIENTE_SQLITE_SYNCHRONOUS", "FULL (default)"),
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    caches = [make_cache(backend, args) for backend in args.backend]
    if args.clean or args.fresh:
        for cache in caches:
            cache.clean()
        if args.clean:
            return 0
    try:
        plans = check_plans(caches, args.sizes, args.disk_check)
    except _population.DiskSpaceError as exc:
        log(f"ERROR: {exc}")
        return 2
    doc: dict = {"benchmark": "fhir_search", "machine": _server.machine_info(), "parameters": parameters(args)}
    if "postgresql" in args.backend:
        doc["postgresql"] = _server.postgres_info(args.pg_admin_url)
    materials: dict[tuple[int, str], dict] = {}

    def material_for(n: int, population_fp: str) -> dict:
        key = (n, population_fp)
        if key not in materials:
            count = args.ingest_warmup + args.repeat * args.ingest_patients
            materials[key] = _population.next_patients(args.data_dir, args.seed, n, count, population_fp)
        return materials[key]

    results = {}
    for cache in caches:
        results[cache.backend] = {"build_plan": plans[cache.backend]} | run_backend(cache, args, material_for)
    doc["definitions"] = DEFINITIONS
    doc["results"] = {b: r | {"sizes": {str(n): s for n, s in r["sizes"].items()}} for b, r in results.items()}
    if not args.build_only:
        doc["targets"] = targets(results)
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    _server.run_main(main, "server stopped (an interrupted load or ingest is rebuilt next run)")
