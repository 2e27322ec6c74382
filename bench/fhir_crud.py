"""FHIR CRUD throughput and latency against a real `expediente serve`, on SQLite and PostgreSQL.

What it measures, per backend (side by side in one run):

- ``create``: N concurrent clients POST /fhir/Patient with a realistic Mexican Patient (~1 KB: a
  valid, unique CURP under urn:oid:2.16.840.1.113883.4.629, two surnames, address, telecom).
- ``read``: GET /fhir/Patient/{id}, ids picked at random among those the create phase made.
- ``update``: PUT /fhir/Patient/{id} with a new phone number; each client updates its own
  disjoint slice of the ids, so no request should conflict.

Each phase opens fresh keep-alive connections (one per client) during ``--warmup`` unmeasured
seconds, then measures ``--seconds``. The three phases are repeated ``--repeat`` times on the same
server (the database grows from repeat to repeat); the summary holds medians across repeats and
every run's own figures. ``requests_per_s`` counts successful (2xx) requests; any other status or
a transport error counts in ``errors``; latencies (p50/p95/p99/max, in ms) are those of successful
requests. A request counts if it starts and ends inside the measured window.

The server is a subprocess (``expediente serve --workers N``) on a temporary data directory; on
PostgreSQL it gets a fresh database ``expediente_bench_<hex>`` (admin URL from
EXPEDIENTE_TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/postgres), dropped at
the end. The load generator is one asyncio + aiohttp process; because server, database and load
generator may share few cores, each phase also reports the CPU used by the load generator, the
server (in total and per process, which shows how its workers split the connections), the local
PostgreSQL cluster, anything else on the machine, and the machine's busy fraction.

Run (from the repository root; JSON on stdout, progress on stderr):

    .venv/bin/python bench/fhir_crud.py                                  # both backends, defaults
    .venv/bin/python bench/fhir_crud.py --backend sqlite --seconds 5 --repeat 1
    .venv/bin/python bench/fhir_crud.py --clients 16 --seconds 10 --repeat 3 --workers 2 > result.json

Server settings pass through the environment (e.g. EXPEDIENTE_LOG_LEVEL=warning,
EXPEDIENTE_SQLITE_SYNCHRONOUS=NORMAL); the defaults are the shipped ones.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import statistics
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from time import perf_counter

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _server  # noqa: E402
from _server import log  # noqa: E402

from expediente.mx.curp import build_curp  # noqa: E402 - valid CURPs, as RENAPO builds them

PHASES = ("create", "read", "update")
TARGETS = {  # at 16 clients
    "read": {"min_requests_per_s": 1000, "max_p99_ms": 50},
    "create": {"min_requests_per_s": 400, "max_p99_ms": 50},
}
TARGET_CLIENTS = 16
DEFINITIONS = {
    "requests": "responses to requests that started and ended inside the measured window (errors included)",
    "errors": "non-2xx answers and transport errors; error_kinds counts them by status or exception",
    "requests_per_s": "successful (2xx) requests per second of the measured window",
    "latency_ms": "nearest-rank percentiles of successful requests, as the load generator saw them",
    "summary": "medians across repeats (errors: summed); runs: each repeat",
    "cpu": "cores = CPU seconds / wall seconds over the measured window; server_process_cores: per server "
    "process (master, workers, resource tracker); other: everything else on the machine",
}

# ------------------------------------------------------------------ a realistic Mexican Patient

CURP_SYSTEM = "urn:oid:2.16.840.1.113883.4.629"
FATHERS_FAMILY = "http://hl7.org/fhir/StructureDefinition/humanname-fathers-family"
MOTHERS_FAMILY = "http://hl7.org/fhir/StructureDefinition/humanname-mothers-family"
SURNAMES = ("Hernández", "García", "Martínez", "López", "González", "Pérez", "Rodríguez", "Sánchez", "Ramírez", "Cruz", "Flores", "Gómez")
GIVEN = {"female": ("María Guadalupe", "Juana", "Margarita", "Verónica", "Leticia", "Rosa María"),
         "male": ("José Luis", "Juan", "Miguel Ángel", "Francisco", "Jesús", "Alejandro")}  # fmt: skip
STATES = (  # RENAPO key, state, capital, postal prefix
    ("DF", "Ciudad de México", "Ciudad de México", "06"), ("JC", "Jalisco", "Guadalajara", "44"),
    ("NL", "Nuevo León", "Monterrey", "64"), ("PL", "Puebla", "Puebla", "72"), ("VZ", "Veracruz", "Xalapa", "91"),
    ("YN", "Yucatán", "Mérida", "97"), ("OC", "Oaxaca", "Oaxaca de Juárez", "68"), ("GT", "Guanajuato", "Guanajuato", "36"),
)  # fmt: skip
STREETS = ("Av. Insurgentes Sur", "Calle Morelos", "Av. Juárez", "Calle Hidalgo", "Calzada de Tlalpan", "Calle 5 de Mayo")
BIRTH_DAYS = 21_900  # 1940-01-01 .. 1999-12-17: homoclave is a digit for these births
_serial = itertools.count(random.randrange(10**9))


def patient(rng: random.Random) -> dict:
    """A Patient as a Mexican EHR would send it; its CURP is unique within the run."""
    n = next(_serial)
    n, day = divmod(n, BIRTH_DAYS)
    n, homoclave = divmod(n, 10)
    n, state_i = divmod(n, len(STATES))
    sex = ("female", "male")[n % 2]
    birth = date(1940, 1, 1) + timedelta(days=day)
    first, second = rng.choice(SURNAMES), rng.choice(SURNAMES)
    given = rng.choice(GIVEN[sex])
    renapo, state, city, postal = STATES[state_i]
    curp = build_curp(first, second, given, birth, sex, renapo, homoclave)
    return {
        "resourceType": "Patient",
        "identifier": [
            {
                "use": "official",
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}], "text": "CURP"},
                "system": CURP_SYSTEM,
                "value": curp,
            }
        ],
        "active": True,
        "name": [
            {
                "use": "official",
                "family": f"{first} {second}",
                "_family": {"extension": [{"url": FATHERS_FAMILY, "valueString": first}, {"url": MOTHERS_FAMILY, "valueString": second}]},
                "given": given.split(),
            }
        ],
        "telecom": [
            {"system": "phone", "value": f"{rng.randrange(2_000_000_000, 10_000_000_000)}", "use": "mobile"},
            {"system": "email", "value": f"{curp.lower()}@correo.example.mx", "use": "home"},
        ],
        "gender": sex,
        "birthDate": birth.isoformat(),
        "address": [
            {
                "use": "home",
                "type": "physical",
                "line": [f"{rng.choice(STREETS)} {rng.randrange(1, 3000)}", "Col. Centro"],
                "city": city,
                "state": state,
                "postalCode": f"{postal}{rng.randrange(1000):03d}",
                "country": "MX",
            }
        ],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es-MX"}]}, "preferred": True}],
    }


# ------------------------------------------------------------------ load generation


@dataclass
class Window:
    """The measured window: a request counts if it starts after ``start`` and ends before ``stopped``."""

    start: float | None = None
    stopped: bool = False
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)

    def record(self, t0: float, ok: bool, outcome: str) -> None:
        if self.start is None or self.stopped or t0 < self.start:
            return
        if ok:
            self.latencies_ms.append((perf_counter() - t0) * 1000)
        else:
            self.errors[outcome] += 1


@dataclass
class Patients:
    """What the create phase made, for the read and update phases."""

    ids: list[str] = field(default_factory=list)
    bodies: dict[str, dict] = field(default_factory=dict)


Op = Callable[[aiohttp.ClientSession, int], Awaitable[int]]


def create_op(made: Patients, rng: random.Random) -> Op:
    async def op(session: aiohttp.ClientSession, _client: int) -> int:
        body = patient(rng)
        async with session.post("/fhir/Patient", data=orjson.dumps(body)) as resp:
            await resp.read()
            if resp.status == 201:
                res_id = resp.headers["Location"].split("/_history/")[0].rsplit("/", 1)[1]
                made.ids.append(res_id)
                made.bodies[res_id] = body
            return resp.status

    return op


def read_op(ids: list[str], rng: random.Random) -> Op:
    async def op(session: aiohttp.ClientSession, _client: int) -> int:
        async with session.get(f"/fhir/Patient/{rng.choice(ids)}") as resp:
            await resp.read()
            return resp.status

    return op


def update_op(made: Patients, clients: int, rng: random.Random) -> Op:
    """Client i updates ids[i::clients] in turn, each time with a new mobile number."""
    slices = [itertools.cycle(made.ids[i::clients]) for i in range(clients)]

    async def op(session: aiohttp.ClientSession, client: int) -> int:
        res_id = next(slices[client])
        body = made.bodies[res_id]
        phone = {"system": "phone", "value": f"{rng.randrange(2_000_000_000, 10_000_000_000)}", "use": "mobile"}
        body = {**body, "id": res_id, "telecom": [phone, *body["telecom"][1:]]}
        async with session.put(f"/fhir/Patient/{res_id}", data=orjson.dumps(body)) as resp:
            await resp.read()
            if resp.status == 200:
                made.bodies[res_id] = body
            return resp.status

    return op


async def _client_loop(session: aiohttp.ClientSession, op: Op, client: int, window: Window) -> None:
    while not window.stopped:
        t0 = perf_counter()
        try:
            status = await op(session, client)
            window.record(t0, 200 <= status < 300, str(status))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            window.record(t0, False, type(exc).__name__)


async def run_phase(
    session, op: Op, clients: int, warmup: float, seconds: float, meter: _server.CpuMeter, base_url: str
) -> dict:
    window = Window()
    tasks = [asyncio.create_task(_client_loop(session, op, i, window)) for i in range(clients)]
    try:
        await asyncio.sleep(warmup)
        before = await asyncio.to_thread(_server.security_counters, base_url)
        meter.start()
        window.start = perf_counter()
        await asyncio.sleep(seconds)
        window.stopped = True
        cpu = meter.stop()
        after = await asyncio.to_thread(_server.security_counters, base_url)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    finally:
        for t in tasks:
            t.cancel()
    return phase_figures(window, cpu) | {"security": _server.security_share(before, after)}


# ------------------------------------------------------------------ figures


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


def phase_figures(window: Window, cpu: dict) -> dict:
    lat = sorted(window.latencies_ms)
    ok, errors = len(lat), sum(window.errors.values())
    seconds = cpu["wall_s"]
    return {
        "requests": ok + errors,
        "errors": errors,
        "error_kinds": dict(window.errors),
        "requests_per_s": round(ok / seconds, 1),
        "latency_ms": {
            "p50": _r(percentile(lat, 50)),
            "p95": _r(percentile(lat, 95)),
            "p99": _r(percentile(lat, 99)),
            "max": _r(lat[-1] if lat else None),
            "mean": _r(statistics.fmean(lat) if lat else None),
        },
        "cpu": cpu,
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def summarize(runs: list[dict]) -> dict:
    """Medians across repeats, and every run."""
    return {
        "requests": _median([r["requests"] for r in runs]),
        "errors": sum(r["errors"] for r in runs),
        "requests_per_s": _median([r["requests_per_s"] for r in runs]),
        "latency_ms": {k: _median([r["latency_ms"][k] for r in runs]) for k in ("p50", "p95", "p99", "max", "mean")},
        "cpu_cores": {k: _median([r["cpu"][f"{k}_cores"] for r in runs]) for k in ("loadgen", "server", "postgres", "other", "machine_busy")}
        | {"machine_busy_fraction": _median([r["cpu"]["machine_busy_fraction"] for r in runs])},
        # Access-policy decision + audit append, as a share of the server's request time.
        "security_percent": {
            k: _median([r["security"][k] for r in runs]) for k in ("policy_percent", "audit_percent", "security_percent")
        },
        "runs": runs,
    }


def targets(results: dict, clients: int) -> dict:
    out: dict = {
        "rule": "at 16 clients: read >= 1000/s and create >= 400/s, each with p99 < 50 ms and no errors (medians across repeats)",
        "applicable": clients == TARGET_CLIENTS,
    }
    for name, phases in results.items():
        checks = {}
        for phase, target in TARGETS.items():
            s = phases[phase]
            p99 = s["latency_ms"]["p99"]
            checks[phase] = {
                "requests_per_s": s["requests_per_s"],
                "min_requests_per_s": target["min_requests_per_s"],
                "p99_ms": p99,
                "max_p99_ms": target["max_p99_ms"],
                "errors": s["errors"],
                "pass": bool(
                    s["requests_per_s"] >= target["min_requests_per_s"] and p99 is not None and p99 < target["max_p99_ms"] and s["errors"] == 0
                ),
            }
        out[name] = checks | {"pass": all(c["pass"] for c in checks.values())}
    return out


# ------------------------------------------------------------------ one backend


def _session(base_url: str, token: str, clients: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=clients, limit_per_host=clients, use_dns_cache=True, ttl_dns_cache=None)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    return aiohttp.ClientSession(
        base_url=base_url,
        connector=connector,
        headers=headers,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=60),
    )


async def bench_backend(base_url: str, token: str, args, meter: _server.CpuMeter, name: str) -> dict:
    rng = random.Random()
    runs: dict[str, list[dict]] = {p: [] for p in PHASES}
    for rep in range(1, args.repeat + 1):
        made = Patients()
        for phase in PHASES:
            if phase == "create":
                op = create_op(made, rng)
            elif len(made.ids) < args.clients:
                raise RuntimeError(f"only {len(made.ids)} patients created; need at least {args.clients} for {phase}")
            elif phase == "read":
                op = read_op(made.ids, rng)
            else:
                op = update_op(made, args.clients, rng)
            # Fresh connections each phase (opened during the warmup): how the server's workers
            # split them is drawn anew, so repeats sample it instead of inheriting one split.
            async with _session(base_url, token, args.clients) as session:
                fig = await run_phase(session, op, args.clients, args.warmup, args.seconds, meter, base_url)
            runs[phase].append(fig)
            log(_progress_line(name, rep, args.repeat, phase, fig))
    return {p: summarize(r) for p, r in runs.items()}


def _progress_line(name: str, rep: int, repeat: int, phase: str, fig: dict) -> str:
    lat, cpu = fig["latency_ms"], fig["cpu"]
    return (
        f"{name} {rep}/{repeat} {phase:6s}: {fig['requests_per_s']:7.1f}/s  p50 {lat['p50']} ms  p99 {lat['p99']} ms  "
        f"errors {fig['errors']}  security {fig['security']['security_percent']} %  cores: loadgen {cpu['loadgen_cores']} server {cpu['server_cores']} "
        f"(by process {cpu['server_process_cores']}) postgres {cpu['postgres_cores']} other {cpu['other_cores']}"
    )


def run_backend(name: str, args, runner: asyncio.Runner) -> dict:
    log(f"--- backend {name}")
    with _server.backend(name, args.pg_admin_url) as env:
        secret = _server.add_client(env, "bench.client", "system")
        with _server.running_server(env, args.workers) as server:
            token = _server.get_token(server.base_url, "bench.client", secret)
            pg_pid = _server.postmaster_pid() if name == "postgresql" else None
            meter = _server.CpuMeter(server.pid, pg_pid)
            return runner.run(bench_backend(server.base_url, token, args, meter, name))


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", action="append", choices=_server.BACKENDS, help="repeatable; default: both")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (connections) per phase")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each phase")
    p.add_argument("--repeat", type=int, default=3, help="repeats; the summary holds medians")
    p.add_argument("--workers", type=int, default=2, help="server processes")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="load generator event loop")
    p.add_argument("--pg-admin-url", default=_server.pg_admin_url(), help="PostgreSQL account allowed to create databases")
    args = p.parse_args(argv)
    args.backend = list(dict.fromkeys(args.backend or _server.BACKENDS))
    if args.clients < 1 or args.seconds <= 0 or args.repeat < 1 or args.workers < 1 or args.warmup < 0:
        p.error("--clients, --seconds, --repeat and --workers must be positive, --warmup not negative")
    return args


def _loop_factory(name: str):
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def parameters(args) -> dict:
    env = os.environ
    return {
        "backends": args.backend,
        "clients": args.clients,
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "repeat": args.repeat,
        "workers": args.workers,
        "load_generator": {"loop": args.loop, "aiohttp": aiohttp.__version__, "processes": 1},
        "server_env": {
            "EXPEDIENTE_LOG_LEVEL": env.get("EXPEDIENTE_LOG_LEVEL", "info (default)"),
            "EXPEDIENTE_SQLITE_SYNCHRONOUS": env.get("EXPEDIENTE_SQLITE_SYNCHRONOUS", "FULL (default)"),
        },
        "patient_body_bytes": len(orjson.dumps(patient(random.Random(1)))),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    doc: dict = {"benchmark": "fhir_crud", "machine": _server.machine_info(), "parameters": parameters(args)}
    if "postgresql" in args.backend:
        doc["postgresql"] = _server.postgres_info(args.pg_admin_url)
    results = {}
    with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
        for name in args.backend:
            results[name] = run_backend(name, args, runner)
    doc["definitions"] = DEFINITIONS
    doc["results"] = results
    doc["targets"] = targets(results, args.clients)
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    _server.run_main(main, "server stopped and temporary data removed")
