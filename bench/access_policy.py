"""What the access policy's row rule costs inside SQL, on SQLite and PostgreSQL.

bench/fhir_crud.py and bench/fhir_search.py report the Python side of security (the policy
decision and the audit append, from the server's metrics) as a share of request time. The row
rule, though, runs inside the database as part of each statement. This benchmark measures that
part: it loads a synthetic population into a fresh database, then executes the server's own
statements for a read by id and for patient-scoped searches, once as built without the row
condition and once with the condition of (a) an institution's system client and (b) a physician
with a care relationship (the policy's heaviest rule: relationship and consent subqueries).
The condition-free statements exist only here, to measure; the server has no such path.

Each statement runs ``--repeat`` rounds of ``--requests`` executions over sampled targets on one
connection; the figures are medians of the rounds (µs per execution) and the cost the rule adds.

    .venv/bin/python bench/access_policy.py --patients 200 --backend sqlite --backend postgresql
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path
from time import perf_counter

import orjson
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import BACKENDS, backend, expediente, log, machine_info, pg_admin_url, run_main  # noqa: E402

from expediente.config import load_settings  # noqa: E402


def _statements(services, principal_system, principal_doctor):
    from expediente.db.schema import resource
    from expediente.fhir.search.engine import page_statement, parse_search
    from expediente.fhir.store import _COLS, _CURRENT
    from expediente.security import policy

    rules = {
        "none": None,
        "system": policy.row_rule(principal_system),
        "physician": policy.row_rule(principal_doctor),
    }

    def read(rule):
        if rule is None:
            return _CURRENT
        cond = rule.visible(resource.c.res_type, resource.c.res_id, resource.c.patient_key)
        return _CURRENT.add_columns(sa.case((cond, True), else_=False))

    def search(rule, params):
        spec = parse_search("Observation", params, default_count=50, max_count=500, visible=None if rule is None else rule.visible)
        return page_statement(spec, None)[0]

    return rules, read, search, _COLS


def _time(conn, statement, params_list, requests: int, rng: random.Random) -> float:
    start = perf_counter()
    for _ in range(requests):
        conn.execute(statement, rng.choice(params_list)).all()
    return (perf_counter() - start) / requests * 1e6


def measure(name: str, args) -> dict:
    from expediente.app import Services
    from expediente.db.schema import idx_reference, resource
    from expediente.security.principal import Principal

    with backend(name, args.pg_admin_url) as env:
        log(f"{name}: loading {args.patients} patients")
        expediente(["generate", "--patients", str(args.patients), "--seed", "7"], env, timeout=3600)
        settings = load_settings(data_dir=Path(env["EXPEDIENTE_DATA_DIR"]), database_url=env.get("EXPEDIENTE_DATABASE_URL", ""))
        services = Services.build(settings)
        try:
            with services.engine.connect() as conn:
                t = idx_reference
                prac = conn.execute(
                    sa.select(t.c.target_id)
                    .where(t.c.res_type == "Encounter", t.c.param == "participant", t.c.target_type == "Practitioner")
                    .group_by(t.c.target_id)
                    .order_by(sa.func.count().desc())
                    .limit(1)
                ).scalar()
                cared = sorted(
                    set(
                        conn.execute(
                            sa.select(t.c.patient_key).where(t.c.res_type == "Encounter", t.c.param == "participant", t.c.target_id == prac)
                        ).scalars()
                    )
                )
                obs = conn.execute(
                    sa.select(resource.c.res_id).where(resource.c.res_type == "Observation", resource.c.patient_key.in_(cared)).limit(2000)
                ).scalars().all()
            system = Principal("bench.system", "system", "system", organization="DFIMS000011")
            doctor = Principal("bench.dra", "person", "physician", practitioner_ref=f"Practitioner/{prac}")
            rules, read, search, _ = _statements(services, system, doctor)
            rng = random.Random(11)
            cases = {
                "read_observation_by_id": (lambda rule: read(rule), [{"t": "Observation", "i": i} for i in obs]),
            }
            results: dict = {"patients": args.patients, "cared_for_by_physician": len(cared)}
            with services.engine.connect() as conn:
                for case, (build, params) in cases.items():
                    results[case] = _rounds(conn, {k: build(r) for k, r in rules.items()}, params, args, rng)
                # Patient-scoped searches: each target patient's statement differs, so they are
                # built per patient (as the server does per request) and timed together.
                searches = {
                    "search_patient_observations": lambda p: [("patient", p), ("_sort", "-date")],
                    "search_patient_glucose": lambda p: [("patient", p), ("code", "http://loinc.org|2345-7")],
                }
                for case, params_of in searches.items():
                    per_rule = {}
                    for key, rule in rules.items():
                        statements = [search(rule, params_of(p)) for p in cared[: args.sample]]
                        rounds = []
                        for _ in range(args.repeat):
                            start = perf_counter()
                            for _ in range(args.requests):
                                conn.execute(rng.choice(statements)).all()
                            rounds.append((perf_counter() - start) / args.requests * 1e6)
                        per_rule[key] = round(statistics.median(rounds), 1)
                    results[case] = _added(per_rule)
        finally:
            services.close()
    return results


def _rounds(conn, statements: dict, params: list[dict], args, rng) -> dict:
    per_rule = {}
    for key, statement in statements.items():
        rounds = [_time(conn, statement, params, args.requests, rng) for _ in range(args.repeat)]
        per_rule[key] = round(statistics.median(rounds), 1)
    return _added(per_rule)


def _added(per_rule: dict) -> dict:
    base = per_rule["none"]
    return {
        "us_per_statement": per_rule,
        "added_us": {k: round(v - base, 1) for k, v in per_rule.items() if k != "none"},
        "added_percent": {k: round(100 * (v - base) / base, 1) for k, v in per_rule.items() if k != "none"},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", choices=BACKENDS)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sample", type=int, default=20, help="patients whose searches are sampled")
    parser.add_argument("--pg-admin-url", default=pg_admin_url())
    args = parser.parse_args(argv)
    out = {"machine": machine_info(), "parameters": vars(args) | {"backend": args.backend or list(BACKENDS)}, "results": {}}
    for name in args.backend or BACKENDS:
        out["results"][name] = measure(name, args)
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    run_main(main, "interrupted")
