"""Catalogs: the shipped ones seeded at upgrade, the DGIS file loader, the cached reader and
the CIE-10 diagnosis rules (sex and age limits) on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from expediente.db.migrate import upgrade
from expediente.db.schema import code_concept, code_system
from expediente.mx import catalog_files
from expediente.mx.catalog_files import CatalogFileError, cie9mc_code, cie10_code
from expediente.mx.catalog_store import CatalogCache, catalog_cache, list_systems, read_catalog
from expediente.mx.catalog_types import AgeLimit, Concept
from expediente.mx.catalogs import CIE10, load_file, seed_shipped
from expediente.mx.diagnosis import cie10_catalog, diagnosis_problem
from expediente.mx.states import ENTIDADES
from expediente.mx.systems import AFFILIATION_SYSTEM, CIE9MC_SYSTEM, CIE10_SYSTEM, RENAPO_STATE_SYSTEM
from expediente.synth import catalogs as synth

DATA = Path(__file__).parent / "data"
DGIS = (DATA / "dgis_cie10.csv").read_bytes()
DGIS_BAD = (DATA / "dgis_cie10_bad.csv").read_bytes()


def _catalog(services, url):
    cache = catalog_cache(services.engine)
    cache.invalidate()
    return cache.get(url)


# ------------------------------------------------------------------------------ shipped


def test_shipped_catalogs_are_seeded_at_upgrade(services):
    systems = {s.url: s for s in list_systems(services.engine)}
    assert set(systems) >= {CIE10_SYSTEM, CIE9MC_SYSTEM, RENAPO_STATE_SYSTEM, AFFILIATION_SYSTEM}
    assert not systems[CIE10_SYSTEM].complete and not systems[CIE9MC_SYSTEM].complete
    assert systems[RENAPO_STATE_SYSTEM].complete and systems[AFFILIATION_SYSTEM].complete
    assert all(s.origin == "shipped" for s in systems.values())

    states = _catalog(services, RENAPO_STATE_SYSTEM)
    assert len(states.concepts) == 33  # 32 entidades and NE (born abroad), as in a CURP
    for e in ENTIDADES:
        assert states.get(e.renapo).display == e.name and states.get(e.renapo).properties == {"inegi": e.inegi}
    assert states.get("DF").display == "Ciudad de México" and states.get("NE").display == "Nacido en el extranjero"

    affiliation = _catalog(services, AFFILIATION_SYSTEM)
    assert list(affiliation.concepts) == ["IMSS", "IMSS-BIENESTAR", "ISSSTE", "NINGUNA", "PEMEX", "PRIVADO", "SEDENA", "SEMAR"]

    procedures = _catalog(services, CIE9MC_SYSTEM)
    assert procedures.get("74.1").display == "Cesárea cervical baja"
    assert procedures.get("47.09").display == "Otra apendicectomía"


def test_every_synthetic_diagnosis_is_in_the_shipped_cie10_with_its_text(services):
    cie10 = _catalog(services, CIE10_SYSTEM)
    used = [(c.code, c.display) for c in synth.CHRONIC_CONDITIONS]
    used += [(d.code, d.display) for d in synth.ACUTE_DIAGNOSES]
    used += [(r.code, r.display) for r in synth.EMERGENCY_REASONS + synth.ADMISSION_REASONS]
    for code, display in used:
        assert cie10.get(code) is not None, code
        assert cie10.get(code).display == display, code
    # The synthetic deliveries happen at ages the catalog allows.
    for reason in synth.ADMISSION_REASONS:
        assert diagnosis_problem(cie10, reason.code, reason.sex or "female", reason.min_age) is None
        assert diagnosis_problem(cie10, reason.code, reason.sex or "female", reason.max_age) is None


def test_shipped_limits(services):
    cie10 = _catalog(services, CIE10_SYSTEM)
    assert cie10.get("O80") == Concept("O80", "Parto único espontáneo", "female", AgeLimit(10, "a"), AgeLimit(54, "a"))
    assert cie10.get("N40").sex == "male" and cie10.get("C53.9").sex == "female"
    assert cie10.get("P07.3").age_high == AgeLimit(28, "d") and cie10.get("P07.3").sex is None
    assert all(c.sex == "female" and c.age_high == AgeLimit(54, "a") for code, c in cie10.concepts.items() if code.startswith("O"))


def test_seeding_is_idempotent_and_spares_loaded_catalogs(services):
    with services.engine.begin() as conn:
        assert seed_shipped(conn) == []  # nothing changed since upgrade
        revisions = dict(conn.execute(sa.select(code_system.c.id, code_system.c.revision)).all())
    load_file(services.engine, "cie10", DGIS, version="2024")
    upgrade(services.engine)
    with services.engine.connect() as conn:
        after = dict(conn.execute(sa.select(code_system.c.id, code_system.c.revision)).all())
    assert after["cie10"] == revisions["cie10"] + 1  # the load, not a reseed
    assert after["cie9mc"] == revisions["cie9mc"]
    cie10 = read_catalog(services.engine, "cie10")
    assert cie10.info.origin == "loaded" and cie10.info.version == "2024" and len(cie10.concepts) == 33


def test_a_changed_shipped_catalog_is_reseeded(services):
    with services.engine.begin() as conn:
        conn.execute(code_concept.delete().where(code_concept.c.system_id == "derechohabiencia", code_concept.c.code == "SEMAR"))
        conn.execute(code_system.update().where(code_system.c.id == "derechohabiencia").values(digest="x"))
        assert seed_shipped(conn) == ["derechohabiencia"]
    assert "SEMAR" in read_catalog(services.engine, "derechohabiencia").concepts


# ------------------------------------------------------------------------------ DGIS files


def test_load_the_dgis_layout(services):
    info = load_file(services.engine, "cie10", DGIS, version="2024")
    assert (info.complete, info.version, info.concept_count, info.origin) == (True, "2024", 33, "loaded")
    cie10 = _catalog(services, CIE10_SYSTEM)
    assert cie10.info.complete and len(cie10.concepts) == 33
    assert cie10.get("A00.0").display == "Cólera debido a Vibrio cholerae O1, biotipo cholerae"  # Latin-1 decoded
    assert cie10.get("I10").display == "Hipertensión esencial (primaria)"  # "I10X": X filler dropped
    assert cie10.get("C53").sex == "female" and cie10.get("N40").sex == "male"
    assert (cie10.get("O80.0").age_low, cie10.get("O80.0").age_high) == (AgeLimit(10, "a"), AgeLimit(54, "a"))
    assert cie10.get("P59.0").age_high == AgeLimit(1, "mo") and cie10.get("P95").age_high == AgeLimit(12, "h")
    assert cie10.get("E11.6") is None  # the shipped subset was replaced, not merged


def test_a_broken_file_changes_nothing_and_names_the_line(services):
    before = read_catalog(services.engine, "cie10")
    with pytest.raises(CatalogFileError) as err:
        load_file(services.engine, "cie10", DGIS_BAD, version="2024")
    assert str(err.value).startswith("Línea 15: LSUP de J00 es '18 años'")
    after = read_catalog(services.engine, "cie10")
    assert after == before and not after.info.complete


def test_a_failure_while_writing_rolls_back(services, monkeypatch):
    before = read_catalog(services.engine, "cie10")
    from expediente.mx import catalog_store

    real = catalog_store._row
    calls = iter(range(10**6))

    def failing(concept):
        if next(calls) == 40:  # 33 calls for the digest, then rows built after the old ones were deleted
            raise RuntimeError("disco lleno")
        return real(concept)

    monkeypatch.setattr(catalog_store, "_row", failing)
    with pytest.raises(RuntimeError):
        load_file(services.engine, "cie10", DGIS, version="2024")
    assert read_catalog(services.engine, "cie10") == before


def _csv(*lines: str, encoding: str = "utf-8") -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode(encoding)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_csv("CLAVE,NOMBRE", "A00,Cólera", "A00,Cólera otra vez"), "Línea 3: la clave A00 se repite (ya está en la línea 2)"),
        (_csv("CATALOG_KEY,NOMBRE", "A0,Cólera"), "Línea 2: la clave 'A0' no es un código CIE-10 válido"),
        (_csv("CATALOG_KEY,NOMBRE,LSEX", "A00,Cólera,AMBAS"), "Línea 2: LSEX de A00 es 'AMBAS'; se espera NO, HOMBRE o MUJER"),
        (_csv("CATALOG_KEY,NOMBRE", "A00,"), "Línea 2: la clave A00 no tiene descripción"),
        (_csv("CATALOG_KEY,NOMBRE,LINF,LSUP", "O80,Parto,054A,010A"), "Línea 2: la edad mínima de O80 (54 años) es mayor que la máxima (10 años)"),
        (_csv("CODIGO_X,DESCRIPCION"), "Línea 1: el encabezado no tiene la columna CATALOG_KEY ni CLAVE ni CODIGO"),
        (b"", "El archivo está vacío"),
        (_csv("CATALOG_KEY,NOMBRE", ""), "El archivo no tiene renglones"),
    ],
)
def test_file_errors_in_spanish(data, reason):
    with pytest.raises(CatalogFileError) as err:
        catalog_files.parse(data, "cie10")
    assert str(err.value).startswith(reason)


def test_file_tolerance():
    bom = b"\xef\xbb\xbf" + _csv("catalog_key;nombre;lsex;linf;lsup", "a000;Cólera;mujer;010a;no")
    [concept] = catalog_files.parse(bom, "cie10")
    assert concept == Concept("A00.0", "Cólera", "female", AgeLimit(10, "a"), None)
    latin = _csv("Catalog_Key\tNombre", "A00.0\tCólera   no especificado", encoding="latin-1")
    assert catalog_files.parse(latin, "cie10") == [Concept("A00.0", "Cólera no especificado")]
    assert [c.code for c in catalog_files.parse(_csv("CATALOG_KEY,PRO_NOMBRE", "8151,Sustitución total de cadera", "74.1,Cesárea"), "cie9mc")] == ["81.51", "74.1"]


@pytest.mark.parametrize(
    ("raw", "code"),
    [("A000", "A00.0"), ("A00.0", "A00.0"), ("a00.0", "A00.0"), ("I10X", "I10"), ("I10", "I10"), (" E119 ", "E11.9"),
     ("M8005", "M80.05"), ("A0", None), ("AA00", None), ("A00.", None), ("A00.0.1", None), ("0A00", None), ("", None)],
)  # fmt: skip
def test_cie10_code_forms(raw, code):
    assert cie10_code(raw) == code


def test_cie9mc_code_forms():
    assert [cie9mc_code(x) for x in ("8151", "81.51", "741", "74", "7", "81.511", "A1")] == ["81.51", "81.51", "74.1", "74", None, None, None]


# ------------------------------------------------------------------------------ cache


def test_cache_sees_a_load_from_another_process(services):
    other = CatalogCache(services.engine, check_every=0.0)  # as a second server worker would
    assert not other.get(CIE10_SYSTEM).info.complete
    load_file(services.engine, "cie10", DGIS, version="2024")
    assert other.get(CIE10_SYSTEM).info.complete  # revision changed: reloaded
    stale = CatalogCache(services.engine, check_every=3600.0)
    first = stale.get(CIE10_SYSTEM)
    assert stale.get("cie10") is first  # by id too, and from memory


def test_cache_invalidated_by_a_load_in_this_process(services):
    cache = catalog_cache(services.engine)
    assert not cache.get(CIE10_SYSTEM).info.complete
    load_file(services.engine, "cie10", DGIS, version="2024")
    assert cie10_catalog(services.engine).info.complete


# ------------------------------------------------------------------------------ diagnoses


@pytest.mark.parametrize(
    ("code", "sex", "age", "reason"),
    [
        ("O80", "female", 25, None),
        ("O80", "male", 25, "El diagnóstico O80 (parto único espontáneo) solo aplica a mujeres de 10 a 54 años"),
        ("O80", "female", 9, "El diagnóstico O80 (parto único espontáneo) solo aplica a mujeres de 10 a 54 años"),
        ("O80", "female", 55, "El diagnóstico O80 (parto único espontáneo) solo aplica a mujeres de 10 a 54 años"),
        ("O80", "female", 10, None),
        ("O80", "female", 54, None),
        ("O80", None, None, None),
        ("O80", "unknown", 30, None),
        ("O80", "other", 30, None),
        ("O80.1", "male", 30, "El diagnóstico O80.1 (parto único espontáneo) solo aplica a mujeres de 10 a 54 años"),  # category's limits
        ("N40", "male", 70, None),
        ("N40", "female", 70, "El diagnóstico N40 (hiperplasia de la próstata) solo aplica a hombres"),
        ("C53.9", "male", 40, "El diagnóstico C53.9 (tumor maligno del cuello del útero, sin otra especificación) solo aplica a mujeres"),
        ("P07.3", None, 0, None),  # 0 years may still be within 28 days
        ("P07.3", "male", 1, "El diagnóstico P07.3 (otros recién nacidos pretérmino) solo aplica a personas de hasta 28 días"),
        ("E11.9", "female", 50, None),
        ("U07.1", "male", 30, None),
        ("X99.9", "male", 30, None),  # well formed, not in the subset: cannot say it is wrong
        ("E119", "male", 30, "El código CIE-10 'E119' debe escribirse E11.9"),
        ("e11.9", "male", 30, "El código CIE-10 'e11.9' debe escribirse E11.9"),
        ("E1", "male", 30, "'E1' no es un código CIE-10 válido: se espera una letra mayúscula, dos dígitos y, opcionalmente, un punto y uno o dos dígitos (p. ej. E11.9)"),
        ("", "male", 30, "'' no es un código CIE-10 válido"),
    ],
)
def test_diagnosis_problem_on_the_shipped_subset(services, code, sex, age, reason):
    problem = diagnosis_problem(cie10_catalog(services.engine), code, sex, age)
    assert problem == reason if reason is None or not reason.endswith("válido") else problem.startswith(reason)


@pytest.mark.parametrize(
    ("code", "sex", "age", "reason"),
    [
        ("X99.9", "male", 30, "El código X99.9 no existe en el catálogo CIE-10 (versión 2024)"),
        ("O80.1", "female", 20, None),
        ("O80", "female", 20, "El código O80 no existe en el catálogo CIE-10 (versión 2024)"),  # the file has only O80.0...
        ("P95", None, 0, None),
        ("P95", None, 1, "El diagnóstico P95 (muerte fetal de causa no especificada) solo aplica a personas de hasta 12 horas"),
        ("P59.0", None, 1, "El diagnóstico P59.0 (ictericia neonatal asociada con el parto antes de término) solo aplica a personas de hasta 1 mes"),
        ("E66.9", None, 1, "El diagnóstico E66.9 (obesidad, no especificada) solo aplica a personas de 2 años o más"),
        ("M81.0", "female", 29, "El diagnóstico M81.0 (osteoporosis postmenopáusica) solo aplica a mujeres de 30 años o más"),
        ("M81.0", "female", 30, None),
        ("U07.1", "female", 30, None),
    ],
)
def test_diagnosis_problem_on_a_complete_catalog(services, code, sex, age, reason):
    load_file(services.engine, "cie10", DGIS, version="2024")
    assert diagnosis_problem(cie10_catalog(services.engine), code, sex, age) == reason


def test_no_catalog_only_checks_the_form():
    assert diagnosis_problem(None, "O80", "male", 30) is None
    assert diagnosis_problem(None, "O8", "male", 30).startswith("'O8' no es un código CIE-10 válido")


# Oracle: limits in one unit compared with the age in that unit, written out longhand.
_UNITS = {"h": 365 * 24, "d": 365, "mo": 12, "a": 1}


def _oracle(concept: Concept, sex: str | None, age: int | None) -> bool:
    """True when a diagnosis is certainly not for this patient."""
    if concept.sex and sex in ("male", "female") and sex != concept.sex:
        return True
    if age is None:
        return False
    if concept.age_low:
        oldest_possible = (age + 1) * _UNITS[concept.age_low.unit] - 1
        if oldest_possible < concept.age_low.value:
            return True
    if concept.age_high:
        youngest_possible = age * _UNITS[concept.age_high.unit]
        if youngest_possible > concept.age_high.value:
            return True
    return False


_limits = st.one_of(st.none(), st.builds(AgeLimit, st.integers(0, 130), st.sampled_from(["h", "d", "mo", "a"])))


@given(
    sex_limit=st.sampled_from([None, "male", "female"]),
    low=_limits,
    high=_limits,
    sex=st.sampled_from([None, "male", "female", "other", "unknown"]),
    age=st.one_of(st.none(), st.integers(0, 130)),
)
def test_limits_agree_with_an_oracle(sex_limit, low, high, sex, age):
    from expediente.mx.catalog_store import Catalog, SystemInfo
    from datetime import datetime

    concept = Concept("A00.0", "Cólera", sex_limit, low, high)
    info = SystemInfo("cie10", CIE10_SYSTEM, "CIE10", CIE10.title, "t", True, "loaded", "", 1, 1, datetime(2026, 1, 1))
    catalog = Catalog(info, {"A00.0": concept})
    problem = diagnosis_problem(catalog, "A00.0", sex, age)
    assert (problem is not None) == _oracle(concept, sex, age)
    if problem:
        assert problem.startswith("El diagnóstico A00.0 (cólera) solo aplica a ")


# ------------------------------------------------------------------------------ command line


def test_catalog_load_and_list_commands(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from expediente.cli import app

    monkeypatch.setenv("EXPEDIENTE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("EXPEDIENTE_DATABASE_URL", raising=False)
    monkeypatch.setenv("EXPEDIENTE_CONFIG", str(tmp_path / "none.toml"))
    run = CliRunner().invoke

    listed = run(app, ["catalog", "list"])
    assert listed.exit_code == 0, listed.output
    assert "cie10\turn:oid:2.16.840.1.113883.6.3\texpediente-2026.12\t136\tsubconjunto\tincluido" in listed.stdout

    bad = run(app, ["catalog", "load", "cie10", str(DATA / "dgis_cie10_bad.csv"), "--version", "2024"])
    assert bad.exit_code == 2 and "Línea 15: LSUP de J00" in " ".join(bad.output.split())
    assert "\t136\tsubconjunto\tincluido" in run(app, ["catalog", "list"]).stdout  # unchanged

    good = run(app, ["catalog", "load", "cie10", str(DATA / "dgis_cie10.csv"), "--version", "2024"])
    assert good.exit_code == 0 and "cie10: 33 conceptos, versión 2024, completo" in good.stdout
    assert "cie10\turn:oid:2.16.840.1.113883.6.3\t2024\t33\tcompleto\tcargado" in run(app, ["catalog", "list"]).stdout

    generic = tmp_path / "tipo-sangre.csv"
    generic.write_text("CLAVE,DESCRIPCION\nO+,O positivo\nO-,O negativo\n", encoding="utf-8")
    args = ["catalog", "load", "generic", str(generic), "--system", "http://hospital.example/fhir/CodeSystem/sangre", "--name", "TipoSangre"]
    loaded = run(app, args)
    assert loaded.exit_code == 0 and "tiposangre: 2 conceptos" in loaded.stdout, loaded.output
    missing = run(app, ["catalog", "load", "generic", str(generic)])
    assert missing.exit_code == 2 and "necesita --system" in " ".join(missing.output.split())
    clash = run(app, ["catalog", "load", "generic", str(generic), "--system", CIE10_SYSTEM, "--name", "otro"])
    assert clash.exit_code == 2 and "ya es del catálogo 'cie10'" in " ".join(clash.output.split())
    unknown = run(app, ["catalog", "load", "snomed", str(generic)])
    assert unknown.exit_code == 2 and "Tipo de catálogo desconocido" in " ".join(unknown.output.split())
