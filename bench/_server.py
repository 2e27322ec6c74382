"""Shared helpers for benchmarks that drive a REAL `expediente serve` subprocess.

What is here (each piece usable on its own):

- ``backend(name, pg_admin_url)``: a context manager that yields the environment for one storage
  backend: a temporary data directory, and for ``postgresql`` a fresh database
  ``expediente_bench_<hex>`` that is dropped ``WITH (FORCE)`` on the way out.
- ``add_client(env)``: ``expediente client add bench.client --role system``, returns the secret.
- ``running_server(env, workers)``: starts ``expediente serve --port <free> --workers N`` in its own
  process group, waits for ``/health``, and always stops it (SIGTERM, then SIGKILL).
- ``get_token(base_url, client_id, secret)``: an access token (OAuth2 client credentials).
- ``CpuMeter``: CPU seconds used between two points by this process (the load generator), the
  server's process tree, the local PostgreSQL cluster, and the whole machine (/proc/stat), so a
  reader can see how the cores were shared. Reads /proc directly (no psutil).
- ``machine_info()``: nproc, CPU model, memory, kernel, Python.
- ``run_main(main, interrupted)``: the ``if __name__ == "__main__":`` of a benchmark: SIGTERM acts
  as Ctrl-C (servers stopped, temporary data removed), an interruption exits 130 with a message.

Progress goes to stderr through ``log``; nothing here writes to stdout.
"""

from __future__ import annotations

import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import orjson

REPO = Path(__file__).resolve().parent.parent
EXPEDIENTE = REPO / ".venv" / "bin" / "expediente"
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ("sqlite", "postgresql")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def run_main(main: Callable[[], int | None], interrupted: str) -> NoReturn:
    """Run a benchmark script's ``main`` and exit with its status. SIGTERM interrupts it like Ctrl-C,
    so its ``with`` blocks stop the server and remove temporary data on the way out; an
    interruption logs ``interrupted; <interrupted>`` and exits 130."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log(f"interrupted; {interrupted}")
        sys.exit(130)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ backends


def pg_admin_url() -> str:
    return os.environ.get("EXPEDIENTE_TEST_POSTGRES_URL", DEFAULT_PG_ADMIN_URL)


def _with_database(url: str, dbname: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + dbname))


def _pg_admin(url: str, sql: str) -> None:
    import psycopg  # the server's own driver, installed in the venv

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql)


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database for one run; dropped WITH (FORCE) even on error or Ctrl+C."""
    name = f"expediente_bench_{secrets.token_hex(6)}"
    _pg_admin(admin_url, f'CREATE DATABASE "{name}"')
    log(f"created PostgreSQL database {name}")
    try:
        yield _with_database(admin_url, name)
    finally:
        try:
            _pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            log(f"dropped PostgreSQL database {name}")
        except Exception as exc:  # noqa: BLE001 - report, keep cleaning up
            log(f"WARNING: could not drop database {name}: {exc}")


