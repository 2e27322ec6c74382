"""QIDO-RS study search latency at 1,000, 100,000 and 1,000,000 indexed instances.

For each backend (``--backend sqlite``, repeatable; ``postgresql`` too) and each size in
``--sizes`` (instances), it:

1. Gets an index holding exactly that archive (``bench/_dicom_index_fill.py``, seed ``--seed``:
   ~100 instances a study, Spanish names, 10 years of dates, CR/DX/CT/MR/US/MG/PT mix), cached
   under ``--cache-dir`` (default /tmp/expediente-bench-dicom/: SQLite files; PostgreSQL keeps
   a database ``expediente_bench_dicom_<size>_s<seed>``; ``--clean`` removes them), then ANALYZE.
2. Draws ``--sample`` random studies and builds, from each, one query per shape whose answer
   holds that study (limit ``--limit``, as a viewer's first page):

   - ``patient_name_prefix``: ``PatientName=<first surname> <2nd surname's first 3 letters>*``
   - ``patient_id``: ``PatientID=<id>``
   - ``date_range``: ``StudyDate=<day-6>-<day>`` (a week)
   - ``modality_date_range``: ``ModalitiesInStudy=<modality>&StudyDate=<day-29>-<day>`` (a month)
   - ``accession``: ``AccessionNumber=<accession>``
   - ``fuzzy_name`` (not a target shape): ``PatientName=<given> <surname>&fuzzymatching=true``

3. Measures each shape ``--requests`` times after ``--warmup`` (one at a time: latency, not
   throughput) two ways: ``engine`` (``expediente.dicom.query`` in-process on the reader engine:
   the index's own cost) and ``http`` (``GET /dicomweb/studies`` on a real ``expediente serve``
   with a system client's token: what a viewer waits for, JSON encoding, authentication, policy
   and audit included). ``found`` is the share of answers holding the sampled study (1.0 expected
   except where more than ``--limit`` studies match).
4. At each size prints the database's query plan of each shape (``plans``).

Target: every shape's HTTP p95 < 50 ms at 1,000,000 instances (``targets``).

    .venv/bin/python bench/qido_index.py                                  # 1k, 100k, 1M on SQLite
    .venv/bin/python bench/qido_index.py --backend sqlite --backend postgresql
    .venv/bin/python bench/qido_index.py --sizes 1000 --requests 50 --no-http   # a quick check
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _dicom_index_fill import VERSION, fill, sample  # noqa: E402
from _server import (  # noqa: E402
    add_client, get_token, log, machine_info, pg_admin_url, run_main, running_server, security_counters, security_share,
)

from expediente.config import Settings  # noqa: E402
from expediente.db.engine import make_engine  # noqa: E402
from expediente.db.migrate import upgrade  # noqa: E402
from expediente.db.statistics import refresh  # noqa: E402
from expediente.dicom import query  # noqa: E402
from expediente.dicom.archive import EVERYTHING  # noqa: E402

SHAPES = ("patient_name_prefix", "patient_id", "date_range", "modality_date_range", "accession", "fuzzy_name")
TARGET_SHAPES = SHAPES[:5]
SECRET = "clave-de-banco-de-pruebas-" + "x" * 32


def _day(text: str, back: int) -> str:
    return (datetime.strptime(text, "%Y%m%d") - timedelta(days=back)).strftime("%Y%m%d")


def queries(study: dict) -> dict[str, dict[str, str]]:
    family, _, given = study["patient_name"].partition("^")
    first, _, second = family.partition(" ")
    day = study["study_date"]
    return {
        "patient_name_prefix": {"PatientName": f"{first} {second[:3]}*"},
        "patient_id": {"PatientID": study["patient_id"]},
        "date_range": {"StudyDate": f"{_day(day, 6)}-{day}"},
        "modality_date_range": {"ModalitiesInStudy": study["modalities"].split("\\")[0], "StudyDate": f"{_day(day, 29)}-{day}"},
        "accession": {"AccessionNumber": study["accession_number"]},
        "fuzzy_name": {"PatientName": f"{given.split()[0]} {first}", "fuzzymatching": "true"},
    }


def _percentiles(samples: list[float]) -> dict:
    s = sorted(samples)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
    return {"p50": round(pick(0.5), 3), "p95": round(pick(0.95), 3), "p99": round(pick(0.99), 3), "max": round(s[-1], 3),
            "mean": round(statistics.fmean(s), 3)}


# ------------------------------------------------------------------ the cached index


def _settings(backend: str, size: int, args) -> Settings:
    data_dir = Path(args.cache_dir) / f"{backend}-{size}-s{args.seed}"
    url = ""
    if backend == "postgresql":
        url = pg_admin_url().rsplit("/", 1)[0] + f"/expediente_bench_dicom_{size}_s{args.seed}"
    return Settings(data_dir=data_dir, secret_key=SECRET, database_url=url)


def _admin() -> sa.Engine:
    return sa.create_engine(pg_admin_url().replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")


def index(backend: str, size: int, args) -> tuple[Settings, dict]:
    """The cached archive of ``size`` instances (built when missing); with the fill figures."""
    settings = _settings(backend, size, args)
    marker = settings.data_dir / "filled.json"
    if marker.exists():
        info = orjson.loads(marker.read_bytes())
        if info.get("instances") == size and info.get("version") == VERSION:
            log(f"{backend} {size}: cached index in {settings.data_dir}")
            return settings, {**info, "cached": True}
    shutil.rmtree(settings.data_dir, ignore_errors=True)
    settings.data_dir.mkdir(parents=True)
    if backend == "postgresql":
        name = settings.database_url.rsplit("/", 1)[1]
        admin = _admin()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
    engine = make_engine(settings)
    try:
        upgrade(engine)
        log(f"{backend} {size}: filling the index")
        start = time.perf_counter()
        counts = fill(engine, size, seed=args.seed)
        seconds = time.perf_counter() - start
        refresh(engine)
    finally:
        engine.dispose()
    info = {**counts, "version": VERSION, "fill_seconds": round(seconds, 2), "instances_per_s": round(size / seconds)}
    marker.write_bytes(orjson.dumps(info))
    log(f"{backend} {size}: {counts} in {seconds:.1f} s")
    return settings, {**info, "cached": False}


def clean(args) -> None:
    shutil.rmtree(args.cache_dir, ignore_errors=True)
    admin = _admin()
    with admin.connect() as conn:
        for (name,) in conn.exec_driver_sql("SELECT datname FROM pg_database WHERE datname LIKE 'expediente_bench_dicom_%'").all():
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


# ------------------------------------------------------------------ measuring


def _keys(params: dict[str, str]) -> tuple[dict, bool]:
    keys = {k: v for k, v in params.items() if k != "fuzzymatching"}
    return keys, params.get("fuzzymatching") == "true"


def measure_engine(engine: sa.Engine, studies: list[dict], args) -> dict:
    out = {}
    for shape in SHAPES:
        cases = [(s["study_uid"], queries(s)[shape]) for s in studies]
        times, found = [], []
        for n in range(args.warmup + args.requests):
            uid, params = cases[n % len(cases)]
            keys, fuzzy = _keys(params)
            start = time.perf_counter()
            with engine.connect() as conn:
                rows = query.find(conn, "STUDY", keys, scope=EVERYTHING, limit=args.limit, fuzzy=fuzzy)
            elapsed = (time.perf_counter() - start) * 1000
            if n >= args.warmup:
                times.append(elapsed)
                found.append(any(r["StudyInstanceUID"] == uid for r in rows))
        out[shape] = {**_percentiles(times), "found": round(sum(found) / len(found), 3)}
    return out


def measure_http(settings: Settings, studies: list[dict], args) -> dict:
    import httpx

    env = {k: v for k, v in os.environ.items() if k not in ("EXPEDIENTE_DATABASE_URL", "EXPEDIENTE_CONFIG", "EXPEDIENTE_BASE_URL")}
    env.update({"EXPEDIENTE_DATA_DIR": str(settings.data_dir), "EXPEDIENTE_SECRET_KEY": SECRET, "EXPEDIENTE_LOG_LEVEL": "warning",
                "EXPEDIENTE_TOKEN_TTL_SECONDS": "7200"})
    if settings.database_url:
        env["EXPEDIENTE_DATABASE_URL"] = settings.database_url
    client_id = f"bench.qido.{secrets.token_hex(3)}"
    secret = add_client(env, client_id)
    out = {}
    with running_server(env, workers=args.workers) as server:
        token = get_token(server.base_url, client_id, secret)
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            for shape in SHAPES:
                cases = [(s["study_uid"], queries(s)[shape]) for s in studies]
                times, found, errors = [], [], []
                before = None
                for n in range(args.warmup + args.requests):
                    if n == args.warmup:
                        before = security_counters(server.base_url)
                    uid, params = cases[n % len(cases)]
                    start = time.perf_counter()
                    r = http.get("/dicomweb/studies", params={**params, "limit": str(args.limit)})
                    body = r.content
                    elapsed = (time.perf_counter() - start) * 1000
                    if n < args.warmup:
                        continue
                    if r.status_code not in (200, 204):
                        errors.append(f"{r.status_code} {body[:200]!r}")
                        continue
                    times.append(elapsed)
                    uids = [s["0020000D"]["Value"][0] for s in orjson.loads(body)] if r.status_code == 200 else []
                    found.append(uid in uids)
                share = security_share(before, security_counters(server.base_url))
                out[shape] = {**(_percentiles(times) if times else {}), "found": round(sum(found) / max(1, len(found)), 3),
                              "errors": len(errors), **({"first_error": errors[0]} if errors else {}),
                              "policy_percent": share["policy_percent"], "audit_percent": share["audit_percent"]}
    return out


def plans(engine: sa.Engine, study: dict, limit: int) -> dict[str, list[str]]:
    out = {}
    with engine.connect() as conn:
        for shape, params in queries(study).items():
            keys, fuzzy = _keys(params)
            statement = query.plan(conn.dialect.name, "STUDY", keys, scope=EVERYTHING, limit=limit, fuzzy=fuzzy).statement
            sql = str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            if conn.dialect.name == "sqlite":
                out[shape] = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all()]
            else:
                out[shape] = [row[0] for row in conn.exec_driver_sql("EXPLAIN " + sql).all()]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgresql"))
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--sample", type=int, default=50)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cache-dir", default="/tmp/expediente-bench-dicom")
    parser.add_argument("--no-http", action="store_true", help="measure the engine only")
    parser.add_argument("--clean", action="store_true", help="remove the cached indexes and exit")
    args = parser.parse_args()
    if args.clean:
        clean(args)
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict = {}
    for backend in args.backend or ["sqlite"]:
        for size in sizes:
            settings, filled = index(backend, size, args)
            engine = make_engine(settings)
            try:
                studies = sample(engine, args.sample, seed=args.seed + 1)
                random.Random(args.seed).shuffle(studies)
                entry = {"index": filled, "engine_ms": measure_engine(engine, studies, args)}
                entry["plans"] = plans(engine, studies[0], args.limit)
            finally:
                engine.dispose()
            if not args.no_http:
                entry["http_ms"] = measure_http(settings, studies, args)
            results.setdefault(backend, {})[str(size)] = entry
            log(f"{backend} {size}: " + ", ".join(f"{k} {v['p95']}" for k, v in entry.get("http_ms", entry["engine_ms"]).items() if "p95" in v))
    targets = {}
    for backend, by_size in results.items():
        largest = by_size[str(max(sizes))]
        figures = largest.get("http_ms", largest["engine_ms"])
        targets[backend] = {
            "instances": max(sizes),
            "measured": "http" if "http_ms" in largest else "engine",
            "p95_below_50ms": {shape: figures[shape].get("p95", 1e9) < 50 for shape in TARGET_SHAPES},
        }
    print(orjson.dumps({"machine": machine_info(), "settings": vars(args), "results": results, "targets": targets},
                       option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    run_main(main, "cached indexes are kept under --cache-dir")
