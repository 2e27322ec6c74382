"""Catalog load and read costs at the size of the official CIE-10 (about 14,000 codes).

Writes a synthetic file in the DGIS layout (made-up texts, real code shapes), then measures on
each backend: parsing, the one-transaction load, a cold read into the cache, diagnosis checks
and filtered expansions from memory. Prints one JSON document.

    .venv/bin/python bench/catalogs.py [--rows 14000] [--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import string
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from expediente.app import Services  # noqa: E402
from expediente.config import Settings  # noqa: E402
from expediente.db.migrate import upgrade  # noqa: E402
from expediente.fhir import terminology  # noqa: E402
from expediente.mx import catalog_files  # noqa: E402
from expediente.mx.catalog_store import CatalogCache  # noqa: E402
from expediente.mx.catalogs import load_file  # noqa: E402
from expediente.mx.diagnosis import diagnosis_problem  # noqa: E402
from expediente.mx.systems import CIE10_SYSTEM  # noqa: E402

WORDS = ["tumor", "maligno", "infección", "aguda", "crónica", "no", "especificada", "fractura", "diabetes", "úlcera", "parto", "neumonía"]


def dgis_file(rows: int) -> bytes:
    lines = ["CONSECUTIVO,LETRA,CATALOG_KEY,ASTERISCO,NOMBRE,LSEX,LINF,LSUP"]
    n = 0
    for letter in string.ascii_uppercase:
        for category in range(100):
            for sub in range(10):
                if n == rows:
                    return ("\r\n".join(lines) + "\r\n").encode("latin-1")
                words = " ".join(WORDS[(n * k) % len(WORDS)] for k in (1, 3, 7))
                sex, low, high = ("MUJER", "010A", "054A") if letter == "O" else ("NO", "NO", "NO")
                lines.append(f"{n + 1},{letter},{letter}{category:02d}{sub},,{words.capitalize()} {n},{sex},{low},{high}")
                n += 1
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def seconds(fn, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def run(backend: str, data: bytes) -> dict:
    from conftest import postgres_database

    with tempfile.TemporaryDirectory() as tmp:
        base = Settings(data_dir=Path(tmp) / "data", secret_key="x" * 48)
        gen = postgres_database() if backend == "postgresql" else None
        settings = Settings(**{**base.__dict__, "database_url": next(gen)}) if gen else base
        services = Services.build(settings)
        try:
            upgrade(services.engine)
            out = {"backend": backend, "rows": data.count(b"\n") - 1}
            out["parse_s"] = round(seconds(lambda: catalog_files.parse(data, "cie10")), 3)
            out["load_s"] = round(seconds(lambda: load_file(services.engine, "cie10", data, version="bench")), 3)
            cache = CatalogCache(services.engine, check_every=3600)
            out["cold_read_s"] = round(seconds(lambda: cache.get(CIE10_SYSTEM)), 3)
            catalog = cache.get(CIE10_SYSTEM)
            out["diagnosis_check_us"] = round(seconds(lambda: diagnosis_problem(catalog, "O80.5", "male", 30), 20000) * 1e6, 2)
            terminology.expand(catalog, "tumor", 10, 0)  # builds the normalized texts once
            out["expand_filter_ms"] = round(seconds(lambda: terminology.expand(catalog, "tumor cronica", 100, 0), 50) * 1e3, 2)
            out["code_system_json_mb"] = round(len(terminology.code_system_resource(catalog)) / 1e6, 2)
            return out
        finally:
            services.close()
            if gen:
                gen.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=14000)
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    data = dgis_file(args.rows)
    results = [run(b, data) for b in args.backend or ["sqlite", "postgresql"]]
    print(orjson.dumps({"benchmark": "catalogs", "results": results}, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