@contextmanager
def backend(name: str, admin_url: str | None = None) -> Iterator[dict[str, str]]:
    """Environment (EXPEDIENTE_* variables) for a server on a temporary data dir and database."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")
    data_dir = Path(tempfile.mkdtemp(prefix=f"expediente-bench-{name}-"))
    env = dict(os.environ)
    for inherited in ("EXPEDIENTE_DATABASE_URL", "EXPEDIENTE_CONFIG", "EXPEDIENTE_BASE_URL"):
        env.pop(inherited, None)  # this run's own database, no config file, Location from host:port
    env["EXPEDIENTE_DATA_DIR"] = str(data_dir)
    # A benchmark takes one token per server; access tokens last 15 minutes by default, less
    # than the longest runs (a configured lifetime, not a security exception).
    env.setdefault("EXPEDIENTE_TOKEN_TTL_SECONDS", "7200")
    try:
        if name == "postgresql":
            with postgres_database(admin_url or pg_admin_url()) as url:
                env["EXPEDIENTE_DATABASE_URL"] = url
                yield env
        else:
            yield env
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


# ------------------------------------------------------------------ CLI and server


def expediente(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    """Run the `expediente` command; its stdout, or an error with its stderr."""
    done = subprocess.run([str(EXPEDIENTE), *args], env=env, cwd=env["EXPEDIENTE_DATA_DIR"], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"expediente {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def add_client(env: dict[str, str], client_id: str = "bench.client", role: str = "system") -> str:
    out = expediente(["client", "add", client_id, "--role", role], env)
    for line in out.splitlines():
        if line.startswith("client_secret:"):
            return line.split(":", 1)[1].strip()
    raise RuntimeError(f"no 'client_secret:' line in the output of `expediente client add`: {out!r}")


@dataclass
class Server:
    proc: subprocess.Popen
    base_url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _http_get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}; log tail:\n{server.log_tail()}")
        try:
            if _http_get(server.base_url + "/health") == 200:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not healthy after {timeout:.0f} s; log tail:\n{server.log_tail()}")


def stop_process_group(proc: subprocess.Popen, grace_s: float = 25.0) -> None:
    """SIGTERM the group we started (server and its workers), then SIGKILL what is left."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            log(f"server {proc.pid} still running after {grace_s:.0f} s: SIGKILL")
    # Workers can outlive the master; kill whatever is left in the group.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(10)


@contextmanager
def running_server(env: dict[str, str], workers: int, port: int | None = None, timeout: float = 90.0) -> Iterator[Server]:
    """`expediente serve` on a free port, healthy, stopped on the way out whatever happens."""
    port = port or free_port()
    data_dir = Path(env["EXPEDIENTE_DATA_DIR"])
    log_path = data_dir / "server.log"
    cmd = [str(EXPEDIENTE), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, env=env, cwd=data_dir, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True)
    server = Server(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        _wait_healthy(server, timeout)
        log(f"server pid {proc.pid} healthy on {server.base_url} ({workers} workers)")
        yield server
    finally:
        stop_process_group(proc)
        log(f"server pid {proc.pid} stopped")


def get_token(base_url: str, client_id: str, secret: str) -> str:
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}).encode()
    req = urllib.request.Request(base_url + "/auth/token", data=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return orjson.loads(resp.read())["access_token"]


# ------------------------------------------------------------------ CPU accounting from /proc


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) is in parentheses and may hold spaces: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on


def _all_ppids() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = _stat_fields(int(entry))
            if f is not None:
                out[int(entry)] = int(f[1])
    return out


def descendants(root: int, ppids: dict[int, int] | None = None) -> list[int]:
    ppids = ppids if ppids is not None else _all_ppids()
    children: dict[int, list[int]] = {}
    for pid, ppid in ppids.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_by_pid(root: int, ppids: dict[int, int] | None = None) -> dict[int, float] | None:
    """CPU seconds of a process and each live descendant; key 0 holds the root's reaped children."""
    root_fields = _stat_fields(root)
    if root_fields is None:
        return None
    out = {0: (int(root_fields[13]) + int(root_fields[14])) / CLK_TCK}  # cutime + cstime
    for pid in descendants(root, ppids):
        f = _stat_fields(pid)
        if f is not None:
            out[pid] = (int(f[11]) + int(f[12])) / CLK_TCK  # utime + stime
    return out


def tree_cpu_seconds(root: int, ppids: dict[int, int] | None = None) -> float | None:
    """CPU of a process and all its descendants: live ones, plus the root's reaped children."""
    by_pid = tree_cpu_by_pid(root, ppids)
    return None if by_pid is None else sum(by_pid.values())


def postmaster_pid() -> int | None:
    """The local PostgreSQL postmaster, if visible (a 'postgres' process whose parent is not one)."""
    ppids = _all_ppids()
    for pid, ppid in ppids.items():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
                continue
            parent = Path(f"/proc/{ppid}/comm").read_text().strip() if ppid > 0 else ""
        except OSError:
            continue
        if parent != "postgres":
            return pid
    return None


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / CLK_TCK, total / CLK_TCK


