"""Fill the imaging index tables fast with a realistic archive, for query benchmarks.

``fill(engine, instances, seed=0)`` bulk-inserts straight into dicom_study (and its name words) /
dicom_series / dicom_instance (no files, no ingest: what the index would hold after ingesting such an archive)
until exactly ``instances`` instance rows exist, and returns a summary. Deterministic for a
seed. The mix, per study:

| modality | share | series | instances a series |
| --- | --- | --- | --- |
| CR / DX | 35 % | 1-2 | 1-2 |
| CT | 20 % | 2-5 | 20-150 |
| MR | 15 % | 4-8 | 15-40 |
| US | 15 % | 1 | 5-30 |
| MG | 10 % | 1 (4 views) | 4 |
| PT + CT | 5 % | 2 | 100-250 |

About 100 instances a study on average, so 1,000,000 instances are ~9,500 studies. Patients
have about 2.5 studies each; Spanish names (two surnames, one or two given names, accents,
common surnames far more frequent: Zipf weights); dates uniform over 2016-2025; five
institutions (CLUES); unique accession numbers. ``studies(engine)`` and ``sample(...)`` give
benchmarks real values to query for.

SQLite: executemany in one transaction per chunk; PostgreSQL: COPY.
"""

from __future__ import annotations

import hashlib
import random
from datetime import date, datetime, timedelta

import sqlalchemy as sa

from expediente.db.engine import write_transaction
from expediente.db.schema import dicom_instance, dicom_series, dicom_study, dicom_study_name
from expediente.dicom.names import name_tokens, normalized_name

SURNAMES = (
    "García Hernández Martínez López González Pérez Rodríguez Sánchez Ramírez Cruz Flores Gómez Morales Vázquez Reyes "
    "Jiménez Torres Díaz Gutiérrez Ruiz Mendoza Aguilar Ortiz Moreno Castillo Romero Álvarez Méndez Chávez Rivera Juárez "
    "Ramos Domínguez Herrera Medina Castro Vargas Guzmán Velázquez Muñoz Rojas Contreras Salazar Luna Ortega Santiago "
    "Guerrero Estrada Bautista Cortés Soto Alvarado Espinoza Lara Ávila Ríos Cervantes Silva Delgado Vega Núñez Peña"
).split()
GIVEN_F = "María Guadalupe|María|Juana|Margarita|Verónica|Rosa María|Leticia|Alejandra|Sofía|Ximena|Valentina|Fernanda|Ana|Patricia|Elena".split("|")
GIVEN_M = "Juan|José Luis|Francisco|Antonio|Jesús|Miguel Ángel|Pedro|Alejandro|Manuel|Daniel|Ricardo|Santiago|Mateo|Diego|José".split("|")
INSTITUTIONS = ("DFIMS000011", "DFSSA003442", "JCIMS000123", "NLIMS000456", "MCSSA001789")
UID_ROOT = "1.2.826.0.1.3680043.10.543"
SOP = {"CR": "1.2.840.10008.5.1.4.1.1.1", "DX": "1.2.840.10008.5.1.4.1.1.1.1", "CT": "1.2.840.10008.5.1.4.1.1.2",
       "MR": "1.2.840.10008.5.1.4.1.1.4", "US": "1.2.840.10008.5.1.4.1.1.6.1", "MG": "1.2.840.10008.5.1.4.1.1.1.2",
       "PT": "1.2.840.10008.5.1.4.1.1.128"}
SIZE = {"CR": (2048, 2500), "DX": (2048, 2500), "CT": (512, 512), "MR": (256, 256), "US": (600, 800), "MG": (3328, 2560), "PT": (128, 128)}
BODY = {"CR": "CHEST", "DX": "CHEST", "CT": "ABDOMEN", "MR": "BRAIN", "US": "ABDOMEN", "MG": "BREAST", "PT": "WHOLEBODY"}
DESCRIPTION = {"CR": "Tórax PA", "DX": "Tórax PA y lateral", "CT": "TAC de abdomen con contraste", "MR": "RM de cráneo simple",
               "US": "Ultrasonido abdominal", "MG": "Mastografía de tamizaje", "PT": "PET-CT oncológico"}
EXPLICIT_LE = "1.2.840.10008.1.2.1"
FIRST_DAY, DAYS = date(2016, 1, 1), 3653
AT = datetime(2026, 1, 1)
_CHUNK = 50_000
VERSION = 2  # what a cached index was filled with (2: with the name words)


def _profile(rng: random.Random) -> list[tuple[str, int]]:
    """(modality, instances) of each series of one study."""
    r = rng.random()
    if r < 0.35:
        m = rng.choice(("CR", "DX"))
        return [(m, rng.randint(1, 2)) for _ in range(rng.randint(1, 2))]
    if r < 0.55:
        return [("CT", rng.randint(20, 150)) for _ in range(rng.randint(2, 5))]
    if r < 0.70:
        return [("MR", rng.randint(15, 40)) for _ in range(rng.randint(4, 8))]
    if r < 0.85:
        return [("US", rng.randint(5, 30))]
    if r < 0.95:
        return [("MG", 4)]
    return [("CT", rng.randint(100, 250)), ("PT", rng.randint(100, 250))]


