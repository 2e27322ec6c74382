"""C-STORE ingest over DIMSE: a 300-slice 512x512 CT sent by dcmtk's storescu (TCP_NODELAY=1) to
a real `expediente serve` (its DIMSE listener), with 1 and with 4 parallel associations.

Prints JSON: instances/s and MB/s per case (median of --repeat runs, each on a fresh data
directory so no instance is a duplicate). ``--profile`` instead serves one association in this
process under cProfile and prints where the receiving side spends its time.

    .venv/bin/python bench/dimse_ingest.py                       # 300 slices, 1 and 4, median of 3
    .venv/bin/python bench/dimse_ingest.py --slices 60 --repeat 1  # a quick check
    .venv/bin/python bench/dimse_ingest.py --profile --slices 100
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._server import backend, free_port, log, machine_info, run_main, running_server  # noqa: E402
from tests.dicom_samples import ct_slice  # noqa: E402

AE_FILE = '[[ae]]\ntitle = "BENCH"\ninstitution = "DFIMS000011"\n'


def make_study(directory: Path, slices: int) -> list[Path]:
    study = "1.2.826.0.1.3680043.10.1089.9.1"
    paths = []
    for i in range(slices):
        path = directory / f"ct{i:04d}.dcm"
        path.write_bytes(ct_slice(study_uid=study, series_uid=study + ".1", sop_uid=f"{study}.1.{i + 1}", number=i + 1, size=512))
        paths.append(path)
    return paths


def storescu(port: int, files: list[Path]) -> subprocess.Popen:
    cmd = ["storescu", "-aet", "BENCH", "-aec", "EXPEDIENTE", "127.0.0.1", str(port), *map(str, files)]
    return subprocess.Popen(cmd, env={**os.environ, "TCP_NODELAY": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def one_run(name: str, files: list[Path], associations: int, processes: int, max_pdu: int) -> float:
    with backend(name) as env:
        aes = Path(env["EXPEDIENTE_DATA_DIR"]) / "aes.toml"
        aes.write_text(AE_FILE)
        port = free_port()
        env.update(EXPEDIENTE_DICOM_AES=str(aes), EXPEDIENTE_DICOM_PORT=str(port), EXPEDIENTE_DICOM_PROCESSES=str(processes), EXPEDIENTE_DICOM_MAX_PDU=str(max_pdu))
        with running_server(env, workers=1):
            time.sleep(0.5)
            shares = [files[i::associations] for i in range(associations)]
            start = time.perf_counter()
            procs = [storescu(port, share) for share in shares]
            for proc in procs:
                _, err = proc.communicate()
                if proc.returncode != 0:
                    raise RuntimeError(f"storescu failed: {err.decode()[-1500:]}")
            elapsed = time.perf_counter() - start
            count = _count(env)
            if count != len(files):
                raise RuntimeError(f"{count} instances indexed, {len(files)} sent")
            return elapsed


def _count(env: dict) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(env.get("EXPEDIENTE_DATABASE_URL") or f"sqlite:///{env['EXPEDIENTE_DATA_DIR']}/expediente.db")
    with engine.connect() as conn:
        n = conn.execute(sa.text("select count(*) from dicom_instance")).scalar()
    engine.dispose()
    return n


def profile(files: list[Path], top: int) -> None:
    """One association served in this process under cProfile (the receiving side only)."""
    import cProfile
    import io
    import pstats
    import socket
    import threading

    from expediente.config import Settings
    from expediente.db.engine import make_engine
    from expediente.db.migrate import upgrade
    from expediente.dicom.aes import AeDirectory
    from expediente.dicom.archive import Archive
    from expediente.dicom.net.provider import Provider

    data = Path(tempfile.mkdtemp(prefix="expediente-dimse-profile-"))
    try:
        (data / "aes.toml").write_text(AE_FILE)
        settings = Settings(data_dir=data, secret_key="x" * 40, dicom_aes=str(data / "aes.toml"))
        engine = make_engine(settings)
        upgrade(engine)
        engine.dispose()
        archive = Archive.build(settings)
        provider = Provider(archive, settings, AeDirectory.load(settings.dicom_aes))
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        profiler = cProfile.Profile()

        def serve() -> None:
            conn, address = listener.accept()
            profiler.enable()
            provider.serve(conn, address)
            profiler.disable()
            conn.close()

        thread = threading.Thread(target=serve)
        thread.start()
        start = time.perf_counter()
        proc = storescu(port, files)
        proc.communicate()
        thread.join()
        elapsed = time.perf_counter() - start
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
        print(f"{len(files)} instances in {elapsed:.2f} s under cProfile ({len(files) / elapsed:.0f}/s)", file=sys.stderr)
        print(out.getvalue())
        archive.close()
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--associations", default="1,4")
    parser.add_argument("--processes", type=int, default=2, help="EXPEDIENTE_DICOM_PROCESSES")
    parser.add_argument("--max-pdu", type=int, default=4 * 1024 * 1024, help="EXPEDIENTE_DICOM_MAX_PDU (what we advertise)")
    parser.add_argument("--backend", default="sqlite")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    if shutil.which("storescu") is None:
        print("storescu (dcmtk) is required", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="expediente-dimse-bench-"))
    try:
        log(f"writing {args.slices} slices of 512x512")
        files = make_study(work, args.slices)
        if args.profile:
            profile(files, args.top)
            return 0
        total_mb = sum(p.stat().st_size for p in files) / 1e6
        results = {}
        for associations in (int(n) for n in args.associations.split(",")):
            times = []
            for trial in range(args.repeat):
                elapsed = one_run(args.backend, files, associations, args.processes, args.max_pdu)
                log(f"{associations} association(s), trial {trial + 1}: {elapsed:.2f} s ({len(files) / elapsed:.0f}/s)")
                times.append(elapsed)
            median = statistics.median(times)
            results[f"associations_{associations}"] = {
                "instances_per_s": round(len(files) / median, 1),
                "mb_per_s": round(total_mb / median, 1),
                "seconds": [round(t, 3) for t in times],
            }
        print(orjson.dumps({
            "benchmark": "dimse_ingest", "server": "expediente", "backend": args.backend, "slices": len(files),
            "megabytes": round(total_mb, 1), "dicom_processes": args.processes, "max_pdu": args.max_pdu,
            "results": results, "machine": machine_info(),
        }, option=orjson.OPT_INDENT_2).decode())
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    run_main(main, "dimse_ingest interrupted")
