"""Transaction Bundle ingest (POST /fhir) against a real `expediente serve`, on SQLite and PostgreSQL.

The data is a synthetic population (``expediente.synth.generator``) sent the way Synthea sends
it: first "hospital" transactions that create the organizations and practitioners by
conditional create (``ifNoneExist`` on their identifier), then one transaction per patient
whose own resources (Patient, Coverage, Encounter, Condition, Composition, MedicationRequest,
Observation, DocumentReference) have ``urn:uuid:`` fullUrls and reference each other by them,
and reference the shared ones by conditional references (``Practitioner?identifier=...``).

Measured: the patient transactions only (the hospital ones are setup), sent by ``--clients``
concurrent keep-alive clients; ``resources_per_s`` is resources stored by 2xx answers over
the wall time of the phase; latencies are per Bundle, also by Bundle size (``by_bundle_size``:
resources/s there is the Bundles' resources over the time they were in flight). Every answer is
checked (status 200, one 201 per entry). Each backend gets a fresh server, data directory and
database. ``--prefer return=minimal`` leaves the resources out of the answers.

    .venv/bin/python bench/fhir_bundle.py                                   # both backends
    .venv/bin/python bench/fhir_bundle.py --backend sqlite --patients 200 --clients 1
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _server  # noqa: E402
from _server import log  # noqa: E402

from expediente.synth.bundles import reference_to, split_patients, transaction_bundle  # noqa: E402
from expediente.synth.generator import generate  # noqa: E402

HOSPITAL_CHUNK = 1000  # entries per hospital transaction


# ------------------------------------------------------------------ the bundles


def build_bundles(patients: int, seed: int) -> tuple[list[bytes], list[tuple[bytes, int]]]:
    """(hospital transactions, [(patient transaction, entries)])."""
    groups = list(split_patients(generate(patients, seed)))
    shared = [r for g in groups for r in g.shared]
    known = {reference_to(r): r for r in shared}
    hospital = [
        orjson.dumps(transaction_bundle(include=shared[i : i + HOSPITAL_CHUNK], shared=known)) for i in range(0, len(shared), HOSPITAL_CHUNK)
    ]
    return hospital, [(orjson.dumps(transaction_bundle(g.own, shared=known)), len(g.own)) for g in groups]


# ------------------------------------------------------------------ the load


class Client:
    """One keep-alive HTTP connection."""

    def __init__(self, base_url: str, token: str, prefer: str = "return=representation"):
        parts = urllib.parse.urlsplit(base_url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json", "Prefer": prefer}

    def transaction(self, body: bytes) -> tuple[int, dict | None]:
        self.conn.request("POST", "/fhir", body=body, headers=self.headers)
        resp = self.conn.getresponse()
        payload = resp.read()
        return resp.status, (orjson.loads(payload) if payload else None)


def _check(status: int, answer: dict | None, entries: int, expected: str) -> None:
    if status != 200 or answer is None:
        raise RuntimeError(f"transaction answered {status}: {str(answer)[:500]}")
    statuses = [e["response"]["status"] for e in answer["entry"]]
    if len(statuses) != entries or any(not s.startswith(expected) for s in statuses):
        raise RuntimeError(f"unexpected entry statuses: {sorted(set(statuses))}")


SIZE_BUCKETS = ((1, 40), (41, 120), (121, 10**6))  # entries per Bundle


def _by_size(done: list[tuple[int, float]]) -> dict:
    """Per Bundle size: how many, median latency, and resources/s while such a Bundle was in flight."""
    out = {}
    for low, high in SIZE_BUCKETS:
        some = [(n, s) for n, s in done if low <= n <= high]
        if some:
            out[f"{low}-{high if high < 10**6 else 'more'}"] = {
                "bundles": len(some),
                "latency_ms_p50": round(statistics.median(s for _, s in some) * 1000, 1),
                "resources_per_s": round(sum(n for n, _ in some) / sum(s for _, s in some)),
            }
    return out


def load_patients(base_url: str, token: str, bundles: list[tuple[bytes, int]], clients: int, prefer: str) -> dict:
    done: list[tuple[int, float]] = []  # (entries, seconds) per Bundle
    lock = threading.Lock()
    queue = iter(bundles)
    failures: list[BaseException] = []

    def work() -> None:
        client = Client(base_url, token, prefer)
        while True:
            with lock:
                item = next(queue, None)
            if item is None or failures:
                return
            body, entries = item
            start = time.perf_counter()
            try:
                status, answer = client.transaction(body)
                _check(status, answer, entries, "201")
            except BaseException as exc:  # noqa: BLE001 - reported after the phase
                failures.append(exc)
                return
            with lock:
                done.append((entries, time.perf_counter() - start))

    threads = [threading.Thread(target=work) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if failures:
        raise failures[0]
    resources = sum(n for _, n in bundles)
    ms = sorted(s * 1000 for _, s in done)
    return {
        "bundles": len(bundles),
        "resources": resources,
        "entries_per_bundle_mean": round(resources / len(bundles), 1),
        "wall_s": round(wall, 3),
        "resources_per_s": round(resources / wall),
        "bundles_per_s": round(len(bundles) / wall, 1),
        "latency_ms": {
            "p50": round(statistics.median(ms), 1),
            "p95": round(ms[int(0.95 * (len(ms) - 1))], 1),
            "max": round(ms[-1], 1),
        },
        "by_bundle_size": _by_size(done),
    }


def run_backend(name: str, args, hospital: list[bytes], records: list[tuple[bytes, int]]) -> dict:
    with _server.backend(name, args.pg_admin_url) as env:
        _server.expediente(["init"], env)
        secret = _server.add_client(env)
        with _server.running_server(env, args.workers) as server:
            token = _server.get_token(server.base_url, "bench.client", secret)
            setup = Client(server.base_url, token)
            for body in hospital:
                status, answer = setup.transaction(body)
                _check(status, answer, len(answer["entry"]) if answer else 0, "201")
            log(f"{name}: {len(hospital)} hospital transactions loaded; {len(records)} patient transactions")
            meter = _server.CpuMeter(server.pid, _server.postmaster_pid() if name == "postgresql" else None)
            meter.start()
            result = load_patients(server.base_url, token, records, args.clients, args.prefer)
            result["cpu"] = meter.stop()
            log(f"{name}: {result['resources_per_s']} resources/s, p50 {result['latency_ms']['p50']} ms per bundle")
            return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=_server.BACKENDS, help="default: both")
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--prefer", default="return=representation", help="Prefer header of the patient transactions")
    parser.add_argument("--pg-admin-url", default=_server.pg_admin_url())
    args = parser.parse_args()
    hospital, records = build_bundles(args.patients, args.seed)
    results = {name: run_backend(name, args, hospital, records) for name in args.backend or _server.BACKENDS}
    doc = {
        "benchmark": "fhir_bundle",
        "machine": _server.machine_info(),
        "patients": args.patients,
        "seed": args.seed,
        "clients": args.clients,
        "workers": args.workers,
        "prefer": args.prefer,
        "results": results,
    }
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    _server.run_main(main, "server stopped and temporary data removed")
