"""Synthetic populations kept between benchmark runs, and the parallel loader that builds them.

What is here (used by ``fhir_search.py``, usable by other benchmarks):

- ``PopulationCache``: one database per (backend, population size), kept under ``--data-dir``
  (SQLite: ``<data-dir>/sqlite/p<N>/expediente.db``; PostgreSQL: database ``<name>_p<N>`` on the
  admin URL's server, its data directory ``<data-dir>/postgresql/p<N>``). Each has a marker file
  ``population.json``: seed, patients, resources, a fingerprint of what the stored rows depend on,
  state (``complete`` only when usable) and the load steps that built it. ``ensure(N)`` reuses a
  complete population of N patients, or builds it from the largest smaller one (copied, or moved
  with ``keep_smaller=False``) by loading only the additional patients, or from scratch.
- ``load_patients``: the parallel loader. Patients [start, stop) are split into contiguous slices,
  one per process (``multiprocessing`` spawn); each process replays the patients before its slice
  (``PopulationStream.skip``: what is shared between patients, the facilities, physicians and
  CURPs already used, depends on them), then generates its slice and stores it with
  ``ResourceStore.bulk_load`` (validation, search-index extraction and audit in the process,
  batched inserts; on SQLite the writers queue on the store's file lock, so one process prepares
  a batch while another inserts). Concatenated, the slices are exactly ``generate(stop, seed)``
  after ``generate(start, seed)``: each shared resource is stored once.
- ``fingerprint(seed)``: hashes of a small sample of the population, of its search-index rows and
  the schema revision. A cached database built with another fingerprint is stale (the generator,
  the index extraction or the schema changed) and is rebuilt unless told otherwise.
- ``purge``: physically removes resources the benchmark itself created (transaction ingest), so
  the cached population stays exactly the generated one. Audit entries are kept.

Progress goes to stderr through ``log``; nothing here writes to stdout.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import queue as queue_mod
import re
import secrets
import shutil
import sqlite3
import time
import traceback
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import orjson

import _server
from _server import log

MARKER = "population.json"
CLIENT_ID_PREFIX = "bench.search"
FINGERPRINT_PATIENTS = 20
# Used until something was measured in the cache (2,000 patients, seed 1: 85.7 resources per
# patient; 6.8 KB per resource on SQLite, 6.2 KB on PostgreSQL: the body stored twice, current and
# history, ~11 search-index rows and one audit row each).
DEFAULT_BYTES_PER_RESOURCE = {"sqlite": 6_800, "postgresql": 6_200}
DEFAULT_RESOURCES_PER_PATIENT = 85.7
_SIZE_DIR = re.compile(r"^p(\d+)$")


# ------------------------------------------------------------------ fingerprint


def fingerprint(seed: int) -> dict:
    """What the stored rows depend on: the generator's output, the index rows extracted from it,
    and the schema revision (a sample of FINGERPRINT_PATIENTS patients, so edits that change
    nothing stored do not invalidate a cache)."""
    from expediente.db.migrate import head_revision
    from expediente.fhir.search.extract import extract_index, patient_key
    from expediente.synth.generator import generate

    population, index = hashlib.sha256(), hashlib.sha256()
    for res in generate(FINGERPRINT_PATIENTS, seed):
        population.update(orjson.dumps(res))
        rows = extract_index(res)
        index.update(orjson.dumps([res["resourceType"], res["id"], patient_key(res), rows], default=str, option=orjson.OPT_SORT_KEYS))
    return {"population": population.hexdigest()[:16], "index": index.hexdigest()[:16], "schema": head_revision()}


# ------------------------------------------------------------------ markers and databases


def _read_json(path: Path) -> dict | None:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None


def _write_json(path: Path, value: dict) -> None:
    """Atomically, readable by the owner only (a marker holds the bench client's secret)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps(value, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)


@dataclass
class PopulationDb:
    """One cached database holding the first ``patients`` patients of a seed."""

    backend: str
    patients: int
    dir: Path  # EXPEDIENTE_DATA_DIR of its server
    pg_admin_url: str | None = None
    pg_name: str | None = None
    marker: dict = field(default_factory=dict)

    @property
    def marker_path(self) -> Path:
        return self.dir / MARKER

    @property
    def database_url(self) -> str | None:
        return None if self.pg_name is None else _server._with_database(self.pg_admin_url, self.pg_name)

    @property
    def sqlalchemy_url(self) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.dir / 'expediente.db'}"
        return "postgresql+psycopg://" + self.database_url.split("://", 1)[1]

    def env(self) -> dict[str, str]:
        """Environment for `expediente` commands and servers on this database (no config file)."""
        env = dict(os.environ)
        for inherited in ("EXPEDIENTE_DATABASE_URL", "EXPEDIENTE_CONFIG", "EXPEDIENTE_BASE_URL", "EXPEDIENTE_DATA_DIR"):
            env.pop(inherited, None)
        env["EXPEDIENTE_DATA_DIR"] = str(self.dir)
        if self.database_url:
            env["EXPEDIENTE_DATABASE_URL"] = self.database_url
        return env

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_json(self.marker_path, self.marker)

    def set_state(self, state: str) -> None:
        self.marker["state"] = state
        self.save()

    # -- direct SQL (the server is stopped, or only reads meanwhile)

    def engine(self):
        import sqlalchemy as sa

        return sa.create_engine(self.sqlalchemy_url, poolclass=sa.pool.NullPool)

    def exists(self) -> bool:
        if self.backend == "sqlite":
            return (self.dir / "expediente.db").is_file()
        return _pg_database_exists(self.pg_admin_url, self.pg_name)

    def counts(self) -> tuple[int, int]:
        """(patients, resources) stored. A cached population has no deleted resources (what the
        benchmark adds is purged physically), so plain counts: they run on an index."""
        import sqlalchemy as sa

        from expediente.db.schema import resource

        engine = self.engine()
        try:
            with engine.connect() as conn:
                patients = conn.execute(sa.select(sa.func.count()).where(resource.c.res_type == "Patient")).scalar_one()
                resources = conn.execute(sa.select(sa.func.count()).select_from(resource)).scalar_one()
        finally:
            engine.dispose()
        return patients, resources

    def size_bytes(self) -> int | None:
        if self.backend == "sqlite":
            return sum(p.stat().st_size for p in self.dir.glob("expediente.db*") if p.is_file())
        import psycopg

        try:
            with psycopg.connect(self.pg_admin_url, autocommit=True, connect_timeout=10) as conn:
                return conn.execute("SELECT pg_database_size(%s)", (self.pg_name,)).fetchone()[0]
        except Exception:  # noqa: BLE001 - informational
            return None

    def reindex_pending(self) -> dict[str, str] | None:
        """Types the server flags as being re-indexed (their searches may answer 503); None if the
        schema has no such table."""
        import sqlalchemy as sa

        engine = self.engine()
        try:
            with engine.connect() as conn:
                return dict(conn.execute(sa.text("SELECT res_type, reason FROM search_reindex")).all())
        except sa.exc.SQLAlchemyError:
            return None
        finally:
            engine.dispose()

    def finish_load(self) -> float:
        """After a load: SQLite checkpoints and empties its WAL (durable from here on); PostgreSQL
        runs VACUUM (ANALYZE), what autovacuum would do after a big insert, so plans and
        index-only scans do not depend on when autovacuum last ran. Returns the seconds spent."""
        t0 = time.perf_counter()
        if self.backend == "sqlite":
            conn = sqlite3.connect(self.dir / "expediente.db", timeout=60)
            try:
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
        else:
            import psycopg

            with psycopg.connect(self.database_url, autocommit=True, connect_timeout=10) as conn:
                conn.execute("VACUUM (ANALYZE)")
        return round(time.perf_counter() - t0, 2)

    def drop(self) -> None:
        if self.backend == "postgresql" and self.pg_name:
            _pg_drop(self.pg_admin_url, self.pg_name)
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_database_exists(admin_url: str, name: str) -> bool:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def _pg_drop(admin_url: str, name: str) -> None:
    if _pg_database_exists(admin_url, name):
        _server._pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        log(f"dropped PostgreSQL database {name}")


