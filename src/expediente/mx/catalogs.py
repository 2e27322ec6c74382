"""The Mexican catalogs: the ones shipped with Expediente (seeded at ``db upgrade``) and the
official DGIS files an institution loads with ``expediente catalog load``.

Shipped (small, openly available, in ``mx/data/`` or derived from ``mx/states.py``):

- entidades federativas: one code system, the RENAPO keys of the CURP (``JC``), with the
  INEGI key (``14``) as property ``inegi``; it includes ``NE`` (born abroad), as a CURP does;
- derechohabiencia (affiliation): IMSS, ISSSTE, IMSS-Bienestar, PEMEX, SEDENA, SEMAR, private
  insurance, none;
- a CIE-10 subset and a CIE-9-MC procedures subset, marked incomplete (``fragment``): a code
  outside them is not known to be wrong. Loading the official file makes them complete.

Seeding is idempotent: a shipped system is written when absent or when its shipped content
changed (digest), and never over one an institution loaded.
"""

from __future__ import annotations

from importlib import resources

import sqlalchemy as sa

from expediente.db.schema import code_system
from expediente.mx import catalog_files, systems
from expediente.mx.catalog_store import SystemDefinition, SystemInfo, digest, replace_system, store_system
from expediente.mx.catalog_types import Concept
from expediente.mx.states import ENTIDADES, NACIDO_EN_EL_EXTRANJERO

SHIPPED_VERSION = "expediente-2026.12"

CIE10 = SystemDefinition(
    "cie10", systems.CIE10_SYSTEM, "CIE10", "Clasificación Internacional de Enfermedades, décima revisión (CIE-10)"
)
CIE9MC = SystemDefinition(
    "cie9mc",
    systems.CIE9MC_SYSTEM,
    "CIE9MC",
    "Clasificación Internacional de Enfermedades, novena revisión, modificación clínica: procedimientos (CIE-9-MC)",
)
ENTIDAD = SystemDefinition("entidad-renapo", systems.RENAPO_STATE_SYSTEM, "EntidadFederativa", "Entidades federativas (claves RENAPO e INEGI)")
AFFILIATION = SystemDefinition("derechohabiencia", systems.AFFILIATION_SYSTEM, "Derechohabiencia", "Derechohabiencia (afiliación a servicios de salud)")

# Official files: kind of `catalog load` -> the system it replaces
KINDS: dict[str, SystemDefinition] = {"cie10": CIE10, "cie9mc": CIE9MC}


def _data(name: str) -> bytes:
    return resources.files("expediente.mx").joinpath("data", name).read_bytes()


def _entidades() -> list[Concept]:
    concepts = [Concept(e.renapo, e.name, properties={"inegi": e.inegi}) for e in ENTIDADES]
    return [*concepts, Concept(NACIDO_EN_EL_EXTRANJERO, "Nacido en el extranjero")]


def shipped() -> list[tuple[SystemDefinition, list[Concept], bool]]:
    """(system, concepts, complete) of every catalog shipped with Expediente."""
    return [
        (ENTIDAD, _entidades(), True),
        (AFFILIATION, catalog_files.parse(_data("derechohabiencia.csv"), "generic"), True),
        (CIE10, catalog_files.parse(_data("cie10.csv"), "cie10"), False),
        (CIE9MC, catalog_files.parse(_data("cie9mc.csv"), "cie9mc"), False),
    ]


def seed_shipped(conn: sa.Connection) -> list[str]:
    """Write the shipped catalogs that are missing or changed (inside the caller's
    transaction); the ids written. Catalogs loaded from official files are left alone."""
    existing = {r.id: r for r in conn.execute(sa.select(code_system.c.id, code_system.c.origin, code_system.c.digest))}
    written = []
    for definition, concepts, complete in shipped():
        row = existing.get(definition.id)
        if row is not None and (row.origin != "shipped" or row.digest == digest(concepts, SHIPPED_VERSION)):
            continue
        replace_system(conn, definition, concepts, version=SHIPPED_VERSION, complete=complete, origin="shipped")
        written.append(definition.id)
    return written


def generic_definition(url: str, name: str, title: str | None = None) -> SystemDefinition:
    """The definition of a catalog loaded with kind ``generic`` (its id derives from ``name``)."""
    system_id = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in name.strip().lower())[:64].strip("-.")
    if not url.strip() or not system_id:
        raise catalog_files.CatalogFileError("Un catálogo genérico necesita --system (URL canónica) y --name")
    return SystemDefinition(system_id, url.strip(), name.strip(), title or name.strip())


def load_file(engine: sa.Engine, kind: str, data: bytes, *, version: str | None, definition: SystemDefinition | None = None) -> SystemInfo:
    """Parse an official catalog file and make it the whole, complete content of its system
    (one transaction); CatalogFileError, with nothing changed, if any row is wrong."""
    if kind not in catalog_files.LAYOUTS:
        raise catalog_files.CatalogFileError(f"Tipo de catálogo desconocido: '{kind}'; use cie10, cie9mc o generic")
    definition = definition or KINDS.get(kind)
    if definition is None:
        raise catalog_files.CatalogFileError("Un catálogo genérico necesita --system (URL canónica) y --name")
    concepts = catalog_files.parse(data, kind)
    with engine.connect() as conn:
        other = conn.execute(sa.select(code_system.c.id).where(code_system.c.url == definition.url)).scalar()
    if other is not None and other != definition.id:
        raise catalog_files.CatalogFileError(f"La URL {definition.url} ya es del catálogo '{other}'; cárguelo con --name {other}")
    return store_system(engine, definition, concepts, version=version, complete=True, origin="loaded")
