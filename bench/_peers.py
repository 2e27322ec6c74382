"""dcmtk peers for the imaging benchmark: storescu runs against an archive, with TCP_NODELAY=1.

``store(files, host, port, called_ae, associations)`` splits the files into ``associations``
contiguous groups and runs one ``storescu`` per group at the same time (each one association,
sending its files in order); the time is from the first start to the last exit. Every storescu
must exit 0 and report no failed store, else it raises with its output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CALLING_AE = "BENCHSCU"


def dcmtk_version() -> str | None:
    exe = shutil.which("storescu")
    if not exe:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    # "$dcmtk: storescu v3.6.7 2022-04-22 $"
    for part in out.split():
        if part.startswith("v3."):
            return part[1:]
    return out.splitlines()[0] if out else None


def peer_env() -> dict[str, str]:
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"  # dcmtk reads it: Nagle off on its sockets (the rule, both sides)
    return env


def split(files: list[Path], parts: int) -> list[list[Path]]:
    size = -(-len(files) // parts)
    return [files[i : i + size] for i in range(0, len(files), size)]


def store(files: list[Path], host: str, port: int, called_ae: str, associations: int = 1, extra_args: tuple[str, ...] = ()) -> float:
    """Seconds to C-STORE all ``files`` over ``associations`` parallel storescu associations."""
    exe = shutil.which("storescu")
    if not exe:
        raise RuntimeError("storescu (dcmtk) is not installed")
    env = peer_env()
    procs = []
    with tempfile.TemporaryDirectory(prefix="bench-storescu-") as tmp:
        groups = split(files, associations)
        lists = []
        for g, group in enumerate(groups):
            # Many files: pass a directory of links (+sd) instead of a long command line.
            if len(group) > 2000:
                d = Path(tmp) / f"g{g}"
                d.mkdir()
                for i, f in enumerate(group):
                    os.symlink(f, d / f"{i:07d}.dcm")
                lists.append(["+sd", str(d)])
            else:
                lists.append([str(f) for f in group])
        outs = [open(Path(tmp) / f"out{g}.txt", "w+b") for g in range(len(groups))]
        t0 = time.perf_counter()
        for g, args in enumerate(lists):
            cmd = [exe, "-aet", CALLING_AE, "-aec", called_ae, *extra_args, host, str(port), *args]
            procs.append(subprocess.Popen(cmd, env=env, stdout=outs[g], stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        codes = [p.wait() for p in procs]
        elapsed = time.perf_counter() - t0
        for g, code in enumerate(codes):
            outs[g].seek(0)
            text = outs[g].read().decode(errors="replace")
            outs[g].close()
            if code != 0 or "E: " in text or "Store Failed" in text:
                raise RuntimeError(f"storescu to {called_ae}@{host}:{port} failed (exit {code}):\n{text[-3000:]}")
    return elapsed