def pg_data_directory(admin_url: str) -> Path | None:
    """The cluster's data directory, when it is on this machine (for the disk-space check)."""
    import psycopg

    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
            path = Path(conn.execute("SHOW data_directory").fetchone()[0])
    except Exception:  # noqa: BLE001 - not allowed to see it, or remote
        return None
    return path if path.exists() else None


class DiskSpaceError(RuntimeError):
    pass


class PopulationCache:
    """The cached populations of one backend (see the module docstring)."""

    def __init__(
        self,
        backend: str,
        data_dir: Path,
        seed: int,
        *,
        pg_admin_url: str,
        pg_database: str,
        processes: int,
        batch_size: int,
        keep_smaller: bool = True,
        reuse_stale: bool = False,
        disk_check: bool = True,
        load_sqlite_synchronous: str = "OFF",
    ):
        self.backend = backend
        self.root = Path(data_dir) / backend
        self.seed = seed
        self.pg_admin_url = pg_admin_url
        self.pg_database = pg_database
        self.processes = processes
        self.batch_size = batch_size
        self.keep_smaller = keep_smaller
        self.reuse_stale = reuse_stale
        self.disk_check = disk_check
        self.load_sqlite_synchronous = load_sqlite_synchronous
        self._fingerprint: dict | None = None

    @property
    def fingerprint(self) -> dict:
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.seed)
        return self._fingerprint

    def db(self, patients: int) -> PopulationDb:
        d = self.root / f"p{patients}"
        pg = f"{self.pg_database}_p{patients}" if self.backend == "postgresql" else None
        db = PopulationDb(self.backend, patients, d, self.pg_admin_url if pg else None, pg)
        db.marker = _read_json(db.marker_path) or {}
        return db

    def cached_sizes(self) -> list[int]:
        sizes = []
        if self.root.is_dir():
            for entry in self.root.iterdir():
                m = _SIZE_DIR.match(entry.name)
                if m and (entry / MARKER).is_file():
                    sizes.append(int(m.group(1)))
        return sorted(sizes)

    def clean(self) -> None:
        """Drop every cached population of this backend (databases included)."""
        for size in self.cached_sizes():
            self.db(size).drop()
        if self.backend == "postgresql":
            import psycopg

            with psycopg.connect(self.pg_admin_url, autocommit=True, connect_timeout=10) as conn:
                names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (self.pg_database.replace("_", "\\_") + "\\_p%",))]
            for name in names:
                _pg_drop(self.pg_admin_url, name)
        shutil.rmtree(self.root, ignore_errors=True)
        log(f"{self.backend}: cached populations removed")

    def usable(self, db: PopulationDb, *, verify: bool = True) -> tuple[bool, str]:
        """Whether a cached population can be used as is, and why not."""
        m = db.marker
        if not m:
            return False, "no marker"
        if m.get("state") != "complete":
            return False, f"state {m.get('state')!r} (an interrupted load or ingest)"
        if m.get("seed") != self.seed or m.get("patients") != db.patients:
            return False, f"seed/patients {m.get('seed')}/{m.get('patients')} in the marker"
        if m.get("fingerprint") != self.fingerprint:
            if not self.reuse_stale:
                return False, f"stale: fingerprint {m.get('fingerprint')} != {self.fingerprint} (generator, index extraction or schema changed)"
            log(f"{self.backend} p{db.patients}: STALE fingerprint, reused as asked (--reuse-stale)")
        if not db.exists():
            return False, "database missing"
        if verify:
            patients, resources = db.counts()
            if (patients, resources) != (m.get("patients"), m.get("resources")):
                return False, f"database holds {patients} patients / {resources} resources, marker says {m.get('patients')} / {m.get('resources')}"
        return True, "ok"

    # -- building

    def ensure(self, patients: int) -> tuple[PopulationDb, dict]:
        """A complete population of ``patients`` patients, and what was done to get it."""
        db = self.db(patients)
        ok, why = self.usable(db) if db.marker else (False, "not built")
        if ok:
            log(f"{self.backend} p{patients}: cached population reused ({db.marker['resources']} resources)")
            return db, {"reused": True}
        log(f"{self.backend} p{patients}: {why}; building")
        if db.marker or db.exists():
            db.drop()
            db = self.db(patients)
        base = None
        for size in reversed(self.cached_sizes()):
            if size < patients:
                candidate = self.db(size)
                if self.usable(candidate)[0]:
                    base = candidate
                    break
        return db, self._build(db, base)

    def _estimate(self, base: PopulationDb | None, patients: int) -> dict:
        rpp = DEFAULT_RESOURCES_PER_PATIENT
        bpr = float(DEFAULT_BYTES_PER_RESOURCE[self.backend])
        if base is not None and base.marker.get("resources"):
            rpp = base.marker["resources"] / base.patients
            size = base.size_bytes()
            if size:
                bpr = size / base.marker["resources"]
        new_resources = (patients - (base.patients if base else 0)) * rpp
        total_resources = patients * rpp
        copy = base is not None and self.keep_smaller
        need = (total_resources if copy else new_resources) * bpr
        return {"resources_per_patient": round(rpp, 1), "bytes_per_resource": round(bpr), "bytes_needed": int(need)}

    def disk_location(self) -> Path | None:
        """An existing path on the filesystem the databases of this backend grow on (None: unknown)."""
        where = self.root if self.backend == "sqlite" else pg_data_directory(self.pg_admin_url)
        if where is None:
            return None
        probe = Path(where)
        while not probe.exists():
            probe = probe.parent
        return probe

    def measured_basis(self) -> dict:
        """From the cache: resources per patient and bytes per resource of the largest complete
        population, and the largest load step measured (its rate); defaults where none."""
        out = {
            "resources_per_patient": DEFAULT_RESOURCES_PER_PATIENT,
            "bytes_per_resource": float(DEFAULT_BYTES_PER_RESOURCE[self.backend]),
            "measured": False,
            "load_step": None,
        }
        for n in self.cached_sizes():
            db = self.db(n)
            m = db.marker
            if m.get("seed") != self.seed or not m.get("resources"):
                continue
            if m.get("state") == "complete":
                size = db.size_bytes()
                out["resources_per_patient"] = m["resources"] / n
                if size:
                    out["bytes_per_resource"] = size / m["resources"]
                out["measured"] = True
            for step in m.get("steps", []):
                best = out["load_step"]
                if step.get("resources") and (best is None or step["resources"] > best["resources"]):
                    out["load_step"] = {k: step.get(k) for k in ("from", "to", "resources", "seconds", "resources_per_s", "processes", "batch_size", "at")}
        return out

    def plan(self, sizes: list[int]) -> dict:
        """What building ``sizes`` from the current cache takes: the sizes to build, resources to
        load, disk to add, and time at the best measured load rate (None before any load)."""
        have = [n for n in self.cached_sizes() if self.usable(self.db(n), verify=False)[0]]
        basis = self.measured_basis()
        rpp, bpr = basis["resources_per_patient"], basis["bytes_per_resource"]
        available = set(have)
        to_build, resources, disk = [], 0.0, 0.0
        for n in sorted(sizes):
            if n in available:
                continue
            base = max((m for m in available if m < n), default=0)
            new = (n - base) * rpp
            resources += new
            disk += (n * rpp if base and self.keep_smaller else new) * bpr
            to_build.append(n)
            available.add(n)
            if base and not self.keep_smaller:
                available.discard(base)
        rate = (basis["load_step"] or {}).get("resources_per_s")
        return {
            "cached": have,
            "to_build": to_build,
            "resources_to_load": round(resources),
            "bytes_to_add": round(disk),
            "seconds": round(resources / rate) if rate and resources else (0 if not resources else None),
            "basis": basis,
        }

    def _check_disk(self, estimate: dict) -> None:
        probe = self.disk_location()
        if probe is None:
            log(f"{self.backend}: cannot see the PostgreSQL data directory; disk space not checked")
            return
        free = shutil.disk_usage(probe).free
        estimate["bytes_free"] = free
        if self.disk_check and estimate["bytes_needed"] > 0.9 * free:
            raise DiskSpaceError(
                f"{self.backend}: building needs about {estimate['bytes_needed'] / 1e9:.1f} GB, {free / 1e9:.1f} GB free on {probe} "
                "(smaller --sizes, --no-keep-smaller, --clean another backend's cache, or --no-disk-check)"
            )

    def _build(self, db: PopulationDb, base: PopulationDb | None) -> dict:
        estimate = self._estimate(base, db.patients)
        self._check_disk(estimate)
        report: dict = {"reused": False, "built_from": base.patients if base else 0, "estimate": estimate}
        steps: list[dict] = []
        if base is None:
            db.marker = {"format": 1, "backend": self.backend, "seed": self.seed, "patients": 0, "resources": 0}
            self._create_empty(db)
            start, resources = 0, 0
        else:
            t0 = time.perf_counter()
            how = self._copy(base, db) if self.keep_smaller else self._move(base, db)
            report["base_" + how + "_s"] = round(time.perf_counter() - t0, 2)
            start, resources = base.patients, base.marker["resources"]
            steps = list(base.marker.get("steps", []))
            db.marker = {**base.marker}
        db.marker.update(
            {
                "state": "loading",
                "patients": db.patients,
                "fingerprint": self.fingerprint,
                "database": db.pg_name,
                "loading": {"from": start, "to": db.patients},
            }
        )
        db.save()
        load = load_patients(
            db.env() | {"EXPEDIENTE_SQLITE_SYNCHRONOUS": self.load_sqlite_synchronous},
            self.seed,
            start,
            db.patients,
            self.processes,
            self.batch_size,
            label=f"{self.backend} p{db.patients}",
        )
        load["finish_s"] = db.finish_load()
        load["from"], load["to"] = start, db.patients
        load["at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        steps.append(load)
        db.marker.pop("loading", None)
        db.marker.update({"resources": resources + load["resources"], "steps": steps, "state": "complete"})
        patients, stored = db.counts()
        if (patients, stored) != (db.patients, db.marker["resources"]):
            db.set_state("broken")
            raise RuntimeError(f"{self.backend} p{db.patients}: loaded {patients} patients / {stored} resources, expected {db.patients} / {db.marker['resources']}")
        db.save()
        size = db.size_bytes()
        report.update({"step": load, "database_bytes": size})
        log(
            f"{self.backend} p{db.patients}: {load['resources']} resources in {load['seconds']} s "
            f"({load['resources_per_s']}/s, {load['processes']} processes), finish {load['finish_s']} s"
        )
        return report

    def _create_empty(self, db: PopulationDb) -> None:
        db.dir.mkdir(parents=True, exist_ok=True)
        if self.backend == "postgresql":
            _server._pg_admin(self.pg_admin_url, f'CREATE DATABASE "{db.pg_name}"')
            log(f"created PostgreSQL database {db.pg_name}")
        env = db.env()
        _server.expediente(["init"], env)
        client_id = f"{CLIENT_ID_PREFIX}.{secrets.token_hex(3)}"
        secret = _server.add_client(env, client_id, "system")
        db.marker["client"] = {"id": client_id, "secret": secret}

    def _copy(self, base: PopulationDb, db: PopulationDb) -> str:
        log(f"{self.backend}: copying p{base.patients} to p{db.patients}")
        ignore = shutil.ignore_patterns("server.log", "prometheus", "*.writer-lock", MARKER, "*.tmp")
        if self.backend == "sqlite":
            base.finish_load()  # an empty WAL: the main file alone is the database
        shutil.copytree(base.dir, db.dir, ignore=ignore)
        if self.backend == "postgresql":
            _server._pg_admin(self.pg_admin_url, f'CREATE DATABASE "{db.pg_name}" TEMPLATE "{base.pg_name}" STRATEGY FILE_COPY')
        return "copy"

    def _move(self, base: PopulationDb, db: PopulationDb) -> str:
        log(f"{self.backend}: moving p{base.patients} to p{db.patients} (--no-keep-smaller)")
        base.set_state("moving")
        if self.backend == "postgresql":
            _server._pg_admin(self.pg_admin_url, f'ALTER DATABASE "{base.pg_name}" RENAME TO "{db.pg_name}"')
        os.replace(base.dir, db.dir)
        (db.dir / MARKER).unlink(missing_ok=True)
        return "move"


# ------------------------------------------------------------------ the parallel loader


def split(start: int, stop: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous slices of [start, stop), as even as possible, none empty."""
    n = stop - start
    parts = max(1, min(parts, n))
    bounds = [start + n * i // parts for i in range(parts + 1)]
    return [(lo, hi) for lo, hi in zip(bounds, bounds[1:]) if hi > lo]


def _load_worker(index: int, env: dict, seed: int, start: int, stop: int, batch_size: int, out) -> None:
    """One loader process: replay the patients before ``start``, then generate and store its slice."""
    try:
        os.environ.update(env)
        os.chdir(env["EXPEDIENTE_DATA_DIR"])  # no ./expediente.toml from elsewhere
        from expediente.app import Services
        from expediente.config import load_settings
        from expediente.fhir.store import Caller
        from expediente.security.principal import Principal
        from expediente.synth.generator import PopulationStream

        t0 = time.perf_counter()
        stream = PopulationStream(seed)
        stream.skip(start)
        replay_s = time.perf_counter() - t0
        services = Services.build(load_settings())
        caller = Caller(Principal(subject="bench.loader", kind="system", role="system"), "bench")
        done = {"patients": 0, "resources": 0}

        def counted():
            for res in stream.take(stop - start):
                if res["resourceType"] == "Patient":
                    done["patients"] += 1
                yield res

        t1 = time.perf_counter()
        try:
            for n in services.store.bulk_load(caller, counted(), batch_size=batch_size):
                done["resources"] += n
                out.put(("progress", index, done["patients"], done["resources"]))
        finally:
            services.close()
        out.put(
            (
                "done",
                index,
                {
                    "slice": [start, stop],
                    "patients": stop - start,
                    "resources": done["resources"],
                    "replay_s": round(replay_s, 2),
                    "load_s": round(time.perf_counter() - t1, 2),
                },
            )
        )
    except BaseException:  # noqa: BLE001 - report everything to the coordinator
        out.put(("error", index, traceback.format_exc()))


def load_patients(
    env: dict, seed: int, start: int, stop: int, processes: int, batch_size: int, *, label: str = "load", progress_every: float = 15.0
) -> dict:
    """Generate and store patients [start, stop) with ``processes`` processes; the load figures."""
    if stop <= start:
        return {"patients": 0, "resources": 0, "seconds": 0.0, "resources_per_s": None, "processes": 0, "batch_size": batch_size, "workers": []}
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    slices = split(start, stop, processes)
    procs = [
        ctx.Process(target=_load_worker, args=(i, env, seed, lo, hi, batch_size, out), name=f"bench-loader-{i}", daemon=True)
        for i, (lo, hi) in enumerate(slices)
    ]
    log(f"{label}: loading patients [{start}, {stop}) with {len(procs)} processes, slices {slices}")
    cpu0 = _load_cpu_sample()
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    progress = {i: (0, 0) for i in range(len(procs))}
    results: dict[int, dict] = {}
    last_log = t0
    try:
        while len(results) < len(procs):
            try:
                kind, i, *rest = out.get(timeout=5)
            except queue_mod.Empty:
                dead = [p for i, p in enumerate(procs) if i not in results and not p.is_alive()]
                if dead:
                    # It may have reported just before exiting: one more look at the queue.
                    try:
                        kind, i, *rest = out.get(timeout=2)
                    except queue_mod.Empty:
                        raise RuntimeError(f"{label}: loader process {dead[0].name} exited with {dead[0].exitcode} without reporting") from None
                else:
                    continue
            if kind == "progress":
                progress[i] = (rest[0], rest[1])
            elif kind == "done":
                results[i] = rest[0]
            else:
                raise RuntimeError(f"{label}: loader process {i} failed:\n{rest[0]}")
            now = time.perf_counter()
            if now - last_log >= progress_every:
                last_log = now
                pats = sum(p for p, _ in progress.values())
                res = sum(r for _, r in progress.values())
                log(f"{label}: {pats}/{stop - start} patients, {res} resources, {res / (now - t0):.0f} resources/s")
    finally:
        for p in procs:
            if p.is_alive() and len(results) < len(procs):
                p.terminate()  # our own children only, by handle
            p.join(30)
    seconds = time.perf_counter() - t0
    resources = sum(r["resources"] for r in results.values())
    return {
        "patients": stop - start,
        "resources": resources,
        "seconds": round(seconds, 2),
        "resources_per_s": round(resources / seconds, 1),
        "processes": len(procs),
        "batch_size": batch_size,
        "workers": [results[i] for i in sorted(results)],
        "cpu": _load_cpu(cpu0, _load_cpu_sample()),
    }


def _load_cpu_sample() -> dict:
    import resource as rusage

    ru = rusage.getrusage(rusage.RUSAGE_CHILDREN)  # reaped loader processes (joined above)
    pg = _server.postmaster_pid()
    busy, _total = _server.machine_cpu()
    return {
        "wall": time.perf_counter(),
        "children": ru.ru_utime + ru.ru_stime,
        "postgres": _server.tree_cpu_seconds(pg) if pg else None,
        "machine_busy": busy,
    }


def _load_cpu(t0: dict, t1: dict) -> dict:
    """Cores used while loading: the loader processes, the local PostgreSQL cluster (whichever
    backend is loading: on SQLite it shows other work) and the whole machine."""
    wall = t1["wall"] - t0["wall"]
    loaders = t1["children"] - t0["children"]
    pg = None if t0["postgres"] is None or t1["postgres"] is None else t1["postgres"] - t0["postgres"]
    busy = t1["machine_busy"] - t0["machine_busy"]
    return {
        "loader_cores": round(loaders / wall, 2),
        "postgres_cores": None if pg is None else round(pg / wall, 2),
        "machine_busy_cores": round(busy / wall, 2),
        "other_cores": round((busy - loaders - (pg or 0)) / wall, 2),
    }


# ------------------------------------------------------------------ purging what a benchmark created


def purge(db: PopulationDb, created: dict[str, list[str]], chunk: int = 500) -> int:
    """Physically delete resources (every version, every index row) the benchmark created in a
    cached population, so it stays exactly the generated one. Every table with ``res_type`` and
    ``res_id`` columns is cleaned except the audit log, which keeps its entries. Returns the number
    of resource rows deleted."""
    import sqlalchemy as sa

    from expediente.db.schema import metadata, resource

    tables = [t for t in metadata.sorted_tables if {"res_type", "res_id"} <= set(t.c.keys()) and t.name != "audit_log"]
    deleted = 0
    engine = db.engine()
    try:
        with engine.begin() as conn:
            for res_type, ids in created.items():
                for k in range(0, len(ids), chunk):
                    part = ids[k : k + chunk]
                    for table in tables:
                        n = conn.execute(table.delete().where(table.c.res_type == res_type, table.c.res_id.in_(part))).rowcount
                        if table is resource:
                            deleted += n
    finally:
        engine.dispose()
    return deleted


def admin_url_without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return urllib.parse.urlunsplit(parts)


# ------------------------------------------------------------------ patients beyond a population


def next_patients(data_dir: Path, seed: int, start: int, count: int, population_fingerprint: str) -> dict:
    """Patients ``start`` .. ``start + count - 1`` of the seed, as a population of ``start`` patients
    would receive them next: ``{"patients": [[own resources...], ...], "shared": {"Type/id":
    resource}}`` where ``shared`` holds the facilities and physicians these patients are the first to
    use (not in the population yet); the others they reference are. Computing it replays the
    ``start`` patients before (about 1 s per 1,000 patients), so it is kept in
    ``<data-dir>/ingest/`` and shared by the backends."""
    from expediente.synth.bundles import reference_to, split_patients
    from expediente.synth.generator import PopulationStream

    path = Path(data_dir) / "ingest" / f"seed{seed}-from{start}-n{count}-{population_fingerprint}.json"
    cached = _read_json(path)
    if cached is not None:
        return cached
    log(f"generating {count} patients after the first {start} for the ingest (replays {start} patients)")
    t0 = time.perf_counter()
    stream = PopulationStream(seed)
    stream.skip(start)
    groups = list(split_patients(stream.take(count)))
    patients = [g.own for g in groups if g.own]
    shared = {reference_to(r): r for g in groups for r in g.shared}
    material = {"seed": seed, "start": start, "count": count, "patients": patients, "shared": shared}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(material))
    log(f"ingest material ready in {time.perf_counter() - t0:.1f} s: {sum(map(len, patients))} resources, {len(shared)} new shared")
    return material
