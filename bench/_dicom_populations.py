"""QIDO populations for the imaging benchmark, built once and cached by size under the cache dir.

``<cache>/<side>-<instances>/`` is an archive's data directory (Orthanc: storage + SQLite
index; Expediente: its data dir) holding exactly the first N instances of
``_dicom_data.population``; ``<cache>/<side>-<instances>.json`` says how it was built. A size is
grown from the largest smaller cached one (copied), by real storescu ingest (4 associations) up
to ``REAL_INGEST_MAX`` instances, and beyond that by writing the remaining rows straight into the
index (``_orthanc_fill`` / ``_expediente_fill``, each checked equal to a real ingest of the same
instances). The cached directories are served in place by the QIDO phase (the archives add
their own bookkeeping rows: audit, clients); delete the cache dir to rebuild.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import _dicom_data as data
import _orthanc
import _orthanc_fill
import _peers
from _server import log

REAL_INGEST_MAX = 100_000
CHECK_SIZE = 1000  # the fill is checked against the real ingest of this many instances


class Populations:
    def __init__(self, cache: Path, archives, seed: int = 0):
        self.cache = cache
        self.archives = archives
        self.seed = seed
        cache.mkdir(parents=True, exist_ok=True)

    def _dir(self, side: str, size: int) -> Path:
        return self.cache / f"{side}-{size}" if self.seed == 0 else self.cache / f"{side}-s{self.seed}-{size}"

    def method(self, side: str, size: int) -> dict | None:
        path = self._dir(side, size).with_suffix(".json")
        return json.loads(path.read_text()) if path.exists() else None

    def serve_dir(self, side: str, size: int) -> Path:
        return self._dir(side, size)

    def ready(self, side: str, size: int) -> Path:
        target = self._dir(side, size)
        if target.exists() and target.with_suffix(".json").exists():
            return target
        smaller = sorted(n for n in self._cached_sizes(side) if n < size)
        base = smaller[-1] if smaller else 0
        building = target.with_name(target.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        steps = []
        if base:
            if side == "expediente" and base >= REAL_INGEST_MAX:
                self.ready("expediente", CHECK_SIZE)
            t0 = time.monotonic()
            subprocess.run(["cp", "-a", str(self._dir(side, base)), str(building)], check=True)
            steps.append({"step": f"copy of the {base} population", "seconds": round(time.monotonic() - t0, 1)})
        real_end = min(size, max(base, REAL_INGEST_MAX))
        if real_end > base:
            steps.append(self._ingest(side, building, base, real_end))
        if size > real_end:
            steps.append(self._fill(side, building, real_end, size))
        steps.append(self._verify(side, building, size))
        if target.exists():
            shutil.rmtree(target)
        building.rename(target)
        info = {"instances": size, "studies": -(-size // data.INSTANCES_PER_STUDY), "seed": self.seed, "steps": steps, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        target.with_suffix(".json").write_text(json.dumps(info, indent=1))
        log(f"population {side} {size}: {info}")
        return target

    def _cached_sizes(self, side: str) -> list[int]:
        out = []
        for path in self.cache.glob(f"{side}-*.json"):
            tail = path.stem.rsplit("-", 1)[-1]
            if tail.isdigit() and self._dir(side, int(tail)) == path.with_suffix(""):
                out.append(int(tail))
        return out

    # -------------------------------------------------------------- real ingest

    def _ingest(self, side: str, directory: Path, start: int, end: int) -> dict:
        files_dir = self.cache / f"files-{side}-{start}-{end}.tmp"
        shutil.rmtree(files_dir, ignore_errors=True)
        files = data.write_files((data.small_instance(r) for r in data.population(end, self.seed, start=start)), files_dir)
        log(f"population {side}: real ingest of instances {start}..{end - 1} ({len(files)} files)")
        with ExitStack() as stack:
            archive = self.archives.start(stack, side, directory)
            seconds = _peers.store(files, "127.0.0.1", archive["dicom_port"], archive["ae"], 4)
            if side == "expediente":
                caught_up(directory)  # its follower finishes the studies' metadata and links
        shutil.rmtree(files_dir, ignore_errors=True)
        return {"step": f"storescu real ingest of instances {start}..{end - 1}, 4 associations", "seconds": round(seconds, 1), "instances_per_s": round((end - start) / seconds, 1)}

    # -------------------------------------------------------------- direct fill

    def _fill(self, side: str, directory: Path, start: int, end: int) -> dict:
        rows = data.population(end, self.seed, start=start)
        t0 = time.monotonic()
        if side == "orthanc":
            check = self._check_orthanc_fill()
            n = _orthanc_fill.fill(directory / "index", directory, rows, progress=lambda k: log(f"orthanc fill: {k} instances"))
            method = "bench/_orthanc_fill.py: rows written into Orthanc's SQLite index as Orthanc writes them, files into its storage, Orthanc stopped"
        else:
            import _expediente_fill

            check = self._check_expediente_fill()
            n = _expediente_fill.fill(directory, rows, progress=lambda k: log(f"expediente fill: {k} instances"))
            method = "bench/_expediente_fill.py: rows written into Expediente's index tables as its ingest writes them, server stopped"
        seconds = time.monotonic() - t0
        return {"step": f"direct index fill of instances {start}..{end - 1}", "method": method, "instances": n, "seconds": round(seconds, 1), "fill_vs_real_ingest": check}

    def _check_orthanc_fill(self) -> dict:
        """Fill the first CHECK_SIZE instances into an index Orthanc created empty and compare
        it with Orthanc's own ingest of them."""
        real = self.ready("orthanc", CHECK_SIZE)
        scratch = self.cache / "orthanc-fill-check.tmp"
        shutil.rmtree(scratch, ignore_errors=True)
        with _orthanc.running_orthanc(scratch):
            pass  # Orthanc creates its empty index
        _orthanc_fill.fill(scratch / "index", scratch, data.population(CHECK_SIZE, self.seed))
        diffs = _orthanc_fill.compare(real / "index", scratch / "index")
        shutil.rmtree(scratch, ignore_errors=True)
        if diffs:
            raise RuntimeError("the Orthanc fill differs from Orthanc's own ingest:\n" + "\n".join(diffs))
        return {"instances": CHECK_SIZE, "differences": 0}

    def _check_expediente_fill(self) -> dict:
        import _expediente_fill

        real = self.ready("expediente", CHECK_SIZE)
        diffs = _expediente_fill.check(real, self.cache / "expediente-fill-check.tmp", data.population(CHECK_SIZE, self.seed))
        if diffs:
            raise RuntimeError("the Expediente fill differs from its own ingest:\n" + "\n".join(diffs))
        return {"instances": CHECK_SIZE, "differences": 0}

    # -------------------------------------------------------------- verification

    def _verify(self, side: str, directory: Path, size: int) -> dict:
        """The archive, started on the population, counts every instance and finds the last
        study (the last one filled) with the right tags, through its own API and QIDO."""
        last = list(data.population_study(-(-size // data.INSTANCES_PER_STUDY) - 1, self.seed))[0]
        with ExitStack() as stack:
            archive = self.archives.start(stack, side, directory)
            client = archive["client"]
            out: dict = {"step": "verification"}
            if side == "orthanc":
                stats = archive["handle"].get_json("/statistics")
                out["orthanc_statistics"] = {k: stats[k] for k in ("CountInstances", "CountStudies", "CountPatients")}
                found = archive["handle"].post_json("/tools/find", {"Level": "Study", "Query": {"AccessionNumber": last.accession}, "Expand": True})
                out["tools_find_last_study"] = [f["MainDicomTags"].get("StudyInstanceUID") for f in found]
                if out["orthanc_statistics"]["CountInstances"] != size or out["tools_find_last_study"] != [last.study_uid]:
                    raise RuntimeError(f"Orthanc population {size} does not verify: {out}")
            _status, body, _s = client.qido("/studies", {"StudyInstanceUID": last.study_uid})
            got = body[0] if body else {}
            seen = {
                "PatientID": _value(got, "00100020"),
                "PatientName": _value(got, "00100010"),
                "StudyDate": _value(got, "00080020"),
                "NumberOfStudyRelatedInstances": _value(got, "00201208"),
            }
            want = {"PatientID": last.patient_id, "PatientName": last.name, "StudyDate": last.study_date, "NumberOfStudyRelatedInstances": data.INSTANCES_PER_STUDY}
            out["qido_last_study"] = seen
            if {k: str(v) for k, v in seen.items()} != {k: str(v) for k, v in want.items()}:
                raise RuntimeError(f"{side} population {size}: QIDO of the last study gives {seen}, expected {want}")
            client.close()
        return out


def _value(dataset: dict, tag: str):
    values = dataset.get(tag, {}).get("Value") or [None]
    v = values[0]
    return v.get("Alphabetic") if isinstance(v, dict) else v


def caught_up(data_dir: Path, timeout_s: float = 1800.0) -> float:
    """Wait until Expediente's study follower has done what follows ingest: every instance's
    metadata built, every study linked (or waiting for reconciliation). Seconds waited.
    (Not "until its CPU is idle": it re-handles the studies of its last 5 s on every look.)"""
    import sqlite3

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        db = sqlite3.connect(f"file:{data_dir / 'expediente.db'}?mode=ro", uri=True, timeout=30)
        try:
            missing = db.execute("SELECT count(*) FROM dicom_instance WHERE metadata IS NULL").fetchone()[0]
            unlinked = db.execute("SELECT count(*) FROM dicom_study WHERE linked IS NULL OR linked < updated").fetchone()[0]
        except sqlite3.OperationalError:  # busy, or the schema not there yet
            missing = unlinked = -1
        finally:
            db.close()
        if missing == 0 and unlinked == 0:
            break
        time.sleep(1.0)
    return round(time.monotonic() - t0, 1)