def self_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class CpuMeter:
    """CPU seconds used between ``start()`` and ``stop()`` by the load generator (this process),
    the server tree, the PostgreSQL cluster (if local and visible) and the whole machine."""

    def __init__(self, server_pid: int, pg_pid: int | None = None):
        self.server_pid = server_pid
        self.pg_pid = pg_pid
        self._t0: dict | None = None

    def _sample(self) -> dict:
        ppids = _all_ppids()
        busy, total = machine_cpu()
        server_by_pid = tree_cpu_by_pid(self.server_pid, ppids) or {}
        return {
            "wall": time.perf_counter(),
            "loadgen": self_cpu_seconds(),
            "server": sum(server_by_pid.values()) if server_by_pid else None,
            "server_by_pid": server_by_pid,
            "postgres": tree_cpu_seconds(self.pg_pid, ppids) if self.pg_pid else None,
            "machine_busy": busy,
            "machine_total": total,
        }

    def start(self) -> None:
        self._t0 = self._sample()

    def stop(self) -> dict:
        t0, t1 = self._t0, self._sample()
        wall = t1["wall"] - t0["wall"]
        out = {"wall_s": round(wall, 3)}
        for key in ("loadgen", "server", "postgres"):
            used = None if t0[key] is None or t1[key] is None else t1[key] - t0[key]
            out[f"{key}_cpu_s"] = None if used is None else round(used, 2)
            out[f"{key}_cores"] = None if used is None else round(used / wall, 2)
        # Per server process (master and workers), to show how evenly the workers share the load.
        t0_pids = t0["server_by_pid"]
        out["server_process_cores"] = sorted(
            (round((sec - t0_pids.get(pid, 0.0)) / wall, 2) for pid, sec in t1["server_by_pid"].items() if pid != 0), reverse=True
        )
        busy, total = t1["machine_busy"] - t0["machine_busy"], t1["machine_total"] - t0["machine_total"]
        out["machine_busy_fraction"] = round(busy / total, 3) if total > 0 else None
        out["machine_busy_cores"] = round(busy / wall, 2)
        # Whatever else ran on the machine meanwhile (kernel threads, other users' jobs).
        ours = sum(out[f"{k}_cpu_s"] or 0 for k in ("loadgen", "server", "postgres"))
        out["other_cores"] = round((busy - ours) / wall, 2)
        return out


# ------------------------------------------------------------------ machine


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "mem_total_gib": _mem_total_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
    }


def postgres_info(admin_url: str) -> dict:
    """Server version and the durability settings that shape write throughput."""
    import psycopg

    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            settings = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]
                for name in ("fsync", "synchronous_commit", "shared_buffers", "max_connections")
            }
    except Exception as exc:  # noqa: BLE001 - informational only
        return {"error": str(exc)[:200]}
    return {"server_version": version, **settings}


def security_counters(base_url: str) -> dict[str, float]:
    """The server's cumulative seconds in the access policy, in audit appends, and answering
    requests (all routes), read from its Prometheus /metrics."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    totals = {"policy": 0.0, "audit": 0.0, "requests": 0.0}
    for line in text.splitlines():
        if line.startswith("expediente_security_seconds_total{"):
            part = line.split('part="', 1)[1].split('"', 1)[0]
            totals[part] = totals.get(part, 0.0) + float(line.rsplit(" ", 1)[1])
        elif line.startswith("expediente_http_request_duration_seconds_sum{") and 'route="/metrics"' not in line:
            totals["requests"] += float(line.rsplit(" ", 1)[1])
    return totals


def security_share(before: dict[str, float], after: dict[str, float]) -> dict:
    """Policy and audit time inside requests between two readings, as a share of request time."""
    request_s = after["requests"] - before["requests"]
    policy_s = after["policy"] - before["policy"]
    audit_s = after["audit"] - before["audit"]

    def percent(part: float) -> float | None:
        return round(100 * part / request_s, 2) if request_s > 0 else None

    return {
        "request_seconds": round(request_s, 4),
        "policy_seconds": round(policy_s, 4),
        "audit_seconds": round(audit_s, 4),
        "policy_percent": percent(policy_s),
        "audit_percent": percent(audit_s),
        "security_percent": percent(policy_s + audit_s),
    }
