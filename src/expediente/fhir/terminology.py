"""The catalogs as FHIR terminology: CodeSystem and ValueSet resources, $lookup,
$validate-code and $expand (domain logic; HTTP parsing is in terminology_api.py).

Each code system has one ValueSet with all its codes (same id; URL
``http://expediente.mx/fhir/ValueSet/<id>``). A CodeSystem's ``content`` is ``complete`` for a
catalog loaded from an official file and ``fragment`` for a shipped subset; on a fragment an
unknown but well-formed code validates with a warning, since the subset cannot say it is
wrong (the same rule Condition writes follow, expediente/mx/diagnosis.py).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from expediente.fhir.errors import FhirError, bad_request
from expediente.fhir.search.extract import normalize_text
from expediente.mx.catalog_files import cie9mc_code, cie10_code
from expediente.mx.catalog_store import Catalog, CatalogCache, SystemInfo
from expediente.mx.catalog_types import Concept
from expediente.mx.systems import CIE9MC_SYSTEM, CIE10_SYSTEM

VALUE_SET_BASE = "http://expediente.mx/fhir/ValueSet/"
EXPAND_DEFAULT = 100
EXPAND_MAX = 1000

# Concept properties: code -> (FHIR type, Spanish description)
PROPERTIES = {
    "sex-limit": ("code", "Sexo al que se limita el código (male: hombres, female: mujeres); DGIS LSEX"),
    "age-minimum": ("string", "Edad mínima, inclusive, con unidad UCUM (h, d, mo, a); DGIS LINF"),
    "age-maximum": ("string", "Edad máxima, inclusive, con unidad UCUM (h, d, mo, a); DGIS LSUP"),
    "inegi": ("string", "Clave INEGI de la entidad federativa"),
}

# The form a code of these systems must have (canonical): a code outside a fragment is
# accepted only in that form.
_WELL_FORMED = {CIE10_SYSTEM: cie10_code, CIE9MC_SYSTEM: cie9mc_code}


@dataclass(frozen=True)
class CodeQuery:
    """What $lookup and $validate-code ask about: a system (URL), a code, maybe version and display."""

    system: str | None
    code: str | None
    version: str | None = None
    display: str | None = None


def value_set_url(info: SystemInfo) -> str:
    return VALUE_SET_BASE + info.id


def concept_properties(concept: Concept) -> list[tuple[str, str]]:
    out = []
    if concept.sex:
        out.append(("sex-limit", concept.sex))
    if concept.age_low:
        out.append(("age-minimum", str(concept.age_low)))
    if concept.age_high:
        out.append(("age-maximum", str(concept.age_high)))
    return out + sorted(concept.properties.items())


def _property_value(code: str, value: str) -> dict:
    kind = PROPERTIES.get(code, ("string", ""))[0]
    return {"code": code, "valueCode" if kind == "code" else "valueString": value}


def _summary(info: SystemInfo) -> dict:
    return {
        "resourceType": "CodeSystem",
        "id": info.id,
        "meta": {"lastUpdated": info.loaded.isoformat(timespec="milliseconds") + "Z", "versionId": str(info.revision)},
        "url": info.url,
        **({"version": info.version} if info.version else {}),
        "name": info.name,
        "title": info.title,
        "status": "active",
        "experimental": False,
        "publisher": "Expediente" if info.origin == "shipped" else "Dirección General de Información en Salud (DGIS)",
        "caseSensitive": True,
        "valueSet": value_set_url(info),
        "content": "complete" if info.complete else "fragment",
        "count": info.concept_count,
    }


def code_system_summary(info: SystemInfo) -> dict:
    """The CodeSystem without its concepts (search results)."""
    out = _summary(info)
    out["meta"]["tag"] = [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}]
    return out


_RENDERED: dict[tuple[str, int], bytes] = {}
_RENDERED_LOCK = threading.Lock()


def code_system_resource(catalog: Catalog) -> bytes:
    """The whole CodeSystem, concepts included, as JSON (rendered once per catalog revision)."""
    key = (catalog.info.id, catalog.info.revision)
    with _RENDERED_LOCK:
        cached = _RENDERED.get(key)
    if cached is not None:
        return cached
    used: dict[str, None] = {}
    concepts = []
    for c in catalog.concepts.values():
        entry: dict = {"code": c.code, "display": c.display}
        props = concept_properties(c)
        if props:
            entry["property"] = [_property_value(k, v) for k, v in props]
            used.update(dict.fromkeys(k for k, _ in props))
        concepts.append(entry)
    out = _summary(catalog.info)
    if used:
        out["property"] = [
            {"code": k, "description": PROPERTIES.get(k, ("string", k))[1], "type": PROPERTIES.get(k, ("string", ""))[0]} for k in used
        ]
    out["concept"] = concepts
    rendered = orjson.dumps(out)
    with _RENDERED_LOCK:
        for old in [k for k in _RENDERED if k[0] == key[0]]:
            del _RENDERED[old]
        _RENDERED[key] = rendered
    return rendered


def value_set_resource(info: SystemInfo) -> dict:
    return {
        "resourceType": "ValueSet",
        "id": info.id,
        "meta": {"lastUpdated": info.loaded.isoformat(timespec="milliseconds") + "Z", "versionId": str(info.revision)},
        "url": value_set_url(info),
        **({"version": info.version} if info.version else {}),
        "name": info.name,
        "title": f"{info.title}: todos los códigos",
        "status": "active",
        "experimental": False,
        "immutable": False,
        "compose": {"include": [{"system": info.url, **({"version": info.version} if info.version else {})}]},
    }


def search_systems(cache: CatalogCache, params: list[tuple[str, str]]) -> list[SystemInfo]:
    """CodeSystem/ValueSet search: ``url``, ``name`` and ``title`` (accent-free starts-with),
    ``_id``, ``version``; anything else is a 400."""
    systems = cache.systems()
    for name, value in params:
        if name in ("_count", "_summary"):
            continue
        if name == "_id":
            systems = [s for s in systems if s.id in value.split(",")]
        elif name == "url":
            systems = [s for s in systems if value in (s.url, value_set_url(s))]
        elif name == "version":
            systems = [s for s in systems if s.version == value]
        elif name in ("name", "title"):
            wanted = normalize_text(value)
            systems = [s for s in systems if normalize_text(getattr(s, name)).startswith(wanted)]
        else:
            raise bad_request(f"Parámetro de búsqueda desconocido para terminología: '{name[:40]}' (se aceptan url, name, title, version, _id)", expression=name[:40])
    return systems


def by_id(cache: CatalogCache, res_type: str, system_id: str) -> Catalog:
    catalog = cache.get(system_id) if not system_id.startswith(("http:", "https:", "urn:")) else None
    if catalog is None or catalog.info.id != system_id:
        raise FhirError.of(404, f"No existe el recurso {res_type}/{system_id[:64]}", "not-found")
    return catalog


def by_url(cache: CatalogCache, system: str | None, version: str | None, parameter: str = "system") -> Catalog:
    if not system:
        raise bad_request(f"Falta el parámetro '{parameter}' (URL canónica del sistema de códigos)", code="required", expression=parameter)
    catalog = cache.get(system)
    if catalog is None or catalog.info.url != system:
        raise FhirError.of(404, f"No se conoce el sistema de códigos '{system[:200]}'", "not-found", parameter)
    if version and version != catalog.info.version:
        raise FhirError.of(
            404, f"La versión '{version[:40]}' de {system} no está cargada (la cargada es '{catalog.info.version or '-'}')", "not-found", "version"
        )
    return catalog


def value_set_by_url(cache: CatalogCache, url: str | None) -> Catalog:
    if not url:
        raise bad_request("Falta el parámetro 'url' (URL canónica del ValueSet)", code="required", expression="url")
    if not url.startswith(VALUE_SET_BASE):
        raise FhirError.of(404, f"No se conoce el ValueSet '{url[:200]}'", "not-found", "url")
    return by_id(cache, "ValueSet", url.removeprefix(VALUE_SET_BASE))


def _require_code(query: CodeQuery) -> str:
    if not query.code:
        raise bad_request("Falta el parámetro 'code' (o 'coding')", code="required", expression="code")
    return query.code


def lookup(catalog: Catalog, query: CodeQuery) -> dict:
    code = _require_code(query)
    concept = catalog.get(code)
    if concept is None:
        scope = "el catálogo" if catalog.info.complete else "el subconjunto cargado del catálogo"
        raise FhirError.of(404, f"El código '{code[:64]}' no está en {scope} {catalog.info.title}", "not-found", "code")
    params = [{"name": "name", "valueString": catalog.info.name}]
    if catalog.info.version:
        params.append({"name": "version", "valueString": catalog.info.version})
    params.append({"name": "display", "valueString": concept.display})
    for key, value in concept_properties(concept):
        params.append({"name": "property", "part": [{"name": "code", "valueCode": key}, _value_part(key, value)]})
    return {"resourceType": "Parameters", "parameter": params}


def _value_part(key: str, value: str) -> dict:
    kind = PROPERTIES.get(key, ("string", ""))[0]
    return {"name": "value", "valueCode" if kind == "code" else "valueString": value}


def validate_code(catalog: Catalog, query: CodeQuery) -> dict:
    """Parameters with ``result`` and, when false or with a warning, a Spanish ``message``."""
    code = _require_code(query)
    info = catalog.info
    concept = catalog.get(code)
    if concept is None:
        well_formed = _WELL_FORMED.get(info.url)
        if not info.complete and (well_formed is None or well_formed(code) == code):
            return validation_result(True, f"No se puede confirmar el código '{code[:64]}': este servidor tiene solo un subconjunto de {info.title}")
        if info.complete:
            version = f" (versión {info.version})" if info.version else ""
            return validation_result(False, f"El código '{code[:64]}' no existe en {info.title}{version}")
        return validation_result(False, f"'{code[:64]}' no tiene la forma de un código de {info.title}")
    if query.display and normalize_text(query.display) != normalize_text(concept.display):
        return validation_result(True, f"El texto '{query.display[:200]}' no coincide con el del catálogo para {code}: '{concept.display}'", concept.display)
    return validation_result(True, None, concept.display)


def validation_result(ok: bool, message: str | None, display: str | None = None) -> dict:
    params: list[dict] = [{"name": "result", "valueBoolean": ok}]
    if message:
        params.append({"name": "message", "valueString": message})
    if display:
        params.append({"name": "display", "valueString": display})
    return {"resourceType": "Parameters", "parameter": params}


_TEXTS: dict[tuple[str, int], list[tuple[tuple[str, ...], Concept]]] = {}
_TEXTS_LOCK = threading.Lock()


def _searchable(catalog: Catalog) -> list[tuple[tuple[str, ...], Concept]]:
    """(normalized words of "code display", concept) of every concept, once per revision."""
    key = (catalog.info.id, catalog.info.revision)
    with _TEXTS_LOCK:
        texts = _TEXTS.get(key)
        if texts is None:
            for old in [k for k in _TEXTS if k[0] == key[0]]:
                del _TEXTS[old]
            texts = _TEXTS[key] = [(tuple(normalize_text(f"{c.code} {c.display}").split()), c) for c in catalog.concepts.values()]
        return texts


def expand(catalog: Catalog, text_filter: str | None, count: int | None, offset: int) -> dict:
    """The ValueSet expanded: concepts whose code or display words start with every word of
    ``text_filter`` (accent- and case-insensitive), ``count`` of them from ``offset``."""
    count = EXPAND_DEFAULT if count is None else count
    if not 0 <= count <= EXPAND_MAX:
        raise bad_request(f"'count' debe estar entre 0 y {EXPAND_MAX}", expression="count")
    if offset < 0:
        raise bad_request("'offset' no puede ser negativo", expression="offset")
    words = normalize_text(text_filter or "").split()
    matches = [c for text, c in _searchable(catalog) if _matches(text, words)] if words else list(catalog.concepts.values())
    info = catalog.info
    parameters: list[dict] = [{"name": "count", "valueInteger": count}, {"name": "offset", "valueInteger": offset}]
    if text_filter:
        parameters.insert(0, {"name": "filter", "valueString": text_filter})
    out = value_set_resource(info)
    out["expansion"] = {
        "identifier": f"urn:uuid:{uuid.uuid4()}",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "total": len(matches),
        "offset": offset,
        "parameter": parameters,
        "contains": [
            {"system": info.url, **({"version": info.version} if info.version else {}), "code": c.code, "display": c.display}
            for c in matches[offset : offset + count]
        ],
    }
    return out


def _matches(text_words: tuple[str, ...], wanted: list[str]) -> bool:
    return all(any(t.startswith(w) for t in text_words) for w in wanted)
