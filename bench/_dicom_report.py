"""Markdown table of a ``dicom_vs_orthanc.py`` result (for docs/performance.md)."""

from __future__ import annotations


def _f(v, nd: int = 1, unit: str = "") -> str:
    if v is None:
        return "n/a"
    return f"{v:,.{nd}f}{unit}"


def _met(flag) -> str:
    return {True: "yes", False: "**no**"}.get(flag, "n/a")


def report(result: dict) -> str:
    rows = [
        "| measure | Orthanc 1.10 | Expediente | speedup | target | met |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for key, ingest in (result.get("ingest") or {}).items():
        n = key.split("_")[0]
        o, e = ingest["orthanc"], ingest["expediente"]
        rows.append(
            f"| C-STORE ingest, {n} association{'s' if n != '1' else ''} (instances/s; MB/s) | {_f(o['instances_per_s'])}; {_f(o['mb_per_s'])} "
            f"| {_f(e['instances_per_s'])}; {_f(e['mb_per_s'])} | {_f(ingest['speedup'], 2, 'x')} | >= {ingest['target']}x | {_met(ingest['met'])} |"
        )
    wado = result.get("wado")
    if wado:
        s, f = wado["study"], wado["first_frame"]
        rows.append(
            f"| WADO-RS whole study (MB/s) | {_f(s['orthanc']['mb_per_s'])} | {_f(s['expediente']['mb_per_s'])} | {_f(s['speedup'], 2, 'x')} | >= {s['target']}x | {_met(s['met'])} |"
        )
        rows.append(
            f"| WADO-RS first frame (ms) | {_f(f['orthanc']['ms'], 2)} | {_f(f['expediente']['ms'], 2)} | {_f(f['speedup'], 2, 'x')} | >= {f['target']}x | {_met(f['met'])} |"
        )
    for size, q in (result.get("qido") or {}).items():
        target = f"< {q['target_p95_ms']:.0f} ms" if "target_p95_ms" in q else ""
        rows.append(
            f"| QIDO-RS study search p95 at {int(size):,} instances (ms) | {_f(q['orthanc']['p95_ms'], 2)} | {_f(q['expediente']['p95_ms'], 2)} "
            f"| {_f(q['speedup'], 2, 'x')} | {target} | {_met(q.get('met')) if target else ''} |"
        )
    out = ["\n".join(rows)]
    qido = result.get("qido") or {}
    if qido:
        kinds = list(next(iter(qido.values()))["orthanc"]["by_kind_p95_ms"])
        lines = ["| instances | " + " | ".join(f"{k} (O / E)" for k in kinds) + " | answers agree |", "| ---: | " + " | ".join("---:" for _ in kinds) + " | --- |"]
        for size, q in qido.items():
            cells = [f"{_f(q['orthanc']['by_kind_p95_ms'][k], 1)} / {_f(q['expediente']['by_kind_p95_ms'][k], 1)}" for k in kinds]
            agree = ", ".join(f"{k} {v}" for k, v in q.get("answers_agree", {}).items())
            lines.append(f"| {int(size):,} | " + " | ".join(cells) + f" | {agree} |")
        out.append("QIDO-RS p95 by query kind (ms, Orthanc / Expediente):\n\n" + "\n".join(lines))
    m = result.get("machine", {})
    out.append(
        f"Machine: {m.get('nproc')} cores ({m.get('cpu_model')}), {m.get('mem_total_gib')} GiB, kernel {m.get('kernel')}, Python {m.get('python')}; "
        f"Orthanc {m.get('orthanc')}, orthanc-dicomweb {m.get('orthanc_dicomweb')}, dcmtk {m.get('dcmtk')}; Expediente {m.get('expediente_commit')}; "
        f"run started {result.get('started')}, {result.get('args', {}).get('repeat')} repeats (medians shown)."
    )
    return "\n\n".join(out) + "\n"