def _people(rng: random.Random, n: int) -> list[tuple]:
    weights = [1 / (rank + 1) ** 0.9 for rank in range(len(SURNAMES))]
    out = []
    for k in range(n):
        first, second = rng.choices(SURNAMES, weights, k=2)
        sex = rng.choice("FM")
        given = rng.choice(GIVEN_F if sex == "F" else GIVEN_M)
        birth = FIRST_DAY - timedelta(days=rng.randint(0, 90 * 365))
        out.append((f"MRN-{k + 1:07d}", f"{first} {second}^{given}", birth.strftime("%Y%m%d"), sex, rng.choice(INSTITUTIONS)))
    return out


def plan(instances: int, seed: int = 0):
    """Yield (study_row, [(series_row, [instance_row, ...]), ...]) until ``instances`` rows."""
    rng = random.Random(seed)
    people = _people(rng, max(1, instances // 250))
    left, n = instances, 0
    while left > 0:
        n += 1
        pid, name, birth, sex, institution = rng.choice(people)
        profile = _profile(rng)
        trimmed = []
        for modality, count in profile:
            if left <= 0:
                break
            count = min(count, left)
            left -= count
            trimmed.append((modality, count))
        day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
        when = day.strftime("%Y%m%d")
        time_ = f"{rng.randint(7, 21):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}"
        study_uid = f"{UID_ROOT}.{seed}.{n}"
        mods = list(dict.fromkeys(m for m, _ in trimmed))
        study = {
            "study_uid": study_uid, "patient_id": pid, "issuer": "HOSP", "patient_name": name, "patient_name_norm": normalized_name(name),
            "patient_birth_date": birth, "patient_sex": sex, "study_date": when, "study_time": time_,
            "accession_number": f"A{seed:02d}{n:08d}", "study_id": str(n % 10000), "study_description": DESCRIPTION[mods[0]],
            "referring_physician": "", "modalities": "\\".join(mods), "institution": institution,
            "series_count": len(trimmed), "instance_count": sum(c for _, c in trimmed), "patient_key": None,
            "imaging_study_id": None, "received": AT, "updated": AT, "linked": None,
        }
        series = []
        for k, (modality, count) in enumerate(trimmed, start=1):
            series_uid = f"{study_uid}.{k}"
            rows, columns = SIZE[modality]
            srow = {"series_uid": series_uid, "study_uid": study_uid, "modality": modality, "series_number": k,
                    "series_description": DESCRIPTION[modality], "body_part": BODY[modality], "series_date": when, "instance_count": count}
            irows = []
            for j in range(1, count + 1):
                uid = f"{series_uid}.{j}"
                irows.append({
                    "sop_instance_uid": uid, "series_uid": series_uid, "study_uid": study_uid, "sop_class_uid": SOP[modality],
                    "instance_number": j, "transfer_syntax": EXPLICIT_LE, "blob_key": hashlib.sha256(uid.encode()).hexdigest(),
                    "size": rows * columns * 2 + 1400, "pixel_offset": 1390, "pixel_length": rows * columns * 2, "frames": 1,
                    "rows": rows, "columns": columns, "received": AT, "origin": "dimse:BENCH", "metadata": None, "extra": None,
                })
            series.append((srow, irows))
        yield study, series


def fill(engine: sa.Engine, instances: int, seed: int = 0) -> dict:
    """Insert an archive of ``instances`` instances (see the module docstring); the tables are
    expected empty (the schema migrated). Returns counts."""
    buffers: dict[str, list[dict]] = {"study": [], "name": [], "series": [], "instance": []}
    totals = {"studies": 0, "series": 0, "instances": 0}
    tables = {"study": dicom_study, "name": dicom_study_name, "series": dicom_series, "instance": dicom_instance}

    def flush() -> None:
        with write_transaction(engine) as conn:  # on SQLite a plain begin() would autocommit each row
            for key in tables:
                if buffers[key]:
                    _bulk(conn, tables[key], buffers[key])
                    buffers[key] = []

    for study, series in plan(instances, seed):
        buffers["study"].append(study)
        buffers["name"].extend({"token": t, "study_uid": study["study_uid"]} for t in name_tokens(study["patient_name_norm"]))
        totals["studies"] += 1
        for srow, irows in series:
            buffers["series"].append(srow)
            buffers["instance"].extend(irows)
            totals["series"] += 1
            totals["instances"] += len(irows)
        if len(buffers["instance"]) >= _CHUNK:
            flush()
    flush()
    return totals


def _bulk(conn: sa.Connection, table: sa.Table, rows: list[dict]) -> None:
    names = [c.name for c in table.columns]
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[n] for n in names])
        return
    marks = ", ".join("?" for _ in names)
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks})", [tuple(row[n] for n in names) for row in rows])


def sample(engine: sa.Engine, count: int, seed: int = 1) -> list[dict]:
    """``count`` random studies' searchable values (to build queries with known answers)."""
    rng = random.Random(seed)
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(dicom_study)).scalar_one()
        picks = sorted(rng.sample(range(total), min(count, total)))
        rows = []
        for offset in picks:
            row = conn.execute(sa.select(dicom_study).order_by(dicom_study.c.study_uid).offset(offset).limit(1)).mappings().one()
            rows.append(dict(row))
    return rows


__all__ = ["fill", "plan", "sample"]
