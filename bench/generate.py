"""Synthetic population: generation rate, and generation + load rate into the store.

Runs the real command line (`expediente generate`) as a subprocess for each case and prints one
JSON document with resources/s: generation alone (written as NDJSON), and generation + load
into SQLite and PostgreSQL (validated, search-indexed and audited, in batches). Repeats each
case and reports the median.

    .venv/bin/python bench/generate.py --patients 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import orjson

from _server import BACKENDS, backend, expediente, log, machine_info, pg_admin_url, run_main


def _run(env: dict[str, str], patients: int, seed: int, extra: list[str]) -> dict:
    out = expediente(["generate", "--patients", str(patients), "--seed", str(seed), *extra], env, timeout=3600)
    return orjson.loads(out.strip().splitlines()[-1])


def measure(case: str, patients: int, seed: int, repeat: int, admin_url: str) -> dict:
    runs = []
    for i in range(repeat):
        with backend("sqlite" if case == "ndjson" else case, admin_url) as env:
            extra = []
            if case == "ndjson":
                extra = ["--ndjson", tempfile.mkdtemp(prefix="expediente-ndjson-", dir=env["EXPEDIENTE_DATA_DIR"])]
            log(f"{case}: run {i + 1}/{repeat}, {patients} patients")
            runs.append(_run(env, patients, seed, extra))
    rates = [r["resources_per_s"] for r in runs]
    return {
        "resources": runs[0]["resources"],
        "resources_per_patient": round(runs[0]["resources"] / patients, 1),
        "resources_per_s_median": statistics.median(rates),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--case", action="append", choices=("ndjson", *BACKENDS), help="default: all")
    args = parser.parse_args()
    admin_url = pg_admin_url()
    results = {case: measure(case, args.patients, args.seed, args.repeat, admin_url) for case in args.case or ("ndjson", *BACKENDS)}
    print(
        orjson.dumps(
            {"benchmark": "generate", "machine": machine_info(), "patients": args.patients, "seed": args.seed, "results": results},
            option=orjson.OPT_INDENT_2,
        ).decode()
    )


if __name__ == "__main__":
    run_main(main, "temporary data removed")
